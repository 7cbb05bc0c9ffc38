"""Properties of playbooks/site.yml that hold for every inventory."""

import pathlib

import yaml

SITE = pathlib.Path(__file__).resolve().parents[2] / "playbooks" / "site.yml"


# Entry points that change no configuration: the checks, and package installs (and the
# check that every host installed its packages).
NOTHING_TO_RESTART = {"preflight", "install", "installed"}
# Roles that only bring settings (no tasks, so no handlers to notify).
SETTINGS_ROLES = {"marionette.puppet_cluster.puppet_cluster"}


def configuring_plays():
    """The plays that apply a role (as roles: or include_role), so notify handlers."""
    for play in yaml.safe_load(SITE.read_text()):
        tasks = play.get("tasks", []) + play.get("pre_tasks", [])
        entry_points = {task["ansible.builtin.include_role"].get("tasks_from", "main")
                        for task in tasks if "ansible.builtin.include_role" in task}
        roles = {role if isinstance(role, str) else role["role"] for role in play.get("roles", [])}
        if roles - SETTINGS_ROLES or entry_points - NOTHING_TO_RESTART:
            yield play


def test_every_configuring_play_runs_notified_handlers_even_when_a_host_fails():
    # A failed run must not leave a changed config behind a service that was never
    # restarted: the next run would not notice (the file is already in place).
    plays = list(configuring_plays())
    assert plays
    missing = [play["name"] for play in plays if play.get("force_handlers") is not True]
    assert missing == [], f"plays without force_handlers: true: {missing}"


def test_nothing_is_configured_unless_every_host_installed_its_packages(tmp_path):
    """puppet_cluster's installed entry point (site.yml's third play) fails once, naming
    the hosts an earlier play lost, as the free-strategy install play can lose one."""
    import os
    import subprocess

    root = SITE.parents[1]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([
        {"name": "An install that fails on one host", "hosts": "all", "gather_facts": False,
         "tasks": [{"name": "Fail on b", "ansible.builtin.fail": {"msg": "apt failed"},
                    "when": "inventory_hostname == 'b.domain.com'"}]},
        {"name": "The check", "hosts": "all", "gather_facts": False,
         "tasks": [{"name": "Check", "ansible.builtin.include_role": {
             "name": "marionette.puppet_cluster.puppet_cluster", "tasks_from": "installed"}}]},
    ]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"a.domain.com": {}, "b.domain.com": {}},
                                                 "vars": {"ansible_connection": "local"}}}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(root / "collections"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(["ansible-playbook", "-i", str(inventory), str(playbook)],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-2000:]
    assert "installing packages failed on b.domain.com (see above); nothing was configured" in output, output[-2000:]
