"""Shared helpers for the verify step of every scenario.

Scenarios state their promises in a few lines each; the mechanics live here:
the cluster layout (read from Molecule's inventory), running a real agent,
reading a master's access log, and HTTPS requests with a chosen client
certificate and headers, made from inside a lab container.
"""

import collections
import functools
import glob
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


def docker(*args, check=True):
    """The docker CLI's output; a failure raises (check) with its message."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {done.stderr.strip()}")
    return done.stdout


def container_like(template, name, replace):
    """docker run a fresh container `name` from the image of container `template`, with
    its network (and aliases), capabilities, mounts and cgroup settings: what systemd
    needs. With `replace`, `template` is removed first and `name` is its own (a rebuilt
    machine: test_restore.py, bench/recovery.py); otherwise it stays (a new host)."""
    info = json.loads(docker("inspect", template))[0]
    host = info["HostConfig"]
    hostname = info["Config"]["Hostname"] if replace else name
    args = ["run", "-d", "--name", name, "--hostname", hostname, "--cgroupns", host["CgroupnsMode"]]
    for cap in host.get("CapAdd") or []:
        args += ["--cap-add", cap]
    for opt in host.get("SecurityOpt") or []:
        args += ["--security-opt", opt]
    for bind in host.get("Binds") or []:
        args += ["-v", bind]
    for path in host.get("Tmpfs") or {}:
        args += ["--tmpfs", path]
    (network, settings), = info["NetworkSettings"]["Networks"].items()
    args += ["--network", network]
    # The template's own names (and Docker's short id) are not the new host's.
    for alias in settings.get("Aliases") or []:
        if alias not in (template, info["Config"]["Hostname"]) and not re.fullmatch(r"[0-9a-f]{12}", alias):
            args += ["--network-alias", alias]
    if replace:
        docker("rm", "-f", template)
    docker(*args, info["Config"]["Image"])


# openssl s_client's protocol options and the names it prints for them.
TLS_NAMES = {"-tls1_1": r"TLSv1\.1", "-tls1_2": r"TLSv1\.2", "-tls1_3": r"TLSv1\.3"}


def negotiated_protocol(s_client_output):
    """The protocol `openssl s_client` negotiated: its session block's "Protocol  :" line,
    else a TLS 1.3 handshake's "New, TLSv1.3, Cipher is" line. OpenSSL 3.0 (Debian 12)
    prints no session block for a TLS 1.3 handshake that got no session ticket; the "New,"
    line names the cipher's version, not the protocol (TLSv1.0 for an AES-SHA cipher
    negotiated in TLS 1.1), so it is read for TLS 1.3 only."""
    match = re.search(r"Protocol\s*:\s*(TLSv1\.\d)", s_client_output) \
        or re.search(r"^New, (TLSv1\.3), Cipher is", s_client_output, re.M)
    return match.group(1) if match else None


@functools.lru_cache(maxsize=None)
def known_variables():
    """(the roles' defaults by name, the names any scenario sets): what var() may read."""
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    defaults = {}
    for path in sorted(glob.glob(os.path.join(project, "roles", "*", "defaults", "main.yml"))):
        with open(path, encoding="utf-8") as handle:
            defaults.update(yaml.safe_load(handle) or {})
    scenario_vars = set()
    for path in glob.glob(os.path.join(project, "molecule", "*", "molecule.yml")):
        with open(path, encoding="utf-8") as handle:
            scenario_vars.update(re.findall(r"^\s+((?:puppet|lab)_\w+):", handle.read(), re.M))
    assert defaults and scenario_vars, f"no role defaults or scenario variables found under {project}"
    return defaults, frozenset(scenario_vars)


class Entry(collections.namedtuple("Entry", "name host")):
    """A way into the cluster: the TLS name a client uses and the host it reaches."""

    def __str__(self):
        return self.name if self.name == self.host else f"{self.name} at {self.host}"


class Response(collections.namedtuple("Response", "rc status body error")):
    """What curl got: its exit code, the HTTP status (0 without one), body, error message."""


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
        self._lock_wait = {}

    def host(self, name):
        if name not in self._hosts:
            self._hosts[name] = testinfra.get_host(f"docker://{name}")
        return self._hosts[name]

    def var(self, host, name, default=None):
        """A host's variable, else `default`. Fails on a name no role defaults and no
        scenario sets (a typo would read the default silently), and on a default other
        than the role's own (the test would assume what the role does not do)."""
        defaults, scenario_vars = known_variables()
        assert name in defaults or name in scenario_vars, f"no role or scenario knows the variable {name}"
        role_default = defaults.get(name)
        if default is not None and isinstance(role_default, (str, bool, int)) and "{{" not in str(role_default):
            assert default == role_default, f"{name}: the test's default {default!r}, the role's {role_default!r}"
        return self.hostvars[host].get(name, default)

    def lock_wait(self, agent):
        """Options that make `puppet agent --test` wait for a daemon run holding the lock.
        Puppet 5 (the legacy scenario, whose agents run no daemon) has none; any other
        Puppet must know maxwaitforlock: asked, not guessed from the version."""
        if agent not in self._lock_wait:
            host = self.host(agent)
            version = host.run("puppet --version")
            assert version.rc == 0 and re.match(r"\d+\.", version.stdout), \
                f"{agent}: puppet --version said {version.stdout!r} {version.stderr!r}"
            if version.stdout.startswith("5."):
                self._lock_wait[agent] = ""
            else:
                # `puppet config print` prints an empty line for a setting it does not know.
                setting = host.run("puppet config print maxwaitforlock")
                assert setting.rc == 0 and setting.stdout.strip(), \
                    f"{agent}: Puppet {version.stdout.strip()} has no maxwaitforlock setting"
                self._lock_wait[agent] = "--waitforlock 2 --maxwaitforlock 180"
        return self._lock_wait[agent]

    def agent_run(self, agent, extra=""):
        """A real `puppet agent --test`; waits for a daemon run that holds the lock."""
        result = self.host(agent).run(
            f"puppet agent --test --color=false {self.lock_wait(agent)} {extra}"
        )
        return result

    def run_through(self, agent, master):
        """An agent run whose catalog the named master compiles (SRV records off, so the
        server given is the one asked); it must succeed. Masters sharing one certificate
        (combination 5) are asked by the shared name, which the agent's /etc/hosts points
        at the master for the run (Docker's bind mount: rewritten in place, restored after)."""
        name = self.tls_name(master)
        host = self.host(agent)
        if name != master:
            address = self.host(master).run("hostname -I").stdout.split()[0]
            pin = host.run(f"cp /etc/hosts /etc/hosts.lab-saved && "
                           f"{{ echo '{address} {name}'; cat /etc/hosts.lab-saved; }} > /etc/hosts")
            assert pin.rc == 0, pin.stderr
        try:
            run = self.agent_run(agent, f"--no-use_srv_records --server {name} --server_list ''")
        finally:
            if name != master:
                assert host.run("cat /etc/hosts.lab-saved > /etc/hosts && rm /etc/hosts.lab-saved").rc == 0
        assert run.rc in (0, 2), run.stdout[-3000:] + run.stderr[-2000:]
        assert self.compiled_by(run.stdout) == master, (agent, master, run.stdout[-2000:])
        return run

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

    def read_log(self, host, path):
        """A log file's content; fails when it cannot be read: a check that something is
        not in a log would otherwise pass on a missing one."""
        read = self.host(host).run(f"cat {path}")
        assert read.rc == 0, f"{host}: cannot read {path}: {read.stderr.strip()}"
        return read.stdout

    def lb_engine(self):
        """What the load balancers run: the cluster's puppet_cluster_lb_engine (nginx by default)."""
        return self.var(self.ca, "puppet_cluster_lb_engine", "nginx")

    def lb_log(self, lb):
        """The load balancer's access log: nginx writes a file, haproxy logs to the journal."""
        if self.lb_engine() == "nginx":
            return self.read_log(lb, "/var/log/nginx/puppet-lb-access.log").splitlines()
        read = self.host(lb).run("journalctl -t haproxy -o cat --no-pager")
        assert read.rc == 0, f"{lb}: cannot read haproxy's journal: {read.stderr.strip()}"
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
        """Requests puppetserver itself answered on this master (or the CA), those of the
        days logback rolled over at midnight (UTC) first: a run across midnight found the
        requests of the day before gone from the current file."""
        rolled = self.host(master).run("zcat -f /var/log/puppetserver/puppetserver-access-*.log.gz 2>/dev/null")
        return rolled.stdout + self.read_log(master, "/var/log/puppetserver/puppetserver-access.log")

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

    def https_request(self, client, url, cert=None, headers=None, method="GET", via=None):
        """A request made from `client` with curl: its exit code (0, or why there was no
        answer: 7 refused, 28 timeout, 35/56 TLS failure, 58 a missing key...), the HTTP
        status (0 without an answer), the body and curl's error message.
        `via`: the Entry whose host the connection goes to, whatever name the URL has."""
        args = ["curl", "-sS", "-w", "\n%{http_code}", "--max-time", "30",
                "--cacert", f"{SSLDIR}/certs/ca.pem", "-X", method]
        if via and via.host != via.name:
            args += ["--connect-to", f"{via.name}:8140:{via.host}:8140"]
        if cert:
            args += ["--cert", f"{SSLDIR}/certs/{cert}.pem", "--key", f"{SSLDIR}/private_keys/{cert}.pem"]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        args.append(url)
        result = self.host(client).run(shlex.join(args))
        body, _newline, status = result.stdout.rpartition("\n")
        status = int(status) if status.isdigit() else 0
        return Response(result.rc, status if result.rc == 0 else 0, body, result.stderr.strip())

    def https_status(self, client, url, cert=None, headers=None, method="GET", via=None):
        """HTTP status of a request made from `client`; 0 when there was no HTTP answer
        (so a test expecting a status never takes a failed connection for it)."""
        return self.https_request(client, url, cert, headers, method, via).status

    @staticmethod
    def certificate_refused(response):
        """The server refused the client's certificate: a TLS alert (curl 35 or 56), a 403,
        or nginx's 400 page for a certificate that fails verification. Not a refused
        connection, a timeout, a DNS failure or a missing key file: a dead entry point
        refuses nothing."""
        if response.rc in (35, 56):
            return " alert " in response.error
        return response.rc == 0 and (response.status == 403 or (
            response.status == 400 and "The SSL certificate error" in response.body))

    def wait_refused_everywhere(self, cert, url_for, timeout, valid_cert=None):
        """Poll until every entry point refuses `cert` (url_for(entry): the URL to ask). In
        the same poll a valid certificate must get 200 at each one: the entry point is
        alive, and still serves the nodes that are not revoked."""
        client, valid = self.agents[0], valid_cert or self.agents[0]

        def refused_everywhere():
            refused = True
            for entry in self.entry_points():
                alive = self.https_request(client, url_for(entry, valid), cert=valid, via=entry)
                assert alive.status == 200, f"{entry} no longer serves {valid}: {alive[:2]} {alive.error}"
                answer = self.https_request(client, url_for(entry, cert), cert=cert, via=entry)
                refused = refused and self.certificate_refused(answer)
            return refused

        self.wait_until(refused_everywhere, timeout, f"{cert} is refused at {[str(e) for e in self.entry_points()]}")

    def tls_handshake(self, client, entry, protocol):
        """`openssl s_client` from `client` to `entry` with only `protocol` (-tls1_1,
        -tls1_2, -tls1_3), verifying the server's certificate. The ciphers are at security
        level 0: OpenSSL 3 at its default level does not offer TLS 1.1 at all and fails
        before a byte is sent, which would make any server look as if it refused 1.1."""
        return self.host(client).run(
            f"openssl s_client -connect {entry.host}:8140 -servername {entry.name} {protocol} "
            f"-cipher 'DEFAULT:@SECLEVEL=0' -CAfile {SSLDIR}/certs/ca.pem "
            f"-verify_hostname {entry.name} -verify_return_error </dev/null"
        )

    def assert_client_speaks(self, client, protocol):
        """`client` completes a handshake with `protocol` against a local `openssl s_server`
        offering only that protocol (with the client's own certificate): a refusal by a
        lab server then comes from the server, not from the client's OpenSSL."""
        name = client
        weak = "-cipher 'DEFAULT:@SECLEVEL=0'"
        server = (f"openssl s_server -accept 127.0.0.1:4433 {protocol} {weak} -naccept 1 -quiet "
                  f"-cert {SSLDIR}/certs/{name}.pem -key {SSLDIR}/private_keys/{name}.pem "
                  "</dev/null >/dev/null 2>&1 &")
        # Readiness: the port is listening (at most 5 s), then one handshake.
        ready = "for i in $(seq 50); do ss -Hltn | grep -q '127.0.0.1:4433 ' && break; sleep 0.1; done"
        handshake = self.host(client).run(
            f"{server} {ready}; openssl s_client -connect 127.0.0.1:4433 {protocol} {weak} </dev/null")
        assert handshake.rc == 0 and re.fullmatch(TLS_NAMES[protocol], negotiated_protocol(handshake.stdout) or ""), \
            f"{client} cannot speak {protocol} even to a local server: {handshake.stdout[-400:]}{handshake.stderr[-400:]}"

    def tls_name(self, master):
        """The name a master's certificate is valid for: its own, or the shared one in combination 5."""
        return self.server_name if self.combination == 5 else master

    def entry_points(self):
        """Every place an agent's request can enter the cluster: the shared name and each
        master, by the name its certificate is valid for."""
        return [Entry(self.server_name, self.server_name)] + [Entry(self.tls_name(m), m) for m in self.masters]

    def ca_entry(self):
        """The CA host as agents name it, when they talk to it directly (combinations 4
        and 5); None where it is a master already (1) or only reached through the load
        balancer or the masters' fronts (2, 3)."""
        if self.combination in (4, 5) and self.ca not in self.masters:
            return Entry(self.var(self.ca, "puppet_ca_certname", self.ca), self.ca)
        return None

    def tls_entry_points(self):
        """Every TLS endpoint an agent connects to: the entry points, and the CA host where
        agents name it."""
        return self.entry_points() + ([self.ca_entry()] if self.ca_entry() else [])

    def assert_connection_refused(self, host, port=8140, name=None):
        """From the first agent, a connection to host:port is refused (curl's exit code 7):
        nothing listens there. Not a timeout or a DNS failure, which prove nothing."""
        probe = self.host(self.agents[0]).run(f"curl -s -o /dev/null --max-time 10 http://{host}:{port}/")
        assert probe.rc == 7, f"{name or host}:{port} is not refused (curl exit {probe.rc}): {probe.stderr}"

    def assert_runs_avoid(self, down, runs=3):
        """Agent runs succeed, each catalog compiled by a master of the cluster, never by
        the stopped master `down` (a run whose catalog names no master proves nothing)."""
        for _attempt in range(runs):
            run = self.agent_run(self.agents[0])
            assert run.rc in (0, 2), run.stdout + run.stderr
            compiled = self.compiled_by(run.stdout)
            assert compiled in self.masters and compiled != down, (compiled, down, run.stdout[-1000:])

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
        # Plain output, which the tests parse: Molecule exports ANSIBLE_FORCE_COLOR=1 to
        # its verifier, and a coloured "TASK [" line matched no pattern.
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path or os.path.join(project, "collections")),
                   ANSIBLE_PIPELINING="true", ANSIBLE_FORKS="10", ANSIBLE_GATHERING="smart",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        # A project file, or a playbook of an installed collection by its name.
        target = playbook if "." in playbook.split("/")[0] and not playbook.endswith(".yml") else os.path.join(project, playbook)
        try:
            return subprocess.run(
                ["ansible-playbook", "-i", work, target, *args],
                capture_output=True, text=True, env=env, timeout=timeout, check=False,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run_site_play(self, move=None, args=()):
        """Re-run site.yml; it must succeed."""
        play = self.run_playbook("site.yml", move=move, args=args)
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


@pytest.fixture(scope="session")
def healthy_status(cluster):
    """One read-only run of status.yml (in check mode) on the healthy cluster, before any
    drill stops a service: the tests that read its report share it (a status run is half a
    minute of the suite)."""
    return cluster.run_playbook("playbooks/status.yml", args=("--check",))


def full_suite_only(what):
    """The drills the default test command leaves out, to fit CI's 90 minutes on the 2-core
    machine (docs/benchmarks.md): they run with LAB_FULL=1 (./lab test, ./lab scenario)."""
    if os.environ.get("LAB_FULL") != "1":
        pytest.skip(f"{what} runs with LAB_FULL=1")
