"""The measurement blocks of `bench/run load`: each gets the Lab, the parsed options, its
result directory and the client certificates, and returns its result rows."""

import hashlib
import json
import os
import time

from .common import BACKEND_PROBE, FACTS, JVM_EXPERIMENT, TUNING_SETTINGS, log, read_json
from .cpu import container_cgroup, jvm_thread_seconds
from .lab import container_cpu_seconds, docker, ip_of, lab_busy, set_cpuset
from .locust_run import run_locust, summarize_rounds, warm_up


def measure_rounds(lab, args, outdir, certnames, configs):
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
                run_locust(lab, outdir, tag, entry, args.users, args.duration, certnames)
                tags[key].append(tag)
            finally:
                if undo:
                    undo()
    return [summarize_rounds(outdir, label, tags[key], masters) for key, label, _e, masters, _s, _u in configs]


def block_entry(lab, args, outdir, certnames):
    """Each master direct (nginx and apache fronts) and the LB over both, same users and time."""
    eps = lab.entry_points()
    warm_up(lab, outdir, eps, args.users, args.warmup, certnames)
    return measure_rounds(lab, args, outdir, certnames, [
        *[(key, f"{key} direct ({lab.front_label[key]})", eps[key], 1, None, None) for key in lab.masters],
        ("lb", f"LB, two masters{' (Puppet 5.5 under Passenger)' if lab.name == 'legacy' else ''}", eps["lb"], 2,
         None, None),
    ])


def only_puppet1_behind_lb(lab, certname):
    def setup():
        log("stopping puppet2's front (apache2)")
        lab.stop_front("puppet2")

    def undo():
        if not lab.service_active(lab.masters["puppet2"], lab.front_service["puppet2"]):
            log("restoring puppet2's front")
            lab.start_front("puppet2", certname)
    return setup, undo


def block_lb_one(lab, args, outdir, certnames):
    """puppet1 direct vs the LB with puppet2's front stopped (one master behind the LB)."""
    eps = lab.entry_points()
    warm_up(lab, outdir, eps, args.users, args.warmup, certnames)
    setup, undo = only_puppet1_behind_lb(lab, certnames[0])
    return measure_rounds(lab, args, outdir, certnames, [
        ("puppet1-ref", "puppet1 direct (reference)", eps["puppet1"], 1, None, None),
        ("lb-one", "LB, one master (puppet1)", eps["lb"], 1, setup, undo),
    ])


def block_pinned(lab, args, outdir, certnames):
    """Two masters pinned to one core each (via the LB) vs one master pinned to one core."""
    eps = lab.entry_points()
    original = lab.cpusets()
    log(f"original cpusets: {original}")
    try:
        set_cpuset(lab.masters["puppet1"], "0")
        set_cpuset(lab.masters["puppet2"], "1")
        log(f"pinned: {lab.cpusets()}")
        warm_up(lab, outdir, eps, args.users, args.warmup, certnames)
        # One pinned master direct, not behind the LB with the other front stopped: nothing
        # but the pinning changes, so the block can run next to the lab's tests (the LB's own
        # cost is measured in the lb-one block).
        return measure_rounds(lab, args, outdir, certnames, [
            ("pinned-two", "LB, two masters pinned to one core each", eps["lb"], 2, None, None),
            ("pinned-one", "puppet1 direct, pinned to one core", eps["puppet1"], 1, None, None),
        ])
    finally:
        for host, cpus in original.items():
            set_cpuset(host, cpus)
        log(f"cpusets restored: {lab.cpusets()}")


# Where backend_probe.py is copied inside a master.
PROBE_IN_CONTAINER = "/tmp/bench-backend-probe.py"


def inside_catalogs(lab, host, mode, users, seconds):
    """backend_probe.py inside a master: catalog POSTs on persistent connections, through the
    front ("front") or to puppetserver's plain port ("backend"); returns its figures."""
    lab.copy_to(host, BACKEND_PROBE, PROBE_IN_CONTAINER)
    with open(FACTS, "rb") as fh:
        facts = fh.read()
    out = docker("exec", "-i", host, "python3", PROBE_IN_CONTAINER, mode, host, str(users), str(seconds),
                 lab.environment, input_bytes=facts).stdout.decode()
    return json.loads(out.strip().splitlines()[-1])


def measure_inside(lab, host, mode, users, seconds, ignore_restarts=False):
    """inside_catalogs(), with what disturbed it (Lab.disturbances())."""
    before, busy = lab.service_stamps(), lab_busy()
    res = inside_catalogs(lab, host, mode, users, seconds)
    res["disturbed"] = lab.disturbances(before, busy, ignore_restarts)
    return res


def block_backend(lab, args, outdir, _certnames):
    """Inside one master (--master, default puppet1): catalogs from puppetserver's plain
    loopback port vs through the master's front (nginx on puppet1, apache on puppet2).

    The plain port is loopback only, so a small stdlib client (backend_probe.py) runs inside
    the master container as the master itself (a master's own certificate may fetch its own
    catalog). Same client, same container, same users: only the front differs.
    """
    key = args.master
    host, front = lab.masters[key], lab.front_service[key]
    log(f"inside {host}: warmup ({args.warmup}s, {args.users} threads)")
    inside_catalogs(lab, host, "front", args.users, args.warmup)
    results = []
    for mode in ("front", "backend", "front2"):
        log(f"inside {host}: {mode} ({args.duration}s, {args.users} threads)")
        res = measure_inside(lab, host, "backend" if mode == "backend" else "front", args.users, args.duration)
        label = {"front": f"inside {key}, via {front} front (TLS)",
                 "backend": f"inside {key}, puppetserver plain port (no front)",
                 "front2": f"inside {key}, via {front} front again"}[mode]
        res.update(tag=f"inside-{mode}", label=label, masters=1, requests=res["catalogs"] + res["errors"])
        results.append(res)
    with open(os.path.join(outdir, "inside.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1)
    return results


TUNING_FILES = ("/etc/puppet/puppet.conf", "/etc/puppet/puppetserver/conf.d/puppetserver.conf",
                "/etc/default/puppetserver")
TUNING_SAVE = "/root/bench-tuning-saved"
# Where tuning_settings.sh is copied inside the master.
TUNING_IN_CONTAINER = "/tmp/bench-tuning-settings.sh"


def tuning_settings(lab, host, action):
    """tuning_settings.sh inside the master: "stock" (saves the collection's files first) or
    "restore"; returns what it printed."""
    lab.copy_to(host, TUNING_SETTINGS, TUNING_IN_CONTAINER)
    return lab.run_in(host, "sh", TUNING_IN_CONTAINER, action, TUNING_SAVE, *TUNING_FILES).stdout.decode().strip()


def merged_inside_runs(label, runs):
    """Several runs of backend_probe.py as one row: the way of the earlier hand measurements (catalog
    requests only, persistent connections)."""
    n = sum(r["catalogs"] for r in runs)
    return {"label": label, "masters": 1, "catalogs": n, "requests": n + sum(r["errors"] for r in runs),
            "catalogs_per_s": sum(r["catalogs_per_s"] for r in runs) / len(runs),
            "round_catalogs_per_s": [round(r["catalogs_per_s"], 1) for r in runs],
            "catalog_p50_ms": sum(r["catalog_p50_ms"] for r in runs) / len(runs),
            "catalog_p95_ms": max(r["catalog_p95_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "disturbed": sorted({d for r in runs for d in r["disturbed"]})}


# The catalog a master compiles for one bench node, asked on its plain loopback port as the
# front would ask it (root passes the backend guard); the node's facts are those its last
# agent run uploaded.
CATALOG_URL = "http://127.0.0.1:18140/puppet/v3/catalog/{certname}?environment={environment}"


def catalog_digest(lab, host, certname):
    """sha256 of what the master's catalog for certname says (resources with their
    parameters, edges, classes), without what changes on every compile (version, ids): the
    same digest under two settings is the same catalog."""
    url = CATALOG_URL.format(certname=certname, environment=lab.environment)
    out = lab.run_in(host, "curl", "-sf", "-H", "X-Client-Verify: SUCCESS", "-H", f"X-Client-DN: CN={certname}", url).stdout
    catalog = json.loads(out)
    content = {"resources": sorted(catalog["resources"], key=lambda r: (r["type"], r["title"])),
               "edges": sorted(catalog["edges"], key=lambda e: (e["source"], e["target"])),
               "classes": sorted(catalog.get("classes", []))}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    log(f"{host}: catalog of {certname}: {len(content['resources'])} resources, sha256 {digest[:16]}")
    return digest


def block_tuning(lab, args, outdir, certnames):
    """The collection's master settings vs Debian's stock puppetserver, on puppet1 (nginx
    front) direct: tuned, stock, tuned again (each after its own warm-up), so that drift in
    what else runs on the machine shows as a difference between the two tuned rounds."""
    key, host = "puppet1", lab.masters["puppet1"]
    entry = lab.entry_points()[key]
    tags = {"tuned": [], "stock": []}
    digests = {"tuned": [], "stock": []}
    try:
        for rnd, mode in enumerate(("tuned", "stock", "tuned"), start=1):
            if mode == "stock":
                out = tuning_settings(lab, host, "stock")
                log(f"{host}: Debian's stock settings ({out})")
                lab.restart_puppetserver(key, certnames[0])
            elif rnd == 3:
                log(f"{host}: the collection's settings again")
                tuning_settings(lab, host, "restore")
                lab.restart_puppetserver(key, certnames[0])
            log(f"round {rnd}: {mode}: warm-up {args.warmup}s, then {args.duration}s"
                f"{' (catalogs only, inside the master)' if args.catalogs_only else ''}")
            tag = f"m-{mode}-r{rnd}"
            if args.catalogs_only:
                inside_catalogs(lab, host, "front", args.users, args.warmup)
                # The block restarts puppetserver itself; only others driving the lab count.
                tags[mode].append(measure_inside(lab, host, "front", args.users, args.duration, ignore_restarts=True))
                continue
            run_locust(lab, outdir, f"warmup-{mode}-r{rnd}", entry, args.users, args.warmup, certnames)
            run_locust(lab, outdir, tag, entry, args.users, args.duration, certnames)
            tags[mode].append(tag)
            digests[mode].append(catalog_digest(lab, host, certnames[0]))
    finally:
        if lab.run_in(host, "test", "-d", TUNING_SAVE, check=False).returncode == 0:
            log(f"{host}: restoring the collection's settings")
            tuning_settings(lab, host, "restore")
            lab.restart_puppetserver(key, certnames[0])
    settings = lab.run_in(host, "sh", "-c", "grep -E '^environment_timeout' /etc/puppet/puppet.conf; "
                          "grep -E '^\\s*max-active-instances' /etc/puppet/puppetserver/conf.d/puppetserver.conf; "
                          "grep -E '^JAVA_ARGS' /etc/default/puppetserver").stdout.decode().strip()
    if args.catalogs_only:
        return [merged_inside_runs("inside puppet1, catalogs only, the collection's settings (two rounds)", tags["tuned"])
                | {"settings": settings},
                merged_inside_runs("inside puppet1, catalogs only, Debian's stock settings", tags["stock"])]
    # Correctness beside the cost: every round's catalog the same as the first's.
    same = len(set(digests["tuned"] + digests["stock"])) == 1
    return [summarize_rounds(outdir, "puppet1 direct, the collection's settings (two rounds)", tags["tuned"], 1)
            | {"settings": settings, "catalog_sha256": digests["tuned"], "catalog_same_as_stock": same},
            summarize_rounds(outdir, "puppet1 direct, Debian's stock puppetserver settings", tags["stock"], 1)
            | {"catalog_sha256": digests["stock"]}]


# Where jvm_experiment.sh is copied inside the master, and where it saves the files it changes.
EXPERIMENT_IN_CONTAINER = "/tmp/bench-jvm-experiment.sh"
EXPERIMENT_SAVE = "/root/bench-jvm-experiment-saved"
# What jvm_experiment.sh changes, one setting against the collection's settings each
# (the names are its `apply` argument).
EXPERIMENTS = {
    "baseline": "the collection's settings",
    "compile-off": "JRuby compile-mode off (interpreter only)",
    "compile-jit": "JRuby compile-mode jit",
    "compile-force": "JRuby compile-mode force",
    "indy": "-Djruby.compile.invokedynamic=true",
    "parallel-gc": "-XX:+UseParallelGC instead of G1",
    "heap-1g": "1 GB heap (-Xms1g -Xmx1g)",
    "class-cache": "environment-class-cache-enabled: true",
    "one-jruby": "max-active-instances: 1",
    "profiler": "puppetserver's profiler on (its per-function and per-resource timings are saved)",
}
# puppetserver's status service with the profiler's figures, on the master's plain loopback
# port (puppet_master_backend_port): no client certificate needed from inside the master.
PROFILER_STATUS = "http://127.0.0.1:18140/status/v1/services/puppet-profiler?level=debug"
DEFAULT_EXPERIMENTS = ("compile-off", "indy", "parallel-gc", "class-cache")


def jvm_experiment(lab, host, action, name=""):
    """jvm_experiment.sh inside the master: "apply" one experiment (saves the files first) or
    "restore"; returns what it printed (the setting now in force)."""
    lab.copy_to(host, JVM_EXPERIMENT, EXPERIMENT_IN_CONTAINER)
    argv = ["sh", EXPERIMENT_IN_CONTAINER, action, EXPERIMENT_SAVE, *([name] if name else [])]
    return lab.run_in(host, *argv).stdout.decode().strip()


def jvm_threads(lab, host):
    """CPU seconds so far of a master's puppetserver JVM by thread group (cpu.py)."""
    root = container_cgroup(lab.container_id(host))
    return jvm_thread_seconds(f"{root}/system.slice/puppetserver.service")


def save_jvm_threads(outdir, tag, threads, catalogs):
    """The JVM's CPU by thread group during the warm-up and during the measured run (per
    agent run) into <tag>-threads.json: how much of it the JIT compilers and the garbage
    collector take, and how that changes once the JVM is warmer."""
    start, warm, end = threads

    def spent(a, b):
        return {g: round(b.get(g, 0) - a.get(g, 0), 2) for g in b}
    record = {"warmup_s": spent(start, warm), "run_s": spent(warm, end),
              "run_s_per_run": {g: round(v / max(1, catalogs), 3) for g, v in spent(warm, end).items()}}
    with open(os.path.join(outdir, f"{tag}-threads.json"), "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1)


def restore_experiment(lab, host):
    """The collection's files back, if an experiment saved them (and only then: a failed
    apply may have saved nothing)."""
    if lab.run_in(host, "test", "-d", EXPERIMENT_SAVE, check=False).returncode == 0:
        jvm_experiment(lab, host, "restore")


def experiment_order(experiments, rounds):
    """[(round, name)]: the baseline first and the experiments after it in odd rounds, the
    reverse in even ones (A-B B-A), so that a drift over the run weighs on the baseline and the
    experiments alike; a single round measures the baseline at both ends."""
    order = []
    for rnd in range(1, rounds + 1):
        names = ["baseline", *experiments]
        order += [(rnd, n) for n in (names if rnd % 2 else names[::-1])]
    if rounds == 1:
        order.append((1, "baseline"))
    return order


def block_jvm_experiments(lab, args, outdir, certnames):
    """One setting at a time against the collection's settings on puppet1 (nginx front)
    direct: each configuration gets a restarted puppetserver (the baseline too, so that each
    starts from a cold JVM alike), --warmup seconds of agent runs and a measured run whose
    CPU per agent run comes from the cgroups. The files are restored after each
    configuration and, whatever happens, at the end."""
    key, host = "puppet1", lab.masters["puppet1"]
    entry = lab.entry_points()[key]
    experiments = args.experiment or list(DEFAULT_EXPERIMENTS)
    tags = {name: [] for name in ["baseline", *experiments]}
    digests = {name: [] for name in tags}
    settings = {}
    try:
        for step, (rnd, name) in enumerate(experiment_order(experiments, args.rounds), start=1):
            try:
                settings[name] = jvm_experiment(lab, host, "apply", name)
                log(f"round {rnd}/{args.rounds}: {name}: {settings[name]}")
                lab.restart_puppetserver(key, certnames[0])
                threads = [jvm_threads(lab, host)]
                run_locust(lab, outdir, f"warmup-{name}-{step}", entry, args.users, args.warmup, certnames)
                threads.append(jvm_threads(lab, host))
                tag = f"m-{name}-{step}"
                res = run_locust(lab, outdir, tag, entry, args.users, args.duration, certnames)
                threads.append(jvm_threads(lab, host))
                save_jvm_threads(outdir, tag, threads, res["catalogs"])
                tags[name].append(tag)
                digests[name].append(catalog_digest(lab, host, certnames[0]))
                if name == "profiler":
                    # What the profiler counted since the restart: the warm-up and the run.
                    with open(os.path.join(outdir, f"{tag}-profile.json"), "wb") as fh:
                        fh.write(lab.run_in(host, "curl", "-sf", PROFILER_STATUS).stdout)
            finally:
                restore_experiment(lab, host)
    finally:
        restore_experiment(lab, host)
        log(f"{host}: the collection's settings again")
        lab.restart_puppetserver(key, certnames[0])
    results = []
    for name, name_tags in tags.items():
        res = summarize_rounds(outdir, f"puppet1 direct, {EXPERIMENTS[name]}", name_tags, 1)
        res.update(experiment=name, settings=settings.get(name, ""), catalog_sha256=digests[name],
                   catalog_same_as_baseline=set(digests[name]) == set(digests["baseline"]),
                   jvm_threads=[read_json(os.path.join(outdir, f"{t}-threads.json")) for t in name_tags])
        results.append(res)
    base = results[0]
    for res in results:
        # The experiment's CPU per agent run against the baseline's, and each of its
        # measurements against each of the baseline's (measured at opposite ends of the run):
        # a gain must show against both.
        if res.get("stack_cpu_s_per_run") and base.get("stack_cpu_s_per_run"):
            res["stack_cpu_vs_baseline"] = round(res["stack_cpu_s_per_run"] / base["stack_cpu_s_per_run"], 3)
            res["compiler_cpu_vs_baseline"] = round(res["cpu_s_per_run_by_category"]["compiler"]
                                                    / base["cpu_s_per_run_by_category"]["compiler"], 3)
            res["round_stack_cpu_vs_baseline"] = [round(a / b, 3) for a in res["round_stack_cpu_s_per_run"]
                                                  for b in base["round_stack_cpu_s_per_run"]]
    return results


# The engines of the LB comparison, in the order of its first round.
LB_ENGINES = ("haproxy", "nginx")
# Seconds of a load balancer's CPU without load before each measurement: HAProxy's checks
# cost CPU at any load, which weighs on the CPU per run the more, the fewer runs there are.
LB_IDLE_S = 15


def idle_cpu_per_s(lb):
    """CPU seconds per second the load balancer's container uses without load."""
    before, start = container_cpu_seconds(lb), time.monotonic()
    time.sleep(LB_IDLE_S)  # a measurement window, not a wait for something
    return (container_cpu_seconds(lb) - before) / (time.monotonic() - start)


def lb_running(lab, engine, certname, outdir):
    """A load balancer of the lab that serves with this engine; converges the lab first if
    none does: a pair to one engine per host (LB_ENGINES in the order of its hosts), a single
    load balancer to this engine."""
    running = [lb for lb in lab.lbs if lab.lb_engine(lb) == engine]
    if running:
        return running[0]
    engines = dict(zip(lab.lbs, LB_ENGINES)) if len(lab.lbs) > 1 else {lab.lbs[0]: engine}
    lab.converge(engines, certname, os.path.join(outdir, "converge.log"))
    return [lb for lb, e in engines.items() if e == engine][0]


def block_lb_engines(lab, args, outdir, certnames):
    """HAProxy against nginx as the load balancer, no fault, in the lab's mode (tcp or tls):
    agent runs through one load balancer's own address, the engines alternated A-B B-A over
    the rounds (one converge per round on a single load balancer, none on a pair once each of
    its hosts runs one engine). The LB container's CPU time (its cgroup) is read before and
    after each measurement and divided by the agent runs served (one catalog per run); its
    rate without load, read for LB_IDLE_S just before, gives the CPU per run above it."""
    initial = {lb: lab.lb_engine(lb) for lb in lab.lbs}
    if len(lab.lbs) > 1:
        # A pair: each engine on its own host before the first measurement, the same hosts throughout.
        for engine in LB_ENGINES:
            lb_running(lab, engine, certnames[0], outdir)
    eps = lab.entry_points()
    warm_up(lab, outdir, {k: eps[k] for k in lab.masters}, args.users, args.warmup, certnames)
    tags = {e: [] for e in LB_ENGINES}
    cpu_s = {e: [] for e in LB_ENGINES}
    cpu_ms_per_run = {e: [] for e in LB_ENGINES}
    above_idle_ms_per_run = {e: [] for e in LB_ENGINES}
    idle_ms_per_s = {e: [] for e in LB_ENGINES}
    served_by = {}
    try:
        for rnd in range(1, args.rounds + 1):
            for engine in LB_ENGINES if rnd % 2 else LB_ENGINES[::-1]:
                lb = lb_running(lab, engine, certnames[0], outdir)
                served_by[engine] = lb
                log(f"round {rnd}/{args.rounds}: {engine} on {lb}, {lab.lb_mode} mode ({args.duration}s, {args.users} users)")
                tag = f"m-{engine}-r{rnd}"
                idle = idle_cpu_per_s(lb)
                before, start = container_cpu_seconds(lb), time.monotonic()
                res = run_locust(lab, outdir, tag, (ip_of(lb), lab.shared_name), args.users, args.duration, certnames)
                cpu_s[engine].append(container_cpu_seconds(lb) - before)
                runs = max(1, res["catalogs"])  # every Locust agent run asks one catalog
                cpu_ms_per_run[engine].append(round(1000 * cpu_s[engine][-1] / runs, 2))
                idle_ms_per_s[engine].append(round(1000 * idle, 2))
                above_idle = cpu_s[engine][-1] - idle * (time.monotonic() - start)
                above_idle_ms_per_run[engine].append(round(1000 * above_idle / runs, 2))
                tags[engine].append(tag)
    finally:
        if {lb: lab.lb_engine(lb) for lb in lab.lbs} != initial:
            lab.guard = False  # restoring: nothing may stop it early
            lab.converge(initial, certnames[0], os.path.join(outdir, "converge.log"))
    results = []
    for engine in LB_ENGINES:
        res = summarize_rounds(outdir, f"{engine} on {served_by[engine]}, {lab.lb_mode} mode", tags[engine], 2)
        res.update(engine=engine, lb=served_by[engine], lb_mode=lab.lb_mode, lb_cpu_s=round(sum(cpu_s[engine]), 2),
                   round_lb_cpu_s=[round(c, 2) for c in cpu_s[engine]],
                   round_lb_cpu_ms_per_run=cpu_ms_per_run[engine],
                   round_lb_idle_cpu_ms_per_s=idle_ms_per_s[engine],
                   lb_idle_cpu_ms_per_s=round(sum(idle_ms_per_s[engine]) / len(idle_ms_per_s[engine]), 2),
                   round_lb_cpu_above_idle_ms_per_run=above_idle_ms_per_run[engine],
                   lb_cpu_above_idle_ms_per_run=round(sum(above_idle_ms_per_run[engine])
                                                      / len(above_idle_ms_per_run[engine]), 2),
                   lb_cpu_ms_per_run=round(1000 * sum(cpu_s[engine]) / max(1, res["catalogs"]), 2))
        results.append(res)
    return results


BLOCKS = {"tuning": block_tuning, "entry": block_entry, "lb-one": block_lb_one, "pinned": block_pinned,
          "backend": block_backend, "lb-engines": block_lb_engines, "jvm-experiments": block_jvm_experiments}
