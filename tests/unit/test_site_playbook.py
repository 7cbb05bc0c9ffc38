"""Properties of playbooks/site.yml that hold for every inventory."""

import pathlib

import yaml

SITE = pathlib.Path(__file__).resolve().parents[2] / "playbooks" / "site.yml"


# Entry points that change no configuration: the checks, and package installs.
NOTHING_TO_RESTART = {"preflight", "install"}
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
