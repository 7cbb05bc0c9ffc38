"""The command line of bench/run load|drill, the lab lock, and one block or drill run under it."""

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time

from .blocks import BLOCKS, EXPERIMENTS
from .certs import certnames_for, ensure_certs
from .common import DRIVER, LOCKFILE, RESULTS, log
from .drills import DRILLS as COMBO4_DRILLS
from .lb_drills import DRILLS as LB_DRILLS
from .env import install_bench_env, remove_bench_env
from .lab import LABS, SCENARIOS, Lab, LabInUse, lab_busy, scenario_spec, wait_quiet
from .report import (plot_all, print_cpu_table, print_drill_table, print_engine_table, print_jvm_threads,
                     print_profile_top, print_table)

LOCK_BUDGET_S = 360
# How long to wait for the lab to be free of converges and tests before measuring anyway.
QUIET_WAIT_S = 600
# Blocks that change nothing measure anyway after this long; their results are flagged.
QUIET_WAIT_MEASURE_S = 120

# Blocks and drills that stop services or pin CPUs: never started while a converge or a test
# drives the lab (it could fail because of them), only measured "disturbed" ones may be.
DRILLS = {**COMBO4_DRILLS, **LB_DRILLS}
CHANGES_STATE = ({("load", "lb-one"), ("load", "tuning"), ("load", "lb-engines"), ("load", "jvm-experiments")}
                 | {("drill", name) for name in DRILLS})
# Where each block and drill runs. The legacy lab's masters have no puppetserver (no tuning,
# no plain port); the first drills read nginx's LB log and stop the single LB of
# combination 4; the sick-master drills run on any puppetserver lab with either engine,
# lb-host-down needs a pair (combination 5). lb-engines converges the lab it runs on to switch
# engines: only the puppetserver scenarios.
RUNS_ON = {("load", "entry"): LABS, ("load", "lb-engines"): SCENARIOS,
           **{("drill", name): ("combo4",) for name in COMBO4_DRILLS},
           **{("drill", name): SCENARIOS for name in LB_DRILLS}, ("drill", "lb-host-down"): ("combo5",)}
# The masters of the scenarios' labs (puppet1, puppet2): what --master may name.
MASTER_KEYS = sorted({key for name in SCENARIOS for key in scenario_spec(name)["masters"]})
# The blocks `load` runs without --block, per lab.
DEFAULT_BLOCKS = {"combo4": ["entry", "lb-one", "pinned", "backend", "tuning"], "legacy": ["entry"]}


def locked(argv):
    """Runs driver.py again under flock, for one block or drill."""
    cmd = ["flock", LOCKFILE, sys.executable, DRIVER, "_locked", *argv]
    changes_state = tuple(argv[:2]) in CHANGES_STATE
    if not wait_quiet(QUIET_WAIT_S if changes_state else QUIET_WAIT_MEASURE_S) and changes_state:
        log(f"SKIPPED {' '.join(argv[:2])}: it changes the lab's state and the lab is still in use")
        return 3
    log(f"waiting for {LOCKFILE}, then: {' '.join(argv)}")
    return subprocess.run(cmd, check=False).returncode


def new_outdir(block):
    path = os.path.join(RESULTS, f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{block}")
    os.makedirs(path, exist_ok=True)
    return path


def run_unit(kind, name, args):
    """Inside the lock: one block or drill, with a time budget check, results saved."""
    start = time.monotonic()
    lab = Lab(args.lab, args.environment)
    if lab.name not in RUNS_ON.get((kind, name), ("combo4",)):
        log(f"{kind} {name} runs on {', '.join(RUNS_ON.get((kind, name), ('combo4',)))}, not on {lab.name}")
        return 2
    lab.wait_present()
    if lab_busy():
        if (kind, name) in CHANGES_STATE:
            log(f"SKIPPED {kind} {name}: a converge or test started while waiting for the lock")
            return 3
        log(f"someone else is driving the lab, results will be flagged: {lab_busy()[:1]}")
    certnames = certnames_for(args.users, lab.domain)
    ensure_certs(lab, certnames)
    lab.wait_masters_ready(certnames[0])
    outdir = new_outdir(lab.results_name(name))
    func = BLOCKS[name] if kind == "load" else DRILLS[name]
    lab.guard = (kind, name) in CHANGES_STATE
    initial = lab.state()
    try:
        if lab.environment == "bench":
            install_bench_env(lab)
            lab.wait_masters_ready(certnames[0])
        results = func(lab, args, outdir, certnames)
    except LabInUse as exc:
        lab.guard = False
        lab.stop_background()
        log(f"ABORTED {kind} {name}, lab restored: someone started using the lab ({exc})")
        print(f"{'DRILL' if kind == 'drill' else 'LOAD'} {name}: ABORTED (lab in use)")
        return 3
    finally:
        lab.guard = False
        lab.restore(initial, certnames[0])
        if lab.environment == "bench":
            remove_bench_env(lab)
    for r in results:
        r.setdefault("users", args.users)
        r.setdefault("duration_s", args.duration)
    elapsed = time.monotonic() - start
    meta = {"kind": kind, "name": name, "lab": lab.name, "environment": lab.environment,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "users": args.users, "duration_s": args.duration, "warmup_s": args.warmup,
            "locked_seconds": round(elapsed, 1), "results": results}
    with open(os.path.join(outdir, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True)
    log(f"{kind} {name}: {elapsed:.0f}s under the lock; results in {outdir}")
    if elapsed > LOCK_BUDGET_S:
        log(f"WARNING: over the {LOCK_BUDGET_S}s lock budget; use a shorter --duration/--warmup")
    if kind == "load":
        print_table(results)
        print_cpu_table(results)
        if name == "lb-engines":
            print_engine_table(results)
        if name == "jvm-experiments":
            print_jvm_threads(results)
            print_profile_top(outdir)
        return 0
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "errors_by_kind"}, indent=1, default=str))
        print(f"DRILL {name}: {'PASS' if r['pass'] else 'FAIL'}")
        return 0 if r["pass"] else 1
    return 1


def build_parser():
    p = argparse.ArgumentParser(prog="bench/run")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("load", "drill", "_locked"):
        sp = sub.add_parser(name)
        if name == "drill":
            sp.add_argument("name", choices=[*sorted(DRILLS), "table"])
        if name == "_locked":
            sp.add_argument("kind", choices=["load", "drill"])
            sp.add_argument("name")
        if name == "load":
            sp.add_argument("--block", action="append", choices=sorted(BLOCKS),
                            help="measure only these blocks (default: all, each under its own lock)")
            sp.add_argument("--plot-only", action="store_true", help="only redraw docs/img from the latest results")
            sp.add_argument("--use", action="append", metavar="RESULT_DIR",
                            help="with --plot-only: plot this result directory instead of its block's latest")
        sp.add_argument("--lab", choices=LABS, default="combo4",
                        help="the lab (Molecule scenario) to measure (default combo4; legacy: the entry block only)")
        sp.add_argument("--environment", choices=["production", "bench"], default="production",
                        help="the code compiled: the lab's own (2 resources) or the 300-resource bench environment")
        sp.add_argument("--catalogs-only", action="store_true",
                        help="tuning: catalog requests only, from inside the master (as the earlier hand measurements did)")
        sp.add_argument("--experiment", action="append", choices=[e for e in EXPERIMENTS if e != "baseline"],
                        help="jvm-experiments: the settings tried against the baseline, one at a time "
                             "(default: compile-off, indy, parallel-gc, class-cache)")
        sp.add_argument("--users", type=int, default=8, help="simulated agents (default 8)")
        sp.add_argument("--duration", type=int, default=90 if name == "drill" else 30,
                        help="seconds per measurement (default 30 per round; a drill's load runs 90)")
        sp.add_argument("--rounds", type=int, default=2,
                        help="load: rounds of interleaved measurements (default 2)")
        sp.add_argument("--warmup", type=int, default=30, help="warm-up seconds per master (default 30)")
        sp.add_argument("--master", choices=MASTER_KEYS, default="puppet1",
                        help="master-down: whose front to stop; backend: the master measured inside "
                             "(default puppet1, nginx front; puppet2 has apache); the sick-master drills: "
                             "the master made sick (default the first with a front)")
        sp.add_argument("--sick-seconds", type=int, default=45,
                        help="sick-master and lb-host-down drills: how long the fault lasts (default 45)")
        sp.add_argument("--down-catalogs", type=int, default=150,
                        help="drills: catalogs to serve while the component is down (default 150)")
    return p


def locked_argv(args):
    """The options a block or drill gets when it runs again under the lock."""
    return ["--lab", args.lab, "--environment", args.environment, *(["--catalogs-only"] if args.catalogs_only else []),
            "--users", str(args.users), "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--rounds", str(args.rounds), *[f"--experiment={e}" for e in args.experiment or []],
            "--master", args.master, "--down-catalogs", str(args.down_catalogs),
            "--sick-seconds", str(args.sick_seconds)]


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    common = locked_argv(args)
    if args.cmd == "_locked":
        return run_unit(args.kind, args.name, args)
    if args.cmd == "load":
        if not args.plot_only:
            rcs = [locked(["load", b, *common]) for b in (args.block or DEFAULT_BLOCKS.get(args.lab, ["entry"]))]
            if any(rcs):
                return 1
        plot_all(args.use)
        return 0
    if args.name == "table":
        print_drill_table(args.lab, list(LB_DRILLS))
        return 0
    rc = locked(["drill", args.name, *common])
    plot_all()
    return rc
