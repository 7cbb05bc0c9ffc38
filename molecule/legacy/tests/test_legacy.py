"""Combination 4 on Debian 11 with Puppet 5 under Passenger (the legacy stack).

What a user of the source document's architecture sees: agents run through the load
balancer and both Passenger masters compile (apache + mod_passenger on one, Passenger
Standalone behind nginx on the other), Passenger itself serves the Rack master
(passenger-status), client identity comes only from verified certificates, a master
down does not stop agents, a revoked certificate is refused, TLS below 1.2 is refused.
"""

import json
import re

import pytest

SSLDIR = "/var/lib/puppet/ssl"
REGISTRY = "PASSENGER_INSTANCE_REGISTRY_DIR=/run/passenger-instreg"


def front(cluster, master):
    return cluster.var(master, "puppet_master_frontend", "nginx")


def test_agents_run_through_the_load_balancer_and_both_masters_compile(cluster):
    agent = cluster.agents[0]
    seen = set()
    for _attempt in range(8):
        run = cluster.agent_run(agent)
        assert run.rc in (0, 2), run.stdout + run.stderr
        seen.add(cluster.compiled_by(run.stdout))
        if seen >= set(cluster.masters):
            break
    assert seen == set(cluster.masters), f"catalogs compiled by {seen}, expected {cluster.masters}"
    version = cluster.host(agent).run("puppet --version").stdout.strip()
    assert version.startswith("5."), version


@pytest.mark.parametrize("index", [0, 1])
def test_passenger_serves_the_rack_master(cluster, index):
    master = cluster.masters[index]
    host = cluster.host(master)
    status = host.run(f"{REGISTRY} passenger-status --show=pool")
    assert status.rc == 0, status.stdout + status.stderr
    processes = re.search(r"^Processes\s*:\s*(\d+)", status.stdout, re.M)
    assert processes and int(processes.group(1)) >= 1, status.stdout
    assert "/usr/share/puppet/rack/puppet-master" in status.stdout
    if front(cluster, master) == "nginx":
        # Passenger Standalone on the loopback port, apache not running at all.
        assert host.socket("tcp://127.0.0.1:18140").is_listening
        assert not host.socket("tcp://0.0.0.0:18140").is_listening
        assert not host.service("apache2").is_running
        assert host.service("puppet-passenger").is_running
    else:
        assert host.service("apache2").is_running


def test_the_play_summary_shows_the_passenger_pools(cluster):
    play = cluster.run_playbook("site.yml", args=("--tags", "service"))
    assert play.returncode == 0, play.stdout[-3000:]
    for master in cluster.masters:
        line = re.search(rf"master: {re.escape(master)} \(([^)]*)\)", play.stdout)
        assert line and "passenger:" in line.group(1) and "Processes" in line.group(1), play.stdout[-3000:]


def test_forged_identity_headers_are_refused(cluster):
    agent = cluster.agents[0]
    forged = {"X-Client-Verify": "SUCCESS", "X-Client-DN": f"CN={agent}"}
    for entry in cluster.entry_points():
        url = f"https://{entry.name}:8140/puppet/v3/node/{agent}?environment=production"
        # No client certificate, forged headers: the front overwrites them.
        assert cluster.https_status(agent, url, headers=forged, via=entry) == 403, entry
        # The agent's own certificate: allowed; another node's catalog: refused.
        assert cluster.https_status(agent, url, cert=agent, via=entry) == 200, entry
        other = f"https://{entry.name}:8140/puppet/v3/node/{cluster.masters[0]}?environment=production"
        assert cluster.https_status(agent, other, cert=agent, via=entry) == 403, entry


def test_tls_below_1_2_is_refused_everywhere(cluster):
    agent = cluster.agents[0]
    # The agent really offers TLS 1.1 (security level 0): a refusal below is the server's.
    cluster.assert_client_speaks(agent, "-tls1_1")
    for entry in cluster.tls_entry_points():
        old = cluster.tls_handshake(agent, entry, "-tls1_1")
        # The server's TLS alert 70, not a connection or certificate failure.
        assert old.rc != 0 and "alert protocol version" in old.stderr, f"{entry} accepted TLS 1.1: {old.stderr[-300:]}"
        new = cluster.tls_handshake(agent, entry, "-tls1_2")
        assert new.rc == 0, f"{entry} refused TLS 1.2: {new.stderr[-300:]}"


def test_agents_keep_running_with_one_master_down(cluster):
    master = cluster.masters[0]
    service = "apache2" if front(cluster, master) == "apache" else "nginx"
    host = cluster.host(master)
    stopped = host.run(f"systemctl stop {service}")
    try:
        assert stopped.rc == 0, stopped.stderr
        # Really down: its front no longer answers on the Puppet port.
        cluster.assert_connection_refused(master)
        cluster.assert_runs_avoid(master)
    finally:
        host.run(f"systemctl start {service}")
        # Serving again before the next test, which asks every entry point.
        url = f"https://{master}:8140/puppet/v3/status/x?environment=production"
        cluster.wait_until(lambda: cluster.https_status(cluster.agents[0], url, cert=cluster.agents[0]) == 200,
                           120, f"{master}'s {service} serves again")


def test_a_revoked_certificate_is_refused_at_every_entry_point(cluster):
    ca = cluster.host(cluster.ca)
    agent = cluster.agents[0]
    name = "revoked5.domain.com"
    made = ca.run(f"puppet cert generate {name} --color=false")
    assert made.rc == 0 or "already" in made.stderr, made.stderr
    pem = ca.run(f"cat {SSLDIR}/certs/{name}.pem").stdout
    key = ca.run(f"cat {SSLDIR}/private_keys/{name}.pem").stdout
    client = cluster.host(agent)
    client.run(f"cat > {SSLDIR}/certs/{name}.pem <<'EOF'\n{pem}EOF")
    client.run(f"umask 077; cat > {SSLDIR}/private_keys/{name}.pem <<'EOF'\n{key}EOF")
    url = "https://{}:8140/puppet/v3/status/x?environment=production"
    for entry in cluster.entry_points():
        assert cluster.https_status(agent, url.format(entry.name), cert=name, via=entry) == 200, entry
    revoked = ca.run(f"puppet cert revoke {name} --color=false")
    assert revoked.rc == 0, revoked.stderr
    try:
        # The masters' CRL refresh timer (20 s in this scenario) brings the new CRL; a
        # refusal is the front's (TLS alert, 403, nginx's 400), and the agent's own
        # certificate still gets 200 at each entry point meanwhile.
        cluster.wait_refused_everywhere(name, lambda entry, _node: url.format(entry.name), 90)
    finally:
        client.run(f"rm -f {SSLDIR}/certs/{name}.pem {SSLDIR}/private_keys/{name}.pem")


def test_enrolment_signs_only_the_hosts_own_request(cluster, tmp_path):
    """Issue 15, item 2: the Puppet 5 CA refuses a second request under a name, and the
    agent's `--waitforcert 0` run ends with the same words as for a stored one. A decoy
    request filed first under a new master's name must not be signed by the play."""
    ca = cluster.host(cluster.ca)
    agent = cluster.agents[0]
    client = cluster.host(agent)
    name = "newmaster5.domain.com"
    playbook = tmp_path / "enroll.yml"
    playbook.write_text(
        f"- hosts: {agent}\n  gather_facts: true\n  tasks:\n"
        "    - ansible.builtin.include_role:\n"
        "        name: marionette.puppet_cluster.puppet_agent\n        tasks_from: enroll\n"
        f"      vars:\n        puppet_agent_certname: {name}\n        puppet_agent_bootstrap_timeout: 10\n")
    try:
        decoy = client.run(
            f"set -e; cd /tmp; openssl req -new -newkey rsa:2048 -nodes -keyout decoy.key -subj /CN={name} "
            f"-out decoy.csr 2>/dev/null; curl -s -o /dev/null -w '%{{http_code}}' --cacert {SSLDIR}/certs/ca.pem "
            f"-X PUT -H 'Content-Type: text/plain' --data-binary @decoy.csr "
            f"'https://{cluster.ca}:8140/puppet-ca/v1/certificate_request/{name}?environment=production'")
        # Puppet 5.5 on Ruby 2.7 stores the request, then answers 500 ("can't modify
        # frozen String"): what counts is the pending request below.
        assert decoy.rc == 0 and decoy.stdout in ("200", "500"), (decoy.rc, decoy.stdout, decoy.stderr)
        # As `puppet cert list` prints a request: SHA-256 of the DER request, upper case.
        fingerprint = client.run("openssl req -in /tmp/decoy.csr -outform DER | openssl dgst -sha256 -c").stdout
        fingerprint = fingerprint.split("= ", 1)[1].strip().upper()
        pending = f"puppet cert list --all --color=false | grep '\"{name}\"'"
        listed = ca.run(pending).stdout.strip()
        assert listed.startswith(f'"{name}"') and fingerprint in listed, (listed, fingerprint)

        play = cluster.run_playbook(str(playbook))
        output = " ".join((play.stdout + play.stderr).split())
        assert play.returncode != 0, play.stdout[-4000:]
        # The agent's own request was refused as a duplicate: the play says so and signs nothing.
        assert f"{name}: the request the CA holds under this name carries another key" in output, output[-4000:]
        assert "another request came first. Nothing was signed." in output, output[-4000:]
        # Still the decoy's request, pending: nothing under that name was signed.
        after = ca.run(pending).stdout.strip()
        assert after.startswith(f'"{name}"') and fingerprint in after, (after, fingerprint)
    finally:
        ca.run(f"puppet cert clean {name} --color=false")
        client.run(f"rm -f {SSLDIR}/certs/{name}.pem {SSLDIR}/private_keys/{name}.pem "
                   f"{SSLDIR}/public_keys/{name}.pem {SSLDIR}/certificate_requests/{name}.pem /tmp/decoy.key /tmp/decoy.csr")


def test_a_puppet5_ca_is_neither_backed_up_nor_restored_onto(cluster, tmp_path):
    """backup.yml and restore.yml are for puppetserver's CA: a Puppet 5 CA (Debian 11) is
    migrated (playbooks/migrate.yml), and each play stops on it with its message before
    it reads or changes anything."""
    secret = ("-e", json.dumps({"puppet_ca_backup_passphrase": "the lab backup passphrase, not a secret"}))
    backups = tmp_path / "backups"
    backup = cluster.run_playbook("playbooks/backup.yml", args=(*secret, "-e", f"puppet_ca_backup_dir={backups}"))
    said = backup.stdout + backup.stderr
    assert backup.returncode != 0 and "a Puppet 5 CA (Debian 11) is" in said and "migrated" in said, said[-3000:]
    assert not backups.exists()
    # The archive need not exist: the host is refused first.
    restore = cluster.run_playbook("playbooks/restore.yml", args=(
        "-e", f"puppet_ca_restore_archive={tmp_path}/puppetca.tar.gz.gpg", *secret))
    said = restore.stdout + restore.stderr
    assert restore.returncode != 0 and "runs Debian 11 (Puppet 5, no puppetserver)" in said, said[-3000:]
    assert cluster.host(cluster.ca).run(f"test -f {SSLDIR}/ca/ca_key.pem").rc == 0


def test_puppetdb_on_debian_11_stops_in_preflight(cluster):
    """Debian 11 ships Puppet 5 and no PuppetDB: a host of puppet_puppetdb on it stops
    the site play in preflight, naming Puppet 5, before any host is changed (check mode
    here, so nothing could change even without the check)."""
    host = cluster.agents[0]
    # Limited to that host: the Passenger masters' own preflight refuses PuppetDB too.
    play = cluster.run_playbook("site.yml", move={host: (None, "puppet_puppetdb")}, args=(
        "--check", "--limit", host, "-e", '{"puppet_puppetdb_database_password": "lab-puppetdb-0123456789"}'))
    said = play.stdout + play.stderr
    assert play.returncode != 0, said[-3000:]
    assert f"puppet_puppetdb needs Debian 12 or 13 (PuppetDB 7.12 or 8.4 from Debian); {host} runs Debian 11" in said, said[-3000:]
    assert "Debian 11 ships Puppet 5 and no PuppetDB package" in said, said[-3000:]
