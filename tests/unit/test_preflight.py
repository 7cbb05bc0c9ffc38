"""Bad inventories stop the play with a clear message before anything changes.

The play runs in check mode against hosts that all point at this machine
(ansible_connection=local), so nothing is installed even if a check were missing;
every case must fail in a preflight check, with its message.
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

GOOD_VARS = {
    "ansible_connection": "local",
    "ansible_python_interpreter": os.environ.get("PREFLIGHT_PYTHON", "/usr/bin/python3"),
    "puppet_cluster_combination": 4,
    "puppet_cluster_server_name": "puppet.domain.com",
    "puppet_cluster_ca_server": "puppetca.domain.com",
}
GOOD_GROUPS = {
    "puppet_ca": ["puppetca.domain.com"],
    "puppet_masters": ["puppet1.domain.com", "puppet2.domain.com"],
    "puppet_lb": ["puppetlb.domain.com"],
    "puppet_agents": ["agent1.domain.com"],
}


FACT_CACHE = {}


@pytest.fixture(scope="module", autouse=True)
def shared_fact_cache(tmp_path_factory):
    """Every host of every case is this machine: its facts are gathered once for the
    module into a jsonfile cache (which `gathering = smart` reads) instead of once per
    host in every case, about a quarter of each case's time. No role sets cacheable facts."""
    FACT_CACHE["dir"] = str(tmp_path_factory.mktemp("facts"))


def run_site(tmp_path, groups=None, variables=None, host_vars=None):
    groups = GOOD_GROUPS if groups is None else groups
    children = {}
    for group, hosts in groups.items():
        children[group] = {"hosts": {h: (host_vars or {}).get(h, {}) for h in hosts}}
    inventory = {"all": {"vars": {**GOOD_VARS, **(variables or {})}, "children": children}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=FACT_CACHE["dir"],
               ANSIBLE_CACHE_PLUGIN_TIMEOUT="3600")
    result = subprocess.run(
        ["ansible-playbook", "--check", "-i", str(path), str(ROOT / "site.yml")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )
    return result.returncode, result.stdout + result.stderr


CASES = {
    "no CA group": (
        dict(groups={k: v for k, v in GOOD_GROUPS.items() if k != "puppet_ca"}),
        "exactly one host in puppet_ca",
    ),
    "two CAs": (
        dict(groups={**GOOD_GROUPS, "puppet_ca": ["ca1.domain.com", "ca2.domain.com"]}),
        "exactly one host in puppet_ca",
    ),
    "no masters": (
        dict(groups={k: v for k, v in GOOD_GROUPS.items() if k != "puppet_masters"}),
        "at least one in puppet_masters",
    ),
    "cluster LB mode not tcp or tls": (
        dict(variables={"puppet_cluster_lb_mode": "udp"}),
        "value of puppet_cluster_lb_mode must be one of: tcp, tls, got: udp",
    ),
    "cipher list Jetty cannot be given": (
        dict(variables={"puppet_cluster_ssl_ciphers": "ECDHE-RSA-AES128-GCM-SHA256:HIGH"}),
        "the cluster's cipher list must name ECDHE or DHE suites",
    ),
    "combination 7": (dict(variables={"puppet_cluster_combination": 7}), "value of puppet_cluster_combination must be one of: 1, 2, 3, 4, 5, got: 7"),
    "no shared name": (dict(variables={"puppet_cluster_server_name": ""}), "puppet_cluster_server_name"),
    "no load balancer in combination 4": (
        dict(groups={k: v for k, v in GOOD_GROUPS.items() if k != "puppet_lb"}),
        "combination 4 needs a host in puppet_lb",
    ),
    "shared name given as a URL": (
        dict(variables={"puppet_cluster_server_name": "https://puppet.domain.com:8140"}),
        "without scheme or port (got 'https://puppet.domain.com:8140')",
    ),
    "empty CA server name": (
        dict(variables={"puppet_cluster_ca_server": ""}),
        "puppet_cluster_ca_server is set but empty",
    ),
    "load balancer on a master": (
        dict(groups={**GOOD_GROUPS, "puppet_lb": ["puppet1.domain.com"]}),
        "puppet1.domain.com: a load balancer cannot also be the CA or a master",
    ),
    "CA host retired": (
        dict(groups={**GOOD_GROUPS, "puppet_masters_retired": ["puppetca.domain.com"]}),
        "puppet_masters_retired is for compile masters only",
    ),
    "backend port equal to the front's": (
        dict(variables={"puppet_master_backend_port": 8140}),
        "puppet_master_backend_port (8140) must differ from puppet_master_port (8140)",
    ),
    "TLS 1.0 on the masters' fronts": (
        dict(variables={"puppet_master_ssl_protocols": ["TLSv1", "TLSv1.2"]}),
        "value of puppet_master_ssl_protocols must be one or more of: TLSv1.2, TLSv1.3. Got no match for: TLSv1",
    ),
    "RC4 in the load balancer's ciphers": (
        dict(variables={"puppet_lb_mode": "tls", "puppet_lb_ssl_ciphers": "ECDHE-RSA-AES128-GCM-SHA256:RC4-SHA"}),
        "puppet_lb_ssl_ciphers no RC4, NULL, EXPORT, DES, MD5 or anonymous cipher",
    ),
    "autosign true": (
        dict(variables={"puppet_ca_autosign": True}),
        "value of puppet_ca_autosign must be one of: off, allowlist, policy, got: True",
    ),
    "autosign policy without a password": (
        dict(variables={"puppet_ca_autosign": "policy"}),
        "policy a puppet_ca_autosign_challenge_password of 16 characters or more",
    ),
    "unknown front": (
        dict(variables={"puppet_master_frontend": "lighttpd"}),
        "value of puppet_master_frontend must be one of: none, nginx, apache, got: lighttpd",
    ),
    "passenger on Debian 12 or 13": (
        dict(variables={"puppet_master_app_server": "passenger"}),
        "and passenger (Puppet 5) on {'Debian': ['11']}; puppet1.domain.com runs Debian 12 and asks for passenger",
    ),
    "master without the shared name": (
        dict(host_vars={"puppet1.domain.com": {"puppet_master_dns_alt_names": ["other.domain.com"]}}),
        "must carry the shared name puppet.domain.com",
    ),
    "TLS load balancer with a master that has no front": (
        dict(variables={"puppet_lb_mode": "tls"}, host_vars={"puppet2.domain.com": {"puppet_master_frontend": "none"}}),
        "would trust X-Client headers from every client",
    ),
    "unknown load balancer mode": (
        dict(variables={"puppet_lb_mode": "udp"}),
        "value of puppet_lb_mode must be one of: tcp, tls, got: udp",
    ),
    "combination 1 with a CA that does not compile": (
        dict(variables={"puppet_cluster_combination": 1, "puppet_lb_mode": "tls"}),
        "the CA host puppetca.domain.com must be in puppet_masters in combination 1",
    ),
    "CA host compiling outside combination 1": (
        dict(groups={**GOOD_GROUPS, "puppet_masters": ["puppetca.domain.com", "puppet1.domain.com"]}),
        "must be in puppet_masters in combination 1 (the CA compiles too) and only there",
    ),
    "combination 2 with a TCP load balancer": (
        dict(variables={"puppet_cluster_combination": 2, "puppet_lb_mode": "tcp"}),
        "that needs puppet_lb_mode: tls",
    ),
    "combination 3 without a DNS server": (
        dict(variables={"puppet_cluster_combination": 3},
             groups={k: v for k, v in GOOD_GROUPS.items() if k != "puppet_lb"}),
        "combination 3 spreads agents with DNS round robin: put a host in puppet_dns",
    ),
    "combination 3 with a master that has no front": (
        dict(variables={"puppet_cluster_combination": 3},
             groups={**{k: v for k, v in GOOD_GROUPS.items() if k != "puppet_lb"}, "puppet_dns": ["ns.domain.com"]},
             host_vars={"puppet2.domain.com": {"puppet_master_frontend": "none"}}),
        "puppet_master_ca_proxy (combination 3) needs an nginx or apache front",
    ),
    "combination 1 with apache on the CA host": (
        dict(variables={"puppet_cluster_combination": 1, "puppet_lb_mode": "tls"},
             groups={**GOOD_GROUPS, "puppet_masters": ["puppetca.domain.com", "puppet1.domain.com"]},
             host_vars={"puppetca.domain.com": {"puppet_master_frontend": "apache"}}),
        "is the CA and a master (combination 1): it needs the nginx front",
    ),
    "master both serving and retired": (
        dict(groups={**GOOD_GROUPS, "puppet_masters_retired": ["puppet2.domain.com"]}),
        "puppet2.domain.com cannot be in both puppet_masters and puppet_masters_retired",
    ),
    "combination given as a word": (
        dict(variables={"puppet_cluster_combination": "four"}),
        "value of puppet_cluster_combination must be one of: 1, 2, 3, 4, 5, got: four",
    ),
    "autosign allowlist without names": (
        dict(variables={"puppet_ca_autosign": "allowlist"}),
        "puppet_ca_autosign allowlist needs a non-empty puppet_ca_autosign_allowlist",
    ),
    # Issue 15, item 1: autosign never signs the hosts the play signs itself.
    "autosign allowlist of everything": (
        dict(variables={"puppet_ca_autosign": "allowlist", "puppet_ca_autosign_allowlist": ["agent1.domain.com", "*"]}),
        "puppet_ca_autosign_allowlist may hold only agents' certnames and *.domain globs that match no CA, "
        "master or load balancer name nor puppet.domain.com (no bare *); refused: *",
    ),
    "autosign allowlist glob covering the masters": (
        dict(variables={"puppet_ca_autosign": "allowlist", "puppet_ca_autosign_allowlist": ["*.domain.com"]}),
        "refused: *.domain.com (matches puppet.domain.com), *.domain.com (matches puppetca.domain.com), "
        "*.domain.com (matches puppet1.domain.com)",
    ),
    "autosign allowlist naming the load balancer by its certname": (
        dict(variables={"puppet_ca_autosign": "allowlist", "puppet_ca_autosign_allowlist": ["*.lb.domain.com"]},
             host_vars={"puppetlb.domain.com": {"puppet_lb_certname": "edge.lb.domain.com"}}),
        "refused: *.lb.domain.com (matches edge.lb.domain.com)",
    ),
    "autosign allowlist with a pattern Puppet does not read as a glob": (
        dict(variables={"puppet_ca_autosign": "allowlist", "puppet_ca_autosign_allowlist": ["agent[0-9].domain.com"]}),
        "refused: agent[0-9].domain.com",
    ),
    "code directory without environments": (
        dict(variables={"puppet_master_code_source": "/nonexistent/code"}),
        "puppet_master_code_source /nonexistent/code has no environments/ directory on the controller",
    ),
    "code from a directory and from git": (
        dict(variables={"puppet_master_code_source": str(ROOT / "molecule/shared/code"),
                        "puppet_master_code_git_repo": "https://git.domain.com/control.git"}),
        "deploy the code from one source",
    ),
    "code repository named like a git option": (
        dict(variables={"puppet_master_code_git_repo": "--upload-pack=touch /tmp/injected"}),
        "puppet_master_code_git_repo (--upload-pack=touch /tmp/injected) starts with '-': git would read it as an option",
    ),
}


# Issue 16: a wrong type stops the run in the first play, by the argument spec of the
# role's preflight entry point, before any package is installed (before, the main
# entry point's spec caught it only after the install play had changed every host).
TYPE_CASES = {
    "master port as a word": (
        dict(variables={"puppet_master_port": "eighty"}),
        "argument 'puppet_master_port' is of type str and we were unable to convert to int",
    ),
    "LB failure count as a word": (
        dict(variables={"puppet_lb_max_fails": "many"}),
        "argument 'puppet_lb_max_fails' is of type str and we were unable to convert to int",
    ),
    "CA start timeout as a word": (
        dict(variables={"puppet_ca_start_timeout": "slow"}),
        "argument 'puppet_ca_start_timeout' is of type str and we were unable to convert to int",
    ),
    "agent bootstrap timeout as a word": (
        dict(variables={"puppet_agent_bootstrap_timeout": "soon"}),
        "argument 'puppet_agent_bootstrap_timeout' is of type str and we were unable to convert to int",
    ),
    "DNS TTL as a word": (
        dict(variables={"puppet_cluster_combination": 3, "puppet_dns_ttl": "short"},
             groups={**{k: v for k, v in GOOD_GROUPS.items() if k != "puppet_lb"}, "puppet_dns": ["ns.domain.com"]}),
        "argument 'puppet_dns_ttl' is of type str and we were unable to convert to int",
    ),
}
CASES.update(TYPE_CASES)

# Issue 17: the haproxy engine's settings.
CASES.update({
    "LB engine not known": (
        dict(variables={"puppet_cluster_lb_engine": "traefik"}),
        "value of puppet_cluster_lb_engine must be one of: nginx, haproxy, got: traefik",
    ),
    "haproxy check interval of 0": (
        dict(variables={"puppet_cluster_lb_engine": "haproxy", "puppet_lb_check_interval": 0}),
        "puppet_lb_check_interval (0 s), puppet_lb_check_rise (2), puppet_lb_check_fall (2) and puppet_lb_error_limit (5) must each be 1 or more",
    ),
    "two load balancers without a virtual IP": (
        dict(groups={**GOOD_GROUPS, "puppet_lb": ["puppetlb.domain.com", "puppetlb2.domain.com"]}),
        "2 hosts in puppet_lb share one address, which agents reach under puppet.domain.com: set puppet_cluster_lb_virtual_ip",
    ),
    "a virtual IP outside the load balancers' network": (
        dict(groups={**GOOD_GROUPS, "puppet_lb": ["puppetlb.domain.com", "puppetlb2.domain.com"]},
             variables={"puppet_cluster_lb_virtual_ip": "203.0.113.250"}),
        "got '203.0.113.250'), and puppet_lb_vrrp_router_id between 1 and 255",
    ),
    # PuppetDB (issue 18). "localhost": a name this machine resolves, as a real master
    # would resolve its PuppetDB host's name.
    "PuppetDB without a database password": (
        dict(groups={**GOOD_GROUPS, "puppet_puppetdb": ["localhost"]}),
        "PuppetDB needs its database's password in puppet_puppetdb_database_password",
    ),
    "PuppetDB on a database host that does not answer": (
        dict(groups={**GOOD_GROUPS, "puppet_puppetdb": ["localhost"]},
             variables={"puppet_puppetdb_database_password": "0123456789abcdef",
                        "puppet_puppetdb_database_host": "127.0.0.1", "puppet_puppetdb_database_port": 9}),
        "the database host 127.0.0.1 does not answer on port 9 from localhost",
    ),
    "a PuppetDB name the masters cannot resolve": (
        dict(groups={**GOOD_GROUPS, "puppet_puppetdb": ["puppetdb.invalid"]},
             variables={"puppet_puppetdb_database_password": "0123456789abcdef"}),
        "cannot resolve the PuppetDB host(s) puppetdb.invalid",
    ),
    "a load balancer pair in tls mode": (
        dict(groups={**GOOD_GROUPS, "puppet_lb": ["puppetlb.domain.com", "puppetlb2.domain.com"]},
             variables={"puppet_cluster_lb_mode": "tls", "puppet_cluster_lb_virtual_ip": "203.0.113.250"}),
        "needs puppet_lb_mode: tcp: in tls mode the masters trust the client headers of one load balancer certificate only",
    ),
})


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_inventory_stops_with_a_clear_message(tmp_path, case):
    kwargs, message = CASES[case]
    rc, output = run_site(tmp_path, **kwargs)
    assert rc != 0, output[-2000:]
    assert message in " ".join(output.split()), output[-3000:]
    # Nothing was installed or configured: no task reported a change.
    assert "changed=1" not in output and "changed: [" not in output, output[-3000:]


def test_an_allowlist_of_agents_only_passes_the_ca_preflight(tmp_path):
    """The allowlist check refuses what it must and no more: agents' names and a glob
    of their own subdomain pass (the CA role's preflight alone, in check mode)."""
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "CA preflight", "hosts": "puppet_ca", "gather_facts": True,
        "tasks": [{"ansible.builtin.include_role": {"name": "marionette.puppet_cluster.puppet_ca",
                                                    "tasks_from": "preflight"}}],
    }]))
    variables = {"puppet_ca_autosign": "allowlist",
                 "puppet_ca_autosign_allowlist": ["agent1.domain.com", "*.agents.domain.com"]}
    children = {group: {"hosts": {h: {} for h in hosts}} for group, hosts in GOOD_GROUPS.items()}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": {**GOOD_VARS, **variables}, "children": children}}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(["ansible-playbook", "--check", "-i", str(inventory), str(playbook)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "claims no infrastructure name" in result.stdout, result.stdout[-3000:]
