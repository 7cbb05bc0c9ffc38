"""Backup and restore, proven by losing the CA host: playbooks/backup.yml takes an
encrypted archive, a node is revoked after it, the CA container is destroyed and a fresh
one created from the image, playbooks/restore.yml brings the same CA back. Agents keep
running through the load balancer without re-enrolment, the revoked node stays refused,
a new node is signed by the same chain and no serial repeats. Opt-in per scenario
(lab_backup_drill): the drill rebuilds a host and takes a few minutes.

(Named to run after test_operations.py and before test_rollout.py.)
"""

import hashlib
import json
import re
import time

import pytest

from conftest import SSLDIR, container_like, docker

PASSPHRASE = "the lab backup passphrase, not a secret"
CADIR = "/etc/puppet/puppetserver/ca"


def opted_in(cluster):
    if not cluster.var(cluster.ca, "lab_backup_drill", False):
        pytest.skip("this scenario does not run the backup drill")


def recreate_from_image(name):
    """Destroy the container and create a fresh one from its image, with the same name,
    network (and aliases) and the settings systemd needs: a rebuilt machine."""
    container_like(name, name, replace=True)


def output(play):
    """The end of what a play said, for an assertion's message. A failed task's message
    is on stdout or stderr depending on Ansible's display (stderr under the verifier)."""
    return (play.stdout + play.stderr)[-6000:]


def serials(inventory):
    return [int(serial, 16) for serial in re.findall(r"^0x([0-9a-fA-F]+)\s", inventory, re.M)]


def certificate_serial(host, path):
    shown = host.run(f"openssl x509 -noout -serial -in {path}")
    assert shown.rc == 0, shown.stderr
    return int(shown.stdout.strip().split("=", 1)[1], 16)


def test_the_ca_comes_back_from_a_backup_after_its_host_is_lost(cluster, tmp_path):
    opted_in(cluster)
    domain = cluster.server_name.split(".", 1)[1]
    backups = tmp_path / "backups"
    secret = ("-e", json.dumps({"puppet_ca_backup_passphrase": PASSPHRASE}))
    ca = cluster.host(cluster.ca)

    # --check reads and says what it would save; nothing is written.
    check = cluster.run_playbook("playbooks/backup.yml", args=("--check", *secret, "-e", f"puppet_ca_backup_dir={backups}"))
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert re.search(r"\d+ files: the CA directory", check.stdout), check.stdout[-3000:]
    assert not backups.exists()

    # No passphrase: stops before anything is read.
    refused = cluster.run_playbook("playbooks/backup.yml", args=("-e", f"puppet_ca_backup_dir={backups}"))
    assert refused.returncode != 0 and "a backup needs puppet_ca_backup_passphrase" in refused.stdout + refused.stderr, output(refused)
    assert not backups.exists()

    play = cluster.run_playbook("playbooks/backup.yml", args=(*secret, "-e", f"puppet_ca_backup_dir={backups}"))
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    assert PASSPHRASE not in play.stdout + play.stderr
    archive, = backups.glob("*.tar.gz.gpg")
    assert archive.name.startswith(f"{cluster.ca}-")
    assert archive.stat().st_mode & 0o077 == 0 and backups.stat().st_mode & 0o077 == 0
    assert b"PRIVATE KEY" not in archive.read_bytes()
    manifest = (archive.parent / f"{archive.name}.manifest").read_text()
    assert "  ca/ca_key.pem\n" in manifest and "  ca/inventory.txt\n" in manifest, manifest
    assert f"  config/{cluster.masters[0]}/etc/puppet/puppetserver/conf.d/puppetserver.conf\n" in manifest, manifest
    # Nothing of the archive is left on the CA host.
    assert not ca.run("ls -d /tmp/puppet-ca-backup-* 2>/dev/null").stdout
    inventory_at_backup = cluster.read_log(cluster.ca, f"{CADIR}/inventory.txt")

    # After the backup: a node is revoked, and the masters hold the CRL that says so.
    # Names of this run: a CA restored from an earlier run's archive knows the earlier ones.
    stamp = time.strftime("%H%M%S")
    victim = f"drill-revoked-{stamp}.{domain}"
    made = ca.run(f"puppetserver ca generate --certname {victim}")
    assert made.rc == 0, made.stdout + made.stderr
    agent = cluster.agents[0]
    for kind in ("certs", "private_keys"):
        local = tmp_path / f"{kind}.pem"
        docker("cp", f"{cluster.ca}:{SSLDIR}/{kind}/{victim}.pem", str(local))
        docker("cp", str(local), f"{agent}:{SSLDIR}/{kind}/{victim}.pem")
    url = f"https://{cluster.server_name}:8140/puppet/v3/node/{victim}?environment=production"
    assert cluster.https_status(agent, url, cert=victim) == 200
    revoked = ca.run(f"puppetserver ca revoke --certname {victim}")
    assert revoked.rc == 0, revoked.stdout + revoked.stderr
    fetched = cluster.run_playbook("playbooks/fetch_crl.yml")
    assert fetched.returncode == 0, fetched.stdout[-3000:]
    assert cluster.certificate_refused(cluster.https_request(agent, url, cert=victim))
    inventory_before = cluster.read_log(cluster.ca, f"{CADIR}/inventory.txt")
    agent_serials = {a: certificate_serial(cluster.host(a), f"{SSLDIR}/certs/{a}.pem") for a in cluster.agents}

    # The CA host is lost; a fresh machine of the same name comes up.
    recreate_from_image(cluster.ca)
    cluster._hosts.pop(cluster.ca, None)
    ca = cluster.host(cluster.ca)
    cluster.wait_until(lambda: ca.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded"),
                       120, f"systemd runs in the new {cluster.ca}")
    assert not ca.file(f"{CADIR}/ca_crt.pem").exists

    # Bad archives stop the restore before any change.
    restore_args = ("-e", f"puppet_ca_restore_archive={archive}", *secret)
    truncated = tmp_path / "truncated.tar.gz.gpg"
    truncated.write_bytes(archive.read_bytes()[:2000])
    (tmp_path / "truncated.tar.gz.gpg.manifest").write_text(manifest)
    cut = cluster.run_playbook("playbooks/restore.yml", args=("-e", f"puppet_ca_restore_archive={truncated}", *secret))
    assert cut.returncode != 0 and "does not have the checksum its manifest gives" in cut.stdout + cut.stderr, output(cut)
    # An archive of another cluster: its CA is not the one the masters trust.
    foreign = tmp_path / "foreign.tar.gz.gpg"
    foreign.write_bytes(archive.read_bytes())
    other_ca = ":".join(f"{byte:02X}" for byte in hashlib.sha256(b"another cluster's CA").digest())
    (tmp_path / "foreign.tar.gz.gpg.manifest").write_text(
        re.sub(r"^ca_fingerprint: .*$", f"ca_fingerprint: {other_ca}", manifest, flags=re.M))
    other = cluster.run_playbook("playbooks/restore.yml", args=("-e", f"puppet_ca_restore_archive={foreign}", *secret))
    assert other.returncode != 0 and "an archive of another cluster" in other.stdout + other.stderr, output(other)
    wrong = cluster.run_playbook("playbooks/restore.yml", args=(
        "-e", f"puppet_ca_restore_archive={archive}", "-e", json.dumps({"puppet_ca_backup_passphrase": "another passphrase entirely"})))
    assert wrong.returncode != 0 and "does not decrypt with puppet_ca_backup_passphrase" in wrong.stdout + wrong.stderr, output(wrong)
    assert not ca.file(f"{CADIR}/ca_crt.pem").exists

    restore = cluster.run_playbook("playbooks/restore.yml", args=restore_args)
    assert restore.returncode == 0, restore.stdout[-6000:] + restore.stderr[-2000:]
    assert PASSPHRASE not in restore.stdout + restore.stderr
    assert "newer CRL" in restore.stdout, restore.stdout[-4000:]
    assert not ca.run("ls -d /tmp/puppet-ca-restore-* 2>/dev/null").stdout

    # A second restore onto the host, now holding the CA, stops before any change.
    again = cluster.run_playbook("playbooks/restore.yml", args=restore_args)
    assert again.returncode != 0 and "holds a CA already" in again.stdout + again.stderr, output(again)

    # Agents keep their certificates and run through the load balancer.
    for name in cluster.agents:
        run = cluster.agent_run(name)
        assert run.rc in (0, 2), run.stdout[-3000:] + run.stderr[-2000:]
        assert certificate_serial(cluster.host(name), f"{SSLDIR}/certs/{name}.pem") == agent_serials[name]
    # The node revoked after the backup is still refused, the CA's CRL lists it.
    assert cluster.certificate_refused(cluster.https_request(agent, url, cert=victim))
    listed = ca.run(f"openssl crl -noout -text -in {CADIR}/ca_crl.pem")
    victim_serial = certificate_serial(cluster.host(agent), f"{SSLDIR}/certs/{victim}.pem")
    assert re.search(rf"Serial Number: 0*{victim_serial:X}\b", listed.stdout, re.I), listed.stdout[-2000:]

    # A new node enrols, signed by the same chain the agents trust, with a new serial.
    newcomer = f"drill-new-{stamp}.{domain}"
    node = cluster.host(agent)
    node.run("rm -rf /root/drill-ssl")
    ssl = f"--ssldir /root/drill-ssl --certname {newcomer} --server {cluster.agent_ca_server(agent)}"
    node.run(f"puppet ssl bootstrap {ssl} --waitforcert 0")
    signed = ca.run(f"puppetserver ca sign --certname {newcomer}")
    assert signed.rc == 0, signed.stdout + signed.stderr
    fetched_cert = node.run(f"puppet ssl bootstrap {ssl} --waitforcert 0")
    assert fetched_cert.rc == 0, fetched_cert.stdout + fetched_cert.stderr
    verified = node.run(f"openssl verify -CAfile {SSLDIR}/certs/ca.pem /root/drill-ssl/certs/{newcomer}.pem")
    assert verified.rc == 0, verified.stdout + verified.stderr
    new_serial = certificate_serial(node, f"/root/drill-ssl/certs/{newcomer}.pem")
    assert new_serial > max(serials(inventory_before)), (new_serial, max(serials(inventory_before)))
    issued = serials(cluster.read_log(cluster.ca, f"{CADIR}/inventory.txt"))
    assert len(issued) == len(set(issued)), f"a serial repeats in the restored CA's inventory: {sorted(issued)}"
    # Every certificate of the archive is known to the restored CA (those signed after
    # the backup, like the revoked node's, are not: they are on their hosts only).
    assert set(serials(inventory_at_backup)) <= set(issued)
    node.run(f"rm -rf /root/drill-ssl {SSLDIR}/certs/{victim}.pem {SSLDIR}/private_keys/{victim}.pem")
    ca.run(f"puppetserver ca clean --certname {newcomer}")
