"""Paths and constants every module of the driver uses, and its log line."""

import datetime as dt
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
STATE = os.path.join(BENCH, ".state")
CERTDIR = os.path.join(STATE, "certs")
RESULTS = os.path.join(STATE, "results")
IMGDIR = os.path.join(ROOT, "docs", "img")
LOCKFILE = "/tmp/lab.lock"
# The script bench/run starts; a block or drill runs it again under the lock.
DRIVER = os.path.join(HERE, "driver.py")
LOCUSTFILE = os.path.join(HERE, "locustfile.py")
FACTS = os.path.join(HERE, "facts.json")
# Programs copied into a master container and run there.
BACKEND_PROBE = os.path.join(HERE, "backend_probe.py")
TUNING_SETTINGS = os.path.join(HERE, "tuning_settings.sh")
JVM_EXPERIMENT = os.path.join(HERE, "jvm_experiment.sh")

SSLDIR = "/var/lib/puppet/ssl"
PORT = 8140


def log(msg):
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


def read_json(path):
    """A JSON file the bench wrote (a summary, a run's figures)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
