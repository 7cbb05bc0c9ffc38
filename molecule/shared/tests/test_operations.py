"""Day-200 operations on the running cluster: the read-only status playbook and the
CA module.

(Named to run before test_scale.py, which changes the cluster.)
"""

import re

import pytest


def test_status_reports_a_healthy_cluster_in_check_mode(healthy_status):
    status = healthy_status
    assert status.returncode == 0, status.stdout[-4000:] + status.stderr[-1000:]
    assert "healthy: nothing down" in status.stdout
    # Any count of changes in the recap (changed=2..), and any changed task line.
    assert not re.search(r"changed=[1-9]", status.stdout) and "changed: [" not in status.stdout, status.stdout[-4000:]
    # Package versions are part of the report.
    assert re.search(r"puppetserver [78]\.", status.stdout), status.stdout[-4000:]


def test_status_fails_listing_what_expires_and_disks_fuller_than_the_thresholds(cluster):
    """Both thresholds in one status run (in check mode): the playbook gathers every
    problem of every host before it fails, so one run shows both lists.

    The thresholds are the same tasks on every host of every combination: proved once,
    on combination 4 (each status run costs half a minute of the suite). The healthy
    run above, whose checks differ by topology, runs in every scenario."""
    if cluster.combination != 4:
        pytest.skip("status.yml's thresholds are proved on combination 4")
    status = cluster.run_playbook("playbooks/status.yml", args=(
        "--check",
        # Puppet's CA certificate is valid 15 years, host certificates 5: all within 100 years.
        "-e", "puppet_status_expiry_days=36500",
        # Every lab container shares the machine's disk, which is more than 1% used.
        "-e", "puppet_status_disk_percent=1"))
    assert status.returncode != 0
    # Ansible prints a failed assertion's list on stderr.
    output = status.stdout + status.stderr
    assert f"{cluster.ca}: EXPIRES certificate ca on" in output, output[-4000:]
    assert "EXPIRES CRL" in output
    for agent in cluster.agents:
        assert f"{agent}: EXPIRES certificate {agent} on" in output, agent
    for host in [cluster.ca, *cluster.masters, *cluster.agents]:
        assert re.search(rf"{re.escape(host)}: disk \d+% full at /", output), host


def test_puppet_cert_module_signs_revokes_and_cleans_on_the_real_ca(cluster):
    """The module the roles sign with, on this scenario's puppetserver (7 on Debian 12:
    one request per name; 8: bulk signing), in normal and check mode: on combination 4
    (puppetserver 8) and 5 (puppetserver 7 on Debian 12), the two code paths."""
    if cluster.combination not in (4, 5):
        pytest.skip("the puppet_cert module is proved on puppetserver 8 (combo4) and 7 (combo5)")
    play = cluster.run_playbook("molecule/shared/playbooks/puppet_cert_check.yml")
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-1000:]
    assert "puppet_cert: sign, re-sign (no change)" in play.stdout
