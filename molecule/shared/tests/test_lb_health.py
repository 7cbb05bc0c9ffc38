"""An haproxy load balancer that sees a sick master (issue 17): its active checks take
out a master whose puppetserver stopped behind a running front, its agent check one
whose disk is full, and a drain through the runtime API survives a reload.

The scenarios with puppet_cluster_lb_engine: haproxy run these (combo2 in tls mode,
combo5 in tcp mode). Each test puts the master back as it found it.
"""

import time

import pytest

RUNNING = 2
MAINTENANCE = 1


@pytest.fixture
def haproxy(cluster):
    if cluster.lb_engine() != "haproxy" or not cluster.lbs:
        pytest.skip("the load balancer is not haproxy")
    return cluster.lbs[0]


def check_window(cluster, lb):
    """interval x fall: how long a sick master may stay in rotation."""
    interval = int(cluster.var(lb, "puppet_lb_check_interval", 2))
    return interval * int(cluster.var(lb, "puppet_lb_check_fall", 2))


def backend_states(cluster, lb):
    """{master: "checks drained|ready"} as `puppet-lb-backend states` prints it."""
    states = cluster.host(lb).run("puppet-lb-backend states")
    assert states.rc == 0, states.stdout + states.stderr
    return dict(line.split(" ", 1) for line in states.stdout.splitlines())


def wait_for_state(cluster, lb, master, running, timeout):
    """Poll haproxy until the master's checks pass (running) or fail; the seconds it took."""
    start = time.monotonic()
    what = f"haproxy on {lb} sees {master} {'running' if running else 'out of rotation'}"
    cluster.wait_until(lambda: (cluster.haproxy_servers(lb)[master][0] == RUNNING) == running, timeout, what)
    return time.monotonic() - start


def test_haproxy_takes_out_a_master_whose_puppetserver_stopped_behind_its_front(cluster, haproxy):
    # A master with a front: the front keeps accepting connections and answers 502.
    sick = next(m for m in cluster.compile_only_masters
                if cluster.var(m, "puppet_master_frontend", "nginx") != "none")
    assert cluster.haproxy_servers(haproxy)[sick][0] == RUNNING
    host = cluster.host(sick)
    stop = host.run("systemctl stop puppetserver")
    assert stop.rc == 0, stop.stderr
    try:
        front = host.run("curl -s -o /dev/null -w '%{http_code}' -k https://127.0.0.1:8140/status/v1/simple")
        # nginx answers 502, apache 503: the front is up, its backend is not.
        assert front.stdout in ("502", "503"), f"the front should still answer: {front.stdout} {front.stderr}"
        took = wait_for_state(cluster, haproxy, sick, False, check_window(cluster, haproxy) + 10)
        print(f"{sick} out of rotation {took:.1f} s after puppetserver stopped")
        assert backend_states(cluster, haproxy)[sick] == "down ready"
        cluster.assert_runs_avoid(sick, runs=4)
    finally:
        host.run("systemctl start puppetserver")
        cluster.wait_master_ready(sick)
    wait_for_state(cluster, haproxy, sick, True, 60)


def test_haproxy_takes_out_a_master_whose_disk_is_full(cluster, haproxy):
    """The disk is filled without touching the machine's: a tmpfs holding a copy of
    puppetserver's data directory, filled to the last byte, is mounted over it."""
    sick = cluster.compile_only_masters[-1]
    port = int(cluster.var(cluster.ca, "puppet_cluster_master_health_port", 8141))
    lb = cluster.host(haproxy)
    assert lb.run(f"socat -t 5 - TCP:{sick}:{port}").stdout.strip() == "up"
    host = cluster.host(sick)
    data = "/var/lib/puppetserver/server_data"
    fill = host.run(
        f"set -e; size=$(( $(du -sk {data} | cut -f1) + 1024 ))k; mkdir -p /run/lab-full; "
        f"mount -t tmpfs -o size=$size lab-full /run/lab-full; cp -a {data}/. /run/lab-full/; "
        f"chmod --reference={data} /run/lab-full; chown --reference={data} /run/lab-full; "
        f"dd if=/dev/zero of=/run/lab-full/.fill bs=64k 2>/dev/null || true; "
        f"mount --bind /run/lab-full {data}; df -P {data} | tail -n 1")
    assert fill.rc == 0, fill.stderr
    try:
        answer = lb.run(f"socat -t 5 - TCP:{sick}:{port}").stdout.strip()
        assert answer == f"down #{data} has 0 MB free, less than 100 MB", answer
        took = wait_for_state(cluster, haproxy, sick, False, check_window(cluster, haproxy) + 10)
        print(f"{sick} out of rotation {took:.1f} s after its disk filled")
        # What a full disk does to an agent sent there anyway: Puppet cannot store its facts.
        direct = cluster.agent_run(cluster.agents[0], f"--server {cluster.tls_name(sick)}") \
            if cluster.combination != 5 else None
        if direct is not None:
            assert direct.rc not in (0, 2) and "No space left on device" in direct.stdout + direct.stderr
        cluster.assert_runs_avoid(sick, runs=4)
    finally:
        host.run(f"umount {data}; umount /run/lab-full")
    assert lb.run(f"socat -t 5 - TCP:{sick}:{port}").stdout.strip() == "up"
    wait_for_state(cluster, haproxy, sick, True, 30)


def test_a_drain_through_haproxys_runtime_api_survives_a_reload(cluster, haproxy):
    """The rolling upgrade, renew.yml and master retirement drain a master with
    puppet-lb-backend; the CRL refresh timer reloads haproxy at any moment."""
    drained = cluster.compile_only_masters[0]
    lb = cluster.host(haproxy)
    assert lb.run(f"puppet-lb-backend drain {drained}").stdout.strip() == "changed"
    try:
        assert lb.run(f"puppet-lb-backend drain {drained}").stdout.strip() == "unchanged"
        assert cluster.haproxy_servers(haproxy)[drained][1] & MAINTENANCE
        # In maintenance haproxy stops checking it: its checks say down.
        assert backend_states(cluster, haproxy)[drained] == "down drained"
        reload = lb.run("systemctl reload haproxy")
        assert reload.rc == 0, reload.stderr
        # The new process loaded the saved state: still drained.
        cluster.wait_until(lambda: lb.run("systemctl is-active haproxy").stdout.strip() == "active", 30, "haproxy active")
        assert cluster.haproxy_servers(haproxy)[drained][1] & MAINTENANCE
        cluster.assert_runs_avoid(drained, runs=2)
    finally:
        enable = lb.run(f"puppet-lb-backend enable {drained}")
    assert enable.stdout.strip() == "changed", enable.stderr
    assert not cluster.haproxy_servers(haproxy)[drained][1] & MAINTENANCE
    assert backend_states(cluster, haproxy) == {m: "up ready" for m in cluster.masters}
    # A start reads the state file: the returned master is not drained again by the
    # state saved while it was drained (before the enable saved the state too, the pair
    # test's restart of haproxy brought the drain back).
    restart = lb.run("systemctl restart haproxy")
    assert restart.rc == 0, restart.stderr
    assert not cluster.haproxy_servers(haproxy)[drained][1] & MAINTENANCE
    wait_for_state(cluster, haproxy, drained, True, 30)


def virtual_ip_holders(cluster, address):
    return [lb for lb in cluster.lbs
            if f"inet {address}/" in cluster.host(lb).run("ip -4 -o addr show").stdout]


def test_the_backup_load_balancer_takes_the_address_when_the_active_ones_haproxy_stops(cluster, haproxy):
    """The pair of combo5: keepalived tracks the engine's service. Afterwards the address
    stays on the backup (nopreempt: the first LB does not take it back when it returns)."""
    if len(cluster.lbs) < 2:
        pytest.skip("one load balancer: no pair")
    address = cluster.var(cluster.ca, "puppet_cluster_lb_virtual_ip")
    agent = cluster.host(cluster.agents[0])
    assert agent.run(f"getent hosts {cluster.server_name}").stdout.split()[0] == address
    holders = virtual_ip_holders(cluster, address)
    assert len(holders) == 1, holders
    active = holders[0]
    stop = cluster.host(active).run("systemctl stop haproxy")
    assert stop.rc == 0, stop.stderr
    start = time.monotonic()
    try:
        probe = f"curl -s --max-time 2 -k https://{cluster.server_name}:8140/status/v1/simple"
        cluster.wait_until(lambda: agent.run(probe).stdout == "running", 30,
                           f"{cluster.server_name} answers again after haproxy stopped on {active}")
        print(f"{address} unreachable for at most {time.monotonic() - start:.1f} s")
        assert virtual_ip_holders(cluster, address) == [lb for lb in cluster.lbs if lb != active]
        for _attempt in range(2):
            run = cluster.agent_run(cluster.agents[0])
            assert run.rc in (0, 2), run.stdout + run.stderr
        # The operator's status playbook names the load balancer that took the address
        # (and fails: haproxy is not running on the other one).
        status = cluster.run_playbook("playbooks/status.yml", args=("--check",))
        backup = next(lb for lb in cluster.lbs if lb != active)
        assert f"{address} ({cluster.server_name}) is held by {backup}" in status.stdout, status.stdout[-4000:]
    finally:
        cluster.host(active).run("systemctl start haproxy")
    cluster.wait_until(lambda: cluster.host(active).run("systemctl is-active haproxy").stdout.strip() == "active",
                       30, f"haproxy active again on {active}")
    assert virtual_ip_holders(cluster, address) != [active]


LARGE_FACTS_REQUEST = r'''
import json, socket, ssl, sys, time, urllib.parse
host, me = sys.argv[1], sys.argv[2]
ssldir = "/var/lib/puppet/ssl"
context = ssl.create_default_context(cafile=f"{ssldir}/certs/ca.pem")
context.load_cert_chain(f"{ssldir}/certs/{me}.pem", f"{ssldir}/private_keys/{me}.pem")
now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
facts = {"name": me, "values": {"lab_padding": "x" * 20000}, "timestamp": now, "expiration": now}
body = ("facts_format=application%2Fjson&facts=" + urllib.parse.quote(json.dumps(facts))).encode()
head = (f"POST /puppet/v3/catalog/{me}?environment=production HTTP/1.1\r\nHost: {host}:8140\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
with socket.create_connection((host, 8140)) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
    tls.sendall(head + body)
    answer = b""
    while chunk := tls.recv(65536):
        answer += chunk
print(answer.split(b"\r\n", 1)[0].decode())
'''


def test_a_catalog_request_with_20_kb_of_facts_in_one_piece_compiles(cluster):
    """Headers and facts in one write fill the LB's request buffer before it adds its
    own headers: haproxy answered such requests with its own 500 (a failed header
    rewrite) until tune.maxrewrite made room. Every scenario: nginx and the fronts too."""
    agent = cluster.agents[0]
    host = cluster.host(agent)
    host.run(f"cat > /root/lab-large-facts.py <<'EOF'\n{LARGE_FACTS_REQUEST}\nEOF")
    for _attempt in range(3):
        status = host.run(f"python3 /root/lab-large-facts.py {cluster.server_name} {agent}")
        assert status.stdout.strip() == "HTTP/1.1 200 OK", status.stdout + status.stderr
