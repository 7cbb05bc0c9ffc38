"""Load measurements and fault drills on the combination 4 lab (docs/load.md).

Called by bench/run:
  load [--block NAME ...] [--lab combo4|legacy] [--environment production|bench]
       [--users N] [--duration S] [--warmup S] [--plot-only]
  drill master-down|ca-down|revoke-under-load|lb-restart [--users N] [--master puppet1|puppet2]

Every block that loads the lab heavily or changes its state runs as its own
`flock /tmp/lab.lock` invocation of this script (`_locked <block>`), restores what it
changed before it returns, and stays under six minutes. Results go to
bench/.state/results/<UTC time>-<block>/ (summary.json, Locust CSV files, per-request log).
"""

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import http.client
import io
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
STATE = os.path.join(BENCH, ".state")
CERTDIR = os.path.join(STATE, "certs")
RESULTS = os.path.join(STATE, "results")
IMGDIR = os.path.join(ROOT, "docs", "img")
LOCKFILE = "/tmp/lab.lock"
LOCUSTFILE = os.path.join(HERE, "locustfile.py")
FACTS = os.path.join(HERE, "facts.json")

DOMAIN = "domain.com"
# The labs the driver knows: Molecule's combination 4 (puppetserver 8.7 on Debian 13) and the
# legacy scenario (Puppet 5.5 under Passenger on Debian 11), each before any migration.
# `--lab` picks one; use_lab() binds these names for the rest of the script.
LABS = {
    "combo4": {
        "CA": f"puppetca.{DOMAIN}", "LB": f"puppetlb.{DOMAIN}", "SHARED_NAME": f"puppet.{DOMAIN}",
        "AGENT": f"agent1.{DOMAIN}",
        "MASTERS": {"puppet1": f"puppet1.{DOMAIN}", "puppet2": f"puppet2.{DOMAIN}"},
        # Each master's TLS front (molecule/combo4/molecule.yml) and the units that serve it.
        "FRONT_SERVICE": {"puppet1": "nginx", "puppet2": "apache2"},
        "FRONT_LABEL": {"puppet1": "nginx front", "puppet2": "apache front"},
        "MASTER_UNITS": {"puppet1": ("puppetserver", "nginx"), "puppet2": ("puppetserver", "apache2")},
        "CA_UNIT": "puppetserver",
        "CA_CERT_PATH": "/etc/puppet/puppetserver/ca/ca_crt.pem",
        # One call for any number of names, comma-separated.
        "CA_GENERATE": ["puppetserver", "ca", "generate", "--certname"], "CA_GENERATE_BATCH": True,
        "STATUS_PATH": "/status/v1/simple", "STATUS_BODY": b"running",
        "CODEDIR": "/etc/puppet/code",
    },
    "legacy": {
        "CA": f"ca5.{DOMAIN}", "LB": f"lb5.{DOMAIN}", "SHARED_NAME": f"puppet5.{DOMAIN}",
        "AGENT": f"agent5.{DOMAIN}",
        "MASTERS": {"master5a": f"master5a.{DOMAIN}", "master5b": f"master5b.{DOMAIN}"},
        "FRONT_SERVICE": {"master5a": "apache2", "master5b": "nginx"},
        "FRONT_LABEL": {"master5a": "Puppet 5.5, apache + mod_passenger",
                        "master5b": "Puppet 5.5, nginx + Passenger Standalone"},
        "MASTER_UNITS": {"master5a": ("apache2",), "master5b": ("puppet-passenger", "nginx")},
        "CA_UNIT": "apache2",
        "CA_CERT_PATH": "/var/lib/puppet/ssl/ca/ca_crt.pem",
        # Puppet 5's Ruby CA: one name per call (its CLI takes several, but a failure
        # half-way would leave the batch unclear).
        "CA_GENERATE": ["puppet", "cert", "generate"], "CA_GENERATE_BATCH": False,
        # The Rack master has no /status/v1; Debian's config.ru wants an environment.
        "STATUS_PATH": "/puppet/v3/status/ready?environment=production", "STATUS_BODY": b'"is_alive":true',
        "CODEDIR": "/etc/puppet/code",
    },
}
LAB = "combo4"
# Bound by use_lab() from LABS (spelled out here so that readers and linters see them).
CA = LB = SHARED_NAME = AGENT = CA_UNIT = CA_CERT_PATH = STATUS_PATH = CODEDIR = ""
STATUS_BODY = b""
MASTERS, FRONT_SERVICE, FRONT_LABEL, MASTER_UNITS, CA_GENERATE = {}, {}, {}, {}, []
CA_GENERATE_BATCH = False


def use_lab(name):
    global LAB
    LAB = name
    globals().update(LABS[name])


use_lab("combo4")
SSLDIR = "/var/lib/puppet/ssl"
PORT = 8140
N_CERTS = 16
LOCK_BUDGET_S = 360
# How long to wait for the lab to be free of converges and tests before measuring anyway.
QUIET_WAIT_S = 600
# Blocks that change nothing measure anyway after this long; their results are flagged.
QUIET_WAIT_MEASURE_S = 120


def log(msg):
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


def docker(*args, check=True, capture=True, input_bytes=None):
    res = subprocess.run(["docker", *args], capture_output=capture, input=input_bytes, check=False)
    if check and res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip() if capture else ""
        raise RuntimeError(f"docker {' '.join(args[:3])}...: exit {res.returncode}: {err[-400:]}")
    return res


def dexec(host, *cmd, check=True):
    return docker("exec", host, *cmd, check=check)


def ip_of(host):
    out = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", host).stdout
    ip = out.decode().strip()
    if not ip:
        raise RuntimeError(f"{host} has no IP address")
    return ip


class LabInUse(RuntimeError):
    """A converge or test started driving the lab while a drill had it in a changed state."""


# Set while a drill has stopped something: every wait checks that nobody else uses the lab,
# and gives up (the drill's finally blocks restore the lab at once) when someone does.
GUARD = {"on": False}
# Locust runs started in the background by a drill: ended if the drill is aborted.
BACKGROUND = []


def wait_for(what, predicate, timeout, interval=0.5):
    """Polls predicate() until it is true; raises after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if GUARD["on"] and lab_busy():
            raise LabInUse(f"while waiting for {what}: {lab_busy()[0][:100]}")
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - a failing probe means "not yet"
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def wait_lab_present(timeout=900):
    names = [CA, LB, *MASTERS.values()]

    def present():
        out = docker("ps", "--format", "{{.Names}}").stdout.decode().split()
        return all(n in out for n in names)

    wait_for("the lab containers (docker ps)", present, timeout, interval=5)


# ---------------------------------------------------------------- is someone else using the lab?

# Converges and tests of the lab restart services without the lock; a measurement that
# overlaps one is flagged instead of being reported as a clean figure.
# Check-mode playbooks change nothing and are not counted, nor are pytest runs of unit tests
# (`./lab sanity|lint|unit` never touch the containers; `./lab test` shows up as molecule).
OTHER_ACTIVITY = ("ansible-playbook", "molecule ", "pytest")


def lab_busy():
    """Command lines of host processes that drive the lab (ansible, molecule, ./lab)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (any(key in cmd for key in OTHER_ACTIVITY) and "--check" not in cmd
                and ("pytest" not in cmd or "molecule/" in cmd)):
            found.append(cmd[:120])
    return found


def wait_quiet(timeout):
    if lab_busy():
        log(f"the lab is busy ({lab_busy()[0][:70]}...): waiting up to {timeout}s for it to finish")
    try:
        wait_for("no ansible/molecule run on the lab", lambda: not lab_busy(), timeout, interval=5)
        return True
    except TimeoutError:
        log(f"the lab is still busy after {timeout}s: {lab_busy()[:1]}")
        return False


def disturbances(stamps_before, busy_before, ignore_restarts=False):
    """What disturbed a measurement that began with these stamps and lab_busy() answer:
    lab services restarted meanwhile, and converges or tests driving the lab."""
    after = service_stamps()
    restarted = set() if ignore_restarts else {f"{k} restarted" for k in stamps_before
                                               if stamps_before[k] != after.get(k)}
    busy = busy_before + lab_busy()
    return sorted(restarted | ({"ansible/molecule running on the lab"} if busy else set()))


def service_stamps():
    """When each lab service last (re)started: a change during a run means it was disturbed."""
    stamps = {}
    for host, units in ([(MASTERS[k], MASTER_UNITS[k]) for k in MASTERS]
                        + [(LB, ("nginx",)), (CA, (CA_UNIT,))]):
        for unit in units:
            out = dexec(host, "systemctl", "show", "-p", "ActiveEnterTimestamp", "--value", unit, check=False)
            stamps[f"{host}:{unit}"] = out.stdout.decode().strip()
    return stamps


# ---------------------------------------------------------------- TLS probes

def tls_context(certname=None):
    ctx = ssl.create_default_context(cafile=os.path.join(CERTDIR, "ca.pem"))
    if certname:
        ctx.load_cert_chain(os.path.join(CERTDIR, "certs", f"{certname}.pem"),
                            os.path.join(CERTDIR, "private_keys", f"{certname}.pem"))
    return ctx


def https_request(addr, name, method, path, certname=None, body=None, headers=None, timeout=10):
    """One HTTPS request to addr with SNI/Host `name`; returns (status, body bytes)."""
    conn = http.client.HTTPSConnection(addr, PORT, context=tls_context(certname), timeout=timeout)
    # Connect to the address, but verify the certificate and send SNI for the name.
    conn.sock = tls_context(certname).wrap_socket(
        socket.create_connection((addr, PORT), timeout), server_hostname=name)
    try:
        hdrs = {"Host": f"{name}:{PORT}", "Accept": "application/json"}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def status_ok(addr, name, certname):
    """The lab's readiness endpoint answers through this entry point (STATUS_PATH)."""
    status, body = https_request(addr, name, "GET", STATUS_PATH, certname=certname, timeout=5)
    return status == 200 and STATUS_BODY in body


def port_closed(addr):
    try:
        socket.create_connection((addr, PORT), timeout=2).close()
        return False
    except OSError:
        return True


# ---------------------------------------------------------------- certificates

def ca_fingerprint():
    pem = dexec(CA, "cat", CA_CERT_PATH).stdout
    return hashlib.sha256(pem).hexdigest()


def load_certnames(n=N_CERTS):
    return [f"load-{i:03d}.{DOMAIN}" for i in range(1, n + 1)]


def ensure_certs(names):
    """Client certificates signed by the lab's CA, copied to bench/.state/certs (keys 0600)."""
    fp = ca_fingerprint()
    stamp = os.path.join(CERTDIR, "ca.sha256")
    if os.path.exists(stamp) and open(stamp).read().strip() != fp:
        log("the lab's CA changed (recreated lab): dropping the old client certificates")
        shutil.rmtree(CERTDIR)
    os.makedirs(os.path.join(CERTDIR, "certs"), exist_ok=True)
    os.makedirs(os.path.join(CERTDIR, "private_keys"), mode=0o700, exist_ok=True)
    with open(os.path.join(CERTDIR, "ca.pem"), "wb") as fh:
        fh.write(dexec(CA, "cat", f"{SSLDIR}/certs/ca.pem").stdout)
    missing = [n for n in names if not os.path.exists(os.path.join(CERTDIR, "private_keys", f"{n}.pem"))]
    if missing:
        on_ca = dexec(CA, "sh", "-c", f"ls {SSLDIR}/private_keys/").stdout.decode().split()
        to_generate = [n for n in missing if f"{n}.pem" not in on_ca]
        if to_generate:
            log(f"generating {len(to_generate)} client certificates on the CA")
            if CA_GENERATE_BATCH:
                dexec(CA, *CA_GENERATE, ",".join(to_generate))
            else:
                for n in to_generate:
                    dexec(CA, *CA_GENERATE, n)
        for n in missing:
            cert = dexec(CA, "cat", f"{SSLDIR}/certs/{n}.pem").stdout
            key = dexec(CA, "cat", f"{SSLDIR}/private_keys/{n}.pem").stdout
            with open(os.path.join(CERTDIR, "certs", f"{n}.pem"), "wb") as fh:
                fh.write(cert)
            fd = os.open(os.path.join(CERTDIR, "private_keys", f"{n}.pem"),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
    with open(stamp, "w") as fh:
        fh.write(fp + "\n")


# ---------------------------------------------------------------- entry points

def entry_points():
    """name -> (address, TLS name) of every way into the masters."""
    eps = {key: (ip_of(host), host) for key, host in MASTERS.items()}
    eps["lb"] = (ip_of(LB), SHARED_NAME)
    return eps


def wait_masters_ready(certname, timeout=240):
    eps = entry_points()
    for key in MASTERS:
        addr, name = eps[key]
        wait_for(f"{name} {STATUS_PATH} through its front",
                 lambda a=addr, n=name: status_ok(a, n, certname), timeout)


# ---------------------------------------------------------------- the code the masters compile

# `--environment bench`: code shaped like a real control repository rather than the lab's
# two resources (the architecture brief's hand measurements used a 300-resource catalog):
# BENCH_MODULES modules, each a parameterised class that declares BENCH_FILES_PER_MODULE files
# from an EPP template, all included by site.pp: 302 resources (336 catalog entries with the
# classes), and 30 manifests and 30 templates that a master without environment caching
# parses again for every request. The notify names the compiling master as the lab's own
# code does (molecule/shared/code), which the locustfile checks. Written for Puppet 5.5 and
# 8 alike.
BENCH_MODULES = 30
BENCH_FILES_PER_MODULE = 10
BENCH_SITE = r"""# Written by bench/load/driver.py for the duration of a measurement, then removed.
node default {
  $compiled_on = regsubst(generate('/bin/cat', '/etc/hostname'), '\s+$', '')
  notify { 'puppet-cluster-proof':
    message => "compiled by ${server_facts['servername']} on ${compiled_on}",
  }
  file { '/var/tmp/puppet-bench':
    ensure => directory,
  }
%s}
"""
BENCH_CLASS = r"""# A bench module: %(files)d files from a template, as a typical profile would.
class bench_%(n)02d (
  String $owner = 'root',
  Integer $copies = %(files)d,
) {
  Integer[1, $copies].each |$i| {
    file { "/var/tmp/puppet-bench/m%(n)02d-${i}.conf":
      ensure  => file,
      owner   => $owner,
      mode    => '0644',
      content => epp('bench_%(n)02d/settings.epp', {'index' => $i, 'node' => $trusted['certname']}),
      require => File['/var/tmp/puppet-bench'],
    }
  }
}
"""
BENCH_TEMPLATE = """<%%- | Integer $index, String $node | -%%>
# bench module %(n)02d, file <%%= $index %%> of %(files)d, for <%%= $node %%>
<%% [1, 2, 3].each |$k| { -%%>
setting_<%%= $k %%> = <%%= $index * $k %%>
<%% } -%%>
"""


def bench_env_files():
    """path inside the environment -> content."""
    includes = "".join(f"  include bench_{n:02d}\n" for n in range(1, BENCH_MODULES + 1))
    files = {"manifests/site.pp": BENCH_SITE % includes}
    for n in range(1, BENCH_MODULES + 1):
        files[f"modules/bench_{n:02d}/manifests/init.pp"] = BENCH_CLASS % {"n": n, "files": BENCH_FILES_PER_MODULE}
        files[f"modules/bench_{n:02d}/templates/settings.epp"] = BENCH_TEMPLATE % {"n": n, "files": BENCH_FILES_PER_MODULE}
    return files


CODE = {"environment": "production"}


def bench_env_dir():
    return f"{CODEDIR}/environments/bench"


def install_bench_env():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content in bench_env_files().items():
            data = content.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    for host in MASTERS.values():
        docker("exec", "-i", host, "sh", "-c",
               f"rm -rf {bench_env_dir()} && mkdir -p {bench_env_dir()} && tar -x -C {bench_env_dir()} --no-same-owner",
               input_bytes=buf.getvalue())
    if LAB == "combo4":
        # New code under environment_timeout = unlimited: flush the cache as the play's code
        # deployment does (reload puppetserver), or a previous version of this code is served.
        for host in MASTERS.values():
            dexec(host, "systemctl", "reload", "puppetserver")


def remove_bench_env():
    for host in MASTERS.values():
        dexec(host, "rm", "-rf", bench_env_dir(), check=False)


# ---------------------------------------------------------------- Locust

def run_locust(outdir, tag, entry, users, duration, certnames, reqlog=True, background=False):
    addr, name = entry
    env = dict(os.environ,
               BENCH_ADDR=addr, BENCH_TLS_NAME=name, BENCH_PORT=str(PORT), BENCH_CERTDIR=CERTDIR,
               BENCH_CERTNAMES=",".join(certnames), BENCH_FACTS=FACTS, BENCH_TAG=tag,
               BENCH_ENVIRONMENT=CODE["environment"],
               BENCH_REQLOG=os.path.join(outdir, f"{tag}-requests.csv") if reqlog else "")
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--only-summary",
           "-u", str(users), "-r", str(users), "-t", f"{duration}s", "--stop-timeout", "60",
           "--loglevel", "WARNING", "--csv", os.path.join(outdir, tag), "--exit-code-on-error", "0"]
    logf = open(os.path.join(outdir, f"{tag}-locust.log"), "w")
    proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=outdir)
    if background:
        BACKGROUND.append(proc)
        return proc
    before, busy = service_stamps(), lab_busy()
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"locust {tag} exited {rc}; see {logf.name}")
    res = summarize(outdir, tag)
    res["disturbed"] = disturbances(before, busy)
    with open(os.path.join(outdir, f"{tag}-disturbed.json"), "w") as fh:
        json.dump(res["disturbed"], fh)
    return res


def read_reqlog(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def percentile(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(p * len(sorted_vals)))]


def summarize(outdir, tag):
    """Figures of one run from the per-request log (every request, including those finished
    during Locust's stop timeout; Locust's own CSV files stay next to it as raw output)."""
    rows = read_reqlog(os.path.join(outdir, f"{tag}-requests.csv"))
    if not rows:
        raise RuntimeError(f"{tag}: no requests logged")
    first = min(float(r["t_end"]) - float(r["ms"]) / 1000 for r in rows)
    last = max(float(r["t_end"]) for r in rows)
    ok_cat = sorted(float(r["ms"]) for r in rows if r["name"] == "catalog" and not r["error"])
    compiled, errors_by_kind = {}, {}
    for r in rows:
        if r["name"] == "catalog" and not r["error"]:
            compiled[r["compiled_on"]] = compiled.get(r["compiled_on"], 0) + 1
        if r["error"]:
            kind = f"{r['name']}: {r['error'][:60]}"
            errors_by_kind[kind] = errors_by_kind.get(kind, 0) + 1
    return {
        "tag": tag,
        "wall_s": round(last - first, 1),
        "catalogs": len(ok_cat),
        "catalogs_per_s": len(ok_cat) / (last - first),
        "catalog_p50_ms": percentile(ok_cat, 0.50),
        "catalog_p95_ms": percentile(ok_cat, 0.95),
        "requests": len(rows),
        "errors": sum(1 for r in rows if r["error"]),
        "errors_by_kind": errors_by_kind,
        "compiled_on": compiled,
        "disturbed": read_disturbed(outdir, tag),
    }


def read_disturbed(outdir, tag):
    path = os.path.join(outdir, f"{tag}-disturbed.json")
    return json.load(open(path)) if os.path.exists(path) else []


def warm_up(outdir, eps, users, seconds, certnames):
    for key in MASTERS:
        log(f"warming up {key} ({seconds}s, {users} users)")
        run_locust(outdir, f"warmup-{key}", eps[key], users, seconds, certnames)


# ---------------------------------------------------------------- lab state changes

def service(host, unit, action):
    dexec(host, "systemctl", action, unit)


def service_active(host, unit):
    return dexec(host, "systemctl", "is-active", unit, check=False).stdout.decode().strip() == "active"


def stop_front(key):
    host = MASTERS[key]
    service(host, FRONT_SERVICE[key], "stop")
    addr = ip_of(host)
    wait_for(f"{host}:{PORT} closed", lambda: port_closed(addr), 60)


def start_front(key, certname):
    GUARD["on"] = False  # restoring: nothing may stop this wait early
    host = MASTERS[key]
    service(host, FRONT_SERVICE[key], "start")
    addr = ip_of(host)
    wait_for(f"{host} ready through its front", lambda: status_ok(addr, host, certname), 120)


def cpusets():
    return {h: docker("inspect", "-f", "{{.HostConfig.CpusetCpus}}", h).stdout.decode().strip()
            for h in MASTERS.values()}


def set_cpuset(host, cpus):
    # An empty original means "all CPUs"; docker update needs them spelled out.
    value = cpus or f"0-{os.cpu_count() - 1}"
    docker("update", "--cpuset-cpus", value, host)


def lab_state():
    """The services a block or drill may stop, and the masters' CPU sets."""
    units = {(MASTERS[k], unit) for k in MASTERS for unit in MASTER_UNITS[k]} | {(CA, CA_UNIT)}
    return {"active": {u: service_active(*u) for u in units}, "cpusets": cpusets()}


def restore_lab(initial, certname):
    """Safety net after every block and drill: whatever was running at its start runs again."""
    for (host, unit), was_active in initial["active"].items():
        if was_active and not service_active(host, unit):
            log(f"safety net: starting {unit} on {host} again")
            service(host, unit, "start")
            wait_for(f"{host} ready", lambda h=host: status_ok(ip_of(h), h, certname), 240)
    for host, cpus in initial["cpusets"].items():
        if cpusets()[host] != cpus and cpus:
            set_cpuset(host, cpus)


# ---------------------------------------------------------------- measurement blocks

def new_outdir(block):
    path = os.path.join(RESULTS, f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{block}")
    os.makedirs(path, exist_ok=True)
    return path


def summarize_rounds(outdir, label, tags, masters):
    """One configuration measured in several rounds: figures over all its rounds together."""
    rows = []
    for tag in tags:
        rows += read_reqlog(os.path.join(outdir, f"{tag}-requests.csv"))
    per_round = [summarize(outdir, tag) for tag in tags]
    ok_cat = sorted(float(r["ms"]) for r in rows if r["name"] == "catalog" and not r["error"])
    wall = sum(r["wall_s"] for r in per_round)
    compiled, errors_by_kind = {}, {}
    for r in per_round:
        for k, v in r["compiled_on"].items():
            compiled[k] = compiled.get(k, 0) + v
        for k, v in r["errors_by_kind"].items():
            errors_by_kind[k] = errors_by_kind.get(k, 0) + v
    return {
        "label": label, "tags": tags, "masters": masters, "wall_s": round(wall, 1),
        "catalogs": len(ok_cat), "catalogs_per_s": len(ok_cat) / wall,
        "round_catalogs_per_s": [round(r["catalogs_per_s"], 1) for r in per_round],
        "catalog_p50_ms": percentile(ok_cat, 0.50), "catalog_p95_ms": percentile(ok_cat, 0.95),
        "requests": len(rows), "errors": sum(1 for r in rows if r["error"]),
        "errors_by_kind": errors_by_kind,
        "compiled_on": compiled,
        "disturbed": sorted({d for r in per_round for d in r.get("disturbed", [])}),
    }


def measure_rounds(args, outdir, certnames, configs):
    """Interleaves the configurations round by round, so that whatever else runs on the
    shared machine weighs on all of them alike. configs: (key, label, entry, masters, setup, undo)."""
    tags = {c[0]: [] for c in configs}
    for rnd in range(1, args.rounds + 1):
        for key, label, entry, _masters, setup, undo in configs:
            try:
                # Inside the try: a setup that fails half-way (front stopped, then aborted)
                # is undone as well.
                if setup:
                    setup()
                log(f"round {rnd}/{args.rounds}: {label} ({args.duration}s, {args.users} users)")
                tag = f"m-{key}-r{rnd}"
                run_locust(outdir, tag, entry, args.users, args.duration, certnames)
                tags[key].append(tag)
            finally:
                if undo:
                    undo()
    return [summarize_rounds(outdir, label, tags[key], masters) for key, label, _e, masters, _s, _u in configs]


def block_entry(args, outdir, certnames):
    """Each master direct (nginx and apache fronts) and the LB over both, same users and time."""
    eps = entry_points()
    warm_up(outdir, eps, args.users, args.warmup, certnames)
    return measure_rounds(args, outdir, certnames, [
        *[(key, f"{key} direct ({FRONT_LABEL[key]})", eps[key], 1, None, None) for key in MASTERS],
        ("lb", f"LB, two masters{' (Puppet 5.5 under Passenger)' if LAB == 'legacy' else ''}", eps["lb"], 2,
         None, None),
    ])


def only_puppet1_behind_lb(certname):
    def setup():
        log("stopping puppet2's front (apache2)")
        stop_front("puppet2")

    def undo():
        if not service_active(MASTERS["puppet2"], FRONT_SERVICE["puppet2"]):
            log("restoring puppet2's front")
            start_front("puppet2", certname)
    return setup, undo


def block_lb_one(args, outdir, certnames):
    """puppet1 direct vs the LB with puppet2's front stopped (one master behind the LB)."""
    eps = entry_points()
    warm_up(outdir, eps, args.users, args.warmup, certnames)
    setup, undo = only_puppet1_behind_lb(certnames[0])
    return measure_rounds(args, outdir, certnames, [
        ("puppet1-ref", "puppet1 direct (reference)", eps["puppet1"], 1, None, None),
        ("lb-one", "LB, one master (puppet1)", eps["lb"], 1, setup, undo),
    ])


def block_pinned(args, outdir, certnames):
    """Two masters pinned to one core each (via the LB) vs one master pinned to one core."""
    eps = entry_points()
    original = cpusets()
    log(f"original cpusets: {original}")
    try:
        set_cpuset(MASTERS["puppet1"], "0")
        set_cpuset(MASTERS["puppet2"], "1")
        log(f"pinned: {cpusets()}")
        warm_up(outdir, eps, args.users, args.warmup, certnames)
        # One pinned master direct, not behind the LB with the other front stopped: nothing
        # but the pinning changes, so the block can run next to the lab's tests (the LB's own
        # cost is measured in the lb-one block).
        return measure_rounds(args, outdir, certnames, [
            ("pinned-two", "LB, two masters pinned to one core each", eps["lb"], 2, None, None),
            ("pinned-one", "puppet1 direct, pinned to one core", eps["puppet1"], 1, None, None),
        ])
    finally:
        for host, cpus in original.items():
            set_cpuset(host, cpus)
        log(f"cpusets restored: {cpusets()}")


BACKEND_SCRIPT = r"""
import http.client, json, socket, ssl, sys, threading, time, urllib.parse, uuid
mode, certname, users, seconds, env = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
ssldir = "/var/lib/puppet/ssl"
facts = json.load(sys.stdin)
ctx = ssl.create_default_context(cafile=f"{ssldir}/certs/ca.pem")
ctx.load_cert_chain(f"{ssldir}/certs/{certname}.pem", f"{ssldir}/private_keys/{certname}.pem")
class FrontConnection(http.client.HTTPSConnection):
    # The front on loopback, its certificate checked for the master's name. http.client
    # calls connect() again when the front ends a kept-alive connection (apache does after
    # MaxKeepAliveRequests, 100): the client reconnects as an agent would, instead of
    # checking the certificate against 127.0.0.1 and counting a failure.
    def connect(self):
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", 8140), 120), server_hostname=certname)
def conn():
    # One persistent connection per thread in both modes: what differs is the front alone.
    if mode == "backend":
        return http.client.HTTPConnection("127.0.0.1", 18140, timeout=120)
    return FrontConnection("127.0.0.1", 8140, timeout=120, context=ctx)
hdrs = {"Host": certname, "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
if mode == "backend":
    # What the front would tell puppetserver after verifying the client certificate.
    hdrs.update({"X-Client-Verify": "SUCCESS", "X-Client-DN": f"CN={certname}"})
lat, errors, lock = [], [0], threading.Lock()
def worker(stop_at):
    c = None
    while time.time() < stop_at:
        body = urllib.parse.urlencode({"environment": env, "facts_format": "application/json",
            "facts": urllib.parse.quote(json.dumps({"name": certname, "values": facts}), safe=""),
            "transaction_uuid": str(uuid.uuid4()), "static_catalog": "true", "checksum_type": "sha256"})
        t0 = time.time()
        try:
            c = c or conn()
            c.request("POST", f"/puppet/v3/catalog/{certname}?environment={env}", body=body, headers=hdrs)
            r = c.getresponse(); data = r.read()
            ok = r.status == 200 and json.loads(data).get("name") == certname
        except Exception:
            ok, c = False, None
        with lock:
            (lat.append((time.time() - t0) * 1000) if ok else None)
            errors[0] += 0 if ok else 1
start = time.time()
ts = [threading.Thread(target=worker, args=(start + seconds,)) for _ in range(users)]
[t.start() for t in ts]; [t.join() for t in ts]
elapsed = time.time() - start
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0
print(json.dumps({"catalogs": len(lat), "catalogs_per_s": len(lat) / elapsed, "catalog_p50_ms": pct(0.5),
                  "catalog_p95_ms": pct(0.95), "errors": errors[0]}))
"""


def inside_catalogs(host, mode, users, seconds):
    """BACKEND_SCRIPT inside a master: catalog POSTs on persistent connections, through the
    front ("front") or to puppetserver's plain port ("backend"); returns its figures."""
    out = docker("exec", "-i", host, "python3", "-c", BACKEND_SCRIPT, mode, host, str(users), str(seconds),
                 CODE["environment"], input_bytes=open(FACTS, "rb").read()).stdout.decode()
    return json.loads(out.strip().splitlines()[-1])


def measure_inside(host, mode, users, seconds, ignore_restarts=False):
    """inside_catalogs(), with what disturbed it (disturbances())."""
    before, busy = service_stamps(), lab_busy()
    res = inside_catalogs(host, mode, users, seconds)
    res["disturbed"] = disturbances(before, busy, ignore_restarts)
    return res


def block_backend(args, outdir, certnames):
    """Inside one master (--master, default puppet1): catalogs from puppetserver's plain
    loopback port vs through the master's front (nginx on puppet1, apache on puppet2).

    The plain port is loopback only, so a small stdlib client runs inside the master container
    as the master itself (a master's own certificate may fetch its own catalog). Same client,
    same container, same users: only the front differs.
    """
    key = args.master
    host, front = MASTERS[key], FRONT_SERVICE[key]
    log(f"inside {host}: warmup ({args.warmup}s, {args.users} threads)")
    inside_catalogs(host, "front", args.users, args.warmup)
    results = []
    for mode in ("front", "backend", "front2"):
        log(f"inside {host}: {mode} ({args.duration}s, {args.users} threads)")
        res = measure_inside(host, "backend" if mode == "backend" else "front", args.users, args.duration)
        label = {"front": f"inside {key}, via {front} front (TLS)",
                 "backend": f"inside {key}, puppetserver plain port (no front)",
                 "front2": f"inside {key}, via {front} front again"}[mode]
        res.update(tag=f"inside-{mode}", label=label, masters=1, requests=res["catalogs"] + res["errors"])
        results.append(res)
    with open(os.path.join(outdir, "inside.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    return results


TUNING_FILES = ("/etc/puppet/puppet.conf", "/etc/puppet/puppetserver/conf.d/puppetserver.conf",
                "/etc/default/puppetserver")
TUNING_SAVE = "/root/bench-tuning-saved"
# Debian's stock settings, on the master's files the role wrote: no environment_timeout (Puppet's
# default, 0: every compile loads the environment again), max-active-instances commented out
# (puppetserver's default: CPUs - 1, at least 1, so 1 on 2 cores) and /etc/default/puppetserver
# as the package ships it, taken from the package itself.
STOCK_SCRIPT = r"""set -eu
mkdir -p {save}
cp -a {files} {save}/
puppet config delete --section server environment_timeout >/dev/null
! grep -q environment_timeout /etc/puppet/puppet.conf
sed -i -E 's/^(\s*)max-active-instances:/\1# max-active-instances:/' /etc/puppet/puppetserver/conf.d/puppetserver.conf
tmp=$(mktemp -d)
cd "$tmp"
apt-get download -q=2 puppetserver 2>/dev/null
dpkg-deb --fsys-tarfile puppetserver_*.deb | tar -xO ./etc/default/puppetserver > /etc/default/puppetserver
rm -rf "$tmp"
grep -E '^JAVA_ARGS' /etc/default/puppetserver
""".format(save=TUNING_SAVE, files=" ".join(TUNING_FILES))
RESTORE_SCRIPT = "set -eu; " + "; ".join(
    f"cp -a {TUNING_SAVE}/{os.path.basename(f)} {f}" for f in TUNING_FILES) + f"; rm -rf {TUNING_SAVE}"


def restart_puppetserver(key, certname):
    host = MASTERS[key]
    log(f"restarting puppetserver on {host}")
    service(host, "puppetserver", "restart")
    addr = ip_of(host)
    wait_for(f"{host} ready through its front", lambda: status_ok(addr, host, certname), 300)


def block_tuning(args, outdir, certnames):
    """The collection's master settings vs Debian's stock puppetserver, on puppet1 (nginx
    front) direct: tuned, stock, tuned again (each after its own warm-up), so that drift in
    what else runs on the machine shows as a difference between the two tuned rounds."""
    key, host = "puppet1", MASTERS["puppet1"]
    entry = entry_points()[key]
    tags = {"tuned": [], "stock": []}
    try:
        for rnd, mode in enumerate(("tuned", "stock", "tuned"), start=1):
            if mode == "stock":
                out = dexec(host, "sh", "-c", STOCK_SCRIPT).stdout.decode().strip()
                log(f"{host}: Debian's stock settings ({out})")
                restart_puppetserver(key, certnames[0])
            elif rnd == 3:
                log(f"{host}: the collection's settings again")
                dexec(host, "sh", "-c", RESTORE_SCRIPT)
                restart_puppetserver(key, certnames[0])
            log(f"round {rnd}: {mode}: warm-up {args.warmup}s, then {args.duration}s"
                f"{' (catalogs only, inside the master)' if args.catalogs_only else ''}")
            tag = f"m-{mode}-r{rnd}"
            if args.catalogs_only:
                inside_catalogs(host, "front", args.users, args.warmup)
                # The block restarts puppetserver itself; only others driving the lab count.
                tags[mode].append(measure_inside(host, "front", args.users, args.duration, ignore_restarts=True))
                continue
            run_locust(outdir, f"warmup-{mode}-r{rnd}", entry, args.users, args.warmup, certnames)
            run_locust(outdir, tag, entry, args.users, args.duration, certnames)
            tags[mode].append(tag)
    finally:
        if dexec(host, "test", "-d", TUNING_SAVE, check=False).returncode == 0:
            log(f"{host}: restoring the collection's settings")
            dexec(host, "sh", "-c", RESTORE_SCRIPT)
            restart_puppetserver(key, certnames[0])
    settings = dexec(host, "sh", "-c", "grep -E '^environment_timeout' /etc/puppet/puppet.conf; "
                     "grep -E '^\\s*max-active-instances' /etc/puppet/puppetserver/conf.d/puppetserver.conf; "
                     "grep -E '^JAVA_ARGS' /etc/default/puppetserver").stdout.decode().strip()
    if args.catalogs_only:
        # The architecture brief's way: catalog requests only, persistent connections.
        def merged(label, runs):
            n = sum(r["catalogs"] for r in runs)
            return {"label": label, "masters": 1, "catalogs": n, "requests": n + sum(r["errors"] for r in runs),
                    "catalogs_per_s": sum(r["catalogs_per_s"] for r in runs) / len(runs),
                    "round_catalogs_per_s": [round(r["catalogs_per_s"], 1) for r in runs],
                    "catalog_p50_ms": sum(r["catalog_p50_ms"] for r in runs) / len(runs),
                    "catalog_p95_ms": max(r["catalog_p95_ms"] for r in runs),
                    "errors": sum(r["errors"] for r in runs),
                    "disturbed": sorted({d for r in runs for d in r["disturbed"]})}
        return [merged("inside puppet1, catalogs only, the collection's settings (two rounds)", tags["tuned"])
                | {"settings": settings},
                merged("inside puppet1, catalogs only, Debian's stock settings", tags["stock"])]
    return [summarize_rounds(outdir, "puppet1 direct, the collection's settings (two rounds)", tags["tuned"], 1)
            | {"settings": settings},
            summarize_rounds(outdir, "puppet1 direct, Debian's stock puppetserver settings", tags["stock"], 1)]


BLOCKS = {"tuning": block_tuning, "entry": block_entry, "lb-one": block_lb_one, "pinned": block_pinned, "backend": block_backend}


# ---------------------------------------------------------------- drills

def lb_log_tail_counts(since_line):
    """Sessions per upstream (the one that served, after any retry) in the LB's stream log
    after line `since_line`; returns (lines in the log, {upstream: sessions})."""
    text = dexec(LB, "cat", "/var/log/nginx/puppet-lb-access.log").stdout.decode(errors="replace")
    lines = text.splitlines()
    counts = {}
    for line in lines[since_line:]:
        m = re.search(r"\] (.+?) (\d{3}) \d+ [\d.]+$", line)
        if m:
            up = m.group(1).split(",")[-1].strip()
            counts[up] = counts.get(up, 0) + 1
    return len(lines), counts


def lb_log_len():
    return lb_log_tail_counts(0)[0]


def drill_master_down(args, outdir, certnames):
    key = args.master
    host = MASTERS[key]
    eps = entry_points()
    warm_up(outdir, eps, args.users, args.warmup, certnames)
    ip_up = {k: eps[k][0] for k in MASTERS}
    reqlog = os.path.join(outdir, "drill-requests.csv")
    lb_start = lb_log_len()
    proc = run_locust(outdir, "drill", eps["lb"], args.users, args.duration, certnames, background=True)
    events = {}
    try:
        def catalogs_from(name, after):
            return [r for r in read_reqlog(reqlog)
                    if r["name"] == "catalog" and not r["error"] and r["compiled_on"] == MASTERS[name]
                    and float(r["t_end"]) > after]
        t0 = time.time()
        wait_for("catalogs from both masters through the LB",
                 lambda: all(len(catalogs_from(k, t0)) >= 20 for k in MASTERS), 90)
        lb_before = lb_log_tail_counts(lb_start)
        events["stop"] = time.time()
        log(f"stopping {host}'s front ({FRONT_SERVICE[key]})")
        stop_front(key)
        events["stopped"] = time.time()
        other = next(k for k in MASTERS if k != key)
        wait_for(f"{args.down_catalogs} catalogs from {other} while {key} is down",
                 lambda: len(catalogs_from(other, events["stop"])) >= args.down_catalogs, 120)
        lb_down = lb_log_tail_counts(lb_before[0])
        events["restore"] = time.time()
        log(f"restoring {host}'s front")
        start_front(key, certnames[0])
        events["ready"] = time.time()
        wait_for(f"catalogs compiled on {key} again through the LB",
                 lambda: len(catalogs_from(key, events["ready"])) >= 5, 120)
        events["back"] = time.time()
    finally:
        if not service_active(host, FRONT_SERVICE[key]):
            start_front(key, certnames[0])
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"locust exited {rc}")
    lb_after = lb_log_tail_counts(lb_down[0])
    res = summarize(outdir, "drill")
    rows = read_reqlog(reqlog)

    def window(a, b):
        """Catalogs by compiling host among the requests that started in (a, b]."""
        out = {}
        for r in rows:
            started = float(r["t_end"]) - float(r["ms"]) / 1000
            if r["name"] == "catalog" and not r["error"] and a < started <= b:
                out[r["compiled_on"]] = out.get(r["compiled_on"], 0) + 1
        return out

    res.update(
        drill="master-down", master=key, front=FRONT_SERVICE[key], events=events,
        catalogs_before=window(0, events["stop"]), catalogs_down=window(events["stopped"], events["restore"]),
        catalogs_after=window(events["ready"], float("inf")),
        lb_log={"before": lb_before[1], "down": lb_down[1], "after": lb_after[1]},
        lb_upstreams={ip_up[k]: k for k in ip_up},
    )
    res["pass"] = (res["errors"] == 0 and res["catalogs_down"].get(host, 0) == 0
                   and res["catalogs_down"].get(MASTERS[other], 0) > 0
                   and res["catalogs_after"].get(host, 0) > 0)
    return [res]


def make_csr(name):
    """A CSR for `name`; its key stays in bench/.state (0600) and is never printed."""
    keyp = os.path.join(STATE, "drill-key.pem")
    csrp = os.path.join(STATE, "drill-csr.pem")
    old_umask = os.umask(0o077)
    try:
        subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", keyp,
                        "-subj", f"/CN={name}", "-out", csrp], check=True, capture_output=True)
    finally:
        os.umask(old_umask)
    return open(csrp, "rb").read()


def submit_csr(name, csr):
    """PUT the CSR to the CA directly (agents name the CA in combination 4)."""
    try:
        status, body = https_request(ip_of(CA), CA, "PUT",
                                     f"/puppet-ca/v1/certificate_request/{name}?environment=production",
                                     body=csr, headers={"Content-Type": "text/plain"}, timeout=10)
        return f"HTTP {status}", body.decode(errors="replace")[:200]
    except (ConnectionRefusedError, ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}", str(exc)[:200]


def clean_csr(name):
    # A pending request only: remove it so the CA's list stays as the user left it.
    dexec(CA, "rm", "-f", f"/etc/puppet/puppetserver/ca/requests/{name}.pem")


def drill_ca_down(args, outdir, certnames):
    eps = entry_points()
    ca_ip = ip_of(CA)
    warm_up(outdir, eps, args.users, args.warmup, certnames)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    reqlog = os.path.join(outdir, "drill-requests.csv")
    proc = run_locust(outdir, "drill", eps["lb"], args.users, args.duration, certnames, background=True)
    events, checks = {}, {}
    try:
        wait_for("20 catalogs through the LB", lambda: sum(
            1 for r in read_reqlog(reqlog) if r["name"] == "catalog" and not r["error"]) >= 20, 90)
        events["stop"] = time.time()
        log("stopping puppetserver on the CA")
        service(CA, "puppetserver", "stop")
        wait_for("the CA's port closed", lambda: port_closed(ca_ip), 120)
        events["stopped"] = time.time()
        name = f"drill-csr-{stamp}.{DOMAIN}"
        checks["csr_while_down"] = submit_csr(name, make_csr(name))
        log(f"CSR while the CA is down: {checks['csr_while_down'][0]}")
        wait_for(f"{args.down_catalogs} catalogs through the LB with the CA down", lambda: sum(
            1 for r in read_reqlog(reqlog) if r["name"] == "catalog" and not r["error"]
            and float(r["t_end"]) > events["stopped"]) >= args.down_catalogs, 120)
        events["restore"] = time.time()
    finally:
        GUARD["on"] = False
        log("starting puppetserver on the CA")
        service(CA, "puppetserver", "start")
        wait_for("the CA's /status/v1/simple", lambda: status_ok(ca_ip, CA, certnames[0]), 240)
        events["ready"] = time.time()
    name2 = f"drill-csr-{stamp}-after.{DOMAIN}"
    checks["csr_after"] = submit_csr(name2, make_csr(name2))
    listed = dexec(CA, "puppetserver", "ca", "list", check=False).stdout.decode()
    checks["csr_after_listed"] = name2 in listed
    log(f"CSR after the CA is back: {checks['csr_after'][0]}, listed by the CA: {checks['csr_after_listed']}")
    clean_csr(name2)
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"locust exited {rc}")
    res = summarize(outdir, "drill")
    rows = read_reqlog(reqlog)
    down = [r for r in rows if r["name"] == "catalog" and events["stopped"] < float(r["t_end"]) <= events["restore"]]
    res.update(drill="ca-down", events=events, checks=checks,
               catalogs_during_ca_down=sum(1 for r in down if not r["error"]),
               catalog_errors_during_ca_down=sum(1 for r in down if r["error"]),
               ca_restart_s=round(events["ready"] - events["restore"], 1))
    res["pass"] = (res["errors"] == 0 and res["catalogs_during_ca_down"] > 0
                   and not checks["csr_while_down"][0].startswith("HTTP 2")
                   and checks["csr_after"][0] == "HTTP 200" and checks["csr_after_listed"])
    return [res]


REFUSED_STREAK = 6


def drill_revoke(args, outdir, certnames):
    """Revoke one agent's certificate under load; time until every entry point refuses it.

    An entry point counts as refusing once REFUSED_STREAK probes in a row (0.5 s apart) were
    refused (HTTP 400/401/403 or a TLS alert): through the LB, both masters must refuse.
    """
    eps = entry_points()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    victim = f"load-revoke-{stamp}.{DOMAIN}"
    ensure_certs(certnames + [victim])
    warm_up(outdir, eps, args.users, args.warmup, certnames)
    node_path = f"/puppet/v3/node/{victim}?environment=production"
    for key, (addr, name) in eps.items():
        status = https_request(addr, name, "GET", node_path, certname=victim)[0]
        if status != 200:
            raise RuntimeError(f"{victim} is refused at {key} before revocation: HTTP {status}")
    # The victim is user 0 of the load.
    proc = run_locust(outdir, "drill", eps["lb"], args.users, args.duration, [victim] + certnames,
                      background=True)
    streak = {k: [None, 0, ""] for k in eps}  # first refusal of the current streak, length, how
    seen = {k: {} for k in eps}
    t_revoke = time.time()
    try:
        reqlog = os.path.join(outdir, "drill-requests.csv")
        wait_for("the victim's catalogs through the LB", lambda: any(
            r["certname"] == victim and r["name"] == "catalog" and not r["error"]
            for r in read_reqlog(reqlog)), 90)
        log(f"revoking {victim}")
        t_revoke = time.time()
        dexec(CA, "puppetserver", "ca", "revoke", "--certname", victim)
        log(f"revoked after {time.time() - t_revoke:.1f}s (CLI time); probing every entry point")

        def probe():
            for key, (addr, name) in eps.items():
                try:
                    status = https_request(addr, name, "GET", node_path, certname=victim, timeout=5)[0]
                    how = f"HTTP {status}"
                    refused = status in (400, 401, 403)
                except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
                    how, refused = f"TLS alert ({type(exc).__name__})", True
                seen[key][how] = seen[key].get(how, 0) + 1
                if refused:
                    if streak[key][1] == 0:
                        streak[key][0] = time.time()
                    streak[key][1] += 1
                    streak[key][2] = how
                else:
                    streak[key] = [None, 0, ""]
            return all(v[1] >= REFUSED_STREAK for v in streak.values())

        try:
            wait_for("every entry point refusing the revoked certificate", probe, 150, interval=0.5)
        except TimeoutError as exc:
            log(str(exc))
    finally:
        rc = proc.wait()
    rows = read_reqlog(os.path.join(outdir, "drill-requests.csv"))
    victim_rows = [r for r in rows if r["certname"] == victim]
    others_errors = sum(1 for r in rows if r["certname"] != victim and r["error"])
    res = summarize(outdir, "drill")
    last_ok = max((float(r["t_end"]) - t_revoke for r in victim_rows if not r["error"]), default=None)
    res.update(drill="revoke-under-load", victim=victim,
               refused_after_s={k: None if v[0] is None else round(v[0] - t_revoke, 1)
                                for k, v in streak.items()},
               refused_how={k: v[2] for k, v in streak.items()},
               probe_answers=seen,
               victim_requests=len(victim_rows),
               victim_refused=sum(1 for r in victim_rows if r["error"]),
               victim_last_success_after_revoke_s=None if last_ok is None else round(last_ok, 1),
               errors_other_agents=others_errors)
    res["pass"] = others_errors == 0 and rc == 0 and all(v[1] >= REFUSED_STREAK for v in streak.values())
    return [res]


def agent_runs_loop(server_list, runs, stop):
    """Real `puppet agent --test` runs on the lab's agent, back to back, with a server_list;
    records for each run when it started and ended, its exit code, the server it used (the
    agent prints "Requesting catalog from <server>:<port>") and the master that compiled."""
    while not stop.is_set():
        t0 = time.time()
        res = docker("exec", AGENT, "puppet", "agent", "--test", "--color=false", "--server_list", server_list,
                     "--waitforlock", "1", "--maxwaitforlock", "120", check=False)
        out = (res.stdout + res.stderr).decode(errors="replace")
        server = re.search(r"Requesting catalog from ([^:\s]+):", out)
        compiled = re.search(r"compiled by \S+ on (\S+)", out)
        errors = [line for line in out.splitlines() if line.startswith("Error")]
        runs.append({"start": t0, "end": time.time(), "rc": res.returncode,
                     "ok": res.returncode in (0, 2) and not errors,
                     "server": server.group(1) if server else "", "compiled_on": compiled.group(1) if compiled else "",
                     "errors": errors[:3]})


def drill_lb_restart(args, outdir, certnames):
    """Stop the LB (as an upgrade or a reboot would), then start it again, then restart it at
    once: a real agent whose server_list names the LB first and then each master keeps
    running; Locust's agents, which know only the LB, show what agents without it see."""
    eps = entry_points()
    warm_up(outdir, eps, args.users, args.warmup, certnames)
    masters = set(MASTERS.values())
    server_list = ",".join(f"{h}:{PORT}" for h in [SHARED_NAME, *MASTERS.values()])
    runs, stop, events = [], threading.Event(), {}
    lb_addr = eps["lb"][0]

    def ok_runs(after, servers):
        return [r for r in runs if r["start"] > after and r["ok"] and r["server"] in servers]

    loop = threading.Thread(target=agent_runs_loop, args=(server_list, runs, stop), daemon=True)
    loop.start()
    # Locust ends when the drill does (terminated below); its per-request log is complete.
    proc = run_locust(outdir, "drill", eps["lb"], args.users, 900, certnames, background=True)
    try:
        wait_for("2 agent runs through the LB", lambda: len(ok_runs(0, {SHARED_NAME})) >= 2, 180)
        events["stop"] = time.time()
        log("stopping the LB (nginx on the LB host)")
        service(LB, "nginx", "stop")
        wait_for("the LB's port closed", lambda: port_closed(lb_addr), 60)
        events["stopped"] = time.time()
        wait_for("5 agent runs served by a master directly while the LB is down",
                 lambda: len(ok_runs(events["stopped"], masters)) >= 5, 240)
        events["restore"] = time.time()
    finally:
        GUARD["on"] = False
        if not service_active(LB, "nginx"):
            log("starting the LB again")
            service(LB, "nginx", "start")
        wait_for("the LB ready", lambda: status_ok(lb_addr, SHARED_NAME, certnames[0]), 120)
        events["ready"] = time.time()
    wait_for("2 agent runs through the LB again", lambda: len(ok_runs(events["ready"], {SHARED_NAME})) >= 2, 180)
    events["restart"] = time.time()
    log("restarting the LB (systemctl restart nginx)")
    service(LB, "nginx", "restart")
    wait_for("the LB ready after its restart", lambda: status_ok(lb_addr, SHARED_NAME, certnames[0]), 120)
    events["restarted"] = time.time()
    wait_for("2 agent runs after the restart", lambda: len(ok_runs(events["restarted"], {SHARED_NAME} | masters)) >= 2,
             180)
    events["end"] = time.time()
    stop.set()
    loop.join()
    proc.terminate()
    proc.wait()
    with open(os.path.join(outdir, "agent-runs.json"), "w") as fh:
        json.dump(runs, fh, indent=1)
    res = summarize(outdir, "drill")
    rows = read_reqlog(os.path.join(outdir, "drill-requests.csv"))

    def phase(a, b):
        """Real agent runs that started in [a, b), and those in flight at a."""
        started = [r for r in runs if a <= r["start"] < b]
        return {"runs": len(started), "failed": sum(1 for r in started if not r["ok"]),
                "by_server": {srv: sum(1 for r in started if r["server"] == srv) for srv in
                              sorted({r["server"] for r in started})}}

    spanning = [r for r in runs if any(r["start"] < events[e] < r["end"] for e in ("stop", "restart"))]
    lb_only_failed = [r for r in rows if r["error"] and events["stop"] <= float(r["t_end"]) <= events["ready"]]
    # Runs wholly inside the outage: each must have been served by a master directly.
    inside = [r for r in runs if r["start"] >= events["stopped"] and r["end"] <= events["restore"]]
    res.update(
        drill="lb-restart", server_list=server_list, events=events,
        agent_runs={"before": phase(0, events["stop"]), "stopping": phase(events["stop"], events["stopped"]),
                    "lb_down": phase(events["stopped"], events["restore"]),
                    "starting": phase(events["restore"], events["ready"]),
                    "after": phase(events["ready"], events["restart"]),
                    "around_restart": phase(events["restart"], float("inf"))},
        agent_runs_spanning_a_stop=[{k: r[k] for k in ("rc", "server", "errors")} for r in spanning],
        lb_down_s=round(events["ready"] - events["stop"], 1),
        agent_runs_inside_the_outage={srv: sum(1 for r in inside if r["server"] == srv)
                                      for srv in sorted({r["server"] for r in inside})},
        lb_only_agents_failed_requests_while_down=len(lb_only_failed),
        lb_only_agents_failed_catalogs_while_down=sum(1 for r in lb_only_failed if r["name"] == "catalog"),
        lb_only_agents_failed_requests=res["errors"])
    started_clean = [r for r in runs if r not in spanning]
    res["pass"] = (all(r["ok"] for r in started_clean)
                   and len(inside) >= 3 and all(r["ok"] and r["server"] in masters for r in inside))
    return [res]


DRILLS = {"lb-restart": drill_lb_restart, "master-down": drill_master_down, "ca-down": drill_ca_down, "revoke-under-load": drill_revoke}


# ---------------------------------------------------------------- reporting

def per_master_agents(res):
    return res["catalogs_per_s"] * 1800 / max(1, res.get("masters", 1))


def print_table(results):
    print("| configuration | users | catalogs | catalogs/s | per round | p50 ms | p95 ms | errors | agents per master at 30 min | disturbed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rounds = " / ".join(f"{v:.1f}" for v in r.get("round_catalogs_per_s", []))
        print(f"| {r['label']} | {r.get('users', '')} | {r['catalogs']} | {r['catalogs_per_s']:.1f} | {rounds} | "
              f"{r['catalog_p50_ms']:.0f} | {r['catalog_p95_ms']:.0f} | {r['errors']} | "
              f"{per_master_agents(r):,.0f} | {', '.join(r.get('disturbed', [])) or 'no'} |")


def latest(block, lab="combo4", environment="production"):
    """The newest result directory of a block on a lab with an environment's code."""
    for d in sorted(os.listdir(RESULTS), reverse=True):
        path = os.path.join(RESULTS, d, "summary.json")
        if d.endswith(f"-{block}") and os.path.exists(path):
            meta = json.load(open(path))
            if (meta.get("lab", "combo4"), meta.get("environment", "production")) == (lab, environment):
                return os.path.join(RESULTS, d)
    return None


def plot_all(use=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(IMGDIR, exist_ok=True)
    rows = []
    chosen = {}
    for d in use or []:  # result directories picked by hand, e.g. the least disturbed run
        d = os.path.join(RESULTS, os.path.basename(d.rstrip("/")))
        meta = json.load(open(os.path.join(d, "summary.json")))
        if meta.get("environment", "production") == "bench":
            chosen[f"{meta.get('lab', 'combo4')}:{meta['name']}:bench"] = d
        elif meta.get("lab", "combo4") == "combo4":
            chosen[meta["name"]] = d
    for block in ("entry", "lb-one", "pinned", "backend"):
        d = chosen.get(block) or latest(block)
        if d:
            rows += json.load(open(os.path.join(d, "summary.json")))["results"]
    if rows:
        bar_chart(plt, rows, ["#4c72b0" if r.get("masters", 1) == 1 else "#dd8452" for r in rows],
                  "catalogs per second (Locust rows: whole agent runs; 'inside' rows: catalogs only)",
                  "Catalog throughput per configuration\n(2 cores shared with the load generator; orange: two masters)",
                  "load-throughput.png")
    plot_bench_env(plt, chosen)
    d = chosen.get("master-down") or latest("master-down")
    if d:
        summary = json.load(open(os.path.join(d, "summary.json")))["results"][0]
        rows = [r for r in read_reqlog(os.path.join(d, "drill-requests.csv")) if r["name"] == "catalog"]
        t0 = min(float(r["t_end"]) for r in rows)
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for name, color in (("puppet1", "#4c72b0"), ("puppet2", "#dd8452")):
            pts = [(float(r["t_end"]) - t0, float(r["ms"])) for r in rows
                   if r["compiled_on"] == MASTERS[name] and not r["error"]]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, color=color, label=f"compiled on {name}")
        errs = [(float(r["t_end"]) - t0, float(r["ms"])) for r in rows if r["error"]]
        if errs:
            ax.scatter([p[0] for p in errs], [p[1] for p in errs], s=20, marker="x", color="red", label="failed")
        ev = summary["events"]
        ax.axvspan(ev["stop"] - t0, ev["ready"] - t0, color="grey", alpha=0.2,
                   label=f"{summary['master']} front stopped")
        ax.set_xlabel("seconds since the first catalog")
        ax.set_ylabel("catalog latency (ms)")
        ax.set_title(f"master-down drill through the LB ({summary['errors']} failed requests)")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(IMGDIR, "load-master-down.png"), dpi=100)
        log(f"wrote {os.path.join(IMGDIR, 'load-master-down.png')}")


def bar_chart(plt, rows, colors, xlabel, title, filename):
    """Catalogs per second of result rows, one bar each, into docs/img/<filename>."""
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(rows) + 2))
    labels = [r["label"] + (" (disturbed)" if r.get("disturbed") else "") for r in rows]
    vals = [r["catalogs_per_s"] for r in rows]
    ax.barh(labels, vals, color=colors)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.1f}", va="center")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(os.path.join(IMGDIR, filename), dpi=100)
    log(f"wrote {os.path.join(IMGDIR, filename)}")


def plot_bench_env(plt, chosen):
    """The 30-module code: puppetserver tuned and stock, per front and through the LB,
    next to Puppet 5.5 under Passenger (the legacy lab) on the same machine."""
    rows = []
    for block, lab, prefix in (("tuning", "combo4", "puppetserver 8.7: "), ("entry", "combo4", "puppetserver 8.7: "),
                               ("entry", "legacy", "")):
        d = chosen.get(f"{lab}:{block}:bench") or latest(block, lab, "bench")
        if d:
            rows += [dict(r, label=prefix + r["label"]) for r in json.load(open(os.path.join(d, "summary.json")))["results"]]
    if not rows:
        return
    colors = ["#55a868" if "Puppet 5" in r["label"] else "#c44e52" if "stock" in r["label"] else
              "#dd8452" if r.get("masters", 1) == 2 else "#4c72b0" for r in rows]
    bar_chart(plt, rows, colors,
              "whole agent runs (catalogs) per second, the 30-module bench code (336 catalog resources)",
              "puppetserver (tuned, stock) vs Puppet 5.5 under Passenger\n(2 cores shared with the load generator)",
              "load-bench-env.png")


# ---------------------------------------------------------------- main

# Blocks and drills that stop services or pin CPUs: never started while a converge or a test
# drives the lab (it could fail because of them), only measured "disturbed" ones may be.
CHANGES_STATE = {("load", "lb-one"), ("load", "tuning"), ("drill", "master-down"), ("drill", "ca-down"),
                 ("drill", "revoke-under-load"), ("drill", "lb-restart")}
# What runs on the legacy lab: its masters have no puppetserver (no tuning, no plain port) and
# the drills are written against combination 4's services.
LEGACY_BLOCKS = {("load", "entry")}


def locked(argv):
    """Runs this script again under flock, for one block or drill."""
    cmd = ["flock", LOCKFILE, sys.executable, os.path.abspath(__file__), "_locked", *argv]
    changes_state = tuple(argv[:2]) in CHANGES_STATE
    if not wait_quiet(QUIET_WAIT_S if changes_state else QUIET_WAIT_MEASURE_S) and changes_state:
        log(f"SKIPPED {' '.join(argv[:2])}: it changes the lab's state and the lab is still in use")
        return 3
    log(f"waiting for {LOCKFILE}, then: {' '.join(argv)}")
    return subprocess.run(cmd, check=False).returncode


def run_unit(kind, name, args):
    """Inside the lock: one block or drill, with a time budget check, results saved."""
    start = time.monotonic()
    use_lab(args.lab)
    CODE["environment"] = args.environment
    if LAB != "combo4" and (kind, name) not in LEGACY_BLOCKS:
        log(f"{kind} {name} is written for the combo4 lab; on {LAB} only: {sorted(LEGACY_BLOCKS)}")
        return 2
    wait_lab_present()
    if lab_busy():
        if (kind, name) in CHANGES_STATE:
            log(f"SKIPPED {kind} {name}: a converge or test started while waiting for the lock")
            return 3
        log(f"someone else is driving the lab, results will be flagged: {lab_busy()[:1]}")
    certnames = load_certnames(args.users if args.users > N_CERTS else N_CERTS)
    ensure_certs(certnames)
    wait_masters_ready(certnames[0])
    outdir = new_outdir(name if LAB == "combo4" else f"{LAB}-{name}")
    func = BLOCKS[name] if kind == "load" else DRILLS[name]
    GUARD["on"] = (kind, name) in CHANGES_STATE
    initial = lab_state()
    try:
        if CODE["environment"] == "bench":
            install_bench_env()
            wait_masters_ready(certnames[0])
        results = func(args, outdir, certnames)
    except LabInUse as exc:
        GUARD["on"] = False
        for proc in BACKGROUND:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        log(f"ABORTED {kind} {name}, lab restored: someone started using the lab ({exc})")
        print(f"{'DRILL' if kind == 'drill' else 'LOAD'} {name}: ABORTED (lab in use)")
        return 3
    finally:
        GUARD["on"] = False
        restore_lab(initial, certnames[0])
        if CODE["environment"] == "bench":
            remove_bench_env()
    for r in results:
        r.setdefault("users", args.users)
        r.setdefault("duration_s", args.duration)
    elapsed = time.monotonic() - start
    meta = {"kind": kind, "name": name, "lab": LAB, "environment": CODE["environment"], "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "users": args.users, "duration_s": args.duration, "warmup_s": args.warmup,
            "locked_seconds": round(elapsed, 1), "results": results}
    with open(os.path.join(outdir, "summary.json"), "w") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True)
    log(f"{kind} {name}: {elapsed:.0f}s under the lock; results in {outdir}")
    if elapsed > LOCK_BUDGET_S:
        log(f"WARNING: over the {LOCK_BUDGET_S}s lock budget; use a shorter --duration/--warmup")
    if kind == "load":
        print_table(results)
        return 0
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "errors_by_kind"}, indent=1, default=str))
        print(f"DRILL {name}: {'PASS' if r['pass'] else 'FAIL'}")
        return 0 if r["pass"] else 1
    return 1


def main():
    p = argparse.ArgumentParser(prog="bench/run")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("load", "drill", "_locked"):
        sp = sub.add_parser(name)
        if name == "drill":
            sp.add_argument("name", choices=sorted(DRILLS))
        if name == "_locked":
            sp.add_argument("kind", choices=["load", "drill"])
            sp.add_argument("name")
        if name == "load":
            sp.add_argument("--block", action="append", choices=sorted(BLOCKS),
                            help="measure only these blocks (default: all, each under its own lock)")
            sp.add_argument("--plot-only", action="store_true", help="only redraw docs/img from the latest results")
            sp.add_argument("--use", action="append", metavar="RESULT_DIR",
                            help="with --plot-only: plot this result directory instead of its block's latest")
        sp.add_argument("--lab", choices=sorted(LABS), default="combo4",
                        help="the lab to measure (default combo4; legacy: the entry block only)")
        sp.add_argument("--environment", choices=["production", "bench"], default="production",
                        help="the code compiled: the lab's own (2 resources) or the 300-resource bench environment")
        sp.add_argument("--catalogs-only", action="store_true",
                        help="tuning: catalog requests only, from inside the master (the brief's way)")
        sp.add_argument("--users", type=int, default=8, help="simulated agents (default 8)")
        sp.add_argument("--duration", type=int, default=90 if name == "drill" else 30,
                        help="seconds per measurement (default 30 per round; a drill's load runs 90)")
        sp.add_argument("--rounds", type=int, default=2,
                        help="load: rounds of interleaved measurements (default 2)")
        sp.add_argument("--warmup", type=int, default=30, help="warm-up seconds per master (default 30)")
        sp.add_argument("--master", choices=sorted(MASTERS), default="puppet1",
                        help="master-down: whose front to stop; backend: the master measured inside "
                             "(default puppet1, nginx front; puppet2 has apache)")
        sp.add_argument("--down-catalogs", type=int, default=150,
                        help="drills: catalogs to serve while the component is down (default 150)")
    args = p.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    common = ["--lab", args.lab, "--environment", args.environment, *(["--catalogs-only"] if args.catalogs_only else []),
              "--users", str(args.users), "--duration", str(args.duration), "--warmup", str(args.warmup),
              "--rounds", str(args.rounds),
              "--master", args.master, "--down-catalogs", str(args.down_catalogs)]
    if args.cmd == "_locked":
        return run_unit(args.kind, args.name, args)
    if args.cmd == "load":
        if not args.plot_only:
            default = ["entry", "lb-one", "pinned", "backend", "tuning"] if args.lab == "combo4" else ["entry"]
            rcs = [locked(["load", b, *common]) for b in (args.block or default)]
            if any(rcs):
                return 1
        plot_all(args.use)
        return 0
    rc = locked(["drill", args.name, *common])
    plot_all()
    return rc


if __name__ == "__main__":
    sys.exit(main())
