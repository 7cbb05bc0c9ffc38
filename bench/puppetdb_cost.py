"""What PuppetDB costs the masters (issue 18; docs/load.md, "PuppetDB"): whole agent runs
with the masters storing in PuppetDB and without, alternated within one run on a lab left
up by `molecule converge -s combo3` (two masters, two PuppetDB hosts).

Each block turns PuppetDB on or off on every master (storeconfigs, reports, the facts
route; puppetserver reloaded and waited for), warms up with one run per agent, then runs
`puppet agent --test` back to back on every agent for the block's seconds, the agents'
catalogs spread over the masters. Per block it reads the containers' CPU time from their
cgroups (bench/load/lab.py) before and after, and PuppetDB's processed
command count from its metrics, and reports runs per second, the masters' CPU seconds per
run, PuppetDB's (and PostgreSQL's) CPU seconds per run and the commands PuppetDB
processed per second. The masters' files are put back as they were at the end.

    bench/run puppetdb [--seconds 90] [--rounds 2]
"""

import argparse
import json
import pathlib
import subprocess
import sys
import threading
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The load bench's cgroup reader, by its package name from the repository root.
sys.path[0] = str(ROOT)
from bench.load.lab import container_cpu_seconds as cpu_seconds  # noqa: E402  pylint: disable=wrong-import-position
SSLDIR = "/var/lib/puppet/ssl"
MODES = ("with PuppetDB", "without")


def sh(host, command, check=True):
    """Run a shell command in a lab container; its stdout."""
    result = subprocess.run(["docker", "exec", host, "bash", "-c", command],
                            capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{host}: {command}: {result.stderr.strip()}")
    return result.stdout


def lab_hosts(scenario):
    """{group: [hosts]} of the scenario's molecule.yml."""
    platforms = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())["platforms"]
    groups = {}
    for platform in platforms:
        for group in platform.get("groups", []):
            groups.setdefault(group, []).append(platform["name"])
    return groups


def commands_processed(master, puppetdb):
    """PuppetDB's count of processed commands, asked with a master's certificate."""
    url = f"https://{puppetdb}:8081/metrics/v2/read/puppetlabs.puppetdb.mq:name=global.processed"
    out = sh(master, f"curl -s --cacert {SSLDIR}/certs/ca.pem --cert {SSLDIR}/certs/{master}.pem "
                     f"--key {SSLDIR}/private_keys/{master}.pem '{url}'")
    return int(json.loads(out)["value"]["Count"])


def set_puppetdb(masters, enabled):
    """Store in PuppetDB or not, on every master; reload puppetserver and wait for it."""
    for master in masters:
        if enabled:
            sh(master, "cp -p /root/bench-puppet.conf /etc/puppet/puppet.conf && "
                       "cp -p /root/bench-routes.yaml /etc/puppet/routes.yaml")
        else:
            sh(master, "puppet config set --section server storeconfigs false && "
                       "puppet config set --section server reports store && rm -f /etc/puppet/routes.yaml")
        sh(master, "systemctl reload puppetserver")
    for master in masters:
        deadline = time.monotonic() + 240
        while sh(master, f"curl -s --cacert {SSLDIR}/certs/ca.pem --resolve {master}:8140:127.0.0.1 "
                         f"https://{master}:8140/status/v1/simple", check=False).strip() != "running":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{master} not running after the reload")
            time.sleep(1)


def agent_loop(agent, masters, until, results, turn=0):
    """Agent runs back to back until `until`, each compiled by the next master in turn
    (starting with master number `turn`)."""
    while time.monotonic() < until:
        master = masters[turn % len(masters)]
        turn += 1
        run = subprocess.run(["docker", "exec", agent, "puppet", "agent", "--test", "--color=false",
                              "--no-use_srv_records", "--server", master, "--server_list", ""],
                             capture_output=True, text=True, check=False)
        results.append(run.returncode in (0, 2))


def block(groups, enabled, seconds):
    masters, agents = groups["puppet_masters"], groups["puppet_agents"]
    puppetdbs = groups.get("puppet_puppetdb", [])
    set_puppetdb(masters, enabled)
    warm = []
    for agent in agents:
        agent_loop(agent, masters, time.monotonic() + 0.1, warm)  # one run each
    cpu_before = {host: cpu_seconds(host) for host in masters + puppetdbs}
    processed_before = commands_processed(masters[0], puppetdbs[0]) if puppetdbs else 0
    results = []
    start = time.monotonic()
    threads = [threading.Thread(target=agent_loop, args=(agent, masters, start + seconds, results, number))
               for number, agent in enumerate(agents)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    cpu = {host: cpu_seconds(host) - cpu_before[host] for host in cpu_before}
    processed = (commands_processed(masters[0], puppetdbs[0]) - processed_before) if puppetdbs else 0
    good = sum(results)
    return {
        "mode": MODES[0] if enabled else MODES[1],
        "runs": good, "failed": len(results) - good, "seconds": elapsed,
        "runs_per_s": good / elapsed,
        "master_cpu_per_run": sum(cpu[m] for m in masters) / max(good, 1),
        "puppetdb_cpu_per_run": sum(cpu[p] for p in puppetdbs) / max(good, 1),
        "commands_per_s": processed / elapsed,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--lab", default="combo3")
    parser.add_argument("--seconds", type=int, default=90)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    groups = lab_hosts(args.lab)
    masters = groups["puppet_masters"]
    for master in masters:
        sh(master, "cp -p /etc/puppet/puppet.conf /root/bench-puppet.conf && "
                   "cp -p /etc/puppet/routes.yaml /root/bench-routes.yaml")
    rows = []
    try:
        for _round in range(args.rounds):
            for enabled in (True, False):
                row = block(groups, enabled, args.seconds)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        set_puppetdb(masters, True)
    print("\n| block | PuppetDB | agent runs (failed) | runs/s | masters' CPU s/run | PuppetDB hosts' CPU s/run "
          "| commands processed/s |")
    print("|---|---|---|---|---|---|---|")
    for number, row in enumerate(rows, 1):
        print(f"| {number} | {'on' if row['mode'] == MODES[0] else 'off'} | {row['runs']} ({row['failed']}) "
              f"| {row['runs_per_s']:.2f} | {row['master_cpu_per_run']:.2f} | {row['puppetdb_cpu_per_run']:.2f} "
              f"| {row['commands_per_s']:.2f} |")
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        print(f"{mode}: {sum(r['runs_per_s'] for r in mine) / len(mine):.2f} runs/s, "
              f"{sum(r['master_cpu_per_run'] for r in mine) / len(mine):.2f} master CPU s/run")


if __name__ == "__main__":
    main()
