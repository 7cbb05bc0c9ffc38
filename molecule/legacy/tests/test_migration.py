"""The way off the legacy stack: playbooks/migrate.yml moves the Puppet 5 cluster to
puppetserver masters on Debian 13 behind the same load balancer name, while the agent
keeps running `puppet agent --test` and asking for its node in a loop. The agent keeps
its certificate (issued by the Puppet 5 CA) and afterwards runs cleanly against the
new masters. Runs after test_legacy.py: it retires the Passenger masters.
"""

import glob
import os
import tempfile

from conftest import SSLDIR
from test_rollout import AgentTraffic


def fingerprint(cluster, agent):
    return cluster.host(agent).run(
        f"openssl x509 -noout -fingerprint -sha256 -in {SSLDIR}/certs/{agent}.pem").stdout.strip()


def test_migration_keeps_agents_running_with_their_certificates(cluster):
    agent = cluster.agents[0]
    new_ca = cluster.groups["lab_new_ca"][0]
    new_masters = cluster.groups["lab_new_masters"]
    old_masters = list(cluster.masters)
    before = fingerprint(cluster, agent)
    assert before, "the agent has no certificate before the migration"

    move = {cluster.ca: ("puppet_ca", "puppet_ca_legacy"), new_ca: ("lab_new_ca", "puppet_ca")}
    move.update({m: ("puppet_masters", "puppet_masters_retired") for m in old_masters})
    move.update({m: ("lab_new_masters", "puppet_masters") for m in new_masters})
    with AgentTraffic(cluster) as traffic:
        play = cluster.run_playbook("playbooks/migrate.yml", move=move,
                                    args=("-e", f"puppet_cluster_ca_server={new_ca}"))
    assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-2000:]
    traffic.assert_nothing_failed(min_runs=2)
    assert "degraded: nothing" in play.stdout

    # The same certificate, now checked by the new CA's masters and CA.
    assert fingerprint(cluster, agent) == before
    assert cluster.agent_ca_server(agent) == new_ca
    seen = set()
    for _attempt in range(6):
        run = cluster.agent_run(agent)
        assert run.rc in (0, 2), run.stdout + run.stderr
        assert "Error" not in run.stdout + run.stderr, run.stdout + run.stderr
        seen.add(cluster.compiled_by(run.stdout))
        if seen >= set(new_masters):
            break
    assert seen == set(new_masters), f"catalogs compiled by {seen}, expected the new masters {new_masters}"
    for master in new_masters:
        assert cluster.host(master).service("puppetserver").is_running, master

    # The Passenger masters are out: stopped, and their certificates revoked by the new CA.
    ca = cluster.host(new_ca)
    for master in old_masters:
        # Refused from the agent (curl 7): no listener on any address, not only the wildcard.
        cluster.assert_connection_refused(master)
        status = ca.run(f"puppetserver ca list --certname {master}")
        assert "Revoked" in status.stdout or "revoked" in status.stdout, status.stdout + status.stderr


def test_the_puppet5_ca_no_longer_signs_and_the_ca_files_are_gone(cluster):
    """Issue 15, item 8: after the migration the Puppet 5 CA cannot sign with the key the
    new CA uses (its serials would repeat), and the CA's packed files are nowhere. Runs
    after the migration above."""
    old_ca = cluster.host(cluster.ca)
    new_ca = cluster.host(cluster.groups["lab_new_ca"][0])
    # Its apache (the Puppet 5 CA under Passenger) is stopped and stays so after a reboot.
    assert not old_ca.service("apache2").is_running
    assert not old_ca.service("apache2").is_enabled
    cluster.assert_connection_refused(cluster.ca)
    # The key is out of Puppet's reach: not in the CA directory, root's alone elsewhere.
    assert not old_ca.file(f"{SSLDIR}/ca/ca_key.pem").exists
    retired = old_ca.file("/root/puppet5-ca-retired/ca_key.pem")
    assert retired.exists and retired.user == "root" and retired.mode == 0o600
    assert old_ca.file("/root/puppet5-ca-retired").mode == 0o700
    # The same key the new CA signs with (the one moved, not a lost one).
    modulus = "openssl rsa -noout -modulus -in {}"
    assert (old_ca.run(modulus.format("/root/puppet5-ca-retired/ca_key.pem")).stdout
            == new_ca.run(modulus.format("/etc/puppet/puppetserver/ca/ca_key.pem")).stdout != "")
    # The export and import copies are gone from both hosts and from the controller.
    assert not old_ca.file("/root/puppet5-ca-export.tar").exists
    assert not new_ca.file("/root/puppet5-ca-import").exists
    # ansible.builtin.tempfile on the controller: Python's temporary directory.
    left = glob.glob(os.path.join(tempfile.gettempdir(), "puppet5-ca-*"))
    assert not left, left


def serial(host, path):
    return int(host.run(f"openssl x509 -noout -serial -in {path}").stdout.strip().split("=", 1)[1], 16)


def inventory_serials(host, path):
    return [int(line.split()[0], 16) for line in host.run(f"cat {path}").stdout.splitlines() if line.strip()]


def test_the_new_ca_host_certificate_follows_the_puppet5_serials(cluster):
    """`puppetserver ca import` signs the new CA host's own certificate with serial 1, the
    serial of the Puppet 5 CA's own certificate; the role issues it again after the old
    serials. Runs after the migration above."""
    new_ca = cluster.groups["lab_new_ca"][0]
    ca = cluster.host(new_ca)
    old = inventory_serials(cluster.host(cluster.ca), "/var/lib/puppet/ssl/ca/inventory.txt")
    new = inventory_serials(ca, "/etc/puppet/puppetserver/ca/inventory.txt")
    host_serial = serial(ca, f"{SSLDIR}/certs/{new_ca}.pem")
    assert host_serial > max(old), (host_serial, old)
    assert host_serial != serial(ca, "/etc/puppet/puppetserver/ca/ca_crt.pem")
    assert host_serial in new, new
    assert len(new) == len(set(new)), f"a serial appears twice in the new CA's inventory: {new}"
    # The CA still answers with the certificate it was issued again (pp_cli_auth kept).
    listed = ca.run(f"puppetserver ca list --certname {new_ca}")
    assert listed.rc == 0 and new_ca in listed.stdout, listed.stdout + listed.stderr
