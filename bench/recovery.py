"""How long the CA takes to come back from a backup (issue 19; docs/benchmarks.md,
"Recovering the CA"), on a lab left up by `molecule converge -s <scenario>`.

Each round, as molecule/shared/tests/test_restore.py's drill does it:
  1. playbooks/backup.yml, timed;
  2. the CA container destroyed and created again from its image, same name (a rebuilt
     machine), timed until its systemd runs;
  3. playbooks/restore.yml, timed, with its phases read from the play's own timer lines
     (the profile_roles callback prints the elapsed time at every task): the checks, the
     restore's tasks, the site play (its "Certificate authority" play starts the CA) and
     the CRL fetch; and the CA up after: the end of that play, from the restore's start;
  4. from the restore's end, a new node's `puppet ssl bootstrap` signed with
     `puppetserver ca sign` on the CA: the first certificate the restored CA signs;
  5. an agent run through the load balancer with the agent's old certificate.

--new-name HOST adds one round that restores onto a host of another name, the old CA
container stopped (not removed: lost, but there to look at): a container HOST like the
CA's (image, network, systemd settings), an inventory copy in which puppet_ca holds HOST,
restore.yml with it, then checks that agents run with their old certificates, a new node
is signed by HOST with the chain the agents hold, the masters and the load balancer take
their CRL from HOST. That round leaves the lab on HOST, the old CA stopped: destroy the
lab after it (molecule destroy).

    bench/run recovery [--scenario combo2] [--rounds 3] [--new-name puppetca2.domain.org]

Run it with the lab's environment (ANSIBLE_CONFIG, LAB_NETWORK... as ./lab sets them).
Nothing here is a timed test: it measures and reports; a failed step stops the run.
"""

import argparse
import datetime as dt
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
STATE = ROOT / "bench" / ".state" / "recovery"
# The verifier's Cluster: the lab's hosts from the inventory, agent runs that wait for a
# daemon run's lock, commands in a container (testinfra).
sys.path.insert(0, str(ROOT / "molecule" / "shared" / "tests"))
os.environ.setdefault("MOLECULE_PROJECT_DIRECTORY", str(ROOT))
from conftest import SSLDIR, Cluster, container_like, docker  # noqa: E402  pylint: disable=wrong-import-position

CADIR = "/etc/puppet/puppetserver/ca"
# A bench passphrase, not a secret: the archives stay in bench/.state.
PASSPHRASE = "the bench backup passphrase, not a secret"
# The elapsed time profile_roles prints at every task:
# "Saturday 05 December 2026  09:07:03 +0000 (0:00:00.042)       0:00:07.526 *****"
TIMER = re.compile(r"^\w+ \d+ \w+ \d+\s+[\d:]+ [+-]\d{4} \([\d:.]+\)\s+(\d+):(\d\d):(\d\d(?:\.\d+)?) \*+\s*$")
PLAY = re.compile(r"^PLAY \[(.*)\] \*+\s*$")
# The plays of restore.yml that start each phase (playbooks/restore.yml, site.yml, fetch_crl.yml).
PHASES = (("checks", None), ("restore tasks", "Restore the certificate authority"),
          ("site play", "Check the inventory before changing anything"), ("CRL fetch", "Fetch the CA's CRL"))


def log(msg):
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


# ---------------------------------------------------------------- the lab's inventory

def molecule_inventory(scenario):
    """The inventory directory Molecule wrote for this checkout's scenario: several
    checkouts (worktrees) leave one each, told apart by the project path in group_vars."""
    for inventory in sorted(pathlib.Path.home().glob(f".ansible/tmp/molecule.*.{scenario}/inventory")):
        all_vars = inventory / "group_vars" / "all"
        if all_vars.is_file() and f"{ROOT}/molecule/" in all_vars.read_text(encoding="utf-8"):
            return inventory
    raise SystemExit(f"no Molecule inventory of {scenario} for {ROOT}: run `molecule converge -s {scenario}` first")


def cluster_of(inventory):
    listing = subprocess.run(["ansible-inventory", "-i", str(inventory), "--list"], env=ansible_env(),
                             check=True, capture_output=True, text=True).stdout
    return Cluster(json.loads(listing))


def renamed_inventory(source, old, new, into):
    """A copy of the inventory directory in which host `old` is `new` wherever it is named
    (its groups, and any variable naming it, such as puppet_cluster_ca_server): what an
    operator edits to move the CA to a new host. Returns the files it changed."""
    shutil.copytree(source, into, dirs_exist_ok=True)
    changed = []
    for path in sorted(pathlib.Path(into).rglob("*")):
        if path.is_file() and old in path.read_text(encoding="utf-8"):
            path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
            changed.append(str(path.relative_to(into)))
    host_vars = pathlib.Path(into) / "host_vars"
    for path in host_vars.glob(f"{old}*") if host_vars.is_dir() else []:
        path.rename(host_vars / path.name.replace(old, new))
    return changed


# ---------------------------------------------------------------- playbooks, timed

def ansible_env():
    # Plain output, parsed below; the collection from this checkout (collections/ links it).
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_PIPELINING="true",
                ANSIBLE_FORKS="10", ANSIBLE_GATHERING="smart", ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
                ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.profile_roles")


def run_playbook(inventory, playbook, args, logname):
    """ansible-playbook on the lab: (wall seconds, output); its output goes to a log in
    bench/.state/recovery. Stops the run when the play fails."""
    logpath = STATE / logname
    start = time.monotonic()
    done = subprocess.run(["ansible-playbook", "-i", str(inventory), str(ROOT / playbook), *args],
                          capture_output=True, text=True, env=ansible_env(), cwd=ROOT, check=False)
    seconds = time.monotonic() - start
    logpath.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise RuntimeError(f"{playbook} failed (exit {done.returncode}); see {logpath}:\n{done.stdout[-3000:]}")
    return seconds, done.stdout


def play_starts(output):
    """[(play name, elapsed seconds at its first task)] from the timer lines of a play's
    output; plays that ran no task (no host matched) are left out. The last entry is
    ("end", the last timer)."""
    starts, pending, last = [], None, 0.0
    for line in output.splitlines():
        play = PLAY.match(line)
        if play:
            pending = play.group(1)
            continue
        timer = TIMER.match(line)
        if timer:
            last = int(timer.group(1)) * 3600 + int(timer.group(2)) * 60 + float(timer.group(3))
            if pending is not None:
                starts.append((pending, last))
                pending = None
    return starts + [("end", last)]


def restore_phases(output):
    """{phase: seconds} of a restore.yml run (PHASES), and the site play's
    "Certificate authority" play, which configures and starts the restored CA. Empty when
    the output has not the plays expected (a measure missing, not a failed run)."""
    starts = play_starts(output)
    names = [name for name, _t in starts]
    bounds, index = [0.0], 0
    try:
        for _phase, first_play in PHASES[1:]:
            index = names.index(first_play, index)
            bounds.append(starts[index][1])
        ca_play = names.index("Certificate authority")
    except ValueError:
        return {}
    bounds.append(starts[-1][1])
    phases = {name: bounds[i + 1] - bounds[i] for i, (name, _play) in enumerate(PHASES)}
    phases["of which the CA play"] = starts[ca_play + 1][1] - starts[ca_play][1]
    # The restored CA runs and signs from the end of that play: the masters', load
    # balancer's and agents' plays after it do not hold it up.
    phases["CA up after"] = starts[ca_play + 1][1]
    return phases


# ---------------------------------------------------------------- containers
# (container_like, which makes them, is in the verifier's conftest.py, shared with
# test_restore.py.)

def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"not within {timeout} s: {what}")


def wait_systemd(cluster, name):
    cluster._hosts.pop(name, None)  # pylint: disable=protected-access  # a new container of that name
    host = cluster.host(name)
    wait_until(lambda: host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded"),
               120, f"systemd runs in {name}")
    if host.file(f"{CADIR}/ca_crt.pem").exists:
        raise RuntimeError(f"{name} holds a CA already: not a fresh machine")


def other_containers(cluster):
    """Running containers that are not this lab's: another lab sharing the cores."""
    mine = set(cluster.hostvars)
    return [n for n in docker("ps", "--format", "{{.Names}}").split() if n not in mine]


# ---------------------------------------------------------------- what is measured after the restore

def certificate_serial(host, path):
    shown = host.run(f"openssl x509 -noout -serial -in {path}")
    if shown.rc != 0:
        raise RuntimeError(shown.stderr)
    return int(shown.stdout.strip().split("=", 1)[1], 16)


def enrol_new_node(cluster, certname):
    """A new node's request, from the first agent through its ca_server, signed on the CA
    host, its certificate fetched and verified against the CA file the agent already had.
    Returns the node's certificate serial."""
    agent = cluster.agents[0]
    node, ca = cluster.host(agent), cluster.host(cluster.ca)
    ssl = f"--ssldir /root/bench-ssl --certname {certname} --server {cluster.agent_ca_server(agent)}"
    node.run("rm -rf /root/bench-ssl")
    # --waitforcert 0: submit and return; the request waits on the CA (combo2's autosign
    # policy refuses a request without the challenge password).
    node.run(f"puppet ssl bootstrap {ssl} --waitforcert 0")
    signed = ca.run(f"puppetserver ca sign --certname {certname}")
    if signed.rc != 0:
        raise RuntimeError(f"{cluster.ca}: puppetserver ca sign {certname}: {signed.stdout}{signed.stderr}")
    fetched = node.run(f"puppet ssl bootstrap {ssl} --waitforcert 0")
    if fetched.rc != 0:
        raise RuntimeError(f"{agent}: {certname} not fetched: {fetched.stdout}{fetched.stderr}")
    verified = node.run(f"openssl verify -CAfile {SSLDIR}/certs/ca.pem /root/bench-ssl/certs/{certname}.pem")
    if verified.rc != 0:
        raise RuntimeError(f"{certname} does not verify against {agent}'s old ca.pem: {verified.stdout}{verified.stderr}")
    return certificate_serial(node, f"/root/bench-ssl/certs/{certname}.pem")


def forget_new_node(cluster, certname):
    cluster.host(cluster.agents[0]).run("rm -rf /root/bench-ssl")
    cluster.ca_forget([certname])


def agent_runs(cluster, serials):
    """Every agent runs through the load balancer, keeping its certificate. Seconds of the first."""
    seconds = None
    for name in cluster.agents:
        start = time.monotonic()
        run = cluster.agent_run(name)
        seconds = seconds if seconds is not None else time.monotonic() - start
        if run.rc not in (0, 2):
            raise RuntimeError(f"{name}: agent run exit {run.rc}: {run.stdout[-2000:]}{run.stderr[-1000:]}")
        if certificate_serial(cluster.host(name), f"{SSLDIR}/certs/{name}.pem") != serials[name]:
            raise RuntimeError(f"{name}: its certificate changed")
    return seconds


def agent_serials(cluster):
    return {a: certificate_serial(cluster.host(a), f"{SSLDIR}/certs/{a}.pem") for a in cluster.agents}


# ---------------------------------------------------------------- rounds

def backup(cluster, inventory, round_name):
    backups = STATE / f"backups-{round_name}"
    shutil.rmtree(backups, ignore_errors=True)
    seconds, _out = run_playbook(inventory, "playbooks/backup.yml", (
        "-e", json.dumps({"puppet_ca_backup_passphrase": PASSPHRASE}), "-e", f"puppet_ca_backup_dir={backups}"),
        f"{round_name}-backup.log")
    archive, = backups.glob("*.tar.gz.gpg")
    log(f"backup of {cluster.ca}: {seconds:.1f} s, {archive.name}")
    return seconds, archive


def restore(inventory, archive, round_name):
    seconds, out = run_playbook(inventory, "playbooks/restore.yml", (
        "-e", json.dumps({"puppet_ca_backup_passphrase": PASSPHRASE}), "-e", f"puppet_ca_restore_archive={archive}"),
        f"{round_name}-restore.log")
    phases = restore_phases(out)
    log(f"restore: {seconds:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in phases.items())})")
    return seconds, phases


def after_restore(cluster, round_name, restore_end, serials):
    """The first certificate signed by the restored CA (seconds from the restore's end),
    then an agent run through the load balancer."""
    certname = f"bench-{round_name}-{time.strftime('%H%M%S')}.{cluster.server_name.split('.', 1)[1]}"
    enrol_new_node(cluster, certname)
    first_signed = time.monotonic() - restore_end
    log(f"{certname} signed by {cluster.ca}, {first_signed:.1f} s after the restore's end")
    run_seconds = agent_runs(cluster, serials)
    log(f"agent run through {cluster.server_name}: {run_seconds:.1f} s, old certificates kept")
    forget_new_node(cluster, certname)
    return first_signed, run_seconds


def same_name_round(inventory, index):
    """Backup, the CA container rebuilt under its name, restore, first signature, agent run."""
    cluster = cluster_of(inventory)
    name = f"round{index}"
    others = other_containers(cluster)
    load = os.getloadavg()[0]
    serials = agent_serials(cluster)
    backup_seconds, archive = backup(cluster, inventory, name)
    start = time.monotonic()
    container_like(cluster.ca, cluster.ca, replace=True)
    wait_systemd(cluster, cluster.ca)
    rebuild = time.monotonic() - start
    log(f"{cluster.ca} rebuilt from its image: {rebuild:.1f} s to a running systemd")
    restore_seconds, phases = restore(inventory, archive, name)
    first_signed, run_seconds = after_restore(cluster, name, time.monotonic(), serials)
    return {"round": name, "kind": "same name", "backup": backup_seconds, "rebuild": rebuild,
            "restore": restore_seconds, "phases": phases, "first signed": first_signed, "agent run": run_seconds,
            "load before": load, "other containers": len(others)}


def new_name_round(inventory, new_name):
    """Backup, a new host NEW_NAME, the old CA stopped, restore with an inventory in which
    puppet_ca holds NEW_NAME, then what must hold with the CA on a new host."""
    cluster = cluster_of(inventory)
    old = cluster.ca
    others = other_containers(cluster)
    load = os.getloadavg()[0]
    serials = agent_serials(cluster)
    backup_seconds, archive = backup(cluster, inventory, "new-name")
    start = time.monotonic()
    container_like(old, new_name, replace=False)
    docker("stop", old)
    wait_systemd(cluster, new_name)
    rebuild = time.monotonic() - start
    log(f"{new_name} created, {old} stopped: {rebuild:.1f} s")
    moved = pathlib.Path(tempfile.mkdtemp(prefix="inventory-", dir=STATE))
    changed = renamed_inventory(inventory, old, new_name, moved)
    log(f"inventory {moved}: {old} -> {new_name} in {', '.join(changed)}")
    restore_seconds, phases = restore(moved, archive, "new-name")
    restore_end = time.monotonic()
    cluster = cluster_of(moved)
    assert cluster.ca == new_name, cluster.ca
    first_signed, run_seconds = after_restore(cluster, "new-name", restore_end, serials)
    checks = new_name_checks(cluster, old, new_name)
    for what, passed, detail in checks:
        log(f"{'ok  ' if passed else 'FAIL'} {what}: {detail}")
    return {"round": "new-name", "kind": f"new name {new_name}", "backup": backup_seconds, "rebuild": rebuild,
            "restore": restore_seconds, "phases": phases, "first signed": first_signed, "agent run": run_seconds,
            "load before": load, "other containers": len(others), "inventory changes": changed,
            "checks": [{"check": w, "passed": p, "detail": d} for w, p, d in checks]}


def new_name_checks(cluster, old, new_name):
    """[(what, passed, detail)]: who the cluster's hosts name as their CA now, and the
    masters' and load balancer's CRL coming from the new host (a certificate revoked there
    reaches them through their refresh timers: the old CA is stopped)."""
    checks = []
    ca = cluster.host(new_name)
    # Every file of the other hosts' configuration that names a CA host: puppet.conf's
    # ca_server, the CRL refresh script's URL, the load balancer's /puppet-ca/ backend...
    for host in cluster.masters + cluster.lbs + cluster.agents:
        def naming(name, h=host):
            return cluster.host(h).run(f"grep -rlF {name} /etc /usr/local/sbin").stdout.split()
        stale, current = naming(old), naming(new_name)
        checks.append((f"{host} names the new CA, not the old", not stale,
                       f"{new_name} in {', '.join(current) or 'nothing'}; {old} in {', '.join(stale) or 'nothing'}"))
    for agent in cluster.agents:
        checks.append((f"{agent}: ca_server", True, cluster.agent_ca_server(agent)))
    # A probe certificate generated and revoked on the new CA: its serial must reach every
    # master's and load balancer's CRL.
    probe = f"bench-crl-probe-{time.strftime('%H%M%S')}.{cluster.server_name.split('.', 1)[1]}"
    made = ca.run(f"puppetserver ca generate --certname {probe}")
    serial = certificate_serial(ca, f"{SSLDIR}/certs/{probe}.pem") if made.rc == 0 else None
    revoked = ca.run(f"puppetserver ca revoke --certname {probe}") if serial else None
    for host in cluster.masters + cluster.tls_lbs():
        def listed(h=host):
            text = cluster.host(h).run(f"openssl crl -noout -text -in {SSLDIR}/crl.pem").stdout
            return re.search(rf"Serial Number: 0*{serial:X}\b", text, re.I) is not None
        try:
            if not (serial and revoked.rc == 0):
                raise RuntimeError(f"probe not generated or revoked: {made.stdout}{made.stderr}")
            start = time.monotonic()
            wait_until(listed, 120, f"{host}'s CRL lists the probe")
            checks.append((f"{host}: CRL from {new_name}", True,
                           f"revoked serial {serial:X} listed after {time.monotonic() - start:.0f} s (refresh timer)"))
        except (TimeoutError, RuntimeError) as exc:
            checks.append((f"{host}: CRL from {new_name}", False, str(exc)))
    return checks


# ---------------------------------------------------------------- report

MEASURES = ("backup", "rebuild", "restore", "first signed", "agent run")


def summary(rounds):
    """Markdown: one row per round, then median and range of the same-name rounds."""
    phase_names = list(dict.fromkeys(p for r in rounds for p in r["phases"]))
    head = ["round", *MEASURES, *(f"restore: {p}" for p in phase_names), "load (1 min)", "other containers"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(value):
        return "" if value is None else f"{value:.1f}"

    for r in rounds:
        cells = [r["kind"], *(cell(r[m]) for m in MEASURES), *(cell(r["phases"].get(p)) for p in phase_names),
                 f"{r['load before']:.1f}", str(r["other containers"])]
        lines.append("| " + " | ".join(cells) + " |")
    same = [r for r in rounds if r["kind"] == "same name"]
    if len(same) > 1:
        def stat(values):
            values = [v for v in values if v is not None]
            return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})" if values else ""
        cells = ["median (range)", *(stat([r[m] for r in same]) for m in MEASURES),
                 *(stat([r["phases"].get(p) for r in same]) for p in phase_names), "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--scenario", default="combo2", help="the converged Molecule scenario (default combo2)")
    parser.add_argument("--rounds", type=int, default=3, help="rebuilds of the CA under its own name (default 3)")
    parser.add_argument("--new-name", metavar="HOST",
                        help="then restore onto a new container HOST (same domain as the lab), the old CA stopped")
    opts = parser.parse_args()
    for tool in ("ansible-playbook", "ansible-inventory", "docker"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not on PATH: run bench/run with the lab's environment")
    STATE.mkdir(parents=True, exist_ok=True)
    inventory = molecule_inventory(opts.scenario)
    log(f"lab {opts.scenario}, inventory {inventory}, {os.cpu_count()} cores")
    rounds = []
    try:
        for index in range(1, opts.rounds + 1):
            rounds.append(same_name_round(inventory, index))
        if opts.new_name:
            rounds.append(new_name_round(inventory, opts.new_name))
    finally:
        if rounds:
            results = STATE / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"
            results.write_text(json.dumps(rounds, indent=2), encoding="utf-8")
            print(summary(rounds))
            log(f"results: {results}")
    failed = [c for r in rounds for c in r.get("checks", []) if not c["passed"]]
    if failed:
        raise SystemExit(f"the new-name restore: {len(failed)} check(s) failed")


if __name__ == "__main__":
    main()
