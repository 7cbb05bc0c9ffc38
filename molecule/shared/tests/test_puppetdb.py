"""PuppetDB for the cluster (issue 18): exported resources cross masters, every agent's
facts, catalog and report are stored, only the masters' certificates are answered, the
database connection from the second PuppetDB host is TLS, and the masters fail over to
the second PuppetDB host when the first one stops.

The scenarios with hosts in puppet_puppetdb run these (combo3: puppetdb1 with
PostgreSQL, puppetdb2 on the same database). Each test leaves PuppetDB running.
"""

import json
import re
import shlex
import urllib.parse

import pytest

from conftest import SSLDIR, full_suite_only
from test_restore import PASSPHRASE
from test_rollout import AgentTraffic, main_pid, offer_newer_package

EXPORT_DIR = "/var/tmp/puppet-cluster-exported"
# The backup's passphrase, as test_restore.py gives it.
SECRET = ("-e", json.dumps({"puppet_ca_backup_passphrase": PASSPHRASE}))


@pytest.fixture
def puppetdbs(cluster):
    hosts = cluster.groups.get("puppet_puppetdb", [])
    if not hosts:
        pytest.skip("no PuppetDB in this scenario")
    return hosts


@pytest.fixture
def day200_tests(cluster, puppetdbs):
    """PuppetDB's renewal, upgrade and restore run where the scenario proves them (combo3);
    a scenario that sets lab_puppetdb_day200_tests false proves PuppetDB's wiring only
    (combo5: Debian 12's PuppetDB, within the suite's time budget)."""
    if not cluster.var(puppetdbs[0], "lab_puppetdb_day200_tests", True):
        pytest.skip("PuppetDB's renewal, upgrade and restore are proved on combo3")


def port(cluster):
    return int(cluster.var(cluster.ca, "puppet_cluster_puppetdb_port", 8081))


def query(cluster, client, puppetdb, endpoint, cert=None, pql=None):
    """A PuppetDB query made from `client` (curl), as `cert` or with no certificate (a
    master's certificate is cluster.tls_name(master): one shared name in combination 5)."""
    url = f"https://{puppetdb}:{port(cluster)}/pdb/query/v4/{endpoint}"
    if pql is not None:
        url += "?" + urllib.parse.urlencode({"query": json.dumps(pql)})
    return cluster.https_request(client, url, cert=cert)


def node(cluster, puppetdb, certname):
    """What PuppetDB holds about a node, asked as the first master."""
    response = query(cluster, cluster.masters[0], puppetdb, f"nodes/{certname}", cert=cluster.tls_name(cluster.masters[0]))
    assert response.status == 200, (puppetdb, certname, response)
    return json.loads(response.body)


def systemctl(cluster, host, action):
    result = cluster.host(host).run(f"systemctl {action} puppetdb")
    assert result.rc == 0, (host, action, result.stderr)


def wait_puppetdb_ready(cluster, puppetdb):
    cluster.wait_until(
        lambda: '"state":"running"' in cluster.host(puppetdb).run(
            f"curl -sf --cacert {SSLDIR}/certs/ca.pem --resolve {puppetdb}:{port(cluster)}:127.0.0.1 "
            f"https://{puppetdb}:{port(cluster)}/status/v1/services/puppetdb-status"
        ).stdout.replace(" ", ""),
        240, f"{puppetdb} reports running",
    )


def test_exported_resources_cross_masters(cluster, puppetdbs):
    """A node whose catalog one master compiles collects what a node compiled by the
    other master exported: the masters share their exported resources through PuppetDB."""
    assert len(cluster.compile_only_masters) >= 2, "needs two masters"
    first, second = cluster.compile_only_masters[:2]
    exporter, collector = cluster.agents[:2]
    assert cluster.host(collector).run(f"rm -rf {EXPORT_DIR}").rc == 0
    cluster.run_through(exporter, first)
    cluster.run_through(collector, second)
    collected = cluster.host(collector).file(f"{EXPORT_DIR}/{exporter}")
    assert collected.exists, f"{collector} (compiled by {second}) did not collect what {exporter} exported"
    assert collected.content_string == f"exported by {exporter}, catalog from {first}\n"
    # And the other way: the exporter's next catalog, from the other master, collects the collector's.
    cluster.run_through(exporter, second)
    assert cluster.host(exporter).file(f"{EXPORT_DIR}/{collector}").content_string == \
        f"exported by {collector}, catalog from {second}\n"


def test_puppetdb_holds_every_agent(cluster, puppetdbs):
    """Facts, catalog and report of every agent, on every PuppetDB host (one database)."""
    for agent in cluster.agents:
        run = cluster.agent_run(agent)
        assert run.rc in (0, 2), run.stdout[-2000:]
    for puppetdb in puppetdbs:
        for agent in cluster.agents:
            stored = node(cluster, puppetdb, agent)
            missing = [kind for kind in ("facts", "catalog", "report") if not stored.get(f"{kind}_timestamp")]
            assert not missing, f"{puppetdb} holds no {', '.join(missing)} of {agent}: {stored}"
            assert stored.get("latest_report_status") in ("changed", "unchanged"), stored
        facts = query(cluster, cluster.masters[0], puppetdb, "facts", cert=cluster.tls_name(cluster.masters[0]),
                      pql=["and", ["=", "certname", cluster.agents[0]], ["=", "name", "networking"]])
        assert facts.status == 200 and json.loads(facts.body)[0]["value"]["fqdn"] == cluster.agents[0], facts


def test_puppetdb_answers_the_masters_only(cluster, puppetdbs):
    """Queries without a certificate, or with one not on the allow-list (an agent's),
    get 403; the plain-HTTP port is closed."""
    agent = cluster.agents[0]
    for puppetdb in puppetdbs:
        assert query(cluster, cluster.masters[0], puppetdb, "nodes", cert=cluster.tls_name(cluster.masters[0])).status == 200
        for cert in (None, agent):
            refused = query(cluster, agent, puppetdb, "nodes", cert=cert)
            assert refused.status == 403, (puppetdb, cert, refused)
        listeners = cluster.host(puppetdb).run("ss -Htln")
        ports = {line.split()[3].rsplit(":", 1)[1] for line in listeners.stdout.splitlines()}
        assert str(port(cluster)) in ports and "8080" not in ports, (puppetdb, sorted(ports))


def test_remote_puppetdb_uses_tls_to_the_database(cluster, puppetdbs):
    """The second PuppetDB host's database connections are TLS (pg_stat_ssl), and
    PostgreSQL refuses a connection without TLS from it."""
    database = cluster.var(puppetdbs[0], "puppet_puppetdb_database_host") or puppetdbs[0]
    remote = [host for host in puppetdbs if host != database]
    if not remote:
        pytest.skip("every PuppetDB host runs its database itself")
    address = cluster.host(remote[0]).run("hostname -I").stdout.split()[0]
    sessions = cluster.host(database).run(
        "runuser -u postgres -- psql -XAtc "
        + shlex.quote(f"SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                      f"WHERE a.client_addr = '{address}'")
    )
    rows = [line.split("|") for line in sessions.stdout.split()]
    assert rows and all(ssl == "t" and version in ("TLSv1.2", "TLSv1.3") for ssl, version in rows), \
        (remote[0], address, sessions.stdout, sessions.stderr)
    rules = cluster.host(database).run(
        "runuser -u postgres -- psql -XAtc "
        + shlex.quote(f"SELECT type, auth_method FROM pg_hba_file_rules WHERE address = '{address}'")
    )
    assert rules.stdout.split() == ["hostssl|scram-sha-256"], rules.stdout


def test_status_reports_puppetdb(healthy_status, puppetdbs):
    """status.yml (read-only, in check mode) reports every PuppetDB host running with its
    command queue, and the database's size on the database host."""
    status = healthy_status
    assert status.returncode == 0, status.stdout[-4000:] + status.stderr[-1000:]
    reports = re.findall(r'"puppetdb": \{[^}]*\}', status.stdout)
    assert len(reports) == len(puppetdbs), status.stdout[-4000:]
    for report in reports:
        assert '"state": "running"' in report and re.search(r'"queue_depth": \d+', report), report
        assert '"database_up": true' in report, report
    assert len([r for r in reports if re.search(r'"database_size": "\d+ [kMG]B"', r)]) == 1, reports


def test_masters_fail_over_to_the_second_puppetdb(cluster, puppetdbs):
    """With the first PuppetDB stopped, agents keep their runs and their catalogs are
    stored through the second one; with every PuppetDB stopped, runs fail
    (soft_write_failure off, the default) and name PuppetDB; started again, they pass."""
    if len(puppetdbs) < 2:
        pytest.skip("one PuppetDB host")
    agent = cluster.agents[0]
    first, second = puppetdbs[:2]
    try:
        systemctl(cluster, first, "stop")
        before = node(cluster, second, agent)["catalog_timestamp"]
        run = cluster.agent_run(agent)
        assert run.rc in (0, 2), run.stdout[-3000:] + run.stderr[-2000:]
        after = node(cluster, second, agent)["catalog_timestamp"]
        assert after > before, f"the catalog of the run with {first} stopped was not stored ({before} -> {after})"
        # status.yml sees it.
        status = cluster.run_playbook("playbooks/status.yml", args=("--check", "--limit", f"{first},localhost"))
        output = status.stdout + status.stderr
        assert status.returncode != 0 and f"{first}: service puppetdb is not running" in output \
            and f"{first}: PuppetDB: state no answer" in output, output[-3000:]

        systemctl(cluster, second, "stop")
        run = cluster.agent_run(agent)
        assert run.rc == 1, run.stdout[-2000:]
        assert "puppetdb" in (run.stdout + run.stderr).lower(), run.stdout[-2000:] + run.stderr[-2000:]
    finally:
        for puppetdb in puppetdbs:
            systemctl(cluster, puppetdb, "start")
        for puppetdb in puppetdbs:
            wait_puppetdb_ready(cluster, puppetdb)
    run = cluster.agent_run(agent)
    assert run.rc in (0, 2), run.stdout[-3000:]


def served_certificate(cluster, puppetdb):
    """Serial and public key of the certificate PuppetDB's port presents now."""
    return cluster.host(puppetdb).run(
        f"openssl s_client -connect 127.0.0.1:{port(cluster)} -servername {puppetdb} < /dev/null 2> /dev/null"
        " | openssl x509 -noout -serial -pubkey").stdout


@pytest.mark.usefixtures("day200_tests")
def test_renew_renews_the_database_hosts_puppetdb_certificate(cluster, puppetdbs):
    """renew.yml with a window the certificate falls in, limited to the database host:
    the same key under a new serial, served by PuppetDB and by PostgreSQL, and the masters
    and the other PuppetDB host still reach them."""
    database = puppetdbs[0]
    before = served_certificate(cluster, database).split("\n", 1)
    play = cluster.run_playbook("playbooks/renew.yml", args=(
        "--limit", f"{database},localhost", "-e", "puppet_cluster_renew_within_days=3000"))
    assert play.returncode == 0, play.stdout[-5000:] + play.stderr[-2000:]
    assert f"{database}: PuppetDB certificate renewed, PuppetDB restarted" in play.stdout, play.stdout[-3000:]
    after = served_certificate(cluster, database).split("\n", 1)
    assert after[0] != before[0] and after[1] == before[1], (before, after)
    postgres = cluster.host(database).run("openssl x509 -noout -serial -in /etc/postgresql/puppetdb-ssl/cert.pem")
    assert postgres.stdout.strip() == after[0], (postgres.stdout, after[0])
    for puppetdb in puppetdbs:
        wait_puppetdb_ready(cluster, puppetdb)
        assert node(cluster, puppetdb, cluster.agents[0])["certname"] == cluster.agents[0]


UPGRADE = "Install puppetdb {version}"
READY = "Wait until PuppetDB's status says running"


@pytest.mark.usefixtures("day200_tests")
def test_site_upgrades_puppetdb_one_host_at_a_time_without_failing_an_agent_run(cluster, puppetdbs):
    """A new puppet_puppetdb_version rolls out through site.yml one PuppetDB host at a
    time: while one restarts the masters use the other, and no agent run fails. (The
    new version is the installed package under a higher version number, from a local
    apt repository: dpkg, the package scripts and the restart are real.) The masters'
    rolling upgrade (test_rollout.py) proves the same one-at-a-time play in the default run."""
    full_suite_only("PuppetDB's rolling upgrade (4 minutes)")
    versions = {offer_newer_package(cluster.host(puppetdb), "puppetdb") for puppetdb in puppetdbs}
    assert len(versions) == 1, versions
    version = versions.pop()
    pids_before = {puppetdb: main_pid(cluster, puppetdb, "puppetdb") for puppetdb in puppetdbs}
    with AgentTraffic(cluster) as traffic:
        play = cluster.run_playbook("site.yml", args=(
            "--limit", "puppet_puppetdb", "-e", f"puppet_puppetdb_version={version}"))
    assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-2000:]
    traffic.assert_nothing_failed(min_runs=2)
    for puppetdb in puppetdbs:
        host = cluster.host(puppetdb)
        assert host.run("dpkg-query --show --showformat '${Version}' puppetdb").stdout == version, puppetdb
        pid = main_pid(cluster, puppetdb, "puppetdb")
        assert pid not in ("0", pids_before[puppetdb]), f"{puppetdb}: PuppetDB was not restarted (main PID {pid})"
    # One host at a time: each is upgraded and answers before the next one is touched.
    upgrade = UPGRADE.format(version=version)
    order, task = [], None
    rollout = play.stdout.split("PLAY [Upgrade PuppetDB one host at a time]", 1)[1].split("PLAY [PuppetDB]", 1)[0]
    for line in rollout.splitlines():
        header = re.match(r"TASK \[(?:[^:\]]*: )?(.*)\] \*", line)
        if header:
            task = header.group(1)
        done = re.match(r"(?:changed|ok): \[([^\] ]+)", line)
        if done and task in (upgrade, READY):
            order.append((task, done.group(1)))
    assert order == [step for puppetdb in puppetdbs for step in ((upgrade, puppetdb), (READY, puppetdb))], order


def reports_of(cluster, puppetdb, certname):
    response = query(cluster, cluster.masters[0], puppetdb, "reports", cert=cluster.tls_name(cluster.masters[0]),
                     pql=["=", "certname", certname])
    assert response.status == 200, (puppetdb, certname, response)
    return sorted(report["hash"] for report in json.loads(response.body))


def test_a_backup_without_gpg_on_the_database_host_stops_before_saving(cluster, puppetdbs, tmp_path):
    """gpg encrypts PuppetDB's dump on the database host: without it there (a cluster
    deployed before the backup held the database) the backup stops in its checks, naming
    the host, before anything is dumped, and saves nothing."""
    database_host = cluster.var(puppetdbs[0], "puppet_puppetdb_database_host") or puppetdbs[0]
    host = cluster.host(database_host)
    assert host.run("mv /usr/bin/gpg /usr/bin/gpg.lab-hidden").rc == 0
    backups = tmp_path / "backups"
    try:
        play = cluster.run_playbook("playbooks/backup.yml", args=(*SECRET, "-e", f"puppet_ca_backup_dir={backups}"))
    finally:
        assert host.run("mv /usr/bin/gpg.lab-hidden /usr/bin/gpg").rc == 0
    output = play.stdout + play.stderr
    assert play.returncode != 0 and f"{database_host} has no gpg" in output, output[-3000:]
    assert "TASK [marionette.puppet_cluster.puppet_ca : Dump PuppetDB's database" not in output, output[-3000:]
    assert not backups.exists() or not any(backups.iterdir()), sorted(backups.iterdir())


@pytest.mark.usefixtures("day200_tests")
def test_the_database_comes_back_from_the_backup(cluster, puppetdbs, tmp_path):
    """backup.yml puts PuppetDB's database in the archive (pg_dump, encrypted on the
    database host); after the database is lost, restore_puppetdb.yml puts back every
    node's facts, catalog and past reports, without an agent run in between. A wrong
    passphrase stops it before PuppetDB is stopped."""
    # No agent run between the backup and the checks after the restore: what PuppetDB
    # then holds can only have come from the archive.
    for agent in cluster.agents:
        assert cluster.host(agent).run("puppet agent --disable 'PuppetDB restore drill'").rc == 0
    try:
        database_comes_back(cluster, puppetdbs, tmp_path)
    finally:
        for agent in cluster.agents:
            cluster.host(agent).run("puppet agent --enable")
    run = cluster.agent_run(cluster.agents[0])
    assert run.rc in (0, 2), run.stdout[-3000:] + run.stderr[-2000:]


def database_comes_back(cluster, puppetdbs, tmp_path):
    database_host = puppetdbs[0]
    backups = tmp_path / "backups"
    play = cluster.run_playbook("playbooks/backup.yml", args=(*SECRET, "-e", f"puppet_ca_backup_dir={backups}"))
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    assert PASSPHRASE not in play.stdout + play.stderr
    archive, = backups.glob("*.tar.gz.gpg")
    manifest = (archive.parent / f"{archive.name}.manifest").read_text()
    assert f"puppetdb_database: puppetdb on {database_host}\n" in manifest, manifest
    assert "  puppetdb/puppetdb.dump.gpg\n" in manifest, manifest
    assert not cluster.host(database_host).run("ls -d /tmp/puppet-ca-backup-* 2>/dev/null").stdout
    before = {agent: node(cluster, puppetdbs[-1], agent)["catalog_timestamp"] for agent in cluster.agents}
    reports = reports_of(cluster, puppetdbs[-1], cluster.agents[0])
    assert reports

    restore_args = ("-e", f"puppet_ca_restore_archive={archive}")
    # --check: the checks, and what would be replaced; PuppetDB keeps running.
    check = cluster.run_playbook("playbooks/restore_puppetdb.yml", args=("--check", *restore_args, *SECRET))
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert f"is replaced by puppetdb on {database_host}" in check.stdout, check.stdout[-3000:]
    wrong = cluster.run_playbook("playbooks/restore_puppetdb.yml", args=(
        *restore_args, "-e", json.dumps({"puppet_ca_backup_passphrase": "another passphrase entirely"})))
    assert wrong.returncode != 0, wrong.stdout[-3000:]
    assert "does not decrypt with puppet_puppetdb_restore_passphrase" in wrong.stdout + wrong.stderr, wrong.stdout[-3000:]
    for puppetdb in puppetdbs:
        assert cluster.host(puppetdb).run("systemctl is-active puppetdb").stdout.strip() == "active", puppetdb

    # The database is lost.
    for puppetdb in puppetdbs:
        systemctl(cluster, puppetdb, "stop")
    dropped = cluster.host(database_host).run("runuser -u postgres -- dropdb puppetdb")
    assert dropped.rc == 0, dropped.stderr

    restore = cluster.run_playbook("playbooks/restore_puppetdb.yml", args=(*restore_args, *SECRET))
    assert restore.returncode == 0, restore.stdout[-6000:] + restore.stderr[-2000:]
    assert PASSPHRASE not in restore.stdout + restore.stderr
    restored = re.search(r"PuppetDB's database restored from \S+: (\d+) nodes", restore.stdout)
    assert restored and int(restored.group(1)) >= len(cluster.agents), restore.stdout[-3000:]
    assert not cluster.host(database_host).run("ls -d /tmp/puppet-puppetdb-restore-* 2>/dev/null").stdout
    for puppetdb in puppetdbs:
        assert {agent: node(cluster, puppetdb, agent)["catalog_timestamp"] for agent in cluster.agents} == before
        assert reports_of(cluster, puppetdb, cluster.agents[0]) == reports
