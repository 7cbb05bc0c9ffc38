"""Shared helpers for the verify step of every scenario.

Scenarios state their promises in a few lines each; the mechanics live here:
the cluster layout (read from Molecule's inventory), running a real agent,
reading a master's access log, and HTTPS requests with a chosen client
certificate and headers, made from inside a lab container.
"""

import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest
import testinfra
import yaml

SSLDIR = "/var/lib/puppet/ssl"


class Entry(collections.namedtuple("Entry", "name host")):
    """A way into the cluster: the TLS name a client uses and the host it reaches."""

    def __str__(self):
        return self.name if self.name == self.host else f"{self.name} at {self.host}"


class Cluster:
    """The scenario's hosts and variables, and what a user can do with them."""

    def __init__(self, inventory):
        self.inventory = inventory
        groups = {name: data.get("hosts", []) for name, data in inventory.items() if isinstance(data, dict)}
        self.hostvars = inventory["_meta"]["hostvars"]
        self.groups = groups
        self.ca = groups["puppet_ca"][0]
        self.masters = groups["puppet_masters"]
        self.lbs = groups.get("puppet_lb", [])
        self.dns = groups.get("puppet_dns", [])
        self.agents = groups["puppet_agents"]
        any_host = self.ca
        self.server_name = self.hostvars[any_host]["puppet_cluster_server_name"]
        self.combination = int(self.hostvars[any_host]["puppet_cluster_combination"])
        # Masters that only compile (in combination 1 the CA host compiles too).
        self.compile_only_masters = [m for m in self.masters if m != self.ca]
        self._hosts = {}
        self._puppet_major = {}

    def host(self, name):
        if name not in self._hosts:
            self._hosts[name] = testinfra.get_host(f"docker://{name}")
        return self._hosts[name]

    def var(self, host, name, default=None):
        return self.hostvars[host].get(name, default)

    def lock_wait(self, agent):
        """Options that make `puppet agent --test` wait for a daemon run holding the lock.
        Puppet 5 (the legacy scenario, whose agents run no daemon) has none."""
        if agent not in self._puppet_major:
            self._puppet_major[agent] = self.host(agent).run("puppet --version").stdout.strip().split(".")[0]
        return "" if self._puppet_major[agent] == "5" else "--waitforlock 2 --maxwaitforlock 180"

    def agent_run(self, agent, extra=""):
        """A real `puppet agent --test`; waits for a daemon run that holds the lock."""
        result = self.host(agent).run(
            f"puppet agent --test --color=false {self.lock_wait(agent)} {extra}"
        )
        return result

    def compiled_by(self, output):
        """The host named by the test code's notice ("compiled by <certname> on <host>")."""
        match = re.search(r"compiled by \S+ on (\S+)", output)
        return match.group(1) if match else None

    def agent_ca_server(self, agent):
        """Where the agent sends certificate requests, as its puppet.conf says."""
        return self.host(agent).run("puppet config print ca_server").stdout.strip()

    def ca_forget(self, certnames):
        """Delete these certificates and requests on the CA (a test's probes), through its API
        with the CA host's own certificate: seconds, where `puppetserver ca clean` of a signed
        certificate waits 30 s on the CLI's kept-alive connection."""
        name = self.var(self.ca, "puppet_ca_certname", self.ca)
        for certname in certnames:
            self.host(self.ca).run(
                f"curl -s -o /dev/null -X DELETE --max-time 30 --cacert {SSLDIR}/certs/ca.pem "
                f"--cert {SSLDIR}/certs/{name}.pem --key {SSLDIR}/private_keys/{name}.pem "
                f"https://{name}:8140/puppet-ca/v1/certificate_status/{certname}"
            )

    def lb_engine(self):
        """What the load balancers run: the cluster's puppet_cluster_lb_engine (nginx by default)."""
        return self.var(self.ca, "puppet_cluster_lb_engine", "nginx")

    def lb_log(self, lb):
        """The load balancer's access log: nginx writes a file, haproxy logs to the journal."""
        command = {"nginx": "cat /var/log/nginx/puppet-lb-access.log",
                   "haproxy": "journalctl -t haproxy -o cat --no-pager"}[self.lb_engine()]
        read = self.host(lb).run(command)
        assert read.rc == 0, f"{lb}: {command}: {read.stderr}"
        return read.stdout.splitlines()

    def lb_config(self):
        """Every load balancer's configuration file, as one text."""
        path = {"nginx": "/etc/nginx/nginx.conf", "haproxy": "/etc/haproxy/haproxy.cfg"}[self.lb_engine()]
        return "".join(self.host(lb).file(path).content_string for lb in self.lbs)

    def haproxy_servers(self, lb):
        """{master: (operational state, administrative state)} from haproxy's runtime API:
        operational 2 is running (its checks pass), 0 stopped; administrative bit 1 is
        maintenance (drained)."""
        read = self.host(lb).run(
            "echo 'show servers state puppet_masters' | socat -t 5 stdio unix-connect:/run/haproxy/admin.sock")
        assert read.rc == 0, read.stderr
        fields = [line.split() for line in read.stdout.splitlines()[1:] if line and not line.startswith("#")]
        return {f[3]: (int(f[5]), int(f[6])) for f in fields}

    def lb_log_lines(self):
        """Requests (tls mode) or connections (tcp mode) the load balancers logged."""
        return sum(len(self.lb_log(lb)) for lb in self.lbs)

    def access_log(self, master):
        """Requests puppetserver itself answered on this master."""
        return self.host(master).run("cat /var/log/puppetserver/puppetserver-access.log").stdout

    def tls_lbs(self):
        """The load balancers that end TLS and vouch for clients in headers (tls mode): the
        LB's puppet_lb_mode, else the cluster's puppet_cluster_lb_mode, as the roles read it."""
        return [lb for lb in self.lbs
                if self.var(lb, "puppet_lb_mode", self.var(lb, "puppet_cluster_lb_mode", "tcp")) == "tls"]

    def front_errors(self, master):
        """The last lines of the error log of a master's front (nginx or apache): why it
        answered 502, for an assertion's message."""
        return self.host(master).run(
            "tail -n 8 /var/log/nginx/puppetmaster-error.log /var/log/apache2/puppetmaster-error.log 2>/dev/null"
        ).stdout

    def https_status(self, client, url, cert=None, headers=None, method="GET", via=None):
        """HTTP status of a request made from `client`; 0 when TLS or the connection failed.
        `via`: the Entry whose host the connection goes to, whatever name the URL has."""
        args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
                "--cacert", f"{SSLDIR}/certs/ca.pem", "-X", method]
        if via and via.host != via.name:
            args += ["--connect-to", f"{via.name}:8140:{via.host}:8140"]
        if cert:
            args += ["--cert", f"{SSLDIR}/certs/{cert}.pem", "--key", f"{SSLDIR}/private_keys/{cert}.pem"]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        args.append(url)
        out = self.host(client).run(shlex.join(args)).stdout.strip()
        return int(out) if out.isdigit() else 0

    def tls_name(self, master):
        """The name a master's certificate is valid for: its own, or the shared one in combination 5."""
        return self.server_name if self.combination == 5 else master

    def entry_points(self):
        """Every place an agent's request can enter the cluster: the shared name and each
        master, by the name its certificate is valid for."""
        return [Entry(self.server_name, self.server_name)] + [Entry(self.tls_name(m), m) for m in self.masters]

    def assert_runs_avoid(self, down, runs=3):
        """Agent runs succeed, and no catalog comes from the stopped master `down`."""
        for _attempt in range(runs):
            run = self.agent_run(self.agents[0])
            assert run.rc in (0, 2), run.stdout + run.stderr
            assert self.compiled_by(run.stdout) != down

    def wait_until(self, predicate, timeout, what):
        """Poll real state until predicate() holds; fail with `what` after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(1)
        pytest.fail(f"not within {timeout} s: {what}")

    def run_playbook(self, playbook, move=None, args=(), timeout=1200, collections_path=None):
        """Run a playbook of the project on this lab, as an operator would (after editing
        the inventory: `move` maps host -> (from group or None, to group or None))."""
        source = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
        work = tempfile.mkdtemp(prefix="lab-inventory-")
        shutil.copytree(source, work, dirs_exist_ok=True)
        path = os.path.join(work, "ansible_inventory.yml")
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        for host, (old, new) in (move or {}).items():
            if old:
                data[old]["hosts"].pop(host)
            if new:
                group = data.setdefault(new, {})
                group["hosts"] = group.get("hosts") or {}
                group["hosts"][host] = {"ansible_connection": "community.docker.docker"}
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle)
        project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path or os.path.join(project, "collections")),
                   ANSIBLE_PIPELINING="true", ANSIBLE_FORKS="10", ANSIBLE_GATHERING="smart")
        # A project file, or a playbook of an installed collection by its name.
        target = playbook if "." in playbook.split("/")[0] and not playbook.endswith(".yml") else os.path.join(project, playbook)
        try:
            return subprocess.run(
                ["ansible-playbook", "-i", work, target, *args],
                capture_output=True, text=True, env=env, timeout=timeout, check=False,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run_site_play(self, move=None):
        """Re-run site.yml; it must succeed."""
        play = self.run_playbook("site.yml", move=move)
        assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-2000:]
        return play.stdout

    def wait_master_ready(self, master, timeout=240):
        name = self.tls_name(master)
        self.wait_until(
            lambda: self.host(master).run(
                f"curl -sf --cacert {SSLDIR}/certs/ca.pem --resolve {name}:8140:127.0.0.1 "
                f"https://{name}:8140/status/v1/simple"
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
