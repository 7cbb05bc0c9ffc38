"""CPU time per agent run, from the containers' cgroup accounting (issue 20).

Throughput on the shared 2-core machine moves with the load generator and the neighbours;
the CPU time each component spends per successful agent run moves much less, and gives the
sizing figure "agents per core". run_locust() takes a snapshot right before and right after
every measured run and writes <tag>-cpu.json; summarize_rounds() adds these figures.

Where the counters are: every lab container runs systemd with the host's cgroup namespace,
so each systemd unit inside has its own cgroup below the container's on this host. With
cgroup v1 and Docker's cgroupfs driver (this machine) the per-unit counters are in the
unified (v2) hierarchy of the hybrid layout: /sys/fs/cgroup/unified/docker/<id>/system.slice/
<unit>.service/cpu.stat (usage_usec), the container's own in .../docker/<id>/cpu.stat. With
cgroup v2 and systemd's driver the same tree sits below /sys/fs/cgroup/system.slice/docker-<id>.scope.
A unit's counter starts again at 0 when the unit restarts: a restart during a measurement
shows in the run's "disturbed" list (Lab.disturbances), and its delta is not used.
"""

import json
import os
import resource

from .common import read_json

# Container cgroup directories, first found wins: {cid} is the full container id.
CGROUP_ROOTS = (
    "/sys/fs/cgroup/unified/docker/{cid}",  # cgroup v1 hybrid, Docker's cgroupfs driver
    "/sys/fs/cgroup/system.slice/docker-{cid}.scope",  # cgroup v2, Docker's systemd driver
    "/sys/fs/cgroup/docker/{cid}",  # cgroup v2, Docker's cgroupfs driver
)
# The component groups of the summary, in the order of the printed table. "compiler": the
# process that compiles catalogs (puppetserver's JVM, or Passenger's Ruby processes);
# "front+compiler": apache2 with mod_passenger, whose unit holds both.
CATEGORIES = ("lb", "front", "compiler", "front+compiler", "master other", "ca")
# A container's counter can lag its units' by a few milliseconds (the kernel adds a child's
# time to its parent's lazily), so "the rest" of an idle container may step back that much.
NEGLIGIBLE_S = 0.1
# What the load generator (Locust, on the host) spent: a child process of this driver.
GENERATOR = "load generator (host)"


def usage_seconds(cgroup_dir):
    """usage_usec of a cgroup's cpu.stat in seconds, or None when the cgroup is gone."""
    try:
        with open(os.path.join(cgroup_dir, "cpu.stat"), encoding="ascii") as fh:
            stat = dict(line.split() for line in fh if line.strip())
    except OSError:
        return None
    return int(stat["usage_usec"]) / 1e6


def container_cgroup(cid):
    for root in CGROUP_ROOTS:
        path = root.format(cid=cid)
        if os.path.isdir(path):
            return path
    raise RuntimeError(f"no cgroup directory for container {cid[:12]} under {CGROUP_ROOTS}")


def snapshot(components):
    """{component: CPU seconds so far} of components [(name, category, cgroup dir, cgroup
    dirs to subtract)], plus the host's children (the Locust runs this driver has waited for).
    Subtracting gives "the rest of a container": its total less its units measured apart."""
    snap = {}
    for name, _category, path, minus in components:
        # The units first, then the container: read the other way, a unit busy in between
        # could count more than its container and "the rest" would shrink.
        # A unit not running (a front a block stopped) has no cgroup and spends nothing; one
        # that starts or stops during a run also shows in that run's "disturbed" list.
        units = sum(usage_seconds(p) or 0 for p in minus)
        total = usage_seconds(path)
        snap[name] = None if total is None else total - units
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    snap[GENERATOR] = children.ru_utime + children.ru_stime
    return snap


def delta(before, after):
    """CPU seconds spent between two snapshots; None where a counter vanished or restarted."""
    out = {}
    for name, start in before.items():
        end = after.get(name)
        if start is None and end is None:
            out[name] = 0.0  # not running at either end: a stopped unit
        elif start is None or end is None or end < start - NEGLIGIBLE_S:
            out[name] = None
        else:
            out[name] = max(0.0, round(end - start, 3))
    return out


def write_run(outdir, tag, components, before, after, loadavg_before, catalogs):
    """One measured run's CPU figures into <tag>-cpu.json."""
    record = {"tag": tag, "catalogs": catalogs, "cpu_s": delta(before, after),
              "categories": {c[0]: c[1] for c in components},
              "loadavg_before": [round(v, 2) for v in loadavg_before],
              "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
    with open(os.path.join(outdir, f"{tag}-cpu.json"), "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1)
    return record


def read_run(outdir, tag):
    path = os.path.join(outdir, f"{tag}-cpu.json")
    return read_json(path) if os.path.exists(path) else None


def per_run_figures(cpu_s, categories, catalogs):
    """CPU seconds per successful agent run (one catalog each) per component, per category,
    for the master stack (every lab container but the agent's) and for the masters alone,
    and the agents a core serves at a 30-minute interval."""
    runs = max(1, catalogs)
    known = {k: v for k, v in cpu_s.items() if v is not None}
    per_component = {k: round(v / runs, 4) for k, v in known.items()}
    per_category = {c: round(sum(v for k, v in known.items() if categories.get(k) == c) / runs, 4)
                    for c in CATEGORIES if any(categories.get(k) == c for k in known)}
    stack = sum(v for k, v in known.items() if k in categories) / runs
    masters = sum(v for k, v in known.items() if categories.get(k) in ("front", "compiler", "front+compiler",
                                                                       "master other")) / runs
    return {
        "cpu_s_per_run": per_component,
        "cpu_s_per_run_by_category": per_category,
        "stack_cpu_s_per_run": round(stack, 4),
        "masters_cpu_s_per_run": round(masters, 4),
        # 1800 s of one core divided by what one agent's run every 30 minutes costs.
        "agents_per_core_30min": round(1800 / stack) if stack else None,
        "agents_per_master_core_30min": round(1800 / masters) if masters else None,
        "incomplete": sorted(k for k, v in cpu_s.items() if v is None),
    }


def rounds_figures(outdir, tags):
    """per_run_figures() over the measured runs of one configuration (all its rounds
    together), with each round's stack figure and load averages; {} if no run has CPU figures."""
    runs = [r for r in (read_run(outdir, t) for t in tags) if r]
    if not runs:
        return {}
    total, categories = {}, {}
    for r in runs:
        categories.update(r["categories"])
        for k, v in r["cpu_s"].items():
            total[k] = None if v is None or total.get(k, 0) is None else total.get(k, 0) + v
    figures = per_run_figures(total, categories, sum(r["catalogs"] for r in runs))
    figures["cpu_s"] = {k: (round(v, 2) if v is not None else None) for k, v in total.items()}
    per_round = [per_run_figures(r["cpu_s"], r["categories"], r["catalogs"]) for r in runs]
    figures["round_stack_cpu_s_per_run"] = [f["stack_cpu_s_per_run"] for f in per_round]
    figures["round_masters_cpu_s_per_run"] = [f["masters_cpu_s_per_run"] for f in per_round]
    figures["round_loadavg_1m"] = [[r["loadavg_before"][0], r["loadavg_after"][0]] for r in runs]
    return figures


# The threads of puppetserver's JVM by what they do, from their names (15 characters in
# /proc): HotSpot's JIT compilers, its garbage collector (G1's or Parallel's workers and the
# VM thread that runs their pauses), Jetty's request threads, where Puppet's Ruby code
# compiles catalogs, and the rest (JRuby pool start-up, logging, timers).
JVM_THREAD_GROUPS = (
    ("JIT compiler", ("C1 CompilerThre", "C2 CompilerThre")),
    ("garbage collector", ("GC Thread", "G1 ", "VM Thread", "ParGC", "PSYoung", "PSPromot")),
    ("request threads (Puppet's Ruby)", ("qtp",)),
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat_ticks(path):
    """(name, user + system clock ticks) of a /proc/<pid>[/task/<tid>]/stat file."""
    with open(path, encoding="ascii", errors="replace") as fh:
        stat = fh.read()
    end = stat.rindex(")")
    fields = stat[end + 2:].split()
    return stat[stat.index("(") + 1:end], int(fields[11]) + int(fields[12])


def jvm_thread_seconds(unit_cgroup):
    """CPU seconds so far of a puppetserver unit's JVM by JVM_THREAD_GROUPS; "exited threads"
    is what the process counts beyond its live threads (HotSpot ends idle compiler threads).
    The unit's processes are listed by their host PIDs in its cgroup."""
    groups = {}
    with open(os.path.join(unit_cgroup, "cgroup.procs"), encoding="ascii") as fh:
        pids = [p.strip() for p in fh if p.strip()]
    for pid in pids:
        try:
            _name, process_ticks = proc_stat_ticks(f"/proc/{pid}/stat")
            live = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                name, ticks = proc_stat_ticks(f"/proc/{pid}/task/{tid}/stat")
                live += ticks
                group = next((g for g, prefixes in JVM_THREAD_GROUPS if name.startswith(prefixes)), "other threads")
                groups[group] = groups.get(group, 0) + ticks / CLK_TCK
        except (OSError, ValueError):
            continue  # a thread or process that ended while being read
        groups["exited threads"] = groups.get("exited threads", 0) + max(0, process_ticks - live) / CLK_TCK
    return groups
