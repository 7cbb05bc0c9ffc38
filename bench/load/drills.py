"""The fault drills of `bench/run drill`: each stops a part of the combo4 lab under load,
restores it, and returns one result row with its verdict ("pass")."""

import datetime as dt
import json
import os
import re
import ssl
import subprocess
import threading
import time

from .certs import ensure_certs
from .common import STATE, log
from .lab import docker, ip_of
from .locust_run import read_reqlog, run_locust, summarize, warm_up
from .tls import https_request, port_closed


def lb_log_tail_counts(lab, since_line):
    """Sessions per upstream (the one that served, after any retry) in the LB's stream log
    after line `since_line`; returns (lines in the log, {upstream: sessions})."""
    text = lab.run_in(lab.lb, "cat", "/var/log/nginx/puppet-lb-access.log").stdout.decode(errors="replace")
    lines = text.splitlines()
    counts = {}
    for line in lines[since_line:]:
        m = re.search(r"\] (.+?) (\d{3}) \d+ [\d.]+$", line)
        if m:
            up = m.group(1).split(",")[-1].strip()
            counts[up] = counts.get(up, 0) + 1
    return len(lines), counts


def lb_log_len(lab):
    return lb_log_tail_counts(lab, 0)[0]


def ok_catalogs(rows):
    return [r for r in rows if r["name"] == "catalog" and not r["error"]]


def drill_master_down(lab, args, outdir, certnames):
    key = args.master
    host = lab.masters[key]
    eps = lab.entry_points()
    warm_up(lab, outdir, eps, args.users, args.warmup, certnames)
    ip_up = {k: eps[k][0] for k in lab.masters}
    reqlog = os.path.join(outdir, "drill-requests.csv")
    lb_start = lb_log_len(lab)
    proc = run_locust(lab, outdir, "drill", eps["lb"], args.users, args.duration, certnames, background=True)
    events = {}
    try:
        def catalogs_from(name, after):
            return [r for r in ok_catalogs(read_reqlog(reqlog))
                    if r["compiled_on"] == lab.masters[name] and float(r["t_end"]) > after]
        t0 = time.time()
        lab.wait_for("catalogs from both masters through the LB",
                     lambda: all(len(catalogs_from(k, t0)) >= 20 for k in lab.masters), 90)
        lb_before = lb_log_tail_counts(lab, lb_start)
        events["stop"] = time.time()
        log(f"stopping {host}'s front ({lab.front_service[key]})")
        lab.stop_front(key)
        events["stopped"] = time.time()
        other = next(k for k in lab.masters if k != key)
        lab.wait_for(f"{args.down_catalogs} catalogs from {other} while {key} is down",
                     lambda: len(catalogs_from(other, events["stop"])) >= args.down_catalogs, 120)
        lb_down = lb_log_tail_counts(lab, lb_before[0])
        events["restore"] = time.time()
        log(f"restoring {host}'s front")
        lab.start_front(key, certnames[0])
        events["ready"] = time.time()
        lab.wait_for(f"catalogs compiled on {key} again through the LB",
                     lambda: len(catalogs_from(key, events["ready"])) >= 5, 120)
        events["back"] = time.time()
    finally:
        if not lab.service_active(host, lab.front_service[key]):
            lab.start_front(key, certnames[0])
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"locust exited {rc}")
    lb_after = lb_log_tail_counts(lab, lb_down[0])
    res = summarize(outdir, "drill")
    rows = read_reqlog(reqlog)

    def window(a, b):
        """Catalogs by compiling host among the requests that started in (a, b]."""
        out = {}
        for r in ok_catalogs(rows):
            started = float(r["t_end"]) - float(r["ms"]) / 1000
            if a < started <= b:
                out[r["compiled_on"]] = out.get(r["compiled_on"], 0) + 1
        return out

    res.update(
        drill="master-down", master=key, front=lab.front_service[key], events=events,
        catalogs_before=window(0, events["stop"]), catalogs_down=window(events["stopped"], events["restore"]),
        catalogs_after=window(events["ready"], float("inf")),
        lb_log={"before": lb_before[1], "down": lb_down[1], "after": lb_after[1]},
        lb_upstreams={ip_up[k]: k for k in ip_up},
    )
    res["pass"] = (res["errors"] == 0 and res["catalogs_down"].get(host, 0) == 0
                   and res["catalogs_down"].get(lab.masters[other], 0) > 0
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
    with open(csrp, "rb") as fh:
        return fh.read()


def submit_csr(lab, name, csr):
    """PUT the CSR to the CA directly (agents name the CA in combination 4)."""
    try:
        status, body = https_request(ip_of(lab.ca), lab.ca, "PUT",
                                     f"/puppet-ca/v1/certificate_request/{name}?environment=production",
                                     body=csr, headers={"Content-Type": "text/plain"}, timeout=10)
        return f"HTTP {status}", body.decode(errors="replace")[:200]
    except (ConnectionRefusedError, ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}", str(exc)[:200]


def clean_csr(lab, name):
    # A pending request only: remove it so the CA's list stays as the user left it.
    lab.run_in(lab.ca, "rm", "-f", f"/etc/puppet/puppetserver/ca/requests/{name}.pem")


def drill_ca_down(lab, args, outdir, certnames):
    eps = lab.entry_points()
    ca_ip = ip_of(lab.ca)
    warm_up(lab, outdir, eps, args.users, args.warmup, certnames)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    reqlog = os.path.join(outdir, "drill-requests.csv")
    proc = run_locust(lab, outdir, "drill", eps["lb"], args.users, args.duration, certnames, background=True)
    events, checks = {}, {}
    try:
        lab.wait_for("20 catalogs through the LB", lambda: len(ok_catalogs(read_reqlog(reqlog))) >= 20, 90)
        events["stop"] = time.time()
        log("stopping puppetserver on the CA")
        lab.service(lab.ca, "puppetserver", "stop")
        lab.wait_for("the CA's port closed", lambda: port_closed(ca_ip), 120)
        events["stopped"] = time.time()
        name = f"drill-csr-{stamp}.{lab.domain}"
        checks["csr_while_down"] = submit_csr(lab, name, make_csr(name))
        log(f"CSR while the CA is down: {checks['csr_while_down'][0]}")
        lab.wait_for(f"{args.down_catalogs} catalogs through the LB with the CA down", lambda: sum(
            1 for r in ok_catalogs(read_reqlog(reqlog))
            if float(r["t_end"]) > events["stopped"]) >= args.down_catalogs, 120)
        events["restore"] = time.time()
    finally:
        lab.guard = False
        log("starting puppetserver on the CA")
        lab.service(lab.ca, "puppetserver", "start")
        lab.wait_for("the CA's /status/v1/simple", lambda: lab.status_ok(ca_ip, lab.ca, certnames[0]), 240)
        events["ready"] = time.time()
    name2 = f"drill-csr-{stamp}-after.{lab.domain}"
    checks["csr_after"] = submit_csr(lab, name2, make_csr(name2))
    listed = lab.run_in(lab.ca, "puppetserver", "ca", "list", check=False).stdout.decode()
    checks["csr_after_listed"] = name2 in listed
    log(f"CSR after the CA is back: {checks['csr_after'][0]}, listed by the CA: {checks['csr_after_listed']}")
    clean_csr(lab, name2)
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


class RefusalStreaks:
    """Per entry point: the current run of refused probes (when it began, its length, how the
    last probe was refused) and how often each answer came."""

    def __init__(self, keys):
        self.streak = {k: [None, 0, ""] for k in keys}  # first refusal of the current streak, length, how
        self.seen = {k: {} for k in keys}

    def record(self, key, how, refused):
        self.seen[key][how] = self.seen[key].get(how, 0) + 1
        if refused:
            if self.streak[key][1] == 0:
                self.streak[key][0] = time.time()
            self.streak[key][1] += 1
            self.streak[key][2] = how
        else:
            self.streak[key] = [None, 0, ""]

    def all_refusing(self):
        return all(v[1] >= REFUSED_STREAK for v in self.streak.values())


def drill_revoke(lab, args, outdir, certnames):
    """Revoke one agent's certificate under load; time until every entry point refuses it.

    An entry point counts as refusing once REFUSED_STREAK probes in a row (0.5 s apart) were
    refused (HTTP 400/401/403 or a TLS alert): through the LB, both masters must refuse.
    """
    eps = lab.entry_points()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    victim = f"load-revoke-{stamp}.{lab.domain}"
    ensure_certs(lab, certnames + [victim])
    warm_up(lab, outdir, eps, args.users, args.warmup, certnames)
    node_path = f"/puppet/v3/node/{victim}?environment=production"
    for key, (addr, name) in eps.items():
        status = https_request(addr, name, "GET", node_path, certname=victim)[0]
        if status != 200:
            raise RuntimeError(f"{victim} is refused at {key} before revocation: HTTP {status}")
    # The victim is user 0 of the load.
    proc = run_locust(lab, outdir, "drill", eps["lb"], args.users, args.duration, [victim] + certnames,
                      background=True)
    streaks = RefusalStreaks(eps)
    t_revoke = time.time()
    try:
        reqlog = os.path.join(outdir, "drill-requests.csv")
        lab.wait_for("the victim's catalogs through the LB", lambda: any(
            r["certname"] == victim for r in ok_catalogs(read_reqlog(reqlog))), 90)
        log(f"revoking {victim}")
        t_revoke = time.time()
        lab.run_in(lab.ca, "puppetserver", "ca", "revoke", "--certname", victim)
        log(f"revoked after {time.time() - t_revoke:.1f}s (CLI time); probing every entry point")

        def probe():
            for key, (addr, name) in eps.items():
                try:
                    status = https_request(addr, name, "GET", node_path, certname=victim, timeout=5)[0]
                    how = f"HTTP {status}"
                    refused = status in (400, 401, 403)
                except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
                    how, refused = f"TLS alert ({type(exc).__name__})", True
                streaks.record(key, how, refused)
            return streaks.all_refusing()

        try:
            lab.wait_for("every entry point refusing the revoked certificate", probe, 150, interval=0.5)
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
                                for k, v in streaks.streak.items()},
               refused_how={k: v[2] for k, v in streaks.streak.items()},
               probe_answers=streaks.seen,
               victim_requests=len(victim_rows),
               victim_refused=sum(1 for r in victim_rows if r["error"]),
               victim_last_success_after_revoke_s=None if last_ok is None else round(last_ok, 1),
               errors_other_agents=others_errors)
    res["pass"] = others_errors == 0 and rc == 0 and streaks.all_refusing()
    return [res]


def stop_load(stop, loop, proc):
    """End a drill's load: the real agent-run loop, then Locust (its request log is complete)."""
    stop.set()
    loop.join()
    proc.terminate()
    proc.wait()


def keep_runs_and_summarize(outdir, runs, reqlog):
    """Write the real agent runs beside Locust's results; Locust's summary and its requests."""
    with open(os.path.join(outdir, "agent-runs.json"), "w", encoding="utf-8") as fh:
        json.dump(runs, fh, indent=1)
    return summarize(outdir, "drill"), read_reqlog(reqlog)


def agent_runs_loop(lab, server_list, runs, stop):
    """Real `puppet agent --test` runs on the lab's agent, back to back, with a server_list;
    records for each run when it started and ended, its exit code, the server it used (the
    agent prints "Requesting catalog from <server>:<port>") and the master that compiled."""
    while not stop.is_set():
        t0 = time.time()
        res = docker("exec", lab.agent, "puppet", "agent", "--test", "--color=false", "--server_list", server_list,
                     "--waitforlock", "1", "--maxwaitforlock", "120", check=False)
        out = (res.stdout + res.stderr).decode(errors="replace")
        server = re.search(r"Requesting catalog from ([^:\s]+):", out)
        compiled = re.search(r"compiled by \S+ on (\S+)", out)
        errors = [line for line in out.splitlines() if line.startswith("Error")]
        runs.append({"start": t0, "end": time.time(), "rc": res.returncode,
                     "ok": res.returncode in (0, 2) and not errors,
                     "server": server.group(1) if server else "", "compiled_on": compiled.group(1) if compiled else "",
                     "errors": errors[:3]})


def drill_lb_restart(lab, args, outdir, certnames):
    """Stop the LB (as an upgrade or a reboot would), then start it again, then restart it at
    once: a real agent whose server_list names the LB first and then each master keeps
    running; Locust's agents, which know only the LB, show what agents without it see."""
    eps = lab.entry_points()
    warm_up(lab, outdir, eps, args.users, args.warmup, certnames)
    masters = set(lab.masters.values())
    shared = lab.shared_name
    server_list = lab.server_list()
    runs, stop, events = [], threading.Event(), {}
    lb_addr = eps["lb"][0]

    def ok_runs(after, servers):
        return [r for r in runs if r["start"] > after and r["ok"] and r["server"] in servers]

    loop = threading.Thread(target=agent_runs_loop, args=(lab, server_list, runs, stop), daemon=True)
    loop.start()
    # Locust ends when the drill does (terminated below); its per-request log is complete.
    proc = run_locust(lab, outdir, "drill", eps["lb"], args.users, 900, certnames, background=True)
    try:
        lab.wait_for("2 agent runs through the LB", lambda: len(ok_runs(0, {shared})) >= 2, 180)
        events["stop"] = time.time()
        log("stopping the LB (nginx on the LB host)")
        lab.service(lab.lb, "nginx", "stop")
        lab.wait_for("the LB's port closed", lambda: port_closed(lb_addr), 60)
        events["stopped"] = time.time()
        lab.wait_for("5 agent runs served by a master directly while the LB is down",
                     lambda: len(ok_runs(events["stopped"], masters)) >= 5, 240)
        events["restore"] = time.time()
    finally:
        lab.guard = False
        if not lab.service_active(lab.lb, "nginx"):
            log("starting the LB again")
            lab.service(lab.lb, "nginx", "start")
        lab.wait_for("the LB ready", lambda: lab.status_ok(lb_addr, shared, certnames[0]), 120)
        events["ready"] = time.time()
    lab.wait_for("2 agent runs through the LB again", lambda: len(ok_runs(events["ready"], {shared})) >= 2, 180)
    events["restart"] = time.time()
    log("restarting the LB (systemctl restart nginx)")
    lab.service(lab.lb, "nginx", "restart")
    lab.wait_for("the LB ready after its restart", lambda: lab.status_ok(lb_addr, shared, certnames[0]), 120)
    events["restarted"] = time.time()
    lab.wait_for("2 agent runs after the restart", lambda: len(ok_runs(events["restarted"], {shared} | masters)) >= 2,
                 180)
    events["end"] = time.time()
    stop_load(stop, loop, proc)
    res, rows = keep_runs_and_summarize(outdir, runs, os.path.join(outdir, "drill-requests.csv"))

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
