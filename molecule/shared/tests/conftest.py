"""Shared helpers for the verify step of every scenario.

Scenarios state their promises in a few lines each; the mechanics live here:
the cluster layout (read from Molecule's inventory), running a real agent,
reading a master's access log, and HTTPS requests with a chosen client
certificate and headers, made from inside a lab container.
"""

import json
import os
import re
import shlex
import subprocess
import time

import pytest
import testinfra

SSLDIR = "/var/lib/puppet/ssl"


class Cluster:
    """The scenario's hosts and variables, and what a user can do with them."""

    def __init__(self, inventory):
        self.inventory = inventory
        groups = {name: data.get("hosts", []) for name, data in inventory.items() if isinstance(data, dict)}
        self.hostvars = inventory["_meta"]["hostvars"]
        self.ca = groups["puppet_ca"][0]
        self.masters = groups["puppet_masters"]
        self.lbs = groups.get("puppet_lb", [])
        self.agents = groups["puppet_agents"]
        any_host = self.ca
        self.server_name = self.hostvars[any_host]["puppet_cluster_server_name"]
        self._hosts = {}

    def host(self, name):
        if name not in self._hosts:
            self._hosts[name] = testinfra.get_host(f"docker://{name}")
        return self._hosts[name]

    def var(self, host, name, default=None):
        return self.hostvars[host].get(name, default)

    def agent_run(self, agent, extra=""):
        """A real `puppet agent --test`; waits for a daemon run that holds the lock."""
        result = self.host(agent).run(
            f"puppet agent --test --color=false --waitforlock 2 --maxwaitforlock 180 {extra}"
        )
        return result

    def compiled_by(self, output):
        """The master named by the test code's notice ("compiled by <servername>")."""
        match = re.search(r"compiled by (\S+)", output)
        return match.group(1) if match else None

    def lb_log_lines(self):
        """Requests (tls mode) or connections (tcp mode) the load balancers logged."""
        return sum(
            len(self.host(lb).run("cat /var/log/nginx/puppet-lb-access.log").stdout.splitlines())
            for lb in self.lbs
        )

    def access_log(self, master):
        """Requests puppetserver itself answered on this master."""
        return self.host(master).run("cat /var/log/puppetserver/puppetserver-access.log").stdout

    def https_status(self, client, url, cert=None, headers=None, method="GET"):
        """HTTP status of a request made from `client`; 0 when TLS or the connection failed."""
        args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
                "--cacert", f"{SSLDIR}/certs/ca.pem", "-X", method]
        if cert:
            args += ["--cert", f"{SSLDIR}/certs/{cert}.pem", "--key", f"{SSLDIR}/private_keys/{cert}.pem"]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        args.append(url)
        out = self.host(client).run(shlex.join(args)).stdout.strip()
        return int(out) if out.isdigit() else 0

    def entry_points(self):
        """Every place an agent's request can enter the cluster: the LB name and each master."""
        return [self.server_name] + self.masters

    def wait_until(self, predicate, timeout, what):
        """Poll real state until predicate() holds; fail with `what` after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(1)
        pytest.fail(f"not within {timeout} s: {what}")

    def wait_master_ready(self, master, timeout=240):
        self.wait_until(
            lambda: self.host(master).run(
                f"curl -sf --cacert {SSLDIR}/certs/ca.pem https://{master}:8140/status/v1/simple"
            ).stdout.strip() == "running",
            timeout, f"{master} answers /status/v1/simple",
        )


@pytest.fixture(scope="session")
def cluster():
    inventory_dir = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    listing = subprocess.run(
        ["ansible-inventory", "-i", inventory_dir, "--list"],
        check=True, capture_output=True, text=True,
    ).stdout
    return Cluster(json.loads(listing))
