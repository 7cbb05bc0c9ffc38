"""What a run shows: the table printed after a load block, and the plots in docs/img."""

import os

from .common import IMGDIR, RESULTS, log, read_json
from .cpu import CATEGORIES, GENERATOR
from .lab import Lab
from .lb_drills import failure_figures, sick_verdict
from .locust_run import read_reqlog


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


def thousands(value):
    return "-" if value is None else f"{value:,}"


def print_cpu_table(results):
    """CPU seconds per successful agent run from the cgroups (cpu.py), by component group,
    and the agents a core serves at a 30-minute interval; rows without CPU figures are left out."""
    rows = [r for r in results if r.get("cpu_s_per_run_by_category")]
    if not rows:
        return
    cats = [c for c in CATEGORIES if any(c in r["cpu_s_per_run_by_category"] for r in rows)]
    print()
    print("CPU seconds per successful agent run (cgroup accounting; the load generator is not in the stack):")
    print("| configuration | " + " | ".join(cats) + " | stack | per round | masters | agents per core at 30 min "
          "(stack / masters) | load generator | load avg 1 min | incomplete |")
    print("|---|" + "---|" * (len(cats) + 7))
    compare = any("stack_cpu_vs_baseline" in r for r in rows)
    for r in rows:
        by_cat = r["cpu_s_per_run_by_category"]
        cells = " | ".join(f"{by_cat[c]:.3f}" if c in by_cat else "-" for c in cats)
        rounds = " / ".join(f"{v:.3f}" for v in r.get("round_stack_cpu_s_per_run", []))
        load = " / ".join(f"{a:.1f}-{b:.1f}" for a, b in r.get("round_loadavg_1m", []))
        print(f"| {r['label']} | {cells} | {r['stack_cpu_s_per_run']:.3f} | {rounds} | {r['masters_cpu_s_per_run']:.3f} | "
              f"{thousands(r['agents_per_core_30min'])} / {thousands(r['agents_per_master_core_30min'])} | "
              f"{r['cpu_s_per_run'].get(GENERATOR, 0):.3f} | {load} | {', '.join(r.get('incomplete', [])) or 'no'} |")
    if compare:
        # jvm-experiments: each configuration's CPU per run against the baseline's.
        print("\n| configuration | stack CPU vs baseline | each run vs each baseline run | compiler CPU vs baseline | "
              "catalogs/s | same catalog as the baseline | settings |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            rounds = " / ".join(f"{v:.2f}" for v in r.get("round_stack_cpu_vs_baseline", []))
            same = {True: "yes", False: "**no**"}.get(r.get("catalog_same_as_baseline"), "-")
            print(f"| {r['label']} | {r.get('stack_cpu_vs_baseline', 0):.2f} | {rounds} | "
                  f"{r.get('compiler_cpu_vs_baseline', 0):.2f} | {r['catalogs_per_s']:.2f} | {same} | {r.get('settings', '')} |")
    for r in rows:
        if "catalog_same_as_stock" in r:
            print(f"\nThe catalog of the first bench node, every round: "
                  f"{'the same' if r['catalog_same_as_stock'] else '**not the same**'} under both settings.")


def print_jvm_threads(results):
    """jvm-experiments: puppet1's JVM CPU per agent run by thread group, each measured run."""
    print("\npuppet1's puppetserver JVM, CPU seconds per agent run by thread group (measured runs; warm-up totals):")
    print("| configuration | JIT compiler | garbage collector | request threads (Puppet's Ruby) | other | exited | "
          "warm-up: JIT s | warm-up: request threads s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for t in r.get("jvm_threads", []):
            per, warm = t["run_s_per_run"], t["warmup_s"]
            ruby = "request threads (Puppet's Ruby)"
            print(f"| {r['label']} | {per.get('JIT compiler', 0):.3f} | {per.get('garbage collector', 0):.3f} | "
                  f"{per.get(ruby, 0):.3f} | {per.get('other threads', 0):.3f} | "
                  f"{per.get('exited threads', 0):.3f} | {warm.get('JIT compiler', 0):.1f} | "
                  f"{warm.get(ruby, 0):.1f} |")


def print_profile_top(outdir, top=12):
    """The costliest entries of puppetserver's profiler (jvm-experiments' "profiler" runs):
    per catalog phase, per function and per resource, by total milliseconds."""
    for name in sorted(os.listdir(outdir)):
        if not name.endswith("-profile.json"):
            continue
        metrics = read_json(os.path.join(outdir, name))["status"]["experimental"]
        print(f"\npuppetserver's profiler ({name}; since its restart: warm-up and measured run):")
        for section, key in (("catalog-metrics", "metric"), ("function-metrics", "function"),
                             ("resource-metrics", "resource")):
            rows = sorted(metrics.get(section, []), key=lambda m: -m.get("aggregate", 0))[:top]
            print(f"| {section} | count | mean ms | total ms |")
            print("|---|---|---|---|")
            for m in rows:
                print(f"| {m.get(key)} | {m.get('count')} | {m.get('mean')} | {m.get('aggregate')} |")


def print_engine_table(results):
    """The lb-engines block's engines side by side, with HAProxy's figures as a ratio of nginx's."""
    by_engine = {r["engine"]: r for r in results}
    haproxy, nginx = by_engine["haproxy"], by_engine["nginx"]
    figures = (("agent runs/s", "catalogs_per_s", "{:.2f}"), ("p95 catalog ms", "catalog_p95_ms", "{:.0f}"),
               ("LB CPU ms per agent run", "lb_cpu_ms_per_run", "{:.2f}"),
               ("LB CPU ms/s without load", "lb_idle_cpu_ms_per_s", "{:.2f}"),
               ("LB CPU ms per agent run above that", "lb_cpu_above_idle_ms_per_run", "{:.2f}"),
               ("errors", "errors", "{}"))
    print(f"| {haproxy['lb_mode']} mode | HAProxy | nginx | HAProxy / nginx | per round, HAProxy / nginx |")
    print("|---|---|---|---|---|")
    for heading, key, fmt in figures:
        if key not in haproxy or key not in nginx:
            continue  # a figure of later runs than these
        ratio = f"{haproxy[key] / nginx[key]:.2f}" if nginx[key] else "-"
        rounds = " / ".join(f"{h} vs {n}" for h, n in zip(haproxy.get(f"round_{key}", []), nginx.get(f"round_{key}", [])))
        print(f"| {heading} | {fmt.format(haproxy[key])} | {fmt.format(nginx[key])} | {ratio} | {rounds} |")


# The columns of `drill table`: (heading, key of a drill's result), for the sick-master
# drills and for the pair's.
SICK_COLUMNS = (
    ("out of rotation after s", "out_of_rotation_after_s"),
    ("back after s (from the master ready)", "back_in_rotation_after_ready_s"),
    ("failed requests while sick", "failed_requests_while_sick"),
    ("of which catalogs (Locust agent runs)", "failed_catalogs_while_sick"),
    ("failed after the first 10 s", "failed_requests_after_first_10s"),
    ("last failure after s", "last_failure_after_s"),
    ("stalled > 10 s, first 10 s", "stalled_requests_in_first_10s"), ("stalled > 10 s, after", "stalled_requests"),
    ("slowest while sick s", "slowest_request_while_sick_s"),
    ("catalogs served after the first 10 s", "catalogs_served_after_first_10s"),
    ("real agent runs while sick, failed", "agent_runs_failed"),
    ("catalogs/s", "catalogs_per_s"), ("p95 ms", "catalog_p95_ms"),
)
PAIR_COLUMNS = (
    ("docker stop s", "docker_stop_s"),
    ("address unreachable s", "virtual_ip_unreachable_s"),
    ("failed requests around the move", "failed_requests_around_the_move"),
    ("failed after the move", "failed_requests_after_the_move"),
    ("real agent runs failed across the move", "failed_agent_runs_spanning_the_move"),
    ("real agent runs after the move, failed", "agent_runs_after_failed"),
    ("catalogs/s", "catalogs_per_s"), ("p95 ms", "catalog_p95_ms"),
)
# What a missing figure means: the LB never took the master out (or back), or nothing failed.
NONE_TEXT = {"out_of_rotation_after_s": "never", "back_in_rotation_after_ready_s": "never"}


def drill_results(lab, drills):
    """{(drill, engine): result} of the newest run of each drill under each engine on a lab.
    A sick-master drill's figures and verdict are counted again from its files, as
    failure_figures and sick_verdict count now."""
    found = {}
    for d in sorted(os.listdir(RESULTS), reverse=True):
        path = os.path.join(RESULTS, d, "summary.json")
        if not os.path.exists(path):
            continue
        meta = read_summary(os.path.join(RESULTS, d))
        if meta.get("lab") != lab or meta["name"] not in drills or not meta["results"]:
            continue
        res = dict(meta["results"][0], result_dir=d)
        events = res.get("events", {})
        if "well" in events:
            runs = read_json(os.path.join(RESULTS, d, "agent-runs.json"))
            res.update(failure_figures(read_reqlog(os.path.join(RESULTS, d, "drill-requests.csv")), runs, events))
            res["pass"] = sick_verdict(res)
            if "back_in_rotation_after_ready_s" not in res and res.get("back_in_rotation_after_s") is not None:
                res["back_in_rotation_after_ready_s"] = round(
                    res["back_in_rotation_after_s"] - (events["ready"] - events["well"]), 1)
            res["agent_runs_failed"] = f"{res['agent_runs_while_sick']}, {res['failed_agent_runs_while_sick']}"
        elif "agent_runs_after_the_move" in res:
            res["agent_runs_after_failed"] = f"{res['agent_runs_after_the_move']}, {res['failed_agent_runs_after_the_move']}"
        found.setdefault((meta["name"], res.get("engine")), res)
    return found


def cell(res, key):
    value = res.get(key)
    if value is None and key == "back_in_rotation_after_ready_s" and res.get("engine") == "nginx":
        return "-"  # nginx has no active checks: it never took the master out
    if value is None:
        return NONE_TEXT.get(key, "-")
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def print_drill_table(lab, drills):
    """The newest drills on a lab, nginx beside haproxy, as Markdown tables: the sick-master
    drills, then the pair's."""
    found = drill_results(lab, drills)
    for columns, names in ((SICK_COLUMNS, [n for n in drills if n != "lb-host-down"]),
                           (PAIR_COLUMNS, [n for n in drills if n == "lb-host-down"])):
        rows = [(n, e, found[(n, e)]) for n in names for e in ("nginx", "haproxy") if (n, e) in found]
        if not rows:
            continue
        print("| drill | engine | " + " | ".join(h for h, _key in columns) + " | verdict | result |")
        print("|---|---|" + "---|" * len(columns) + "---|---|")
        for name, engine, res in rows:
            cells = " | ".join(cell(res, key) for _heading, key in columns)
            print(f"| {name} | {engine} | {cells} | {'pass' if res['pass'] else 'FAIL'} | {res['result_dir']} |")
        print()


def read_summary(result_dir):
    return read_json(os.path.join(result_dir, "summary.json"))


def latest(block, lab="combo4", environment="production"):
    """The newest result directory of a block on a lab with an environment's code."""
    for d in sorted(os.listdir(RESULTS), reverse=True):
        path = os.path.join(RESULTS, d, "summary.json")
        if d.endswith(f"-{block}") and os.path.exists(path):
            meta = read_summary(os.path.join(RESULTS, d))
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
        meta = read_summary(d)
        if meta.get("environment", "production") == "bench":
            chosen[f"{meta.get('lab', 'combo4')}:{meta['name']}:bench"] = d
        elif meta.get("lab", "combo4") == "combo4":
            chosen[meta["name"]] = d
    for block in ("entry", "lb-one", "pinned", "backend"):
        d = chosen.get(block) or latest(block)
        if d:
            rows += read_summary(d)["results"]
    if rows:
        bar_chart(plt, rows, ["#4c72b0" if r.get("masters", 1) == 1 else "#dd8452" for r in rows],
                  "catalogs per second (Locust rows: whole agent runs; 'inside' rows: catalogs only)",
                  "Catalog throughput per configuration\n(2 cores shared with the load generator; orange: two masters)",
                  "load-throughput.png")
    plot_bench_env(plt, chosen)
    plot_jvm_experiments(plt, chosen.get("combo4:jvm-experiments:bench") or latest("jvm-experiments", "combo4", "bench"))
    d = chosen.get("master-down") or latest("master-down")
    if d:
        plot_master_down(plt, d)


def plot_master_down(plt, result_dir):
    """Catalog latencies of the master-down drill over time, by compiling master."""
    masters = Lab("combo4").masters  # the drills run on the combo4 lab only
    summary = read_summary(result_dir)["results"][0]
    rows = [r for r in read_reqlog(os.path.join(result_dir, "drill-requests.csv")) if r["name"] == "catalog"]
    t0 = min(float(r["t_end"]) for r in rows)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, color in (("puppet1", "#4c72b0"), ("puppet2", "#dd8452")):
        pts = [(float(r["t_end"]) - t0, float(r["ms"])) for r in rows
               if r["compiled_on"] == masters[name] and not r["error"]]
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


def bar_chart(plt, rows, colors, xlabel, title, filename, key="catalogs_per_s", digits=1):
    """A figure of result rows (catalogs per second unless `key` names another), one bar
    each, into docs/img/<filename>."""
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(rows) + 2))
    labels = [r["label"] + (" (disturbed)" if r.get("disturbed") else "") for r in rows]
    vals = [r[key] for r in rows]
    ax.barh(labels, vals, color=colors)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.{digits}f}", va="center")
    ax.set_xlim(0, max(vals) * 1.12)  # room for the last bar's figure
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(os.path.join(IMGDIR, filename), dpi=100)
    log(f"wrote {os.path.join(IMGDIR, filename)}")


def plot_bench_env(plt, chosen):
    """The 30-module code: puppetserver tuned and stock, per front and through the LB,
    next to Puppet 5.5 under Passenger (the legacy lab) on the same machine."""
    rows, missing = [], []
    for block, lab, prefix in (("tuning", "combo4", "puppetserver 8.7: "), ("entry", "combo4", "puppetserver 8.7: "),
                               ("entry", "legacy", "")):
        d = chosen.get(f"{lab}:{block}:bench") or latest(block, lab, "bench")
        if d:
            rows += [dict(r, label=prefix + r["label"]) for r in read_summary(d)["results"]]
        else:
            missing.append(f"{lab} {block}")
    if missing:
        # A comparison with a side missing would replace the plot the docs describe.
        log(f"load-bench-env.png not redrawn: no result with --environment bench for {', '.join(missing)}")
        return
    colors = ["#55a868" if "Puppet 5" in r["label"] else "#c44e52" if "stock" in r["label"] else
              "#dd8452" if r.get("masters", 1) == 2 else "#4c72b0" for r in rows]
    bar_chart(plt, rows, colors,
              "whole agent runs (catalogs) per second, the 30-module bench code (336 catalog resources)",
              "puppetserver (tuned, stock) vs Puppet 5.5 under Passenger\n(2 cores shared with the load generator)",
              "load-bench-env.png")


def plot_jvm_experiments(plt, result_dir):
    """jvm-experiments: puppetserver's CPU seconds per agent run (the stack's, from the
    cgroups) of each configuration, the baseline's measurements as one bar each."""
    if not result_dir:
        return
    summary = read_summary(result_dir)
    rows = []
    for r in summary["results"]:
        values = r.get("round_stack_cpu_s_per_run", [])
        for i, value in enumerate(values):
            suffix = f" ({i + 1})" if len(values) > 1 else ""
            rows.append({"label": r["label"].replace("puppet1 direct, ", "") + suffix, "cpu_s": value,
                         "baseline": r.get("experiment") == "baseline"})
    if not rows:
        return
    bar_chart(plt, rows, ["#4c72b0" if r["baseline"] else "#dd8452" for r in rows],
              "CPU seconds per agent run (lower is better), the 30-module bench code",
              f"One setting at a time against the collection's settings (blue)\n"
              f"puppet1 direct, after {summary.get('warmup_s', '?')} s of load since a restart",
              "load-jvm-experiments.png", key="cpu_s", digits=2)
