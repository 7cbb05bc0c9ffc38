"""Offline tests of the load driver's pure parts (bench/load/): the command line, the
figures read from a per-request log, the bench environment, and the Lab's names (the
measurements themselves need a running lab)."""

import csv
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.load import backend_probe, blocks, cli, drills, env, lab as lab_mod, lb_drills, locust_run, report  # noqa: E402
from bench.load.drills import REFUSED_STREAK, RefusalStreaks  # noqa: E402

REQLOG_HEADER = ["t_end", "tag", "certname", "name", "ms", "status", "error", "compiled_on"]


def write_reqlog(directory, tag, rows):
    """A per-request log as the locustfile writes it: rows of (t_end, name, ms, error, compiled_on)."""
    with open(directory / f"{tag}-requests.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REQLOG_HEADER)
        for t_end, name, ms, error, compiled_on in rows:
            writer.writerow([t_end, tag, "load-001.domain.com", name, ms, 0 if error else 200, error, compiled_on])


# ---------------------------------------------------------------- the command line

def test_load_defaults():
    args = cli.build_parser().parse_args(["load"])
    assert (args.cmd, args.block, args.plot_only, args.use) == ("load", None, False, None)
    assert (args.lab, args.environment, args.catalogs_only) == ("combo4", "production", False)
    assert (args.users, args.duration, args.rounds, args.warmup) == (8, 30, 2, 30)
    assert (args.master, args.down_catalogs) == ("puppet1", 150)


def test_drill_defaults_and_names():
    args = cli.build_parser().parse_args(["drill", "master-down"])
    assert (args.cmd, args.name, args.duration, args.sick_seconds) == ("drill", "master-down", 90, 45)
    for name in ("master-down", "ca-down", "revoke-under-load", "lb-restart", "front-up-puppetserver-down",
                 "jvm-frozen", "disk-full", "lb-host-down", "table"):
        assert cli.build_parser().parse_args(["drill", name]).name == name


def test_drills_run_where_their_lab_has_what_they_need():
    """combination 4's first drills read its nginx LB; the sick-master drills run on every
    scenario's lab (combination 2: the LB terminates TLS); lb-host-down needs the pair of
    combination 5; the engines' comparison converges the lab (never the legacy one)."""
    assert set(cli.DRILLS) == set(drills.DRILLS) | set(lb_drills.DRILLS)
    assert {("drill", name) for name in cli.DRILLS} <= cli.CHANGES_STATE
    assert cli.RUNS_ON[("drill", "master-down")] == ("combo4",)
    assert cli.RUNS_ON[("drill", "disk-full")] == ("combo2", "combo4", "combo5")
    assert cli.RUNS_ON[("drill", "lb-host-down")] == ("combo5",)
    assert cli.RUNS_ON[("load", "lb-engines")] == ("combo2", "combo4", "combo5")
    assert ("load", "lb-engines") in cli.CHANGES_STATE


@pytest.mark.parametrize("argv", [
    ["drill"], ["drill", "nope"], ["load", "--block", "nope"], ["load", "--lab", "nope"],
    ["load", "--master", "puppet3"], ["load", "--environment", "staging"], [],
])
def test_bad_arguments_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("usage: bench/run")


def test_blocks_repeatable():
    args = cli.build_parser().parse_args(["load", "--block", "entry", "--block", "tuning", "--lab", "legacy"])
    assert args.block == ["entry", "tuning"]
    assert args.lab == "legacy"


def test_locked_argv_carries_every_option():
    """What `load` passes to its locked run parses back to the same options."""
    args = cli.build_parser().parse_args(
        ["load", "--lab", "legacy", "--environment", "bench", "--catalogs-only", "--users", "12",
         "--duration", "45", "--rounds", "3", "--warmup", "20", "--master", "puppet2", "--down-catalogs", "99",
         "--sick-seconds", "30"])
    again = cli.build_parser().parse_args(["_locked", "load", "entry", *cli.locked_argv(args)])
    assert (again.kind, again.name) == ("load", "entry")
    for option in ("lab", "environment", "catalogs_only", "users", "duration", "rounds", "warmup", "master", "down_catalogs",
                   "sick_seconds"):
        assert getattr(again, option) == getattr(args, option), option


def test_default_blocks_known():
    for lab_name, blocks in cli.DEFAULT_BLOCKS.items():
        assert lab_name in lab_mod.LABS
        assert set(blocks) <= set(cli.BLOCKS)
    assert all("legacy" in cli.RUNS_ON[("load", b)] for b in cli.DEFAULT_BLOCKS["legacy"])
    assert {name for kind, name in cli.CHANGES_STATE if kind == "drill"} == set(cli.DRILLS)


# ---------------------------------------------------------------- figures from the request log

def test_percentile():
    values = [10.0, 20.0, 30.0, 40.0]
    assert locust_run.percentile([], 0.5) == 0.0
    assert locust_run.percentile(values, 0.5) == 30.0
    assert locust_run.percentile(values, 0.95) == 40.0
    assert locust_run.percentile(values, 0.0) == 10.0
    assert backend_probe.percentile(values, 0.5) == locust_run.percentile(values, 0.5)


def test_summarize(tmp_path):
    write_reqlog(tmp_path, "m-lb-r1", [
        (100.5, "node", 500, "", ""),  # started at 100.0
        (101.0, "catalog", 200, "", "puppet1.domain.com"),
        (102.0, "catalog", 400, "", "puppet2.domain.com"),
        (103.0, "catalog", 300, "", "puppet1.domain.com"),
        (104.0, "catalog", 100, "HTTP 502 Bad Gateway from the front", ""),
        (105.0, "report", 50, "timeout", ""),
    ])
    res = locust_run.summarize(str(tmp_path), "m-lb-r1")
    assert res["tag"] == "m-lb-r1"
    assert res["wall_s"] == 5.0
    assert res["catalogs"] == 3
    assert res["catalogs_per_s"] == pytest.approx(0.6)
    assert (res["catalog_p50_ms"], res["catalog_p95_ms"]) == (300.0, 400.0)
    assert (res["requests"], res["errors"]) == (6, 2)
    assert res["errors_by_kind"] == {"catalog: HTTP 502 Bad Gateway from the front": 1, "report: timeout": 1}
    assert res["compiled_on"] == {"puppet1.domain.com": 2, "puppet2.domain.com": 1}
    assert res["disturbed"] == []


def test_summarize_reads_disturbed_and_refuses_empty_log(tmp_path):
    write_reqlog(tmp_path, "t", [(11.0, "catalog", 1000, "", "puppet1.domain.com")])
    (tmp_path / "t-disturbed.json").write_text('["ansible/molecule running on the lab"]', encoding="utf-8")
    assert locust_run.summarize(str(tmp_path), "t")["disturbed"] == ["ansible/molecule running on the lab"]
    write_reqlog(tmp_path, "empty", [])
    with pytest.raises(RuntimeError, match="no requests logged"):
        locust_run.summarize(str(tmp_path), "empty")
    assert not locust_run.read_reqlog(str(tmp_path / "missing-requests.csv"))


def test_summarize_rounds(tmp_path):
    write_reqlog(tmp_path, "m-a-r1", [(10.0, "catalog", 1000, "", "p1"), (11.0, "catalog", 2000, "", "p1")])
    write_reqlog(tmp_path, "m-a-r2", [(21.0, "catalog", 1000, "", "p2"), (22.0, "node", 1000, "refused", "")])
    (tmp_path / "m-a-r2-disturbed.json").write_text('["puppet1:nginx restarted"]', encoding="utf-8")
    res = locust_run.summarize_rounds(str(tmp_path), "config a", ["m-a-r1", "m-a-r2"], 2)
    assert (res["label"], res["tags"], res["masters"]) == ("config a", ["m-a-r1", "m-a-r2"], 2)
    assert res["wall_s"] == 4.0  # 2 s in each round
    assert res["catalogs"] == 3
    assert res["catalogs_per_s"] == pytest.approx(0.75)
    assert res["round_catalogs_per_s"] == [1.0, 0.5]
    assert (res["catalog_p50_ms"], res["catalog_p95_ms"]) == (1000.0, 2000.0)
    assert (res["requests"], res["errors"]) == (4, 1)
    assert res["errors_by_kind"] == {"node: refused": 1}
    assert res["compiled_on"] == {"p1": 2, "p2": 1}
    assert res["disturbed"] == ["puppet1:nginx restarted"]


def test_print_table(capsys):
    report.print_table([{"label": "LB, two masters", "users": 8, "catalogs": 90, "catalogs_per_s": 3.0,
                         "round_catalogs_per_s": [2.9, 3.1], "catalog_p50_ms": 812.4, "catalog_p95_ms": 1500.6,
                         "errors": 0, "masters": 2, "disturbed": []}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| configuration | users | catalogs | catalogs/s |")
    assert lines[2] == "| LB, two masters | 8 | 90 | 3.0 | 2.9 / 3.1 | 812 | 1501 | 0 | 2,700 | no |"


# ---------------------------------------------------------------- the bench environment

def test_bench_env_files():
    files = env.bench_env_files()
    assert len(files) == 1 + 2 * env.BENCH_MODULES
    site = files["manifests/site.pp"]
    assert site.count("  include bench_") == env.BENCH_MODULES
    assert "include bench_01\n" in site and "include bench_30\n" in site
    # The locustfile checks the notice that names the compiling master.
    assert "compiled by ${server_facts['servername']} on ${compiled_on}" in site
    init = files["modules/bench_07/manifests/init.pp"]
    assert "class bench_07 (" in init
    assert f"Integer $copies = {env.BENCH_FILES_PER_MODULE}," in init
    assert "epp('bench_07/settings.epp'" in init
    template = files["modules/bench_07/templates/settings.epp"]
    assert template.startswith("<%- | Integer $index, String $node | -%>\n# bench module 07, file <%= $index %> of 10,")
    assert "%" not in template.replace("<%", "").replace("%>", "")


def test_bench_env_tar():
    with tarfile.open(fileobj=io.BytesIO(env.bench_env_tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == set(env.bench_env_files())
        assert all(m.mode == 0o644 for m in members.values())
        assert tar.extractfile("manifests/site.pp").read().decode() == env.bench_env_files()["manifests/site.pp"]


# ---------------------------------------------------------------- the Lab's names

@pytest.mark.parametrize("name", lab_mod.LABS)
def test_lab_names(name, monkeypatch):
    lab = lab_mod.Lab(name, "bench")
    assert (lab.name, lab.environment, lab.guard, lab.background) == (name, "bench", False, [])
    for host in (lab.ca, *lab.lbs, lab.shared_name, lab.agent, *lab.masters.values()):
        assert host.endswith(f".{lab.domain}")
    assert len(lab.masters) == 2
    # Every master has its front and units; the units a block may stop are the lab's services.
    assert set(lab.front_service) == set(lab.front_label) == set(lab.master_units) == set(lab.masters)
    for key, front in lab.front_service.items():
        assert front in lab.master_units[key]
    # The engine is read on the LB itself: here, no haproxy runs.
    monkeypatch.setattr(lab, "service_active", lambda host, unit: False)
    assert lab.services() == [*[(lab.masters[k], lab.master_units[k]) for k in lab.masters],
                              *[(lb, ("nginx",)) for lb in lab.lbs], (lab.ca, (lab.ca_unit,))]
    assert lab.bench_env_dir == "/etc/puppet/code/environments/bench"
    assert lab.server_list() == ",".join(f"{h}:8140" for h in [lab.shared_name, *lab.masters.values()])
    assert lab.results_name("entry") == ("entry" if name == "combo4" else f"{name}-entry")
    assert lab_mod.Lab(name).environment == "production"


def test_combo4_lab():
    lab = lab_mod.Lab("combo4")
    assert (lab.ca, lab.lb, lab.shared_name) == ("puppetca.domain.com", "puppetlb.domain.com", "puppet.domain.com")
    assert lab.masters == {"puppet1": "puppet1.domain.com", "puppet2": "puppet2.domain.com"}
    assert lab.front_service == {"puppet1": "nginx", "puppet2": "apache2"}
    assert lab.status_path == "/status/v1/simple"


def test_combo5_lab_is_read_from_its_scenario(monkeypatch):
    """The LB pair, its virtual IP (the scenario's ${LAB_VIRTUAL_IP}), the shared
    certificate of combination 5 and a master without a front."""
    monkeypatch.setenv("LAB_VIRTUAL_IP", "172.30.56.250")
    lab = lab_mod.Lab("combo5")
    assert (lab.ca, lab.shared_name, lab.domain) == ("puppetca.domain.org", "puppet.domain.org", "domain.org")
    assert (lab.lbs, lab.virtual_ip) == (["puppetlb.domain.org", "puppetlb2.domain.org"], "172.30.56.250")
    # puppet3 is a spare (lab_spare_masters), not a master of the cluster.
    assert lab.masters == {"puppet1": "puppet1.domain.org", "puppet2": "puppet2.domain.org"}
    assert lab.front_service == {"puppet1": "nginx", "puppet2": "puppetserver"}
    assert lab.master_units == {"puppet1": ("puppetserver", "nginx"), "puppet2": ("puppetserver",)}
    assert lab.tls_name("puppet1") == lab.tls_name("puppet2") == "puppet.domain.org"
    assert lab_mod.Lab("combo4").tls_name("puppet1") == "puppet1.domain.com"


def test_combo2_lab_terminates_tls():
    """One load balancer in tls mode, no virtual IP; the masters have their own names."""
    lab = lab_mod.Lab("combo2")
    assert (lab.lbs, lab.virtual_ip, lab.lb_mode, lab.combination) == (["puppetlb.domain.org"], "", "tls", 2)
    assert lab.tls_name("puppet1") == "puppet1.domain.org"
    assert lab.front_service == {"puppet1": "nginx", "puppet2": "apache2"}
    assert lab_mod.Lab("combo4").lb_mode == "tcp"


class EnginesLab:
    """What lb_running() asks of a Lab: the engine of each load balancer, and a converge."""

    def __init__(self, engines):
        self.engines = dict(engines)
        self.lbs = list(engines)
        self.converged = []

    def lb_engine(self, lb):
        return self.engines[lb]

    def converge(self, engines, _certname, _logpath):
        self.converged.append(dict(engines))
        self.engines.update(engines)


def test_lb_running_converges_only_when_no_lb_serves_the_engine(tmp_path):
    single = EnginesLab({"lb": "haproxy"})
    assert blocks.lb_running(single, "haproxy", "c", str(tmp_path)) == "lb"
    assert blocks.lb_running(single, "nginx", "c", str(tmp_path)) == "lb"
    assert single.converged == [{"lb": "nginx"}]
    # A pair gets one engine per host in one converge, and keeps them.
    pair = EnginesLab({"lb1": "nginx", "lb2": "nginx"})
    assert blocks.lb_running(pair, "haproxy", "c", str(tmp_path)) == "lb1"
    assert blocks.lb_running(pair, "nginx", "c", str(tmp_path)) == "lb2"
    assert pair.converged == [{"lb1": "haproxy", "lb2": "nginx"}]


class CatalogLab:
    """A lab whose master answers the catalog given (as JSON) to the catalog request."""
    environment = "bench"

    def __init__(self, catalog):
        self.catalog = catalog
        self.asked = []

    def run_in(self, host, *cmd, check=True):
        self.asked.append((host, cmd))
        return type("Result", (), {"stdout": json.dumps(self.catalog).encode()})()


def test_catalog_digest_ignores_what_every_compile_changes():
    resource = {"type": "File", "title": "/etc/motd", "parameters": {"content": "a"}}
    first = {"version": 1, "catalog_uuid": "u1", "code_id": None, "classes": ["main"],
             "resources": [resource, {"type": "Class", "title": "Main"}], "edges": [{"source": "Class[Main]", "target": "File[/etc/motd]"}]}
    again = dict(first, version=2, catalog_uuid="u2", resources=list(reversed(first["resources"])))
    changed = dict(first, resources=[dict(resource, parameters={"content": "b"}), {"type": "Class", "title": "Main"}])
    digests = [blocks.catalog_digest(CatalogLab(c), "puppet1", "load-001.domain.com") for c in (first, again, changed)]
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]
    lab = CatalogLab(first)
    blocks.catalog_digest(lab, "puppet1", "load-001.domain.com")
    assert "http://127.0.0.1:18140/puppet/v3/catalog/load-001.domain.com?environment=bench" in lab.asked[0][1]


def test_print_engine_table(capsys):
    row = {"lb_mode": "tls", "catalogs_per_s": 4.0, "catalog_p95_ms": 900.0, "lb_cpu_ms_per_run": 8.0, "errors": 0}
    report.print_engine_table([dict(row, engine="haproxy", round_catalogs_per_s=[3.9, 4.1]),
                               dict(row, engine="nginx", catalogs_per_s=5.0, lb_cpu_ms_per_run=4.0,
                                    round_catalogs_per_s=[5.2, 4.8])])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| tls mode | HAProxy | nginx | HAProxy / nginx | per round, HAProxy / nginx |"
    assert lines[2] == "| agent runs/s | 4.00 | 5.00 | 0.80 | 3.9 vs 5.2 / 4.1 vs 4.8 |"
    assert lines[4] == "| LB CPU ms per agent run | 8.00 | 4.00 | 2.00 |  |"
    assert lines[5] == "| errors | 0 | 0 | - |  |"


def test_molecule_variables_expand(monkeypatch):
    monkeypatch.delenv("LAB_VIRTUAL_IP", raising=False)
    assert lab_mod.expand("${LAB_VIRTUAL_IP:-172.30.55.250}") == "172.30.55.250"
    monkeypatch.setenv("LAB_VIRTUAL_IP", "10.0.0.9")
    assert lab_mod.expand("${LAB_VIRTUAL_IP:-172.30.55.250}") == "10.0.0.9"
    assert lab_mod.expand("x ${LAB_VIRTUAL_IP} y") == "x 10.0.0.9 y"
    assert lab_mod.expand(5) == 5


def test_legacy_lab():
    lab = lab_mod.Lab("legacy")
    assert (lab.ca, lab.lb, lab.shared_name, lab.agent) == ("ca5.domain.com", "lb5.domain.com", "puppet5.domain.com",
                                                            "agent5.domain.com")
    assert lab.masters == {"master5a": "master5a.domain.com", "master5b": "master5b.domain.com"}
    assert not lab.ca_generate_batch
    assert lab.status_path.startswith("/puppet/v3/status/ready")


@pytest.mark.parametrize("cmd, drives", [
    ("ansible-playbook -i inventories/combo4 site.yml", True),
    ("ansible-playbook -i inventories/combo4 site.yml --check", False),
    ("/usr/bin/python3 /usr/bin/molecule test -s combo4", True),
    ("python -m pytest -q tests/unit", False),
    ("python -m pytest molecule/combo4/tests/test_default.py", True),
    ("bash ./lab lint", False),
])
def test_drives_the_lab(cmd, drives):
    assert lab_mod.drives_the_lab(cmd) is drives


def test_lab_waits_give_up_when_guarded(monkeypatch):
    """With the guard on, a wait ends with LabInUse as soon as someone drives the lab."""
    monkeypatch.setattr(lab_mod, "lab_busy", lambda: ["ansible-playbook site.yml"])
    lab = lab_mod.Lab("combo4")
    lab.guard = True
    with pytest.raises(lab_mod.LabInUse, match="while waiting for a thing"):
        lab.wait_for("a thing", lambda: False, 5)
    lab.guard = False
    lab.wait_for("a thing", lambda: True, 5)
    with pytest.raises(TimeoutError, match="a thing"):
        lab.wait_for("a thing", lambda: False, 0.1, interval=0.05)


def test_refusal_streaks():
    streaks = RefusalStreaks(["puppet1", "lb"])
    for _probe in range(REFUSED_STREAK):
        streaks.record("puppet1", "HTTP 403", True)
    streaks.record("lb", "HTTP 200", False)
    assert not streaks.all_refusing()
    for _probe in range(REFUSED_STREAK - 1):
        streaks.record("lb", "TLS alert (SSLError)", True)
    assert not streaks.all_refusing()
    streaks.record("lb", "TLS alert (SSLError)", True)
    assert streaks.all_refusing()
    assert streaks.seen == {"puppet1": {"HTTP 403": REFUSED_STREAK},
                            "lb": {"HTTP 200": 1, "TLS alert (SSLError)": REFUSED_STREAK}}
    streaks.record("puppet1", "HTTP 200", False)
    assert streaks.streak["puppet1"] == [None, 0, ""]


def test_sick_master_failure_figures():
    """The drills' figures by phase: failures in the checks' first seconds, after them,
    after the master is well again; stalled requests; the real agent's failed runs."""
    events = {"sick": 100.0, "well": 160.0}

    def row(start, ms, error="", name="catalog"):
        return {"t_end": str(start + ms / 1000), "ms": str(ms), "error": error, "name": name}

    rows = [row(90, 500, "HTTP 502"), row(101, 200, "HTTP 502"), row(103, 100, "HTTP 500", "node"),
            row(115, 300, "HTTP 500"), row(120, 15000), row(105, 12000), row(161, 200, "transport"), row(130, 300),
            row(170, 12000)]
    runs = [{"start": 102, "ok": False, "rc": 1, "errors": ["Error: 502"]}, {"start": 130, "ok": True, "errors": []},
            {"start": 150, "ok": False, "rc": 1, "errors": []}]
    figures = lb_drills.failure_figures(rows, runs, events)
    assert figures["failed_requests_before"] == 1
    assert (figures["failed_requests_while_sick"], figures["failed_catalogs_while_sick"]) == (3, 2)
    assert figures["requests_while_sick"] == 6
    # Those that ended at 117, 130.3 and 135; not the failed ones.
    assert figures["catalogs_served_after_first_10s"] == 3
    assert not lb_drills.sick_verdict(figures)
    assert lb_drills.sick_verdict(dict(figures, failed_requests_after_first_10s=0, failed_agent_runs_after_first_10s=0,
                                       stalled_requests=0))
    assert not lb_drills.sick_verdict(dict(figures, failed_requests_after_first_10s=0, stalled_requests=0,
                                           failed_agent_runs_after_first_10s=0, catalogs_served_after_first_10s=0))
    assert figures["failed_requests_after_first_10s"] == 1
    assert figures["failed_requests_after_well"] == 1
    assert figures["last_failure_after_s"] == 61.2
    assert (figures["stalled_requests"], figures["stalled_requests_in_first_10s"]) == (1, 1)
    assert figures["slowest_request_while_sick_s"] == 15.0
    assert (figures["agent_runs_while_sick"], figures["failed_agent_runs_while_sick"]) == (3, 2)
    assert figures["failed_agent_runs_after_first_10s"] == 1
    assert figures["agent_run_errors"] == ["Error: 502", "rc 1"]


def test_drill_table_reads_the_newest_run_per_engine(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "RESULTS", str(tmp_path))
    for stamp, engine, out in (("20260101T000000Z", "nginx", None), ("20260101T000100Z", "haproxy", 3.9),
                               ("20260101T000200Z", "haproxy", 4.1)):
        d = tmp_path / f"{stamp}-combo5-disk-full"
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"name": "disk-full", "lab": "combo5", "results": [
            {"engine": engine, "out_of_rotation_after_s": out, "pass": out is not None}]}))
    report.print_drill_table("combo5", ["disk-full", "jvm-frozen"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert lines[2].startswith("| disk-full | nginx | never | - | - |") and "FAIL" in lines[2]
    assert lines[3].startswith("| disk-full | haproxy | 4.1 |") and "20260101T000200Z" in lines[3]
    assert lines[4] == ""


def test_lab_network_as_molecule_reads_it():
    """A scenario run on another lab network (LAB_NETWORK) is another lab: not counted busy."""
    assert lab_mod.lab_network({}) == "puppet-lab"
    assert lab_mod.lab_network({"LAB_NETWORK": ""}) == "puppet-lab"
    assert lab_mod.lab_network({"LAB_NETWORK": "puppet-lab-2"}) == "puppet-lab-2"
    assert lab_mod.process_network("no-such-pid") == "puppet-lab"


def test_jfr_top_counts_the_top_frame_as_self_and_every_frame_once_as_total():
    sys.path.insert(0, str(ROOT / "bench"))
    import jfr_top  # noqa: E402 pylint: disable=import-outside-toplevel,import-error

    def sample(*names):
        return {"values": {"stackTrace": {"frames": [
            {"method": {"type": {"name": owner}, "name": method}} for owner, method in (n.split(".") for n in names)]}}}
    recording = {"recording": {"events": [sample("Lexer.scan", "Parser.parse", "Epp.render"),
                                          sample("Lexer.scan", "Lexer.scan", "Epp.render"),
                                          sample("Gc.mark")]}}
    samples, own, total, ruby = jfr_top.top_methods(recording, 3)
    assert samples == 3 and ruby == []
    assert own[0] == ("Lexer.scan", 2 / 3)
    assert dict(total)["Epp.render"] == 2 / 3 and dict(total)["Lexer.scan"] == 2 / 3
    assert jfr_top.ruby_name("usr/lib/ruby/vendor_ruby/puppet/pops/parser/lexer2.RUBY$method$scan$0") == "puppet/pops/parser/lexer2.rb: scan"
    assert jfr_top.ruby_name("org/jruby/RubyHash.internalGetEntry") is None


def test_the_bench_env_plot_is_not_redrawn_with_a_side_missing(monkeypatch, tmp_path):
    """A machine with only the tuning block's result would replace the comparison with
    Passenger by a plot without it."""
    (tmp_path / "r-tuning").mkdir()
    monkeypatch.setattr(report, "latest", lambda block, lab="combo4", environment="production":
                        str(tmp_path / "r-tuning") if block == "tuning" else None)
    monkeypatch.setattr(report, "read_summary", lambda d: {"results": [{"label": "tuned", "catalogs_per_s": 1.0}]})
    report.plot_bench_env(None, {})  # plt None: drawing anything would fail
