"""The lab a block or drill runs on: its hosts and names (read from its Molecule scenario),
and what the driver does to it (docker exec, services, CPU sets, readiness waits, the guard).

Shaped like molecule/shared/tests/conftest.py's Cluster: one object, built from the lab's
name (its Molecule scenario), passed to every function that touches the lab.
"""

import hashlib
import os
import re
import shutil
import subprocess
import time

import yaml

from .common import PORT, ROOT, log
from .cpu import container_cgroup
from .tls import https_request, port_closed

# What every puppetserver lab shares (Debian's puppetserver 7 and 8 packages).
PUPPETSERVER = {
    "ca_unit": "puppetserver",
    "ca_cert_path": "/etc/puppet/puppetserver/ca/ca_crt.pem",
    # One call for any number of names, comma-separated.
    "ca_generate": ["puppetserver", "ca", "generate", "--certname"], "ca_generate_batch": True,
    "status_path": "/status/v1/simple", "status_body": b"running",
    "codedir": "/etc/puppet/code",
}
# The unit that serves each puppet_master_frontend; "none": puppetserver ends TLS itself.
FRONT_UNITS = {"nginx": "nginx", "apache": "apache2", "none": "puppetserver"}
# The Molecule scenarios the driver reads its hosts from (molecule/<name>/molecule.yml):
# combination 2 (puppetserver 8 on Debian 13, one LB terminating TLS, the CA behind it),
# combination 4 (puppetserver 8 on Debian 13, one LB) and combination 5 (puppetserver 7
# on Debian 12, an LB pair on a virtual IP, one certificate shared by the masters).
SCENARIOS = ("combo2", "combo4", "combo5")
# The units that compile catalogs (puppetserver's JVM, Passenger Standalone's Ruby
# processes): the rest of a master's units are its front. apache2 on a legacy master runs
# mod_passenger, whose Ruby processes live in apache2's cgroup: front and compiler at once.
COMPILER_UNITS = ("puppetserver", "puppet-passenger")
# The legacy scenario (Puppet 5.5 under Passenger on Debian 11) differs in every path and
# unit: its row is written out.
LEGACY_DOMAIN = "domain.com"
LEGACY = {
    "ca": f"ca5.{LEGACY_DOMAIN}", "lbs": [f"lb5.{LEGACY_DOMAIN}"], "shared_name": f"puppet5.{LEGACY_DOMAIN}",
    "agent": f"agent5.{LEGACY_DOMAIN}", "domain": LEGACY_DOMAIN, "virtual_ip": "", "combination": 4, "lb_mode": "tcp",
    "masters": {"master5a": f"master5a.{LEGACY_DOMAIN}", "master5b": f"master5b.{LEGACY_DOMAIN}"},
    "front_service": {"master5a": "apache2", "master5b": "nginx"},
    "front_label": {"master5a": "Puppet 5.5, apache + mod_passenger",
                    "master5b": "Puppet 5.5, nginx + Passenger Standalone"},
    "master_units": {"master5a": ("apache2",), "master5b": ("puppet-passenger", "nginx")},
    "ca_unit": "apache2",
    "ca_cert_path": "/var/lib/puppet/ssl/ca/ca_crt.pem",
    # Puppet 5's Ruby CA: one name per call (its CLI takes several, but a failure
    # half-way would leave the batch unclear).
    "ca_generate": ["puppet", "cert", "generate"], "ca_generate_batch": False,
    # The Rack master has no /status/v1; Debian's config.ru wants an environment.
    "status_path": "/puppet/v3/status/ready?environment=production", "status_body": b'"is_alive":true',
    "codedir": "/etc/puppet/code",
}
LABS = (*SCENARIOS, "legacy")


def expand(value):
    """Molecule's ${VAR} and ${VAR:-default} in a molecule.yml string, from the environment."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)


def scenario_spec(name):
    """A lab's hosts and names from its Molecule scenario: the platforms' groups and the
    inventory's group_vars, as the play reads them."""
    with open(os.path.join(ROOT, "molecule", name, "molecule.yml"), encoding="utf-8") as fh:
        scenario = yaml.safe_load(fh)
    groups = {}
    for platform in scenario["platforms"]:
        for group in platform.get("groups", []):
            groups.setdefault(group, []).append(platform["name"])
    group_vars = scenario["provisioner"]["inventory"]["group_vars"]
    cluster = {k: expand(v) for k, v in group_vars.get("all", {}).items()}

    def host_var(host, var, default):
        for group, hosts in groups.items():
            if host in hosts and var in group_vars.get(group, {}):
                return expand(group_vars[group][var])
        return cluster.get(var, default)

    masters = {h.split(".")[0]: h for h in groups["puppet_masters"]}
    fronts = {k: host_var(h, "puppet_master_frontend", "nginx") for k, h in masters.items()}
    shared_name = cluster["puppet_cluster_server_name"]
    return dict(
        PUPPETSERVER,
        ca=groups["puppet_ca"][0], lbs=groups["puppet_lb"], shared_name=shared_name,
        agent=groups["puppet_agents"][0], domain=shared_name.split(".", 1)[1], masters=masters,
        combination=int(cluster["puppet_cluster_combination"]),
        # tcp: the LB passes TLS through; tls: it ends TLS and checks the agents' certificates.
        lb_mode=cluster.get("puppet_lb_mode", cluster.get("puppet_cluster_lb_mode", "tcp")),
        virtual_ip=cluster.get("puppet_cluster_lb_virtual_ip", "") if len(groups["puppet_lb"]) > 1 else "",
        front_service={k: FRONT_UNITS[f] for k, f in fronts.items()},
        front_label={k: f"{f} front" if f != "none" else "no front" for k, f in fronts.items()},
        master_units={k: ("puppetserver",) + ((FRONT_UNITS[f],) if f != "none" else ()) for k, f in fronts.items()},
    )


def lab_spec(name):
    return LEGACY if name == "legacy" else scenario_spec(name)


def docker(*args, check=True, capture=True, input_bytes=None):
    res = subprocess.run(["docker", *args], capture_output=capture, input=input_bytes, check=False)
    if check and res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip() if capture else ""
        raise RuntimeError(f"docker {' '.join(args[:3])}...: exit {res.returncode}: {err[-400:]}")
    return res


def ip_of(host):
    out = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", host).stdout
    ip = out.decode().strip()
    if not ip:
        raise RuntimeError(f"{host} has no IP address")
    return ip


def container_cpu_seconds(host):
    """CPU time a container has used since it started, from its cgroup's accounting on this
    host (cgroup v1 cpuacct with Docker's cgroupfs driver, or cgroup v2 with systemd's)."""
    cid = docker("inspect", "-f", "{{.Id}}", host).stdout.decode().strip()
    v1 = f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage"
    if os.path.exists(v1):
        with open(v1, encoding="ascii") as fh:
            return int(fh.read()) / 1e9
    with open(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", encoding="ascii") as fh:
        stat = dict(line.split() for line in fh if line.strip())
    return int(stat["usage_usec"]) / 1e6


def set_cpuset(host, cpus):
    # An empty original means "all CPUs"; docker update needs them spelled out.
    value = cpus or f"0-{os.cpu_count() - 1}"
    docker("update", "--cpuset-cpus", value, host)


class LabInUse(RuntimeError):
    """A converge or test started driving the lab while a drill had it in a changed state."""


# ---------------------------------------------------------------- is someone else using the lab?

# Converges and tests of the lab restart services without the lock; a measurement that
# overlaps one is flagged instead of being reported as a clean figure.
# Check-mode playbooks change nothing and are not counted, nor are pytest runs of unit tests
# (`./lab sanity|lint|unit` never touch the containers; `./lab test` shows up as molecule).
OTHER_ACTIVITY = ("ansible-playbook", "molecule ", "pytest")


def drives_the_lab(cmd):
    """Whether a process's command line is a converge or test of the lab (OTHER_ACTIVITY)."""
    return (any(key in cmd for key in OTHER_ACTIVITY) and "--check" not in cmd
            and ("pytest" not in cmd or "molecule/" in cmd))


def lab_network(environ):
    """The lab network a process works on: LAB_NETWORK, as Molecule and ./lab read it."""
    return environ.get("LAB_NETWORK") or "puppet-lab"


def process_network(pid):
    """lab_network() of another process, from its environment (inherited by the
    ansible-playbook and pytest runs Molecule starts)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            pairs = [item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item]
    except OSError:
        return lab_network({})
    return lab_network({k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs})


def lab_busy():
    """Command lines of host processes that drive the lab (ansible, molecule, ./lab); a
    scenario run on another lab network (a second lab on the machine) does not count."""
    found = []
    mine = lab_network(os.environ)
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if drives_the_lab(cmd) and process_network(pid) == mine:
            found.append(cmd[:120])
    return found


def poll(what, predicate, timeout, interval=0.5, abort_if_busy=False):
    """Polls predicate() until it is true; raises after timeout seconds. With abort_if_busy,
    raises LabInUse as soon as someone else drives the lab (lab_busy())."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if abort_if_busy and lab_busy():
            raise LabInUse(f"while waiting for {what}: {lab_busy()[0][:100]}")
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - a failing probe means "not yet"
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def wait_quiet(timeout):
    if lab_busy():
        log(f"the lab is busy ({lab_busy()[0][:70]}...): waiting up to {timeout}s for it to finish")
    try:
        poll("no ansible/molecule run on the lab", lambda: not lab_busy(), timeout, interval=5)
        return True
    except TimeoutError:
        log(f"the lab is still busy after {timeout}s: {lab_busy()[:1]}")
        return False


class Lab:
    """One lab's hosts and names, and what a block or drill does to them."""

    def __init__(self, name, environment="production"):
        spec = lab_spec(name)
        self.name = name
        self.ca = spec["ca"]
        # The load balancers: one, or a pair sharing virtual_ip (keepalived).
        self.lbs = spec["lbs"]
        self.virtual_ip = spec["virtual_ip"]
        # The name agents use for the cluster: the LB's certificate is valid for it.
        self.shared_name = spec["shared_name"]
        self.domain = spec["domain"]
        self.combination = spec["combination"]
        self.lb_mode = spec["lb_mode"]
        self.agent = spec["agent"]
        self.masters = spec["masters"]  # key (puppet1...) -> host
        self.front_service = spec["front_service"]
        self.front_label = spec["front_label"]
        self.master_units = spec["master_units"]
        self.ca_unit = spec["ca_unit"]
        self.ca_cert_path = spec["ca_cert_path"]
        self.ca_generate = spec["ca_generate"]
        self.ca_generate_batch = spec["ca_generate_batch"]
        self.status_path = spec["status_path"]
        self.status_body = spec["status_body"]
        self.codedir = spec["codedir"]
        # The code the masters compile: the lab's own ("production") or env.py's ("bench").
        self.environment = environment
        # Set while a drill has stopped something: every wait checks that nobody else uses the
        # lab, and gives up (the drill's finally blocks restore the lab at once) when someone does.
        self.guard = False
        # Locust runs started in the background by a drill: ended if the drill is aborted.
        self.background = []
        self._container_ids = {}

    # ------------------------------------------------------------ names

    @property
    def lb(self):
        """The load balancer agents reach: the one holding the virtual IP in a pair."""
        if not self.virtual_ip:
            return self.lbs[0]
        holders = self.virtual_ip_holders()
        if len(holders) != 1:
            raise RuntimeError(f"{self.virtual_ip} is held by {holders or 'no load balancer'}")
        return holders[0]

    def virtual_ip_holders(self):
        """The running load balancers that have the virtual IP on an interface."""
        running = docker("ps", "--format", "{{.Names}}").stdout.decode().split()
        return [lb for lb in self.lbs if lb in running and f"inet {self.virtual_ip}/" in
                self.run_in(lb, "ip", "-4", "-o", "addr", "show", check=False).stdout.decode()]

    def lb_engine(self, lb=None):
        """What serves the shared name on a load balancer now: haproxy or nginx (the site
        play switches it with puppet_cluster_lb_engine)."""
        return "haproxy" if self.service_active(lb or self.lb, "haproxy") else "nginx"

    def converge(self, engines, certname, logpath):
        """The scenario's converge (as `molecule converge -s <lab>` with ./lab's environment),
        with engines[lb] as each load balancer's puppet_lb_engine: host variables in an extra
        inventory beside Molecule's, so that the two hosts of a pair may run different engines.
        Returns once every load balancer serves the shared name with its engine."""
        if not shutil.which("molecule"):
            raise RuntimeError("molecule is not on PATH: run bench/run with the lab's environment (./lab, molecule_env)")
        inventory = os.path.join(os.path.dirname(logpath), "lb-engines-inventory.yml")
        with open(inventory, "w", encoding="utf-8") as fh:
            yaml.safe_dump({"all": {"hosts": {lb: {"puppet_lb_engine": e} for lb, e in engines.items()}}}, fh,
                           explicit_start=True)
        log(f"converging {self.name} with {', '.join(f'{e} on {lb}' for lb, e in engines.items())} (log: {logpath})")
        with open(logpath, "a", encoding="utf-8") as out:
            rc = subprocess.run(["molecule", "converge", "-s", self.name, "--", "-i", inventory],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0:
            raise RuntimeError(f"molecule converge -s {self.name} exited {rc}; see {logpath}")
        for lb, engine in engines.items():
            self.wait_for(f"{engine} serving {self.shared_name} on {lb}", lambda b=lb, e=engine: (
                self.lb_engine(b) == e and self.status_ok(ip_of(b), self.shared_name, certname)), 120)

    def tls_name(self, key):
        """The name a master's certificate is valid for: its own, or the shared one in combination 5."""
        return self.shared_name if self.combination == 5 else self.masters[key]

    @property
    def bench_env_dir(self):
        return f"{self.codedir}/environments/bench"

    def results_name(self, block):
        """The name of a block's result directories: the combo4 lab's bare, others' prefixed."""
        return block if self.name == "combo4" else f"{self.name}-{block}"

    def server_list(self):
        """An agent's server_list: the LB's shared name first, then each master."""
        return ",".join(f"{h}:{PORT}" for h in [self.shared_name, *self.masters.values()])

    # ------------------------------------------------------------ running things

    def run_in(self, host, *cmd, check=True):
        """`docker exec host cmd...`; the result has stdout and stderr as bytes."""
        return docker("exec", host, *cmd, check=check)

    def copy_to(self, host, source, target):
        """Copy a file of this host into a lab container (a program to run there). Through
        `docker exec`, not `docker cp`: the containers' /tmp is a tmpfs, and `docker cp` writes
        below it, into the container's file system, where nothing inside sees the file."""
        with open(source, "rb") as fh:
            docker("exec", "-i", host, "sh", "-c", f"cat > {target}", input_bytes=fh.read())

    def wait_for(self, what, predicate, timeout, interval=0.5):
        """poll(), which gives up with LabInUse while the guard is on and someone drives the lab."""
        poll(what, predicate, timeout, interval, abort_if_busy=self.guard)

    def stop_background(self):
        for proc in self.background:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()

    def wait_present(self, timeout=900):
        names = [self.ca, *self.lbs, *self.masters.values()]

        def present():
            out = docker("ps", "--format", "{{.Names}}").stdout.decode().split()
            return all(n in out for n in names)

        self.wait_for("the lab containers (docker ps)", present, timeout, interval=5)

    # ------------------------------------------------------------ services

    def service(self, host, unit, action):
        self.run_in(host, "systemctl", action, unit)

    def service_active(self, host, unit):
        return self.run_in(host, "systemctl", "is-active", unit, check=False).stdout.decode().strip() == "active"

    def services(self):
        """(host, units) of every lab service a measurement depends on."""
        return ([(self.masters[k], self.master_units[k]) for k in self.masters]
                + [(lb, (self.lb_engine(lb),)) for lb in self.lbs] + [(self.ca, (self.ca_unit,))])

    def service_stamps(self):
        """When each lab service last (re)started: a change during a run means it was disturbed."""
        stamps = {}
        for host, units in self.services():
            for unit in units:
                out = self.run_in(host, "systemctl", "show", "-p", "ActiveEnterTimestamp", "--value", unit, check=False)
                stamps[f"{host}:{unit}"] = out.stdout.decode().strip()
        return stamps

    def disturbances(self, stamps_before, busy_before, ignore_restarts=False):
        """What disturbed a measurement that began with these stamps and lab_busy() answer:
        lab services restarted meanwhile, and converges or tests driving the lab."""
        after = self.service_stamps()
        restarted = set() if ignore_restarts else {f"{k} restarted" for k in stamps_before
                                                   if stamps_before[k] != after.get(k)}
        busy = busy_before + lab_busy()
        return sorted(restarted | ({"ansible/molecule running on the lab"} if busy else set()))

    def status_ok(self, addr, name, certname):
        """The lab's readiness endpoint answers through this entry point (status_path)."""
        status, body = https_request(addr, name, "GET", self.status_path, certname=certname, timeout=5)
        return status == 200 and self.status_body in body

    def stop_front(self, key):
        host = self.masters[key]
        self.service(host, self.front_service[key], "stop")
        addr = ip_of(host)
        self.wait_for(f"{host}:{PORT} closed", lambda: port_closed(addr), 60)

    def start_front(self, key, certname):
        self.guard = False  # restoring: nothing may stop this wait early
        host = self.masters[key]
        self.service(host, self.front_service[key], "start")
        addr = ip_of(host)
        self.wait_for(f"{host} ready through its front", lambda: self.status_ok(addr, self.tls_name(key), certname), 120)

    def restart_puppetserver(self, key, certname):
        host = self.masters[key]
        log(f"restarting puppetserver on {host}")
        self.service(host, "puppetserver", "restart")
        addr = ip_of(host)
        self.wait_for(f"{host} ready through its front", lambda: self.status_ok(addr, self.tls_name(key), certname), 300)

    # ------------------------------------------------------------ CPU accounting (cpu.py)

    def cpu_components(self):
        """[(name, category, cgroup dir, cgroup dirs to subtract)] of every lab container but
        the agent's: each LB and the CA whole, each master as its units (front, compiler)
        and the rest of its container."""
        comps = []
        for lb in self.lbs:
            comps.append((f"{lb.split('.', maxsplit=1)[0]} (container)", "lb", container_cgroup(self.container_id(lb)), ()))
        for key, host in self.masters.items():
            root = container_cgroup(self.container_id(host))
            units = [f"{root}/system.slice/{unit}.service" for unit in self.master_units[key]]
            for unit, path in zip(self.master_units[key], units):
                if unit in COMPILER_UNITS:
                    category = "compiler"
                elif self.name == "legacy" and unit == "apache2":
                    category = "front+compiler"
                else:
                    category = "front"
                comps.append((f"{key} {unit}", category, path, ()))
            comps.append((f"{key} other", "master other", root, tuple(units)))
        comps.append((f"{self.ca.split('.')[0]} (container)", "ca", container_cgroup(self.container_id(self.ca)), ()))
        return comps

    def container_id(self, host):
        """The full id of a container (its cgroup's name), asked once per Lab."""
        if host not in self._container_ids:
            self._container_ids[host] = docker("inspect", "-f", "{{.Id}}", host).stdout.decode().strip()
        return self._container_ids[host]

    # ------------------------------------------------------------ state a block may change

    def cpusets(self):
        return {h: docker("inspect", "-f", "{{.HostConfig.CpusetCpus}}", h).stdout.decode().strip()
                for h in self.masters.values()}

    def state(self):
        """The services a block or drill may stop, and the masters' CPU sets."""
        units = {(self.masters[k], unit) for k in self.masters for unit in self.master_units[k]} | {(self.ca, self.ca_unit)}
        return {"active": {u: self.service_active(*u) for u in units}, "cpusets": self.cpusets()}

    def restore(self, initial, certname):
        """Safety net after every block and drill: whatever was running at its start runs again."""
        for (host, unit), was_active in initial["active"].items():
            if was_active and not self.service_active(host, unit):
                log(f"safety net: starting {unit} on {host} again")
                self.service(host, unit, "start")
                name = self.shared_name if self.combination == 5 and host != self.ca else host
                self.wait_for(f"{host} ready", lambda h=host, n=name: self.status_ok(ip_of(h), n, certname), 240)
        for host, cpus in initial["cpusets"].items():
            if self.cpusets()[host] != cpus and cpus:
                set_cpuset(host, cpus)

    # ------------------------------------------------------------ entry points

    def ca_fingerprint(self):
        pem = self.run_in(self.ca, "cat", self.ca_cert_path).stdout
        return hashlib.sha256(pem).hexdigest()

    def entry_points(self):
        """name -> (address, TLS name) of every way into the masters."""
        eps = {key: (ip_of(host), self.tls_name(key)) for key, host in self.masters.items()}
        eps["lb"] = (self.virtual_ip or ip_of(self.lb), self.shared_name)
        return eps

    def wait_masters_ready(self, certname, timeout=240):
        eps = self.entry_points()
        for key in self.masters:
            addr, name = eps[key]
            self.wait_for(f"{name} {self.status_path} through its front",
                          lambda a=addr, n=name: self.status_ok(a, n, certname), timeout)
