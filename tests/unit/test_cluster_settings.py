"""Settings the whole cluster shares (issue 16), as Ansible resolves them for each host.

A setting several roles decide together must give every host the same answer wherever
the operator writes it. The roles' defaults are read by a real ansible-playbook run on
this machine (connection local, nothing changes): each host loads the roles its groups
give it, as site.yml does, and prints what the roles would use.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

GROUPS = {
    "puppet_ca": ["puppetca.domain.com"],
    "puppet_masters": ["puppet1.domain.com", "puppet2.domain.com"],
    "puppet_lb": ["puppetlb.domain.com"],
    "puppet_agents": ["agent1.domain.com"],
}
BASE_VARS = {
    "ansible_connection": "local",
    "ansible_python_interpreter": os.environ.get("PREFLIGHT_PYTHON", "/usr/bin/python3"),
    "puppet_cluster_combination": 2,
    "puppet_cluster_server_name": "puppet.domain.com",
}


MASTER_NAMES = ["puppet_master_trusted_proxy_certname", "_puppet_master_ca_certname", "_puppet_master_ssldir",
                "_puppet_cluster_roles_here"]
LB_NAMES = ["puppet_lb_mode", "_puppet_lb_ca_certname", "_puppet_lb_ssldir", "_puppet_cluster_roles_here"]


def resolve(tmp_path, all_vars=None, group_vars=None):
    """{host: {name: value}} for every master and load balancer, from the roles' defaults
    (puppet_master's MASTER_NAMES for masters, puppet_lb's LB_NAMES for load balancers)."""
    children = {group: {"hosts": {h: {} for h in hosts}, "vars": (group_vars or {}).get(group, {})}
                for group, hosts in GROUPS.items()}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": {**BASE_VARS, **(all_vars or {})}, "children": children}}))
    show = [{"ansible.builtin.debug": {"msg": "RESOLVED {{ {'host': inventory_hostname, 'values': "
                                              "dict(_names | zip(_names | map('extract', vars)))} | to_json }}"}}]
    # import_role loads the role's defaults (and its dependencies') at their own, lowest
    # precedence, as site.yml's plays do; `when: false` skips every task of it.
    plays = [{"name": f"Resolve {role}", "hosts": group, "gather_facts": False, "vars": {"_names": names},
              "tasks": [{"ansible.builtin.import_role": {"name": f"marionette.puppet_cluster.{role}",
                                                         "tasks_from": "preflight"}, "when": False}, *show]}
             for role, group, names in (("puppet_master", "puppet_masters", MASTER_NAMES),
                                        ("puppet_lb", "puppet_lb", LB_NAMES))]
    playbook = tmp_path / "resolve.yml"
    playbook.write_text(yaml.safe_dump(plays))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(["ansible-playbook", "-i", str(inventory), str(playbook)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    resolved = {}
    for line in result.stdout.splitlines():
        if '"msg": "RESOLVED ' in line:
            data = json.loads(json.loads("{" + line.strip() + "}")["msg"][len("RESOLVED "):])
            resolved[data["host"]] = data["values"]
    return resolved


@pytest.mark.parametrize("where", ["all", "puppet_lb", "puppet_masters_and_lb"])
def test_a_tls_load_balancer_is_trusted_by_every_master_wherever_its_mode_is_set(tmp_path, where):
    """puppet_lb_mode: tls written only for the load balancer's group used to leave the
    masters trusting no proxy (their own default read tcp), while the LB's preflight,
    which sees no role defaults in hostvars, passed: agents behind it were refused."""
    setting = {"puppet_lb_mode": "tls"}
    if where == "all":
        resolved = resolve(tmp_path, all_vars=setting)
    elif where == "puppet_lb":
        resolved = resolve(tmp_path, group_vars={"puppet_lb": setting})
    else:
        resolved = resolve(tmp_path, group_vars={"puppet_lb": setting, "puppet_masters": setting})
    for master in GROUPS["puppet_masters"]:
        assert resolved[master]["puppet_master_trusted_proxy_certname"] == "puppetlb.domain.com", resolved
    assert resolved["puppetlb.domain.com"]["puppet_lb_mode"] == "tls", resolved


def test_a_tcp_load_balancer_is_trusted_by_no_master(tmp_path):
    resolved = resolve(tmp_path)
    for master in GROUPS["puppet_masters"]:
        assert resolved[master]["puppet_master_trusted_proxy_certname"] == "", resolved
    assert resolved["puppetlb.domain.com"]["puppet_lb_mode"] == "tcp", resolved


def test_every_role_names_the_ca_and_the_ssldir_the_same_way(tmp_path):
    """The CA's certname set on the CA host only reaches every role through the one
    lookup in puppet_cluster, and each host's roles come from the one group map."""
    resolved = resolve(tmp_path, group_vars={"puppet_ca": {"puppet_ca_certname": "ca.internal.domain.com"}})
    for master in GROUPS["puppet_masters"]:
        assert resolved[master]["_puppet_master_ca_certname"] == "ca.internal.domain.com", resolved
        assert resolved[master]["_puppet_master_ssldir"] == "/var/lib/puppet/ssl", resolved
        assert resolved[master]["_puppet_cluster_roles_here"] == ["puppet_master"], resolved
    lb = resolved["puppetlb.domain.com"]
    assert lb["_puppet_lb_ca_certname"] == "ca.internal.domain.com", resolved
    assert lb["_puppet_lb_ssldir"] == "/var/lib/puppet/ssl", resolved
    assert lb["_puppet_cluster_roles_here"] == ["puppet_lb"], resolved
