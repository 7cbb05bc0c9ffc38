"""Simulated Puppet agents for Locust: each user is one agent with its own certificate.

Every task is one agent run, as puppet-agent 8.10 does it against a master once its
plugins are in sync (no file_content downloads):
  GET  /puppet/v3/node/<certname>                   (node object, environment check)
  GET  /puppet/v3/file_metadatas/plugins            (pluginsync: the mount's top, not recursive)
  GET  /puppet/v3/file_metadatas/pluginfacts        (pluginsync, external facts, recursive)
  GET  /puppet/v3/file_metadatas/plugins            (pluginsync, Ruby plugins, recursive)
  POST /puppet/v3/catalog/<certname>                (facts in the form body, compile)
  PUT  /puppet/v3/report/<certname>                 (a minimal, valid JSON report)
then the connections are dropped, as the agent process ends: each run pays a TLS handshake
with client certificate verification, like a real agent.

Configuration comes from the environment (bench/load/locust_run.py sets it):
  BENCH_ADDR        IP address to connect to (lab host names do not resolve on the host)
  BENCH_TLS_NAME    name sent as SNI and Host, and checked in the server's certificate
  BENCH_PORT        8140 by default
  BENCH_CERTDIR     directory with ca.pem, certs/<name>.pem, private_keys/<name>.pem
  BENCH_CERTNAMES   comma-separated certnames; user i runs as certname i modulo the list
  BENCH_FACTS       JSON facts template (a real agent's facts; names are replaced)
  BENCH_REQLOG      optional CSV path: one row per request (for time series and drills)
  BENCH_TAG         free text copied into every BENCH_REQLOG row (configuration name)
"""

import csv
import itertools
import json
import os
import threading
import time
import urllib.parse
import uuid

from locust import HttpUser, constant, events, task
from requests.adapters import HTTPAdapter

ADDR = os.environ.get("BENCH_ADDR", "127.0.0.1")
TLS_NAME = os.environ.get("BENCH_TLS_NAME", "puppet.domain.com")
PORT = int(os.environ.get("BENCH_PORT", "8140"))
CERTDIR = os.environ.get("BENCH_CERTDIR", "")
CERTNAMES = [c for c in os.environ.get("BENCH_CERTNAMES", "").split(",") if c]
FACTS_PATH = os.environ.get("BENCH_FACTS", "")
REQLOG = os.environ.get("BENCH_REQLOG", "")
TAG = os.environ.get("BENCH_TAG", "")
# "production" is the lab's own code (a notify and a file); "bench" is the driver's
# 30-module environment (bench/load/env.py, bench_env_files), closer to a real catalog.
ENVIRONMENT = os.environ.get("BENCH_ENVIRONMENT", "production")
# Pluginsync as puppet-agent 8.10 asks for it (copied from a master's access log of a real run):
# the mount's top directory, then pluginfacts and plugins recursively.
_IGNORES = [("ignore", ".svn"), ("ignore", "CVS"), ("ignore", ".git"), ("ignore", ".hg")]
PLUGINSYNC = [
    ("plugins", [("recurse", "false"), ("links", "manage"), ("checksum_type", "sha256"),
                 ("source_permissions", "ignore"), ("environment", ENVIRONMENT)]),
    ("pluginfacts", [("recurse", "true"), ("max_files", "-1"), *_IGNORES, ("links", "follow"),
                     ("checksum_type", "sha256"), ("source_permissions", "use"), ("environment", ENVIRONMENT)]),
    ("plugins", [("recurse", "true"), ("max_files", "-1"), *_IGNORES, ("links", "follow"),
                 ("checksum_type", "sha256"), ("source_permissions", "ignore"), ("environment", ENVIRONMENT)]),
]
CHECKSUM_TYPES = "sha256.sha384.sha512.sha224.md5"

_user_ids = itertools.count()
_log_lock = threading.Lock()
_log_file = None
_log_writer = None

with open(FACTS_PATH, encoding="utf-8") as fh:
    FACTS_TEMPLATE = json.load(fh)


class ServerNameAdapter(HTTPAdapter):
    """Connects to an address but sends SNI for, and verifies the certificate against, a name."""

    def __init__(self, server_name, **kwargs):
        self._server_name = server_name
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = self._server_name
        kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)


def _log_row(row):
    if _log_writer is None:
        return
    with _log_lock:
        _log_writer.writerow(row)


@events.test_start.add_listener
def _open_log(environment, **_kwargs):
    global _log_file, _log_writer
    if not CERTNAMES:
        raise SystemExit("BENCH_CERTNAMES is empty: no client certificates to run as")
    if REQLOG:
        _log_file = open(REQLOG, "w", newline="", encoding="utf-8")
        _log_writer = csv.writer(_log_file)
        _log_writer.writerow(["t_end", "tag", "certname", "name", "ms", "status", "error", "compiled_on"])


@events.test_stop.add_listener
def _close_log(environment, **_kwargs):
    if _log_file is not None:
        with _log_lock:
            _log_file.flush()
            _log_file.close()


def agent_facts(certname):
    """The template's facts under this agent's names, as Puppet::Node::Facts renders them."""
    values = dict(FACTS_TEMPLATE)
    short = certname.split(".", 1)[0]
    values.update(
        {
            "clientcert": certname,
            "fqdn": certname,
            "hostname": short,
            "networking": dict(values.get("networking", {}), fqdn=certname, hostname=short),
        }
    )
    now = time.time()
    return {
        "name": certname,
        "values": values,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000000+00:00", time.gmtime(now)),
        "expiration": time.strftime("%Y-%m-%dT%H:%M:%S.000000000+00:00", time.gmtime(now + 1800)),
    }


def minimal_report(certname, txn, catalog):
    """The smallest report Puppet::Transaction::Report.from_data_hash accepts."""
    return {
        "host": certname,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000000000+00:00", time.gmtime()),
        "configuration_version": catalog.get("version", 0),
        "transaction_uuid": txn,
        "catalog_uuid": catalog.get("catalog_uuid", txn),
        "code_id": None,
        "job_id": None,
        "cached_catalog_status": "not_used",
        "report_format": 12,
        "puppet_version": "8.10.0",
        "status": "unchanged",
        "transaction_completed": True,
        "noop": False,
        "noop_pending": False,
        "corrective_change": False,
        "environment": ENVIRONMENT,
        "master_used": f"{TLS_NAME}:{PORT}",
        "server_used": f"{TLS_NAME}:{PORT}",
        "logs": [],
        "metrics": {},
        "resource_statuses": {},
    }


class PuppetAgent(HttpUser):
    host = f"https://{ADDR}:{PORT}"
    wait_time = constant(float(os.environ.get("BENCH_WAIT", "0")))

    def on_start(self):
        self.certname = CERTNAMES[next(_user_ids) % len(CERTNAMES)]
        self.client.mount("https://", ServerNameAdapter(TLS_NAME))
        self.client.cert = (
            os.path.join(CERTDIR, "certs", f"{self.certname}.pem"),
            os.path.join(CERTDIR, "private_keys", f"{self.certname}.pem"),
        )
        self.client.verify = os.path.join(CERTDIR, "ca.pem")
        self.client.headers.update(
            {
                "Host": f"{TLS_NAME}:{PORT}",
                "User-Agent": "Puppet/8.10.0 Ruby/3.3 (x86_64-linux-gnu) locust",
                "X-Puppet-Version": "8.10.0",
            }
        )

    def _request(self, name, method, path, check=None, **kwargs):
        """One request; a non-2xx status, a transport error or a failed check is a failure."""
        compiled_on = ""
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as resp:
            error = ""
            if resp.status_code is None or resp.status_code == 0:
                error = f"transport: {resp.error!r}"[:200]
            elif not 200 <= resp.status_code < 300:
                error = f"HTTP {resp.status_code}: {resp.text[:120]!r}"
            elif check is not None:
                try:
                    compiled_on = check(resp) or ""
                except Exception as exc:  # noqa: BLE001 - any bad body is a failed request
                    error = f"bad body: {exc!r}"[:200]
            if error:
                resp.failure(error)
            else:
                resp.success()
            elapsed_ms = resp.elapsed.total_seconds() * 1000 if resp.status_code else 0.0
            _log_row([f"{time.time():.3f}", TAG, self.certname, name, f"{elapsed_ms:.1f}",
                      resp.status_code or 0, error, compiled_on])
            return resp if not error else None

    @task
    def agent_run(self):
        certname = self.certname
        txn = str(uuid.uuid4())
        env_q = urllib.parse.urlencode({"environment": ENVIRONMENT})
        self._request(
            "node",
            "GET",
            f"/puppet/v3/node/{certname}?environment={ENVIRONMENT}&configured_environment={ENVIRONMENT}"
            f"&transaction_uuid={txn}",
            headers={"Accept": "application/json"},
        )
        for mount, query in PLUGINSYNC:
            recurse = dict(query)["recurse"] == "true"
            self._request(
                f"file_metadatas/{mount}{'' if recurse else ' (top)'}",
                "GET",
                f"/puppet/v3/file_metadatas/{mount}?" + urllib.parse.urlencode(query),
                # PSON as well, as agents offer it: Puppet 5.5 (the legacy lab) answers
                # file_metadatas in PSON only (406 to a JSON-only Accept).
                headers={"Accept": "application/json, text/pson"},
            )
        # Puppet double-escapes the facts: once into the parameter, once by the form encoding.
        facts = urllib.parse.quote(json.dumps(agent_facts(certname)), safe="")
        body = urllib.parse.urlencode(
            {
                "environment": ENVIRONMENT,
                "configured_environment": ENVIRONMENT,
                "facts_format": "application/json",
                "facts": facts,
                "transaction_uuid": txn,
                "static_catalog": "true",
                "checksum_type": CHECKSUM_TYPES,
            }
        )
        catalog = {}

        def check_catalog(resp):
            data = resp.json()
            catalog.update(data)
            if data.get("name") != certname:
                raise ValueError(f"catalog for {data.get('name')!r}")
            for res in data.get("resources", []):
                if res.get("type") == "Notify":
                    message = res.get("parameters", {}).get("message", "")
                    # "compiled by <servername> on <hostname>" (molecule/shared/code site.pp)
                    return message.rsplit(" on ", 1)[-1] if " on " in message else message
            return ""

        self._request(
            "catalog",
            "POST",
            f"/puppet/v3/catalog/{certname}?{env_q}",
            data=body,
            headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            check=check_catalog,
        )
        self._request(
            "report",
            "PUT",
            f"/puppet/v3/report/{certname}?{env_q}",
            data=json.dumps(minimal_report(certname, txn, catalog)),
            headers={"Accept": "application/json", "Content-Type": "application/json"},
        )
        # The agent process ends here: the next run opens new TLS connections.
        for adapter in self.client.adapters.values():
            adapter.close()
