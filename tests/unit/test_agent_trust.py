"""puppet_agent's trust bootstrap (roles/puppet_agent/tasks/trust.yml) stops when it cannot
read the CA certificate on the CA host: without it `puppet ssl` would download the CA
certificate unverified. Only the CRL may be missing (a CA without one yet).

The role's own tasks (include_role tasks_from=trust) run in check mode on this machine
(ansible_connection=local, the CA host too), reading the CA's files from a temporary
directory (`_puppet_agent_ca_cert_on_ca`, `_puppet_agent_ca_crl_on_ca`, extra vars naming
one directory per case) and writing nothing. One play per case, each its own host; a
failure is rescued and its task and message written to a file, so one run holds every
case; the json callback tells which task ran and changed for which host.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("PREFLIGHT_PYTHON", "/usr/bin/python3")

# case: the CA's files present in its directory
CASES = {
    "ca_unreadable": ["crl.pem"],
    "crl_unreadable": ["ca.pem"],
    "both_readable": ["ca.pem", "crl.pem"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Each case's failure ('task: message' or None) and, per task name, its status."""
    base = tmp_path_factory.mktemp("trust")
    for case, files in CASES.items():
        (base / case).mkdir()
        for name in files:
            (base / case / name).write_text(f"-----BEGIN {name}-----\n-----END {name}-----\n")
    local = {"ansible_connection": "local", "ansible_python_interpreter": PYTHON}
    inventory = {"all": {"children": {
        "puppet_ca": {"hosts": {"puppetca.domain.com": local}},
        "puppet_agents": {"hosts": {case: local for case in CASES}},
    }}}
    plays = [{
        "name": case, "hosts": case, "gather_facts": False,
        "tasks": [{
            "block": [{"ansible.builtin.include_role": {
                "name": "marionette.puppet_cluster.puppet_agent", "tasks_from": "trust"}}],
            "rescue": [{"ansible.builtin.copy": {
                "content": "{{ ansible_failed_task.name }}: {{ ansible_failed_result.msg }}",
                "dest": str(base / f"{case}.failed"), "mode": "0644"}, "check_mode": False}],
        }],
    } for case in CASES]
    (base / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (base / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    # Not the project's ansible.cfg: its profile_roles callback would print into the json.
    (base / "ansible.cfg").write_text("[defaults]\nstdout_callback = ansible.builtin.json\nretry_files_enabled = false\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(base / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_NOCOLOR="1")
    where = f"{base}/{{{{ inventory_hostname }}}}"
    result = subprocess.run(
        ["ansible-playbook", "--check", "-i", str(base / "hosts.yml"), str(base / "play.yml"),
         "-e", f"_puppet_agent_ca_cert_on_ca={where}/ca.pem",
         "-e", f"_puppet_agent_ca_crl_on_ca={where}/crl.pem",
         "-e", f"_puppet_agent_ssldir={where}/ssl"],
        capture_output=True, text=True, env=env, cwd=base, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    outcomes = {}
    for play in report["plays"]:
        case = play["play"]["name"]
        failed = base / f"{case}.failed"
        tasks = {}
        for task in play["tasks"]:
            host = task["hosts"].get(case)
            if host is not None:
                status = "skipped" if host.get("skipped") else "changed" if host.get("changed") else "ok"
                # "marionette.puppet_cluster.puppet_agent : <task name>"
                tasks[task["task"]["name"].split(" : ", 1)[-1]] = status
        outcomes[case] = (failed.read_text() if failed.exists() else None, tasks)
    return outcomes


def test_an_unreadable_ca_certificate_stops_the_role(run):
    failure, tasks = run["ca_unreadable"]
    assert failure is not None, tasks
    assert "cannot read the CA certificate" in failure and "ca_unreadable/ca.pem on puppetca.domain.com" in failure
    # Nothing after the read ran: no SSL directory, no CRL.
    assert "Create the SSL directories" not in tasks, tasks


def test_an_unreadable_crl_is_tolerated(run):
    failure, tasks = run["crl_unreadable"]
    assert failure is None
    assert tasks["Install the CA certificate"] == "changed"
    assert tasks["Install the CA's certificate revocation list if none is present yet"] == "skipped"


def test_both_files_are_installed(run):
    failure, tasks = run["both_readable"]
    assert failure is None
    assert tasks["Install the CA certificate"] == "changed"
    assert tasks["Install the CA's certificate revocation list if none is present yet"] == "changed"
