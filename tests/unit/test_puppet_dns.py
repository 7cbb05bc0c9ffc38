"""The puppet_dns role's zone files, rendered from an inventory without a DNS server.

The role's defaults and vars decide which names the zone publishes (the shared name's
round robin, SRV targets that are certnames, hosts inside the zone only, names
normalised); this renders its zone templates on the controller and reads the result.
named-checkzone and the serial's idempotence are covered by running the role for real.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "puppet_dns"
# The ansible-playbook of the Python running the tests (a venv's), else the one on PATH.
_NEXT_TO_PYTHON = Path(sys.executable).with_name("ansible-playbook")
ANSIBLE_PLAYBOOK = str(_NEXT_TO_PYTHON) if _NEXT_TO_PYTHON.exists() else "ansible-playbook"

GROUPS = {
    "puppet_dns": {"ns1.domain.com": {"puppet_dns_address": "10.0.0.53"}},
    "puppet_ca": {"puppetca.domain.com": {"puppet_dns_address": "10.0.0.10", "puppet_ca_certname": "ca.domain.com"}},
    "puppet_masters": {
        "puppet2.domain.com": {"puppet_dns_address": "10.0.0.12"},
        "puppet1.domain.com": {"puppet_dns_address": "10.0.0.11"},
        "puppet3.domain.com": {"puppet_dns_address": "10.0.0.13", "puppet_master_certname": "compile3.domain.com"},
    },
    "puppet_agents": {
        "agent1.domain.com": {"puppet_dns_address": "10.0.1.1"},
        # No address and no facts: left out of the zone.
        "agent2.domain.com": {},
        # Outside the zone: another server's business.
        "agent3.example.org": {"puppet_dns_address": "10.0.1.3"},
    },
}

PLAYBOOK = """
- name: Render the puppet_dns zone files
  hosts: ns1.domain.com
  gather_facts: false
  vars_files:
    - {cluster}/defaults/main.yml
    - {cluster}/vars/main.yml
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - name: Render the records
      ansible.builtin.template:
        src: {role}/templates/zone-records.db.j2
        dest: "{{{{ out }}}}/records"
        mode: "0644"
    - name: Render the head
      ansible.builtin.template:
        src: {role}/templates/zone-head.db.j2
        dest: "{{{{ out }}}}/head"
        mode: "0644"
      vars:
        __puppet_dns_serial: 42
    - name: Render the zone declaration
      ansible.builtin.template:
        src: {role}/templates/named.conf.local.j2
        dest: "{{{{ out }}}}/named.conf.local"
        mode: "0644"
"""


def render(tmp_path, extra_vars=None):
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "puppet_cluster_server_name": "puppet.domain.com",
                "puppet_cluster_combination": 3,
            },
            "children": {group: {"hosts": hosts} for group, hosts in GROUPS.items()},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(role=ROLE, cluster=ROLE.parent / 'puppet_cluster'))
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"),
         "-e", json.dumps({"out": str(out), **(extra_vars or {})})],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return {name: (out / name).read_text() for name in ("records", "head", "named.conf.local")}


def records(text):
    """(name, type, data) of every record line, comments and directives left out."""
    found = []
    for line in text.splitlines():
        if not line.strip() or line.startswith((";", "$")):
            continue
        name, klass, rtype, data = line.split(None, 3)
        assert klass == "IN", line
        found.append((name, rtype, data))
    return found


@pytest.fixture(scope="module")
def default_zone(tmp_path_factory):
    return render(tmp_path_factory.mktemp("default"))


def test_shared_name_has_one_record_per_master(default_zone):
    shared = [r for r in records(default_zone["records"]) if r[0] == "puppet.domain.com."]
    assert shared == [("puppet.domain.com.", "A", a) for a in ("10.0.0.11", "10.0.0.12", "10.0.0.13")]


def test_srv_records_point_at_certnames(default_zone):
    found = records(default_zone["records"])
    assert sorted(r for r in found if r[0] == "_x-puppet._tcp.domain.com.") == [
        ("_x-puppet._tcp.domain.com.", "SRV", f"0 0 8140 {target}.")
        for target in ("compile3.domain.com", "puppet1.domain.com", "puppet2.domain.com")
    ]
    assert [r for r in found if r[0] == "_x-puppet-ca._tcp.domain.com."] == [
        ("_x-puppet-ca._tcp.domain.com.", "SRV", "0 0 8140 ca.domain.com.")
    ]


def test_hosts_in_the_zone_with_an_address_are_published(default_zone):
    hosts = {r[0]: r[2] for r in records(default_zone["records"]) if r[1] == "A" and r[0] != "puppet.domain.com."}
    assert hosts == {
        "agent1.domain.com.": "10.0.1.1",
        "ca.domain.com.": "10.0.0.10",
        "compile3.domain.com.": "10.0.0.13",
        "ns1.domain.com.": "10.0.0.53",
        "puppet1.domain.com.": "10.0.0.11",
        "puppet2.domain.com.": "10.0.0.12",
        "puppet3.domain.com.": "10.0.0.13",
        "puppetca.domain.com.": "10.0.0.10",
    }


def test_name_server_and_head(default_zone):
    assert ("@", "NS", "ns1.domain.com.") in records(default_zone["records"])
    head = default_zone["head"]
    assert "@\tIN\tSOA\tns1.domain.com. hostmaster.domain.com. (" in head
    assert "\t\t42\t; serial" in head
    assert "$INCLUDE /etc/bind/puppet-cluster/db.domain.com.records" in head
    assert 'zone "domain.com" {' in default_zone["named.conf.local"]
    assert 'file "/etc/bind/puppet-cluster/db.domain.com";' in default_zone["named.conf.local"]


def test_names_are_normalised_and_extra_records_written(tmp_path):
    zone = render(tmp_path, {
        "puppet_cluster_server_name": "Puppet.Domain.COM.",
        "puppet_dns_srv_domain": "Cluster.domain.com.",
        "puppet_dns_ttl": 300,
        "puppet_dns_extra_records": [
            {"name": "www", "type": "cname", "value": "puppet1"},
            {"name": "@", "type": "TXT", "value": '"puppet cluster"'},
        ],
    })
    found = records(zone["records"])
    assert ("puppet.domain.com.", "A", "10.0.0.11") in found
    assert ("_x-puppet-ca._tcp.cluster.domain.com.", "SRV", "0 0 8140 ca.domain.com.") in found
    assert ("www", "CNAME", "puppet1") in found
    assert ("@", "TXT", '"puppet cluster"') in found
    assert "$TTL 300" in zone["records"] and "$ORIGIN domain.com." in zone["records"]
    assert "$INCLUDE /etc/bind/puppet-cluster/db.domain.com.records" in zone["head"]
