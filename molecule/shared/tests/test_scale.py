"""Scale-out and scale-in: an operator edits puppet_masters and re-runs the play.

These change the cluster, so they run after every other test of the scenario
(pytest takes the files in name order). A scenario opts in with a spare master in
the group lab_spare_masters (scale-out) or the variable lab_scale_in_master.
"""

import shutil

import pytest

from conftest import full_suite_only
from test_cluster import assert_masters_serve_revision


def agent_settings(cluster):
    """What would have to change on agents: their puppet.conf and certificates."""
    return {agent: cluster.host(agent).run(
        "sha256sum /etc/puppet/puppet.conf /var/lib/puppet/ssl/certs/*.pem").stdout
        for agent in cluster.agents}


def ca_inventory(cluster):
    return cluster.host(cluster.ca).run("puppetserver ca list --all").stdout


def changed_code(cluster, tmp_path):
    """A copy of the code the play copies from the controller, at revision 2; None where
    the scenario's code comes from git (combo3 proves that path)."""
    source = cluster.var(cluster.masters[0], "puppet_master_code_source", "")
    if not source:
        return None
    changed = tmp_path / "code"
    shutil.copytree(source, changed)
    site_pp = changed / "environments/production/manifests/site.pp"
    site_pp.write_text(site_pp.read_text().replace("code revision 1", "code revision 2"))
    return changed


def test_scale_out_adds_a_master_behind_the_load_balancer(cluster, tmp_path):
    """The spare master joins behind the load balancer with no change to agents. The
    same run carries a change of the code copied from the controller: afterwards every
    master, the new one and those already serving (whose environment cache the change
    must empty), serves it. The lab's code is one file in nested directories, the tree
    whose change Ansible's directory copy reports as unchanged (ansible/ansible#85833):
    before the play kept the code's checksum, no reload followed and the masters kept
    serving revision 1."""
    spares = cluster.groups.get("lab_spare_masters", [])
    if not spares:
        pytest.skip("this scenario has no spare master")
    # Its run carries the copied code's change too, which the scale-in's run proves in
    # the default run.
    full_suite_only("the scale-out to a third master (a whole site run, 5 minutes)")
    spare = spares[0]
    agents_before, ca_before = agent_settings(cluster), ca_inventory(cluster)
    code = changed_code(cluster, tmp_path)
    play = cluster.run_playbook("site.yml", move={spare: (None, "puppet_masters")},
                                args=("-e", f"puppet_master_code_source={code}") if code else ())
    assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-2000:]
    assert f" {spare}:8140" in cluster.lb_config()
    assert agent_settings(cluster) == agents_before, "adding a master changed an agent"
    if cluster.combination == 5:
        # The shared certificate: nothing was requested or signed on the CA.
        assert ca_inventory(cluster) == ca_before
    seen = set()
    for _attempt in range(6):
        run = cluster.agent_run(cluster.agents[0])
        assert run.rc in (0, 2), run.stdout + run.stderr
        seen.add(cluster.compiled_by(run.stdout))
        if spare in seen:
            break
    assert spare in seen, f"no agent run reached {spare} through the load balancer: {seen}"
    if code:
        assert_masters_serve_revision(cluster, [*cluster.masters, spare], 2)


def test_scale_in_takes_a_master_out_cleanly(cluster, tmp_path):
    """The retired master leaves the load balancer and the CA's trust, with no change to
    agents. The same run carries a change of the code copied from the controller: the
    masters that stay serve it (the scale-out's run proves the same with LAB_FULL=1)."""
    leaving = cluster.var(cluster.ca, "lab_scale_in_master")
    if not leaving:
        pytest.skip("this scenario retires no master")
    agents_before = agent_settings(cluster)
    code = changed_code(cluster, tmp_path)
    cluster.run_site_play(move={leaving: ("puppet_masters", "puppet_masters_retired")},
                          args=("-e", f"puppet_master_code_source={code}") if code else ())
    assert leaving not in cluster.lb_config()
    assert agent_settings(cluster) == agents_before, "removing a master changed an agent"
    host = cluster.host(leaving)
    assert not host.service("puppetserver").is_running
    assert not host.service("puppetserver").is_enabled
    # Revoked on the CA: it cannot come back under the shared name with that certificate.
    listing = ca_inventory(cluster)
    assert "Revoked Certificates" in listing and leaving in listing.split("Revoked Certificates")[1], listing
    for _attempt in range(3):
        run = cluster.agent_run(cluster.agents[0])
        assert run.rc in (0, 2), run.stdout + run.stderr
        assert cluster.compiled_by(run.stdout) in cluster.masters
        assert cluster.compiled_by(run.stdout) != leaving
    if code:
        assert_masters_serve_revision(cluster, [m for m in cluster.masters if m != leaving], 2)
