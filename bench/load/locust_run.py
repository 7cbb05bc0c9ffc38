"""Running Locust (locustfile.py) against one entry point, and the figures of its runs,
read from the per-request log the locustfile writes."""

import csv
import json
import os
import subprocess
import sys

from . import cpu
from .common import CERTDIR, FACTS, LOCUSTFILE, PORT, log, read_json
from .lab import lab_busy


def run_locust(lab, outdir, tag, entry, users, duration, certnames, reqlog=True, background=False):
    """Locust's agents against entry (address, TLS name). In the foreground: waits and returns
    summarize()'s figures with what disturbed the run; in the background: returns the process."""
    addr, name = entry
    env = dict(os.environ,
               BENCH_ADDR=addr, BENCH_TLS_NAME=name, BENCH_PORT=str(PORT), BENCH_CERTDIR=CERTDIR,
               BENCH_CERTNAMES=",".join(certnames), BENCH_FACTS=FACTS, BENCH_TAG=tag,
               BENCH_ENVIRONMENT=lab.environment,
               BENCH_REQLOG=os.path.join(outdir, f"{tag}-requests.csv") if reqlog else "")
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--only-summary",
           "-u", str(users), "-r", str(users), "-t", f"{duration}s", "--stop-timeout", "60",
           "--loglevel", "WARNING", "--csv", os.path.join(outdir, tag), "--exit-code-on-error", "0"]
    logf = open(os.path.join(outdir, f"{tag}-locust.log"), "w", encoding="utf-8")
    if background:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=outdir)
        lab.background.append(proc)
        return proc
    # The CPU counters right before Locust starts and right after it ends (cpu.py): its
    # start and stop add a second or two of the stack's idle CPU, nothing of its load.
    components = lab.cpu_components()
    loadavg, cpu_before = os.getloadavg(), cpu.snapshot(components)
    proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=outdir)
    before, busy = lab.service_stamps(), lab_busy()
    rc = proc.wait()
    cpu_after = cpu.snapshot(components)
    if rc != 0:
        raise RuntimeError(f"locust {tag} exited {rc}; see {logf.name}")
    res = summarize(outdir, tag)
    cpu.write_run(outdir, tag, components, cpu_before, cpu_after, loadavg, res["catalogs"])
    res["disturbed"] = lab.disturbances(before, busy)
    with open(os.path.join(outdir, f"{tag}-disturbed.json"), "w", encoding="utf-8") as fh:
        json.dump(res["disturbed"], fh)
    return res


def warm_up(lab, outdir, eps, users, seconds, certnames):
    for key in lab.masters:
        log(f"warming up {key} ({seconds}s, {users} users)")
        run_locust(lab, outdir, f"warmup-{key}", eps[key], users, seconds, certnames)


def read_reqlog(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def percentile(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(p * len(sorted_vals)))]


def ok_catalog_ms(rows):
    """Latencies of the catalogs served, sorted (for percentile())."""
    return sorted(float(r["ms"]) for r in rows if r["name"] == "catalog" and not r["error"])


def add_counts(total, counts):
    """total += counts, key by key."""
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value
    return total


def summarize(outdir, tag):
    """Figures of one run from the per-request log (every request, including those finished
    during Locust's stop timeout; Locust's own CSV files stay next to it as raw output)."""
    rows = read_reqlog(os.path.join(outdir, f"{tag}-requests.csv"))
    if not rows:
        raise RuntimeError(f"{tag}: no requests logged")
    first = min(float(r["t_end"]) - float(r["ms"]) / 1000 for r in rows)
    last = max(float(r["t_end"]) for r in rows)
    ok_cat = ok_catalog_ms(rows)
    compiled, errors_by_kind = {}, {}
    for r in rows:
        if r["name"] == "catalog" and not r["error"]:
            add_counts(compiled, {r["compiled_on"]: 1})
        if r["error"]:
            add_counts(errors_by_kind, {f"{r['name']}: {r['error'][:60]}": 1})
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
    return read_json(path) if os.path.exists(path) else []


def summarize_rounds(outdir, label, tags, masters):
    """One configuration measured in several rounds: figures over all its rounds together."""
    rows = []
    for tag in tags:
        rows += read_reqlog(os.path.join(outdir, f"{tag}-requests.csv"))
    per_round = [summarize(outdir, tag) for tag in tags]
    ok_cat = ok_catalog_ms(rows)
    wall = sum(r["wall_s"] for r in per_round)
    compiled, errors_by_kind = {}, {}
    for r in per_round:
        add_counts(compiled, r["compiled_on"])
        add_counts(errors_by_kind, r["errors_by_kind"])
    return {
        "label": label, "tags": tags, "masters": masters, "wall_s": round(wall, 1),
        "catalogs": len(ok_cat), "catalogs_per_s": len(ok_cat) / wall,
        "round_catalogs_per_s": [round(r["catalogs_per_s"], 1) for r in per_round],
        "catalog_p50_ms": percentile(ok_cat, 0.50), "catalog_p95_ms": percentile(ok_cat, 0.95),
        "requests": len(rows), "errors": sum(1 for r in rows if r["error"]),
        "errors_by_kind": errors_by_kind,
        "compiled_on": compiled,
        "disturbed": sorted({d for r in per_round for d in r.get("disturbed", [])}),
        **cpu.rounds_figures(outdir, tags),
    }
