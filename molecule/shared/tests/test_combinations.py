"""Each combination's own promise: who answers CA requests, who compiles catalogs,
how agents find the masters, and how code reaches every master.

Tests that do not concern the scenario's combination are skipped, with the reason.
"""

import re

import pytest

from test_cluster import assert_masters_serve_revision


def front_access_log(cluster, master):
    """Requests the master's TLS front (nginx or apache) answered."""
    front = cluster.var(master, "puppet_master_frontend", "nginx")
    path = {"nginx": "/var/log/nginx", "apache": "/var/log/apache2"}[front] + "/puppetmaster-access.log"
    return cluster.read_log(master, path)


def address_of(cluster, host):
    return cluster.host(host).run("hostname -I").stdout.split()[0]


def dig(cluster, client, *args):
    ns = address_of(cluster, cluster.dns[0])
    return cluster.host(client).run(f"dig +short @{ns} {' '.join(args)}").stdout.split("\n")


def require(condition, reason):
    if not condition:
        pytest.skip(reason)


def test_agents_know_only_the_shared_name(cluster):
    require(cluster.combination in (1, 2, 3), "agents name the CA itself in combinations 4 and 5")
    for agent in cluster.agents:
        if cluster.var(agent, "puppet_agent_use_srv_records", False):
            continue
        assert cluster.host(agent).run("puppet config print server").stdout.strip() == cluster.server_name
        assert cluster.agent_ca_server(agent) == cluster.server_name, agent


def test_agents_name_the_ca_itself(cluster):
    require(cluster.combination in (4, 5), "agents know only the shared name in combinations 1, 2 and 3")
    ca_certname = cluster.var(cluster.ca, "puppet_ca_certname", cluster.ca)
    for agent in cluster.agents:
        assert cluster.agent_ca_server(agent) == ca_certname, agent


def test_load_balancer_sends_certificate_requests_to_the_ca(cluster):
    require(cluster.combination in (1, 2), "only combinations 1 and 2 route /puppet-ca/ at the load balancer")
    agent = cluster.agents[0]
    ca_address = address_of(cluster, cluster.ca)
    body = cluster.host(agent).run(
        f"curl -sf --cacert /var/lib/puppet/ssl/certs/ca.pem https://{cluster.server_name}:8140/puppet-ca/v1/certificate/ca"
    )
    assert body.rc == 0 and "BEGIN CERTIFICATE" in body.stdout, body.stderr
    log = cluster.lb_log(cluster.lbs[0])
    # What the LB forwarded (it answers certificate administration and renewal itself: 403).
    ca_lines = [line for line in log if "/puppet-ca/" in line and "upstream=-" not in line]
    # The agent's own enrollment and the request above: all went to the CA.
    assert any(f"/puppet-ca/v1/certificate_request/{agent}" in line for line in ca_lines), ca_lines[-5:]
    assert ca_lines and all(f"upstream={ca_address}:8140" in line for line in ca_lines), ca_lines[-5:]
    # Catalogs go to the masters: in combination 2 never to the CA.
    catalog_lines = [line for line in log if "/puppet/v3/catalog/" in line]
    assert catalog_lines
    if cluster.combination == 2:
        assert not any(f"upstream={ca_address}:" in line for line in catalog_lines)


def test_ca_host_compiles_catalogs_too(cluster):
    require(cluster.combination == 1, "the CA compiles only in combination 1")
    assert cluster.ca in cluster.masters
    run = cluster.agent_run(cluster.agents[0], f"--server {cluster.ca}")
    assert run.rc in (0, 2), run.stdout + run.stderr
    assert cluster.compiled_by(run.stdout) == cluster.ca
    # Its CA service is still on.
    ca_cfg = cluster.host(cluster.ca).file("/etc/puppet/puppetserver/services.d/ca.cfg").content_string
    enabled = [line for line in ca_cfg.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert any(line.endswith("/certificate-authority-service") for line in enabled), ca_cfg
    assert not any("disabled-service" in line for line in enabled), ca_cfg


def test_dns_round_robin_lists_every_master_and_rotates(cluster):
    require(cluster.combination == 3, "DNS round robin is combination 3")
    agent = cluster.agents[0]
    expected = {address_of(cluster, m) for m in cluster.masters}
    first_answers = set()
    for _attempt in range(4):
        answer = [line for line in dig(cluster, agent, cluster.server_name, "A") if line]
        assert set(answer) == expected, answer
        first_answers.add(answer[0])
    # rrset-order cyclic: successive answers start with different masters.
    assert first_answers == expected


def test_srv_records_name_the_masters_and_the_ca(cluster):
    require(cluster.combination == 3, "SRV records are published in combination 3")
    agent = cluster.agents[0]
    domain = cluster.server_name.split(".", 1)[1]
    masters = {line.split()[3].rstrip(".") for line in dig(cluster, agent, f"_x-puppet._tcp.{domain}", "SRV") if line}
    assert masters == set(cluster.masters)
    ca = {line.split()[3].rstrip(".") for line in dig(cluster, agent, f"_x-puppet-ca._tcp.{domain}", "SRV") if line}
    assert ca == {cluster.var(cluster.ca, "puppet_ca_certname", cluster.ca)}


def test_agent_with_srv_records_finds_the_masters(cluster):
    srv_agents = [a for a in cluster.agents if cluster.var(a, "puppet_agent_use_srv_records", False)]
    require(srv_agents, "no agent of this scenario uses SRV records")
    agent = srv_agents[0]
    host = cluster.host(agent)
    assert host.run("puppet config print use_srv_records").stdout.strip() == "true"
    # No fixed name to fall back on: the run can only have found a master through SRV.
    conf = host.file("/etc/puppet/puppet.conf").content_string
    assert not re.search(r"^\s*(server|ca_server)\s*=", conf, re.M), conf
    run = cluster.agent_run(agent)
    assert run.rc in (0, 2), run.stdout + run.stderr
    assert cluster.compiled_by(run.stdout) in cluster.masters


def test_masters_forward_certificate_requests_to_the_ca(cluster):
    require(cluster.combination == 3, "masters' fronts route /puppet-ca/ in combination 3")
    ca_log = cluster.access_log(cluster.ca)
    plain_agents = [a for a in cluster.agents if not cluster.var(a, "puppet_agent_use_srv_records", False)]
    fronts = "".join(front_access_log(cluster, m) for m in cluster.masters)
    for agent in plain_agents:
        # The agent asked a master (it knows no other name); the CA answered.
        assert f"/puppet-ca/v1/certificate_request/{agent}" in fronts, agent
        assert f"/puppet-ca/v1/certificate_request/{agent}" in ca_log, agent
    for master in cluster.masters:
        assert "/puppet-ca/" not in cluster.access_log(master), master


def test_code_change_reaches_every_master_in_one_play_run(cluster):
    """The commit pushed to production reaches every master, and no decoy branch whose name
    only ends in /production does (`git ls-remote <repo> production` lists those too;
    a/production before production)."""
    repo = cluster.var(cluster.masters[0], "puppet_master_code_git_repo", "")
    require(repo, "this scenario copies code from the controller")
    git_server = cluster.host(cluster.groups["lab_git_server"][0])
    commit = "git -c user.name=lab -c user.email=lab@domain.com commit -qam"
    change = git_server.run(
        "set -e; work=$(mktemp -d); git clone -q -b production /srv/git/control.git $work; cd $work; "
        "sed -i 's/revision => 1/revision => 2/' manifests/site.pp; "
        f"{commit} 'code revision 2'; git push -q origin production; git rev-parse HEAD; "
        "sed -i 's/revision => 2/revision => 666/' manifests/site.pp; "
        f"{commit} 'decoy'; git rev-parse HEAD; "
        "git push -q origin HEAD:refs/heads/x/production HEAD:refs/heads/a/production"
    )
    assert change.rc == 0, change.stdout + change.stderr
    production, decoy = change.stdout.split()
    # The play for the masters alone, as docs/operations.md says a code change needs.
    cluster.run_site_play(args=("--limit", "puppet_masters"))
    heads = {m: cluster.host(m).run("git -C /etc/puppet/code/environments/production rev-parse HEAD").stdout.strip()
             for m in cluster.masters}
    assert heads == {m: production for m in cluster.masters}, f"production {production}, decoy {decoy}: {heads}"
    assert_masters_serve_revision(cluster, cluster.masters, 2)


def test_masters_serve_one_shared_certificate(cluster):
    require(cluster.combination == 5, "masters share a certificate in combination 5")
    agent = cluster.host(cluster.agents[0])
    fingerprints = set()
    for master in cluster.masters:
        served = agent.run(
            f"openssl s_client -connect {master}:8140 -servername {cluster.server_name} </dev/null 2>/dev/null"
            " | openssl x509 -noout -subject -fingerprint -sha256"
        ).stdout
        assert f"CN = {cluster.server_name}" in served or f"CN={cluster.server_name}" in served, served
        fingerprints.add(served)
        key = cluster.host(master).file(f"/var/lib/puppet/ssl/private_keys/{cluster.server_name}.pem")
        assert key.mode == 0o640 and key.user == "puppet", master
    assert len(fingerprints) == 1, fingerprints
    # No master ever asked the CA for anything but the public CA certificate and CRL
    # (its CRL refresh): no request, under its own name, the shared one or any other.
    # By the address the CA logged, not by the name in the URL.
    asked = ca_requests_from(cluster, cluster.masters)
    assert asked, "the CA logged no /puppet-ca/ request from any master: not even a CRL refresh"
    beyond = [line for line in asked if not CA_PUBLIC.match(line.split('"')[1])]
    assert not beyond, f"masters asked the CA: {beyond[-5:]}"


# What any host may fetch from the CA: its certificate and its CRL.
CA_PUBLIC = re.compile(r"GET /puppet-ca/v1/(certificate/ca|certificate_revocation_list/ca)(\?\S*)? ")


def ca_requests_from(cluster, hosts):
    """The CA's access log lines for /puppet-ca/ requests that came from these hosts'
    addresses (%h, the first field)."""
    addresses = {address_of(cluster, host) for host in hosts}
    return [line for line in cluster.access_log(cluster.ca).splitlines()
            if line.split(" ", 1)[0] in addresses and '"' in line and " /puppet-ca/" in line.split('"')[1]]
