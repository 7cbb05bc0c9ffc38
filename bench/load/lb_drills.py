"""The drills of a sick master and of the load balancer pair (issue 17): each makes one
part of the lab sick under load, through the shared name, then well again, and reports
what agents saw and how long the load balancer took to see it. Written for any engine:
run each under nginx and under haproxy on the same lab to compare them (docs/load.md).

  front-up-puppetserver-down  puppetserver stopped behind its running front (it answers 502)
  jvm-frozen                  puppetserver's JVM stopped with SIGSTOP (connections hang)
  disk-full                   a tmpfs, filled, mounted over puppetserver's server_data
  lb-host-down                `docker stop` of the load balancer holding the virtual IP
"""

import os
import re
import threading
import time

from .common import PORT, log
from .drills import agent_runs_loop, keep_runs_and_summarize, stop_load
from .lab import docker, ip_of
from .locust_run import read_reqlog, run_locust, warm_up

# puppetserver's data directory (facts, reports): full, every catalog request fails.
SERVER_DATA = "/var/lib/puppetserver/server_data"
FULL_MOUNT = "/run/lab-drill-full"
# A request slower than this counts as stalled (a real agent would wait up to its
# http_read_timeout, 10 minutes, on a frozen master).
STALLED_S = 10


def backend_states(lab):
    """{master: "checks drained|ready"} from the active LB (`puppet-lb-backend states`):
    haproxy's checks, or "unchecked" under nginx, which has no active checks."""
    out = lab.run_in(lab.lb, "puppet-lb-backend", "states").stdout.decode()
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def engine_label(lab):
    """The engine serving, with HAProxy's on-marked-down action for the masters if its
    configuration has one: a variant measured against the role's default (none), which
    `drill table` keeps apart from the plain engines."""
    engine = lab.lb_engine()
    if engine == "haproxy":
        action = re.search(r"on-marked-down (\S+)", lab.run_in(lab.lb, "cat", "/etc/haproxy/haproxy.cfg").stdout.decode())
        if action:
            return f"haproxy on-marked-down {action.group(1)}"
    return engine


class StateWatch:
    """Polls the LB's view of one master in the background: when its checks first said
    down, and when up again after that."""

    def __init__(self, lab, host):
        self.lab, self.host = lab, host
        self.down_at = self.up_at = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            try:
                checks = backend_states(self.lab).get(self.host, "").split(" ")[0]
            except (RuntimeError, ValueError):
                checks = ""  # the active LB is changing: ask again
            if checks == "down" and self.down_at is None:
                self.down_at = time.time()
            elif checks == "up" and self.down_at is not None and self.up_at is None:
                self.up_at = time.time()
            self.stop.wait(0.25)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ---------------------------------------------------------------- the faults

def stop_puppetserver(lab, host):
    lab.service(host, "puppetserver", "stop")


def start_puppetserver(lab, host):
    lab.service(host, "puppetserver", "start")


def java_pid(lab, host):
    out = lab.run_in(host, "systemctl", "show", "-p", "MainPID", "--value", "puppetserver").stdout.decode().strip()
    if out in ("", "0"):
        raise RuntimeError(f"puppetserver is not running on {host}")
    return out


def freeze_jvm(lab, host):
    lab.run_in(host, "kill", "-STOP", java_pid(lab, host))


def thaw_jvm(lab, host):
    lab.run_in(host, "kill", "-CONT", java_pid(lab, host))


def fill_disk(lab, host):
    """As test_lb_health.py does: a tmpfs holding a copy of server_data, filled to the last
    byte, mounted over it; the machine's own disk is not touched."""
    lab.run_in(host, "sh", "-c",
               f"set -e; size=$(( $(du -sk {SERVER_DATA} | cut -f1) + 1024 ))k; mkdir -p {FULL_MOUNT}; "
               f"mount -t tmpfs -o size=$size lab-drill-full {FULL_MOUNT}; cp -a {SERVER_DATA}/. {FULL_MOUNT}/; "
               f"chmod --reference={SERVER_DATA} {FULL_MOUNT}; chown --reference={SERVER_DATA} {FULL_MOUNT}; "
               f"dd if=/dev/zero of={FULL_MOUNT}/.fill bs=64k 2>/dev/null || true; "
               f"mount --bind {FULL_MOUNT} {SERVER_DATA}")


def free_disk(lab, host):
    lab.run_in(host, "sh", "-c", f"umount {SERVER_DATA}; umount {FULL_MOUNT}", check=False)


def disk_full(lab, host):
    return "lab-drill-full" in lab.run_in(host, "cat", "/proc/mounts").stdout.decode()


def jvm_frozen(lab, host):
    pid = java_pid(lab, host)
    state = lab.run_in(host, "sh", "-c", f"awk '{{print $3}}' /proc/{pid}/stat", check=False).stdout.decode().strip()
    return state == "T"


# name -> (what is done, make sick, make well, still sick?)
FAULTS = {
    "front-up-puppetserver-down": ("puppetserver stopped behind its running front", stop_puppetserver,
                                   start_puppetserver, lambda lab, h: not lab.service_active(h, "puppetserver")),
    "jvm-frozen": ("puppetserver's JVM stopped (kill -STOP)", freeze_jvm, thaw_jvm, jvm_frozen),
    "disk-full": ("puppetserver's server_data full (tmpfs)", fill_disk, free_disk, disk_full),
}


def sick_master(lab, args):
    """The master made sick: --master if it has a front, else the first one that has a front
    (a master without one closes its port when puppetserver stops: nothing to see)."""
    with_front = [k for k in lab.masters if lab.front_service[k] != "puppetserver"]
    if not with_front:
        raise RuntimeError(f"no master of {lab.name} has a front")
    return args.master if args.master in with_front else with_front[0]


def compiled_after(rows, host, after):
    return [r for r in rows if r["name"] == "catalog" and not r["error"] and r["compiled_on"] == host
            and float(r["t_end"]) > after]


def drill_sick_master(lab, args, outdir, certnames, fault):
    """One master made sick for --sick-seconds under load through the shared name, then well."""
    what, make_sick, make_well, still_sick = FAULTS[fault]
    key = sick_master(lab, args)
    host = lab.masters[key]
    engine = lab.lb_engine()
    label = engine_label(lab)
    eps = lab.entry_points()
    warm_up(lab, outdir, {k: eps[k] for k in lab.masters}, args.users, args.warmup, certnames)
    reqlog = os.path.join(outdir, "drill-requests.csv")
    runs, stop, events = [], threading.Event(), {}
    loop = threading.Thread(target=agent_runs_loop, args=(lab, f"{lab.shared_name}:{PORT}", runs, stop), daemon=True)
    loop.start()
    proc = run_locust(lab, outdir, "drill", eps["lb"], args.users, 900, certnames, background=True)
    try:
        t0 = time.time()
        lab.wait_for("catalogs from every master through the LB", lambda: all(
            len(compiled_after(read_reqlog(reqlog), h, t0)) >= 5 for h in lab.masters.values()), 120)
        with StateWatch(lab, host) as watch:
            events["sick"] = time.time()
            log(f"{label}: {what} on {host}")
            make_sick(lab, host)
            events["sick_done"] = time.time()
            # Stopping puppetserver takes its JVM a while: the fault lasts sick_seconds once in place.
            lab.wait_for(f"{args.sick_seconds}s of {what}",
                         lambda: time.time() - events["sick_done"] >= args.sick_seconds, args.sick_seconds + 30)
            events["well"] = time.time()
            log(f"{engine}: {host} made well again")
            make_well(lab, host)
            lab.wait_for(f"{host} ready", lambda: lab.status_ok(ip_of(host), lab.tls_name(key), certnames[0]), 240)
            events["ready"] = time.time()
            lab.wait_for(f"catalogs compiled on {host} through the LB again",
                         lambda: len(compiled_after(read_reqlog(reqlog), host, events["well"])) >= 3, 180)
            events["back"] = time.time()
            lab.wait_for("the LB's checks say up again", lambda: engine == "nginx" or watch.up_at, 60)
    finally:
        lab.guard = False
        if still_sick(lab, host):
            log(f"restoring {host} ({what})")
            make_well(lab, host)
        stop_load(stop, loop, proc)
    res, rows = keep_runs_and_summarize(outdir, runs, reqlog)
    res.update(drill=fault, fault=what, engine=label, lab=lab.name, master=host, events=events,
               sick_s=round(events["well"] - events["sick"], 1),
               out_of_rotation_after_s=None if watch.down_at is None else round(watch.down_at - events["sick"], 1),
               back_in_rotation_after_s=None if watch.up_at is None else round(watch.up_at - events["well"], 1),
               # From the master answering its own status again (a JVM start takes a minute).
               back_in_rotation_after_ready_s=None if watch.up_at is None else round(watch.up_at - events["ready"], 1),
               catalogs_on_it_again_after_s=round(events["back"] - events["well"], 1),
               **failure_figures(rows, runs, events))
    res["pass"] = sick_verdict(res)
    return [res]


def sick_verdict(figures):
    """A sick master costs agents its first seconds at most (the checks' window, interval x
    fall, and requests in flight): after them nothing fails or stalls, and catalogs are
    served (a frozen master holding every agent's request stalls them all: none is)."""
    return (figures["failed_requests_after_first_10s"] == 0 and figures["failed_agent_runs_after_first_10s"] == 0
            and figures["stalled_requests"] == 0 and figures["catalogs_served_after_first_10s"] > 0)


def failure_figures(rows, runs, events):
    """What the Locust agents and the real agent saw, by phase of the drill."""
    sick, well = events["sick"], events["well"]

    def started(r):
        return float(r["t_end"]) - float(r["ms"]) / 1000

    failed = [r for r in rows if r["error"]]
    sick_rows = [r for r in rows if sick <= started(r) < well]
    last_failure = max((float(r["t_end"]) for r in failed if sick <= float(r["t_end"]) <= well + 5), default=None)
    return {
        "failed_requests_before": sum(1 for r in failed if started(r) < sick),
        "failed_requests_while_sick": sum(1 for r in failed if sick <= started(r) < well),
        "failed_catalogs_while_sick": sum(1 for r in failed if sick <= started(r) < well and r["name"] == "catalog"),
        "requests_while_sick": len(sick_rows),
        # Agents kept being served: catalogs that ended after the checks' first seconds.
        "catalogs_served_after_first_10s": sum(1 for r in rows if r["name"] == "catalog" and not r["error"]
                                               and sick + 10 <= float(r["t_end"]) < well),
        # A failure in the first seconds is the checks' window (interval x fall) at work.
        "failed_requests_after_first_10s": sum(1 for r in failed if sick + 10 <= started(r) < well),
        "failed_requests_after_well": sum(1 for r in failed if started(r) >= well),
        "last_failure_after_s": None if last_failure is None else round(last_failure - sick, 1),
        # Slow requests sent after the checks' first seconds (before: the window at work) and
        # before the master was made well (after: a restarted JVM's first, cold compiles).
        "stalled_requests": sum(1 for r in rows if float(r["ms"]) > STALLED_S * 1000
                                and sick + 10 <= started(r) < well),
        "stalled_requests_in_first_10s": sum(1 for r in rows if float(r["ms"]) > STALLED_S * 1000
                                             and sick <= started(r) < sick + 10),
        "slowest_request_while_sick_s": round(max((float(r["ms"]) for r in sick_rows), default=0) / 1000, 1),
        "agent_runs_while_sick": sum(1 for r in runs if sick <= r["start"] < well),
        "failed_agent_runs_while_sick": sum(1 for r in runs if sick <= r["start"] < well and not r["ok"]),
        "failed_agent_runs_after_first_10s": sum(1 for r in runs if sick + 10 <= r["start"] < well and not r["ok"]),
        "agent_run_errors": sorted({e[:120] for r in runs if not r["ok"] for e in r["errors"] or [f"rc {r['rc']}"]}),
    }


def drill_front_up_puppetserver_down(lab, args, outdir, certnames):
    return drill_sick_master(lab, args, outdir, certnames, "front-up-puppetserver-down")


def drill_jvm_frozen(lab, args, outdir, certnames):
    return drill_sick_master(lab, args, outdir, certnames, "jvm-frozen")


def drill_disk_full(lab, args, outdir, certnames):
    return drill_sick_master(lab, args, outdir, certnames, "disk-full")


# ---------------------------------------------------------------- the LB pair

def drill_lb_host_down(lab, args, outdir, certnames):
    """`docker stop` of the load balancer holding the virtual IP (a whole host lost): agents
    know only the shared name; how long the address answered nothing, what failed."""
    if not lab.virtual_ip:
        raise RuntimeError(f"{lab.name} has one load balancer: no pair to fail over")
    engine = lab.lb_engine()
    eps = lab.entry_points()
    warm_up(lab, outdir, {k: eps[k] for k in lab.masters}, args.users, args.warmup, certnames)
    reqlog = os.path.join(outdir, "drill-requests.csv")
    runs, stop, events, probes = [], threading.Event(), {}, []
    loop = threading.Thread(target=agent_runs_loop, args=(lab, f"{lab.shared_name}:{PORT}", runs, stop), daemon=True)
    loop.start()
    proc = run_locust(lab, outdir, "drill", eps["lb"], args.users, 900, certnames, background=True)
    active = lab.lb
    try:
        lab.wait_for("20 catalogs through the shared name", lambda: sum(
            1 for r in read_reqlog(reqlog) if r["name"] == "catalog" and not r["error"]) >= 20, 120)
        lab.wait_for("2 agent runs through the shared name", lambda: sum(1 for r in runs if r["ok"]) >= 2, 180)

        prober = threading.Thread(target=probe_loop, args=(lab, certnames[0], probes, stop), daemon=True)
        prober.start()
        lab.wait_for("a first answer of the status probe", lambda: probes and probes[-1][1], 30)
        events["stop"] = time.time()
        log(f"{engine}: docker stop {active} (holds {lab.virtual_ip})")
        docker("stop", active)
        events["stopped"] = time.time()
        lab.wait_for(f"{lab.virtual_ip} held by the other load balancer", lab.virtual_ip_holders, 60)
        lab.wait_for(f"{lab.virtual_ip} answering from the other load balancer",
                     lambda: probes[-1][0] > events["stopped"] and probes[-1][1], 60, interval=0.1)
        events["moved"] = time.time()
        events["new_holder"] = lab.lb
        lab.wait_for(f"{args.sick_seconds}s on the other load balancer",
                     lambda: time.time() - events["moved"] >= args.sick_seconds, args.sick_seconds + 30)
        lab.wait_for("2 agent runs after the move",
                     lambda: sum(1 for r in runs if r["start"] > events["moved"] and r["ok"]) >= 2, 180)
        events["restore"] = time.time()
    finally:
        lab.guard = False
        log(f"docker start {active}")
        docker("start", active)
        lab.wait_for(f"{lab.lb_engine(active)} active on {active}", lambda: lab.service_active(active, engine), 120)
        lab.wait_for(f"keepalived active on {active}", lambda: lab.service_active(active, "keepalived"), 60)
        events["ready"] = time.time()
        stop_load(stop, loop, proc)
    res, rows = keep_runs_and_summarize(outdir, runs, reqlog)
    unanswered = [t for t, ok in probes if not ok and events["stop"] <= t <= events["moved"]]
    holders_after = lab.virtual_ip_holders()
    failed = [r for r in rows if r["error"]]
    res.update(
        drill="lb-host-down", engine=engine, lab=lab.name, stopped=active, events=events,
        # From the first status probe (every 0.2 s) left unanswered to the first answer after it.
        virtual_ip_unreachable_s=0.0 if not unanswered else round(
            min(t for t, ok in probes if ok and t > unanswered[0]) - unanswered[0], 1),
        status_probes_unanswered=len(unanswered),
        # docker stop ends the container's processes after its 10 s grace period.
        docker_stop_s=round(events["stopped"] - events["stop"], 1),
        moved_after_s=round(events["moved"] - events["stop"], 1),
        failed_requests_around_the_move=sum(1 for r in failed if float(r["t_end"]) <= events["moved"] + 5),
        failed_requests_after_the_move=sum(1 for r in failed if float(r["t_end"]) > events["moved"] + 5),
        agent_runs_after_the_move=sum(1 for r in runs if r["start"] > events["moved"]),
        failed_agent_runs_spanning_the_move=sum(1 for r in runs if r["start"] <= events["moved"] <= r["end"]
                                                and not r["ok"]),
        failed_agent_runs_after_the_move=sum(1 for r in runs if r["start"] > events["moved"] and not r["ok"]),
        agent_run_errors=sorted({e[:120] for r in runs if not r["ok"] for e in r["errors"] or [f"rc {r['rc']}"]}),
        holders_after_restart=holders_after,
    )
    res["pass"] = (res["failed_agent_runs_after_the_move"] == 0 and res["failed_requests_after_the_move"] == 0
                   and holders_after == [events["new_holder"]])
    return [res]


def probe_loop(lab, certname, probes, stop):
    """The shared name's status, every 0.2 s from this host: (time, answered) in probes."""
    while not stop.is_set():
        t = time.time()
        try:
            ok = lab.status_ok(lab.virtual_ip, lab.shared_name, certname)
        except Exception:  # noqa: BLE001 - refused, reset, cut short: all unanswered
            ok = False
        probes.append((t, ok))
        stop.wait(max(0.0, 0.2 - (time.time() - t)))


DRILLS = {"front-up-puppetserver-down": drill_front_up_puppetserver_down, "jvm-frozen": drill_jvm_frozen,
          "disk-full": drill_disk_full, "lb-host-down": drill_lb_host_down}
