"""A broken front configuration never goes live, and never passes silently.

The scenario that opts in (lab_check_broken_front, combo1: one nginx and one apache
front) runs the site playbook from a copy of the collection whose front templates
render a directive neither web server knows, as a faulty release would.
"""

import os
import shutil

import pytest

from test_cluster import catalog_url

# One line each web server refuses at its configuration test, and what it says then
# (the play prints it JSON-quoted: no quotes in these).
BROKEN = {
    # nginx puts its pid between the level and the text: "[emerg] 7926#7926: unknown directive".
    "nginx-puppetmaster.conf.j2": ("lab_not_a_directive on;", ("[emerg]", "unknown directive", "lab_not_a_directive")),
    "apache-puppetmaster.conf.j2": ("LabNotADirective on", ("Invalid command", "LabNotADirective")),
}


def collection_with_broken_fronts(tmp_path):
    """A copy of the collection whose master front templates render an invalid line:
    the path to give ANSIBLE_COLLECTIONS_PATH."""
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    copy = tmp_path / "collections" / "ansible_collections" / "marionette" / "puppet_cluster"
    for part in ("meta", "plugins", "playbooks", "roles", "galaxy.yml"):
        source = os.path.join(project, part)
        (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, copy / part)
    for template, (line, _message) in BROKEN.items():
        path = copy / "roles" / "puppet_master" / "templates" / template
        path.write_text(path.read_text() + f"\n{line}\n")
    return tmp_path / "collections"


def fronts_serve(cluster):
    agent = cluster.agents[0]
    return {entry.host: cluster.https_status(agent, catalog_url(entry, agent), cert=agent, via=entry)
            for entry in cluster.entry_points()}


def test_a_broken_front_configuration_fails_every_run_and_the_fronts_keep_serving(cluster, tmp_path):
    if not cluster.var(cluster.ca, "lab_check_broken_front", False):
        pytest.skip("this scenario does not try a broken front configuration")
    fronts = {m: cluster.var(m, "puppet_master_frontend", "nginx") for m in cluster.masters}
    assert sorted(fronts.values()) == ["apache", "nginx"], fronts
    broken = collection_with_broken_fronts(tmp_path)
    # The fronts' tasks only: the templates and the service checks.
    args = ("--limit", ",".join(cluster.masters), "--tags", "frontend,service")
    try:
        # The first run renders the file and its reload handler refuses it; the second
        # finds the file in place, notifies nothing, and must fail all the same.
        for attempt in (1, 2):
            play = cluster.run_playbook("marionette.puppet_cluster.site", args=args, collections_path=broken)
            output = play.stdout + play.stderr
            assert play.returncode != 0, f"run {attempt} passed with a broken front configuration"
            for master, front in fronts.items():
                for said in BROKEN[f"{front}-puppetmaster.conf.j2"][1]:
                    assert said in output, (attempt, master, said, output[-4000:])
            # Neither web server took the broken file: every entry point still serves.
            assert set(fronts_serve(cluster).values()) == {200}, (attempt, fronts_serve(cluster))
    finally:
        # In finally, so a failed check above still leaves a working lab behind for the
        # tests after this one; a failed repair is reported with the first failure.
        repaired = cluster.run_playbook("site.yml", args=args)
        assert repaired.returncode == 0, repaired.stdout[-6000:] + repaired.stderr[-2000:]
    assert set(fronts_serve(cluster).values()) == {200}, fronts_serve(cluster)
