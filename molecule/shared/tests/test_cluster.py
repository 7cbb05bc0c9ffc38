"""What an operator of any combination relies on, checked on the real lab.

Each test names the promise it proves; the helpers are in conftest.py. Promises
particular to one combination are in test_combinations.py, scale-out and scale-in
(which change the cluster, so they run last) in test_scale.py.
"""

import re
import shlex
import urllib.parse

import pytest

from conftest import TLS_NAMES, negotiated_protocol

PROBE = "revoked-probe.domain.com"
# The file the test code's manifest writes on the agent.
PROOF = "/var/tmp/puppet-cluster-proof"
SSLDIR = "/var/lib/puppet/ssl"


def assert_masters_serve_revision(cluster, masters, revision):
    """An agent run compiled by each of these masters writes the code revision given: the
    code every master serves after a deployment (not left by an earlier run)."""
    agent = cluster.agents[0]
    for master in masters:
        assert cluster.host(agent).run(f"rm -f {PROOF}").rc == 0
        cluster.run_through(agent, master)
        content = cluster.host(agent).file(PROOF).content_string
        assert content == f"code revision {revision}\n", (master, content)


def catalog_url(entry, node):
    return f"https://{entry.name}:8140/puppet/v3/catalog/{node}?environment=production"


def test_agent_run_through_the_shared_name_applies_the_deployed_code(cluster):
    agent = cluster.agents[0]
    assert cluster.host(agent).run("puppet config print server").stdout.strip() == cluster.server_name
    before = cluster.lb_log_lines()
    # The converge's run wrote the proof already: only this run can write it again.
    assert cluster.host(agent).run(f"rm -f {PROOF}").rc == 0
    run = cluster.agent_run(agent)
    assert run.rc in (0, 2), run.stdout + run.stderr
    assert cluster.compiled_by(run.stdout) in cluster.masters, run.stdout
    if cluster.lbs:
        # The run's requests went through the load balancer (a TCP session is logged
        # when it closes, just after the agent exits).
        cluster.wait_until(lambda: cluster.lb_log_lines() > before, 15, "the load balancer logged the agent's run")
    proof = cluster.host(agent).file(PROOF)
    assert proof.exists and proof.content_string == "code revision 1\n", f"the run did not write {PROOF}"


def test_every_master_compiles_catalogs(cluster):
    agent = cluster.agents[0]
    seen = set()
    if cluster.lbs:
        # Through the load balancer: it spreads runs over every master.
        for _attempt in range(2 * len(cluster.masters) + 2):
            run = cluster.agent_run(agent)
            assert run.rc in (0, 2), run.stdout + run.stderr
            seen.add(cluster.compiled_by(run.stdout))
            if seen == set(cluster.masters):
                break
    else:
        # DNS round robin: each master, named directly, compiles for the agent.
        for master in cluster.masters:
            run = cluster.agent_run(agent, f"--server {master}")
            assert run.rc in (0, 2), run.stdout + run.stderr
            seen.add(cluster.compiled_by(run.stdout))
    assert seen == set(cluster.masters)
    for master in cluster.masters:
        assert f"/puppet/v3/catalog/{agent}" in cluster.access_log(master), master


def test_certificate_requests_are_handled_by_the_ca_only(cluster):
    ca_log = cluster.access_log(cluster.ca)
    enrolled = list(cluster.agents)
    if cluster.combination != 5:
        # Masters request their own certificates, except with the shared one.
        enrolled += cluster.compile_only_masters
    for node in enrolled:
        assert f"/puppet-ca/v1/certificate_request/{node}" in ca_log, node
    for entry in cluster.entry_points()[1:]:
        master = entry.host
        if master not in cluster.compile_only_masters:
            continue
        assert "/puppet-ca/v1/certificate_request/" not in cluster.access_log(master), master
        # No CA service answers on a compile-only master; in combination 3 its front
        # forwards CA requests to the CA instead.
        status = cluster.https_status(cluster.agents[0], f"https://{entry.name}:8140/puppet-ca/v1/certificate/ca", via=entry)
        assert status == (200 if cluster.combination == 3 else 404), (master, status, cluster.front_errors(master))
        ca_cfg = cluster.host(master).file("/etc/puppet/puppetserver/services.d/ca.cfg").content_string
        assert "certificate-authority-disabled-service" in ca_cfg


def test_catalog_without_a_client_certificate_is_refused(cluster):
    for entry in cluster.entry_points():
        assert cluster.https_status(cluster.agents[0], catalog_url(entry, cluster.agents[0]), via=entry) == 403, entry


def test_forged_client_headers_are_refused(cluster):
    agent = cluster.agents[0]
    forged = {"X-Client-Verify": "SUCCESS", "X-Client-DN": f"CN={agent}", "X-Client-Cert": "forged"}
    # The CA too where agents talk to it directly (combinations 4 and 5).
    for entry in cluster.tls_entry_points():
        # No certificate, identity claimed in headers.
        assert cluster.https_status(agent, catalog_url(entry, agent), headers=forged, via=entry) == 403, entry
        # A real certificate claiming someone else's identity in headers.
        as_master = {"X-Client-Verify": "SUCCESS", "X-Client-DN": f"CN={cluster.masters[0]}"}
        status = cluster.https_status(agent, catalog_url(entry, cluster.masters[0]), cert=agent, headers=as_master, via=entry)
        assert status == 403, entry


def test_certificate_administration_and_renewal_are_refused_behind_a_tls_load_balancer(cluster):
    """Signing, revoking, cleaning and renewing are never done on an identity a proxy
    vouches for: through the TLS load balancer, and at every front that trusts it, they
    get 403 (issue 15, items 3 and 5)."""
    if not cluster.tls_lbs():
        pytest.skip("no TLS load balancer: no front trusts a proxy's headers")
    lb, agent, ca = cluster.lbs[0], cluster.agents[0], cluster.host(cluster.ca)
    inventory = "wc -l < /etc/puppet/puppetserver/ca/inventory.txt"
    issued = ca.run(inventory).stdout
    through_lb = cluster.entry_points()[0]
    admin = f"https://{through_lb.name}:8140/puppet-ca/v1/certificate_status/{agent}"
    # Renewal through the LB: the CA would renew the certificate the LB presents, its own.
    renewal = f"https://{through_lb.name}:8140/puppet-ca/v1/certificate_renewal"
    assert cluster.https_status(agent, renewal, method="POST", headers={"Content-Type": "text/plain"}, via=through_lb) == 403
    assert cluster.https_status(agent, renewal, cert=agent, method="POST", headers={"Content-Type": "text/plain"},
                                via=through_lb) == 403
    assert cluster.https_status(agent, admin, cert=agent, via=through_lb) == 403
    # Whoever holds the LB's key goes to the fronts directly and claims to be the CA host,
    # whose certificate carries pp_cli_auth; puppetserver parses X-Client-Cert, it does not verify it.
    ca_pem = ca.run(f"cat /var/lib/puppet/ssl/certs/{cluster.ca}.pem").stdout
    as_ca = {"X-Client-Verify": "SUCCESS", "X-Client-DN": f"CN={cluster.ca}",
             "X-Client-Cert": urllib.parse.quote(ca_pem, safe="")}
    for entry in cluster.entry_points()[1:]:
        for path, method in ((f"certificate_status/{agent}", "GET"), ("certificate_status/nobody.invalid", "PUT"),
                             ("certificate_statuses/any", "GET"), ("sign/all", "POST"), ("certificate_renewal", "POST"),
                             (f"Certificate_Status/{agent}", "GET")):
            url = f"https://{entry.name}:8140/puppet-ca/v1/{path}"
            status = cluster.https_status(lb, url, cert=lb, headers=as_ca, method=method, via=entry)
            assert status == 403, (entry, method, path, status)
    assert ca.run(inventory).stdout == issued, "the CA issued a certificate"


def test_fronts_trust_the_load_balancers_exact_name_only(cluster):
    """A certificate for the LB's name in upper case (signed here with the CA's key, as a
    CA with a careless autosign policy could) is not the trusted LB: headers it sends
    claiming an agent's identity get 403 at every front (issue 15, item 11)."""
    if not cluster.tls_lbs():
        pytest.skip("no TLS load balancer: no front trusts a proxy's headers")
    impostor = cluster.lbs[0].upper()
    ca, agent = cluster.host(cluster.ca), cluster.agents[0]
    minted = ca.run(
        "set -e; d=$(mktemp -d); cd $d; "
        f"openssl req -new -newkey rsa:2048 -nodes -subj '/CN={impostor}' -keyout key.pem -out req.pem 2>/dev/null; "
        "openssl x509 -req -in req.pem -CA /etc/puppet/puppetserver/ca/ca_crt.pem "
        "-CAkey /etc/puppet/puppetserver/ca/ca_key.pem -set_serial 0x7e57 -days 1 -out cert.pem 2>/dev/null; "
        "cat cert.pem key.pem; rm -rf $d"
    )
    assert minted.rc == 0, minted.stderr
    cert, key = minted.stdout.split("-----END CERTIFICATE-----\n")
    host = cluster.host(agent)
    host.run(f"umask 077; cat > {SSLDIR}/certs/{impostor}.pem <<'EOF'\n{cert}-----END CERTIFICATE-----\nEOF")
    host.run(f"umask 077; cat > {SSLDIR}/private_keys/{impostor}.pem <<'EOF'\n{key}EOF")
    try:
        # A certificate the fronts accept (chain and CRL), or this test could not fail.
        verified = host.run(f"openssl verify -CAfile {SSLDIR}/certs/ca.pem -CRLfile {SSLDIR}/crl.pem "
                            f"-crl_check_all {SSLDIR}/certs/{impostor}.pem")
        assert verified.rc == 0, verified.stdout + verified.stderr
        as_agent = {"X-Client-Verify": "SUCCESS", "X-Client-DN": f"CN={agent}"}
        for entry in cluster.entry_points()[1:]:
            status = cluster.https_status(agent, catalog_url(entry, agent), cert=impostor, headers=as_agent, via=entry)
            assert status == 403, (entry, status)
    finally:
        host.run(f"rm -f {SSLDIR}/certs/{impostor}.pem {SSLDIR}/private_keys/{impostor}.pem")


def test_a_node_cannot_fetch_another_nodes_catalog(cluster):
    agent = cluster.agents[0]
    for entry in cluster.entry_points():
        assert cluster.https_status(agent, catalog_url(entry, agent), cert=agent, via=entry) == 200, entry
        assert cluster.https_status(agent, catalog_url(entry, cluster.masters[0]), cert=agent, via=entry) == 403, entry


def test_plain_http_backends_are_not_reachable_from_outside(cluster):
    """Nothing listens on port 80 on any server of the cluster (CA, masters, load
    balancers, DNS), and a master's plain-HTTP backend port is on its loopback only: from
    the agent both are refused (curl 7), which a DNS failure or a timeout is not."""
    servers = list(dict.fromkeys([cluster.ca, *cluster.masters, *cluster.lbs, *cluster.dns]))
    for server in servers:
        listeners = cluster.host(server).run("ss -Hltn")
        assert listeners.rc == 0, (server, listeners.stderr)
        ports = [line.split()[3].rsplit(":", 1)[1] for line in listeners.stdout.splitlines() if line.strip()]
        assert "80" not in ports, f"{server} listens on port 80: {listeners.stdout}"
        cluster.assert_connection_refused(server, 80)
        if server in cluster.masters and cluster.var(server, "puppet_master_frontend", "nginx") != "none":
            assert "127.0.0.1:18140" in listeners.stdout, server
            cluster.assert_connection_refused(server, 18140)


def test_only_root_and_the_front_reach_the_backend_port(cluster):
    """Issue 15, item 4: puppetserver believes the X-Client-* headers on its loopback
    port, so an unprivileged local user there could read any node's catalog. The backend
    guard resets that user's connection; root (and the front, as www-data: every catalog
    served through a front in these tests) still gets through."""
    agent = cluster.agents[0]
    for master in cluster.masters:
        front = cluster.var(master, "puppet_master_frontend", "nginx")
        if front == "none" or not cluster.var(master, "puppet_master_backend_guard", True):
            continue
        host = cluster.host(master)
        forged = (f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 20 -H 'X-Client-Verify: SUCCESS' "
                  f"-H 'X-Client-DN: CN={agent}' http://127.0.0.1:18140/puppet/v3/catalog/{agent}?environment=production")
        as_nobody = host.run(f"setpriv --reuid=65534 --regid=65534 --clear-groups {forged}")
        # curl: 7, the connection was refused (the guard's reset answers the SYN).
        assert as_nobody.rc == 7 and as_nobody.stdout in ("", "000"), (master, as_nobody.rc, as_nobody.stdout)
        as_root = host.run(forged)
        assert as_root.rc == 0 and as_root.stdout == "200", (master, as_root.rc, as_root.stdout)
        counted = host.run("nft list table inet puppet_backend_guard").stdout
        assert "reject with tcp reset" in counted and "packets 0 " not in counted, (master, counted)


@pytest.mark.parametrize("protocol,accepted", [("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)])
def test_only_tls_1_2_and_newer_are_offered(cluster, protocol, accepted):
    agent = cluster.agents[0]
    # The agent really offers the protocol: a refusal below is the server's.
    cluster.assert_client_speaks(agent, protocol)
    for entry in cluster.tls_entry_points():
        handshake = cluster.tls_handshake(agent, entry, protocol)
        # What the server answered: the negotiated protocol, or the error.
        said = f"negotiated {negotiated_protocol(handshake.stdout)}; " + " ".join(handshake.stderr.splitlines()[-2:])
        if accepted:
            assert handshake.rc == 0 and re.fullmatch(TLS_NAMES[protocol], negotiated_protocol(handshake.stdout) or ""), \
                (str(entry), protocol, said)
        else:
            # The server's answer (TLS alert 70), not a connection or certificate failure.
            assert handshake.rc != 0 and "alert protocol version" in handshake.stderr, (str(entry), protocol, said)


def test_private_keys_are_readable_by_their_service_only(cluster):
    for node in [cluster.ca] + cluster.masters + cluster.lbs + cluster.agents:
        listing = cluster.host(node).run(
            "find /var/lib/puppet/ssl/private_keys /etc/puppet/puppetserver/ca -name '*key*.pem' -o "
            "-path '*/private_keys/*.pem' | xargs -r stat -c '%a %U %n'"
        ).stdout.split("\n")
        keys = [line.split() for line in listing if line.strip()]
        # A TCP load balancer holds no Puppet key at all.
        if node not in cluster.lbs or node in cluster.tls_lbs():
            assert keys, f"{node}: no private key found"
        for mode, owner, path in keys:
            # 0640 or tighter, as the README promises: no group write, nothing for others.
            assert int(mode, 8) & 0o037 == 0, f"{node}: {path} is mode {mode}"
            assert owner in ("root", "puppet"), f"{node}: {path} is owned by {owner}"


def start_wait_command(host, service):
    """The shell script systemd runs after starting the service (ExecStartPost): the
    unit's own line unless a drop-in resets it, as `systemctl cat` lists them in order.
    None where the host has no such unit."""
    listing = host.run(f"systemctl cat {service}.service")
    if listing.rc != 0:
        return None
    commands = []
    for line in listing.stdout.splitlines():
        if line.startswith("ExecStartPost="):
            value = line.split("=", 1)[1]
            commands = [value] if value else []
    assert len(commands) == 1, commands
    argv = shlex.split(commands[0])
    assert argv[:2] == ["sh", "-c"] and len(argv) == 3, argv
    return argv[2]


def test_a_start_wait_survives_the_moment_before_the_service_drops_root(cluster):
    """Debian's puppetserver and puppetdb units wait after the start until the service
    writes 1 to its restart file, asking whether the JVM still runs as the service's
    user. Until systemd's child has dropped root to exec java, `kill -0` there says
    "Operation not permitted" and the start failed (a master under load, in the lab).
    The wait is run here as systemd runs it, with a root process (PID 1) as the main
    process: it must wait until the restart file says 1, and end at once, failed, when
    the main process is gone."""
    services = [(host, "puppetserver") for host in dict.fromkeys([cluster.ca, *cluster.masters])]
    services += [(host, "puppetdb") for host in cluster.groups.get("puppet_puppetdb", [])]
    checked = 0
    for name, service in services:
        host = cluster.host(name)
        script = start_wait_command(host, service)
        if script is None:
            continue  # Puppet 5 under Passenger: no puppetserver unit
        user = "puppet" if service == "puppetserver" else "puppetdb"
        wait = f"runuser -u {user} -- env RUNTIME_DIRECTORY=/run/start-wait-test MAINPID=PID sh -c {shlex.quote(script)}"
        assert host.run(f"rm -rf /run/start-wait-test && install -d -o {user} /run/start-wait-test && "
                        "printf 0 > /run/start-wait-test/restart").rc == 0
        # The service reports itself up two seconds later, as a started JVM would.
        started = host.run("{ sleep 2; printf 1 > /run/start-wait-test/restart; } >/dev/null 2>&1 & "
                           f"timeout 60 {wait.replace('MAINPID=PID', 'MAINPID=1')}")
        assert started.rc == 0, (name, service, started.rc, started.stderr)
        assert host.run("printf 0 > /run/start-wait-test/restart").rc == 0
        gone = host.run(f"sh -c 'exit 0' & pid=$!; wait $pid; timeout 10 {wait.replace('MAINPID=PID', 'MAINPID=$pid')}")
        host.run("rm -rf /run/start-wait-test")
        assert gone.rc == 1, (name, service, gone.rc, gone.stderr)
        checked += 1
    assert checked, "no puppetserver or puppetdb unit in this scenario"


def test_agent_runs_succeed_with_one_master_down(cluster):
    """A master that refuses connections (its front stopped, or puppetserver where it
    serves TLS itself) is avoided by the LB, the DNS round robin or the agent. The LB
    and agents see the same refused connection whether puppetserver stopped with its
    front or not: puppetserver stops too only in combination 4, where status.yml must
    name it (a puppetserver start is the costly part of this test). A front answering
    while puppetserver is down is the LB health tests' case (test_lb_health.py)."""
    down = cluster.compile_only_masters[0]
    front = cluster.var(down, "puppet_master_frontend", "nginx")
    services = ["puppetserver"] if front == "none" or cluster.combination == 4 else []
    if front != "none":
        services.append({"nginx": "nginx", "apache": "apache2"}[front])
    host = cluster.host(down)
    stopped = host.run(f"systemctl stop {' '.join(services)}")
    try:
        assert stopped.rc == 0, stopped.stderr
        # Really down: nothing answers on its Puppet port (a stop that did nothing, and
        # runs that happened to go elsewhere, would otherwise pass).
        cluster.assert_connection_refused(down)
        cluster.assert_runs_avoid(down)
        # The operator's status playbook says so, and fails. Its service checks are the
        # same tasks in every combination: asked once, on combination 4 (a status run is
        # half a minute of the suite).
        if cluster.combination == 4:
            status = cluster.run_playbook("playbooks/status.yml")
            assert status.returncode != 0
            # Ansible prints a failed assertion's list on stderr.
            assert f"{down}: service puppetserver is not running" in status.stdout + status.stderr, status.stderr[-4000:]
    finally:
        host.run(f"systemctl start {' '.join(services)}")
        cluster.wait_master_ready(down)


def test_a_revoked_certificate_is_refused_after_the_next_crl_refresh(cluster):
    ca = cluster.host(cluster.ca)
    agent = cluster.host(cluster.agents[0])
    # Re-runnable: a previous verify's probe is cleaned on the CA and its files removed.
    ca.run(f"puppetserver ca clean --certname {PROBE}")
    ca.run(f"rm -f /var/lib/puppet/ssl/*/{PROBE}.pem")
    generated = ca.run(f"puppetserver ca generate --certname {PROBE}")
    assert generated.rc == 0, generated.stdout + generated.stderr
    for kind in ("certs", "private_keys"):
        pem = ca.run(f"cat /var/lib/puppet/ssl/{kind}/{PROBE}.pem").stdout
        agent.run(f"umask 077; cat > /var/lib/puppet/ssl/{kind}/{PROBE}.pem <<'EOF'\n{pem}EOF")
    for entry in cluster.entry_points():
        assert cluster.https_status(cluster.agents[0], catalog_url(entry, PROBE), cert=PROBE, via=entry) == 200, entry

    revoked = ca.run(f"puppetserver ca revoke --certname {PROBE}")
    assert revoked.rc == 0, revoked.stdout + revoked.stderr

    # Nobody restarts anything: the CRL refresh timer on the fronts must bring the
    # revocation to every entry point (the scenario sets a 20 s interval), and each one
    # keeps serving the agent's valid certificate meanwhile.
    cluster.wait_refused_everywhere(PROBE, catalog_url, 120)


def test_requests_the_play_does_not_expect_are_not_signed(cluster):
    """Autosign is off (or a policy): a request from an unknown node stays pending."""
    stranger = "stranger.domain.com"
    ca = cluster.host(cluster.ca)
    agent = cluster.host(cluster.agents[0])
    ca.run(f"puppetserver ca clean --certname {stranger}")
    agent.run(f"rm -f /var/lib/puppet/ssl/*/{stranger}.pem")
    # The way this agent reaches the CA: the CA itself, the LB or a master's front.
    ca_server = cluster.agent_ca_server(cluster.agents[0])
    # A missing csr_attributes file: no challenge password, whatever the agent has configured.
    # No keep-alive, as the role enrols (puppet_agent's enroll.yml): on a kept-alive
    # connection Debian's puppetserver answers the follow-up GET only after 30 s.
    submitted = agent.run(f"puppet ssl submit_request --certname {stranger} --ca_server {ca_server} "
                          f"--csr_attributes /nonexistent/csr_attributes.yaml --http_keepalive_timeout 0")
    assert submitted.rc == 0, submitted.stdout + submitted.stderr
    listing = ca.run("puppetserver ca list --all").stdout
    # In the requested section itself (ca_listing_state, below): a split on a section
    # title would also take a name listed under another section.
    assert ca_listing_state(listing, stranger) == "requested", listing


def test_autosign_policy_signs_requests_with_the_challenge_password(cluster):
    if cluster.var(cluster.ca, "puppet_ca_autosign", "off") != "policy":
        pytest.skip("this scenario keeps autosign off")
    agent = cluster.agents[0]
    # The play did not sign the agent's request (puppet_agent_sign_on_ca: false):
    # the policy executable did, because the CSR carried the challenge password.
    assert cluster.var(agent, "puppet_agent_sign_on_ca") is False
    listing = cluster.host(cluster.ca).run("puppetserver ca list --all").stdout
    # Signed, not merely listed after the "Signed Certificates" title (revoked comes after it).
    assert ca_listing_state(listing, agent) == "signed", listing


def ca_listing_state(listing, certname):
    """'requested', 'signed' or None: where certname stands in `puppetserver ca list --all`."""
    state = None
    for line in listing.splitlines():
        if line.startswith("Requested Certificates"):
            state = "requested"
        elif line.startswith("Signed Certificates"):
            state = "signed"
        elif line.startswith("Revoked Certificates"):
            state = "revoked"
        elif line.split() and line.split()[0] == certname:
            return state
    return None


def test_autosign_needs_more_than_the_challenge_password(cluster):
    """Issue 15, item 1: the right password does not get a certificate for extra
    alternative names (the masters' shared name), for the shared name itself or for a
    master's certname; those are the play's to sign. And no agent keeps the password."""
    if cluster.var(cluster.ca, "puppet_ca_autosign", "off") != "policy":
        pytest.skip("this scenario keeps autosign off")
    ca = cluster.host(cluster.ca)
    agent_name = cluster.agents[0]
    agent = cluster.host(agent_name)
    password = cluster.var(agent_name, "puppet_agent_csr_challenge_password")
    master = cluster.compile_only_masters[0]
    probe, impostor = "autosign-probe.domain.org", "autosign-impostor.domain.org"
    requests = {
        # certname: (alternative names, signed?)
        probe: ("", True),
        impostor: (cluster.server_name, False),
        cluster.server_name: ("", False),
        master: (f"{master},{cluster.server_name}", False),
    }
    # Re-runnable: earlier probes go (never a master's certificate; in this combination
    # no certificate carries the shared name as its certname).
    assert cluster.combination != 5
    probes = [probe, impostor, cluster.server_name]
    cluster.ca_forget(probes)
    agent.run("rm -f " + " ".join(f"/var/lib/puppet/ssl/*/{name}.pem" for name in requests))
    master_cert = ca.run(f"sha256sum /etc/puppet/puppetserver/ca/signed/{master}.pem").stdout
    agent.run(f"umask 077; printf 'custom_attributes:\\n  1.2.840.113549.1.9.7: %s\\n' '{password}' "
              "> /tmp/autosign-probe-csr.yaml")
    ca_server = cluster.agent_ca_server(agent_name)
    try:
        for name, (alt_names, _signed) in requests.items():
            agent.run(f"puppet ssl submit_request --certname {name} --ca_server {ca_server} "
                      f"--http_keepalive_timeout 0 --csr_attributes /tmp/autosign-probe-csr.yaml"
                      + (f" --dns_alt_names {alt_names}" if alt_names else ""))
        listing = ca.run("puppetserver ca list --all").stdout
        for name, (alt_names, signed) in requests.items():
            if name != master:
                assert (ca_listing_state(listing, name) == "signed") is signed, \
                    f"{name} with alt names '{alt_names}', signed expected {signed}: {listing}"
        # The master's certificate is still the one the play signed.
        assert ca.run(f"sha256sum /etc/puppet/puppetserver/ca/signed/{master}.pem").stdout == master_cert
    finally:
        agent.run("rm -f /tmp/autosign-probe-csr.yaml " + " ".join(f"/var/lib/puppet/ssl/*/{name}.pem" for name in requests))
        cluster.ca_forget(probes)
    # The password enrolled the agent; it is not left on the agent for anyone to reuse.
    attributes = agent.file("/etc/puppet/csr_attributes.yaml")
    assert not attributes.exists or password not in attributes.content_string


def test_trusted_extensions_are_the_same_from_every_master(cluster):
    """Issue 15, item 12: a node whose certificate carries pp_role is classified the
    same by every master, whatever its front (nginx or apache) and whether the request
    comes through the load balancer or straight to the master. The test code tags the
    catalog with the pp_role the compiling master read from $trusted['extensions']."""
    if cluster.var(cluster.ca, "puppet_ca_autosign", "off") != "policy":
        pytest.skip("the probe is signed by the autosign policy")
    probe = "trusted-probe.domain.org"
    agent_name = cluster.agents[0]
    agent = cluster.host(agent_name)
    password = cluster.var(agent_name, "puppet_agent_csr_challenge_password")
    ca_server = cluster.agent_ca_server(agent_name)
    cluster.ca_forget([probe])
    agent.run(f"rm -f /var/lib/puppet/ssl/*/{probe}.pem")
    agent.run(f"umask 077; printf 'custom_attributes:\\n  1.2.840.113549.1.9.7: %s\\n"
              f"extension_requests:\\n  pp_role: probe\\n' '{password}' > /tmp/trusted-probe-csr.yaml")
    try:
        enrol = agent.run(f"puppet ssl submit_request --certname {probe} --ca_server {ca_server} "
                          f"--http_keepalive_timeout 0 --csr_attributes /tmp/trusted-probe-csr.yaml "
                          f"&& puppet ssl download_cert --certname {probe} --ca_server {ca_server}")
        assert enrol.rc == 0, enrol.stdout + enrol.stderr
        seen = {}
        for entry in cluster.entry_points():
            catalog = agent.run(
                f"curl -s --max-time 60 --cacert {SSLDIR}/certs/ca.pem "
                f"--cert {SSLDIR}/certs/{probe}.pem --key {SSLDIR}/private_keys/{probe}.pem "
                f"--connect-to {entry.name}:8140:{entry.host}:8140 '{catalog_url(entry, probe)}'").stdout
            seen[str(entry)] = sorted(set(re.findall(r"trusted_pp_role_[a-z0-9_]*", catalog))) or catalog[:300]
        assert all(tags == ["trusted_pp_role_probe"] for tags in seen.values()), seen
    finally:
        agent.run(f"rm -f /tmp/trusted-probe-csr.yaml /var/lib/puppet/ssl/*/{probe}.pem")
        cluster.ca_forget([probe])
