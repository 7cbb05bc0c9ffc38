"""Day-200 operations on the running cluster: the read-only status playbook and the
CA module.

(Named to run before test_scale.py, which changes the cluster.)
"""

import os
import re
import subprocess

import pytest


def test_status_reports_a_healthy_cluster_in_check_mode(cluster):
    status = cluster.run_playbook("playbooks/status.yml", args=("--check",))
    assert status.returncode == 0, status.stdout[-4000:] + status.stderr[-1000:]
    assert "healthy: nothing down" in status.stdout
    assert "changed=1" not in status.stdout and "changed: [" not in status.stdout
    # Package versions are part of the report.
    assert re.search(r"puppetserver [78]\.", status.stdout), status.stdout[-4000:]


def test_status_fails_listing_what_expires_within_the_threshold(cluster):
    # Puppet's CA certificate is valid 15 years, host certificates 5: all within 100 years.
    status = cluster.run_playbook("playbooks/status.yml", args=("-e", "puppet_status_expiry_days=36500"))
    assert status.returncode != 0
    # Ansible prints a failed assertion's list on stderr.
    output = status.stdout + status.stderr
    assert f"{cluster.ca}: EXPIRES certificate ca on" in output, output[-4000:]
    assert "EXPIRES CRL" in output
    for agent in cluster.agents:
        assert f"{agent}: EXPIRES certificate {agent} on" in output, agent


def test_status_fails_listing_disks_fuller_than_the_threshold(cluster):
    # Every lab container shares the machine's disk, which is more than 1% used.
    status = cluster.run_playbook("playbooks/status.yml", args=("--check", "-e", "puppet_status_disk_percent=1"))
    assert status.returncode != 0
    output = status.stdout + status.stderr
    for host in [cluster.ca, *cluster.masters, *cluster.agents]:
        assert re.search(rf"{re.escape(host)}: disk \d+% full at /", output), host


def test_puppet_cert_module_signs_revokes_and_cleans_on_the_real_ca(cluster):
    """The module the roles sign with, on this scenario's puppetserver (7 on Debian 12:
    one request per name; 8: bulk signing), in normal and check mode."""
    play = cluster.run_playbook("molecule/shared/playbooks/puppet_cert_check.yml")
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-1000:]
    assert "puppet_cert: sign, re-sign (no change)" in play.stdout


def test_the_galaxy_artifact_deploys_this_cluster(cluster, tmp_path):
    """Build the Galaxy tarball, install it offline into an empty path and run its site
    playbook by name on this lab: a converged cluster, so nothing may change."""
    if not cluster.var(cluster.ca, "lab_check_galaxy_artifact", False):
        pytest.skip("one scenario (combo4) runs the Galaxy artifact")
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    subprocess.run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(tmp_path), project],
                   check=True, capture_output=True)
    tarball = next(tmp_path.glob("marionette-puppet_cluster-*.tar.gz"))
    subprocess.run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps", "--force",
                    "-p", str(tmp_path / "collections"), str(tarball)], check=True, capture_output=True)
    play = cluster.run_playbook("marionette.puppet_cluster.site", collections_path=tmp_path / "collections")
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-1000:]
    assert re.search(r"changed=0\s+unreachable=0\s+failed=0", play.stdout)
    assert not re.search(r"changed=[1-9]", play.stdout), play.stdout[-4000:]
