"""The example inventory for real hosts (inventories/example; README, "Deploy on real
hosts") passes what site.yml runs before it changes anything: the inventory checks and
every host's preflight, with the autosign secret the README tells to keep in the vault.

site.yml's first two plays run in check mode against the example, with every host
pointed at this machine and no sudo; nothing is installed."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "example"


def run_first_plays(tmp_path, secret):
    site = yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text())
    checks, preflight = site[0], site[1]
    assert checks["ansible.builtin.import_playbook"] == "validate.yml", "site.yml no longer starts with the checks"
    assert preflight["tasks"][0]["ansible.builtin.include_role"]["tasks_from"] == "preflight", preflight
    playbook = tmp_path / "first-plays.yml"
    playbook.write_text(yaml.safe_dump(
        [{**checks, "ansible.builtin.import_playbook": str(ROOT / "playbooks" / "validate.yml")}, preflight]))
    extra = {
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": os.environ.get("PREFLIGHT_PYTHON", "/usr/bin/python3"),
        "vault_puppet_autosign_secret": secret,
    }
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(
        ["ansible-playbook", "--check", "-i", str(EXAMPLE), "-e", json.dumps(extra), str(playbook)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_the_example_passes_the_checks_before_any_change(tmp_path):
    rc, output = run_first_plays(tmp_path, "0123456789abcdef" * 3)
    assert rc == 0, output[-3000:]
    # The checks of combination 2 with the autosign policy ran, on the CA and the agents.
    assert "TASK [marionette.puppet_cluster.puppet_ca : Check the autosign settings]" in output, output[-3000:]
    for host in ("puppetca.example.com", "puppet1.example.com", "puppetlb.example.com", "web1.example.com"):
        assert f"{host}" in output.split("PLAY RECAP")[-1], output[-2000:]


@pytest.mark.parametrize("secret", ["0123456789abcde"])
def test_a_short_autosign_secret_stops_the_example(tmp_path, secret):
    """The README's minimum: 16 characters."""
    rc, output = run_first_plays(tmp_path, secret)
    assert rc != 0, output[-2000:]
    assert "puppet_ca_autosign_challenge_password of 16 characters or more" in " ".join(output.split()), output[-3000:]
