"""Signing N pending certificate requests on a real Puppet CA: one `puppetserver ca sign`
process per request (the shell way) against one puppet_cert module task for the batch.

    ./lab setup && .venv/bin/python bench/ca_signing.py [--sizes 5 50 200] [--suite trixie]

Starts its own CA container (bench-ca.domain.com) from the lab image, so no scenario
must be running; removes it at the end. For each size and each way it submits N fresh
requests (openssl + the CA's HTTP API, not timed), then times the signing and counts
the requests the CA's access log received meanwhile. Prints a Markdown table for
docs/benchmarks.md. A measurement, never a test: nothing fails on a duration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CA = "bench-ca.domain.com"
NETWORK = "puppet-lab"
ACCESS_LOG = "/var/log/puppetserver/puppetserver-access.log"


def sh(*args, check=True, capture=True):
    return subprocess.run(args, check=check, capture_output=capture, text=True)


def in_ca(script, check=True):
    return sh("docker", "exec", CA, "bash", "-c", script, check=check)


def start_ca(suite):
    sh("docker", "rm", "-f", CA, check=False)
    sh("docker", "run", "-d", "--name", CA, "--hostname", CA, "--network", NETWORK,
       "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--cgroupns", "host",
       "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
       f"puppet-cluster-lab/debian:{suite}")
    in_ca("systemctl is-system-running --wait >/dev/null || true")
    in_ca("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq puppetserver >/dev/null")
    # The CLI reaches the CA through the `server` setting (default "puppet").
    in_ca(f"puppet config set --section main server {CA} && puppetserver ca setup --certname {CA} >/dev/null"
          " && systemctl start puppetserver")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = in_ca(f"curl -sf --cacert /var/lib/puppet/ssl/certs/ca.pem https://{CA}:8140/status/v1/simple", check=False)
        if status.stdout.strip() == "running":
            return in_ca("dpkg-query -W -f '${Version}' puppetserver").stdout
        time.sleep(1)
    sys.exit("the bench CA did not start within 300 s")


def submit(names):
    """N pending requests, made with openssl and one curl each (not timed)."""
    script = "set -e; d=$(mktemp -d); for n in " + " ".join(names) + "; do " \
        "openssl req -new -newkey rsa:2048 -nodes -subj /CN=$n -keyout $d/k -out $d/c 2>/dev/null; " \
        "curl -sf -X PUT -H 'Content-Type: text/plain' --data-binary @$d/c --cacert /var/lib/puppet/ssl/certs/ca.pem " \
        f"https://{CA}:8140/puppet-ca/v1/certificate_request/$n; done; rm -rf $d"
    in_ca(script)


def log_lines():
    return int(in_ca(f"wc -l < {ACCESS_LOG}").stdout)


def sign_with_cli(names):
    in_ca("for n in " + " ".join(names) + "; do puppetserver ca sign --certname $n >/dev/null; done")


def sign_with_module(names, inventory):
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as play:
        play.write(json.dumps([{
            "hosts": CA, "gather_facts": False,
            "tasks": [{"name": "Sign the batch", "marionette.puppet_cluster.puppet_cert": {
                "name": names, "state": "signed", "host_certname": CA}}],
        }]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    result = subprocess.run(["ansible-playbook", "-i", inventory, play.name], capture_output=True, text=True,
                            env=env, check=False)
    os.unlink(play.name)
    if result.returncode != 0:
        sys.exit(result.stdout[-3000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 50, 200])
    parser.add_argument("--suite", default="trixie")
    args = parser.parse_args()
    version = start_ca(args.suite)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as inv:
        inv.write(json.dumps({"all": {"hosts": {CA: {"ansible_connection": "community.docker.docker"}}}}))
    rows = []
    try:
        for size in args.sizes:
            for way, sign in (("one `puppetserver ca sign` per request", sign_with_cli),
                              ("`puppet_cert`, one task for the batch", lambda names: sign_with_module(names, inv.name))):
                names = [f"n{size}-{len(rows)}-{i}.bench.domain.com" for i in range(size)]
                submit(names)
                before = log_lines()
                start = time.monotonic()
                sign(names)
                elapsed = time.monotonic() - start
                operations = log_lines() - before
                signed = int(in_ca("puppetserver ca list --all | grep -c '^ *n%d-%d-' || true" % (size, len(rows))).stdout)
                rows.append((size, way, elapsed, operations, signed))
                print(f"{size:>4} {way}: {elapsed:.1f} s, {operations} CA requests, {signed} signed", file=sys.stderr)
    finally:
        os.unlink(inv.name)
        sh("docker", "rm", "-f", CA, check=False)
    print(f"puppetserver {version} on Debian {args.suite}, lab container, 2 cores\n")
    print("| requests | way | wall time (s) | CA HTTP requests | signed |")
    print("|---|---|---|---|---|")
    for size, way, elapsed, operations, signed in rows:
        print(f"| {size} | {way} | {elapsed:.1f} | {operations} | {signed} |")


if __name__ == "__main__":
    main()
