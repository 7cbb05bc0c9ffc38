"""Operations on a serving cluster: a rolling puppetserver upgrade through site.yml and
certificate renewal through playbooks/renew.yml, each while every agent keeps running
`puppet agent --test` and asking the shared name for its node, in a loop.

The user-visible promise is that no agent run and no request fails. A scenario opts in
with lab_rolling_operations (the upgrade needs a second puppetserver version: the test
repackages the installed one under a higher version in a local apt repository on each
master, so dpkg, the package scripts and the restart are real).

(Named to run after test_operations.py and before test_scale.py.)
"""

import datetime
import os
import re
import shlex
import subprocess

import pytest

from conftest import SSLDIR

TRAFFIC = "/var/tmp/lab-traffic"


class AgentTraffic:
    """Background agent runs on the first agent and node requests on every agent, for a
    `with` block. One agent runs Puppet in its loop: each run costs seconds of Ruby on the
    lab's two cores, and a second agent in the same loop slowed every restart under test
    without proving more than the requests each agent sends twice a second."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.runs, self.requests, self.failed_output = [], [], ""
        self.loops = {agent: ("runs", "requests") if agent == cluster.agents[0] else ("requests",)
                      for agent in cluster.agents}

    def _loop(self, agent, name, body):
        script = (f"while [ ! -e {TRAFFIC}/stop ]; do {body}; done; echo done >> {TRAFFIC}/{name}.log")
        self.cluster.host(agent).run(
            f"setsid nohup sh -c {shlex.quote(script)} > /dev/null 2>&1 < /dev/null &")

    def __enter__(self):
        for agent in self.cluster.agents:
            self.cluster.host(agent).run(f"rm -rf {TRAFFIC} && mkdir -p {TRAFFIC} && touch {TRAFFIC}/runs.log")
            if "runs" in self.loops[agent]:
                self.start_runs(agent)
            self._loop(agent, "requests", self.request_loop(agent))
        return self

    def start_runs(self, agent):
        """One line per agent run: exit code (--test: 0 or 2 is a success) and the
        master the catalog names; a failed run's output is kept."""
        self._loop(agent, "runs", (
            f"puppet agent --test --color=false {self.cluster.lock_wait(agent)} > {TRAFFIC}/out 2>&1;"
            f" rc=$?; echo \"rc=$rc $(grep -o 'compiled by [^ ]* on [^ ]*' {TRAFFIC}/out | head -1)\""
            f" >> {TRAFFIC}/runs.log; case $rc in 0|2) ;; *) cat {TRAFFIC}/out >> {TRAFFIC}/failed.log;; esac;"
            # Paced too: back-to-back runs kept one of the lab's two cores busy with
            # Ruby and slowed the restarts under test; the requests still probe the
            # shared name twice a second in between.
            " sleep 5"))

    def request_loop(self, agent):
        """Paced, not a readiness wait: a steady trickle of node requests to the shared name."""
        return (f"curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 30 --cacert {SSLDIR}/certs/ca.pem"
                f" --cert {SSLDIR}/certs/{agent}.pem --key {SSLDIR}/private_keys/{agent}.pem"
                f" https://{self.cluster.server_name}:8140/puppet/v3/node/{agent}?environment=production"
                f" >> {TRAFFIC}/requests.log; sleep 0.5")

    def __exit__(self, *exc):
        for agent in self.cluster.agents:
            host = self.cluster.host(agent)
            host.run(f"touch {TRAFFIC}/stop")
            for name in self.loops[agent]:
                self.cluster.wait_until(
                    lambda name=name, host=host: "done" in host.run(f"cat {TRAFFIC}/{name}.log").stdout.split(),
                    300, f"the {name} loop on {agent} ends")
            self.runs += [(agent, line) for line in host.run(f"cat {TRAFFIC}/runs.log").stdout.splitlines()
                          if line != "done"]
            self.requests += [(agent, line) for line in host.run(f"cat {TRAFFIC}/requests.log").stdout.splitlines()
                              if line != "done"]
            self.failed_output += host.run(f"cat {TRAFFIC}/failed.log 2>/dev/null").stdout

    def assert_nothing_failed(self, min_runs):
        failed_runs = [r for r in self.runs if not re.match(r"rc=[02] ", r[1] + " ")]
        failed_requests = [r for r in self.requests if r[1] != "200"]
        assert not failed_runs, f"{failed_runs}\n{self.failed_output[-3000:]}"
        assert not failed_requests, failed_requests
        assert len(self.runs) >= min_runs, f"only {len(self.runs)} agent runs during the operation"
        assert len(self.requests) >= 10 * min_runs, f"only {len(self.requests)} requests during the operation"


def opted_in(cluster):
    if not cluster.var(cluster.ca, "lab_rolling_operations", False):
        pytest.skip("this scenario does not run the rolling operations")


def offer_newer_package(host, package="puppetserver"):
    """Repackage the installed package as <version>+lab1 in a local apt repository."""
    script = r"""
set -eu
package=$1
version=$(dpkg-query --show --showformat '${Version}' "$package")
new="$version+lab1"
repo=/var/local/lab-apt work=/var/tmp/lab-repack
rm -rf "$work" && mkdir -p "$work" "$repo" && cd "$work"
apt-get download "$package" > /dev/null
dpkg-deb -R "$package"_*.deb pkg
sed -i "s/^Version: .*/Version: $new/" pkg/DEBIAN/control
deb="$repo/${package}_${new}_all.deb"
dpkg-deb -Znone -b pkg "$deb" > /dev/null
{ dpkg-deb -f "$deb"; echo "Filename: ./$(basename "$deb")"; echo "Size: $(stat -c %s "$deb")";
  echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"; echo; } > "$repo/Packages"
echo "deb [trusted=yes] file:$repo ./" > /etc/apt/sources.list.d/lab.list
rm -rf "$work"
echo "$new"
"""
    result = host.run(f"bash -c {shlex.quote(script)} repackage {shlex.quote(package)}")
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def main_pid(cluster, host, service="puppetserver"):
    """The main PID systemd knows for the service on this host ("0" when not running)."""
    shown = cluster.host(host).run(f"systemctl show --property MainPID --value {service}")
    assert shown.rc == 0 and shown.stdout.strip().isdigit(), (host, shown.stdout, shown.stderr)
    return shown.stdout.strip()


def changed_sequence(output, task_names):
    """(task, host) for each "changed" line under the named tasks, in the play's order."""
    sequence, task = [], None
    for line in output.splitlines():
        header = re.match(r"TASK \[(?:[^:\]]*: )?(.*)\] \*", line)
        if header:
            task = header.group(1)
        changed = re.match(r"changed: \[([^\] ]+)", line)
        if changed and task in task_names:
            sequence.append((task, changed.group(1)))
    return sequence


DRAIN = "Take the master out of the load balancers' rotation"
RETURN = "Put the master back into the load balancers' rotation"


def galaxy_artifact(tmp_path):
    """Build the Galaxy tarball and install it offline into an empty path, as a user
    installs the release: the path to give ANSIBLE_COLLECTIONS_PATH."""
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    subprocess.run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(tmp_path), project],
                   check=True, capture_output=True)
    tarball = next(tmp_path.glob("marionette-puppet_cluster-*.tar.gz"))
    subprocess.run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps", "--force",
                    "-p", str(tmp_path / "collections"), str(tarball)], check=True, capture_output=True)
    return tmp_path / "collections"


def test_site_upgrades_masters_one_at_a_time_without_failing_an_agent_run(cluster, tmp_path):
    """In the scenario that opts in (lab_check_galaxy_artifact, combo4), the upgrade runs the
    site playbook of the Galaxy tarball by its name: the released artifact, not the
    checkout, upgrades a serving cluster (one site run proves both)."""
    opted_in(cluster)
    versions = {offer_newer_package(cluster.host(m)) for m in cluster.masters}
    assert len(versions) == 1, versions
    version = versions.pop()
    playbook, collections_path = "site.yml", None
    if cluster.var(cluster.ca, "lab_check_galaxy_artifact", False):
        playbook, collections_path = "marionette.puppet_cluster.site", galaxy_artifact(tmp_path)
    # The repackaged version is byte-identical: only a new main PID shows that the JVM
    # serving each master was restarted onto it.
    pids_before = {m: main_pid(cluster, m) for m in cluster.masters}
    with AgentTraffic(cluster) as traffic:
        play = cluster.run_playbook(playbook, args=("-e", f"puppet_master_puppetserver_version={version}"),
                                    collections_path=collections_path)
    assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-2000:]
    traffic.assert_nothing_failed(min_runs=3)
    for master in cluster.masters:
        host = cluster.host(master)
        assert host.run("dpkg-query --show --showformat '${Version}' puppetserver").stdout == version, master
        assert host.service("puppetserver").is_running
        pid = main_pid(cluster, master)
        assert pid not in ("0", pids_before[master]), f"{master}: puppetserver was not restarted (main PID {pid})"
    # Each master left and re-entered the rotation before the next one left it.
    expected = []
    for master in cluster.masters:
        expected += [(DRAIN, master), (RETURN, master)] if cluster.lbs else []
    assert changed_sequence(play.stdout, {DRAIN, RETURN}) == expected
    for lb in cluster.lbs:
        assert " down;" not in cluster.host(lb).file("/etc/nginx/nginx.conf").content_string
    # The play's summary shows the new version and nothing degraded.
    assert f"puppetserver {version}" in play.stdout
    assert "degraded: nothing" in play.stdout


def served_certificate(cluster, master):
    """Serial and public key of the certificate the master's TLS endpoint presents now."""
    name = cluster.tls_name(master)
    return cluster.host(master).run(
        f"openssl s_client -connect 127.0.0.1:8140 -servername {name} < /dev/null 2> /dev/null"
        " | openssl x509 -noout -serial -pubkey").stdout


def crl_number(cluster):
    return cluster.host(cluster.ca).run(
        "openssl crl -in /etc/puppet/puppetserver/ca/ca_crl.pem -noout -crlnumber").stdout.strip()


def crl_days_left(cluster):
    """Days until the CA's CRL's nextUpdate."""
    shown = cluster.host(cluster.ca).run("openssl crl -in /etc/puppet/puppetserver/ca/ca_crl.pem -noout -nextupdate")
    assert shown.rc == 0, shown.stderr
    when = datetime.datetime.strptime(" ".join(shown.stdout.split("=", 1)[1].split()), "%b %d %H:%M:%S %Y %Z")
    return (when - datetime.datetime.utcnow()).days


RENEW_WINDOW_DAYS = 3000


def test_renew_replaces_certificates_and_crl_without_failing_an_agent_run(cluster):
    opted_in(cluster)
    # Set up here, not left to an earlier test: the CRL must be inside the window below,
    # and only a revocation re-signs it for 5 years (the CA's first CRL runs as long as the
    # CA, 15). One throwaway certificate revoked does it when no test revoked one before.
    if crl_days_left(cluster) >= RENEW_WINDOW_DAYS:
        ca, probe = cluster.host(cluster.ca), "crl-window-probe.domain.com"
        made = ca.run(f"puppetserver ca generate --certname {probe} && puppetserver ca revoke --certname {probe}")
        assert made.rc == 0, made.stdout + made.stderr
        ca.run(f"rm -f {SSLDIR}/*/{probe}.pem")
    assert crl_days_left(cluster) < RENEW_WINDOW_DAYS, crl_days_left(cluster)
    served_before = {m: served_certificate(cluster, m) for m in cluster.masters}
    crl_before = crl_number(cluster)
    with AgentTraffic(cluster) as traffic:
        # A window (8 years) that holds the masters' certificates (5 years) and the CRL
        # (re-signed for 5 years by the CA's first revocation), not the CA host's own
        # certificate from the CA's setup (15 years, like the CA): a renewal would
        # shorten that one, which the role refuses.
        play = cluster.run_playbook("playbooks/renew.yml",
                                    args=("-e", f"puppet_cluster_renew_within_days={RENEW_WINDOW_DAYS}"))
    assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-2000:]
    traffic.assert_nothing_failed(min_runs=2)
    for master in cluster.masters:
        serial_before, key_before = served_before[master].split("\n", 1)
        serial_after, key_after = served_certificate(cluster, master).split("\n", 1)
        assert serial_after != serial_before, f"{master} still serves {serial_before}"
        assert key_after == key_before, f"{master}'s key changed"
        assert f"{master}: master certificate renewed and served" in play.stdout
    assert f"{cluster.ca}: CRL re-signed" in play.stdout
    assert crl_number(cluster) != crl_before
    # The marker certificate that made the CA re-sign its CRL left no key behind.
    assert not cluster.host(cluster.ca).run(f"ls {SSLDIR}/private_keys | grep crl-renewal").stdout
    # Every front got the re-signed CRL.
    ca_crl = cluster.host(cluster.ca).run(
        "openssl crl -in /etc/puppet/puppetserver/ca/ca_crl.pem -noout -lastupdate").stdout
    for master in cluster.compile_only_masters:
        assert cluster.host(master).run(f"openssl crl -in {SSLDIR}/crl.pem -noout -lastupdate").stdout == ca_crl
    # An agent still runs through the shared name afterwards.
    assert cluster.agent_run(cluster.agents[0]).rc in (0, 2)
    # With the default window nothing is due: a second run changes nothing.
    again = cluster.run_playbook("playbooks/renew.yml")
    assert again.returncode == 0, again.stdout[-4000:]
    assert not re.search(r"changed=[1-9]", again.stdout), again.stdout[-4000:]


def agent_certificate(cluster, agent):
    """The agent's certificate as Puppet keeps it: serial, expiry (epoch seconds), public key."""
    shown = cluster.host(agent).run(
        f"cert={SSLDIR}/certs/{agent}.pem; openssl x509 -noout -serial -in $cert"
        f" && date -d \"$(openssl x509 -noout -enddate -in $cert | cut -d= -f2)\" +%s"
        f" && openssl x509 -noout -pubkey -in $cert")
    assert shown.rc == 0, shown.stderr
    serial, end, key = shown.stdout.split("\n", 2)
    return serial.split("=", 1)[1], int(end), key


def test_agents_renew_their_certificates_at_the_ca_itself(cluster):
    """An agent's certificate renewed by playbooks/renew.yml: same key, new serial issued
    by the CA, later expiry, and the agent runs with it through its usual entry. The
    renewal goes straight to the CA host, which renews the certificate it sees on the
    connection; behind the load balancer or a master's /puppet-ca/ proxy (combinations
    1-3) the CA would see the proxy's, and those answer renewal 403
    (test_certificate_administration_and_renewal_are_refused_behind_a_tls_load_balancer),
    so there Puppet's own renewal during runs is off and the playbook renews."""
    # Puppet 7 (Debian 12) has neither the CA's renewal endpoint nor the agent's setting.
    version = cluster.host(cluster.ca).run("dpkg-query --show --showformat '${Version}' puppetserver").stdout
    if not re.match(r"([89]|\d\d)\.", version):
        pytest.skip(f"the CA runs puppetserver {version}: renewal needs puppetserver 8")
    agent = cluster.agents[0]
    ca_certname = cluster.var(cluster.ca, "puppet_ca_certname") or cluster.ca
    ca_server = cluster.agent_ca_server(agent)
    interval = cluster.host(agent).run("puppet config print hostcert_renewal_interval").stdout.strip()
    if ca_server == ca_certname:
        assert interval not in ("", "0"), f"{agent} names the CA but does not renew itself"
    else:
        assert interval == "0", f"{agent} would renew through {ca_server} (403): interval {interval}"
    inventory = "/etc/puppet/puppetserver/ca/inventory.txt"
    issued = len(cluster.read_log(cluster.ca, inventory).splitlines())
    if ca_server != ca_certname:
        # Through the proxy the CA would renew the proxy's certificate (or see none).
        url = f"https://{ca_server}:8140/puppet-ca/v1/certificate_renewal"
        for cert in (None, agent):
            assert cluster.https_status(agent, url, cert=cert, method="POST",
                                        headers={"Content-Type": "text/plain"}) == 403, (url, cert)
        assert len(cluster.read_log(cluster.ca, inventory).splitlines()) == issued

    serial_before, end_before, key_before = agent_certificate(cluster, agent)
    # A window (8 years) that holds the agent's certificate (5 years).
    play = cluster.run_playbook("playbooks/renew.yml", args=(
        "--limit", f"{agent},localhost", "-e", "puppet_cluster_renew_within_days=3000"))
    assert play.returncode == 0, play.stdout[-6000:] + play.stderr[-2000:]
    assert f"{agent}: agent certificate renewed" in play.stdout, play.stdout[-4000:]
    serial_after, end_after, key_after = agent_certificate(cluster, agent)
    assert serial_after != serial_before, f"{agent} still has certificate {serial_before}"
    assert key_after == key_before, f"{agent}'s key changed"
    assert end_after > end_before, f"{agent}'s renewed certificate ends {end_after}, before {end_before}"
    # The CA issued it: its inventory lists the new serial under the agent's name.
    records = cluster.read_log(cluster.ca, inventory)
    assert re.search(rf"^0x0*{serial_after.lstrip('0')}\s.*/CN={re.escape(agent)}$", records, re.M | re.I), \
        f"the CA's inventory has no serial {serial_after} for {agent}"
    run = cluster.agent_run(agent)
    assert run.rc in (0, 2), run.stdout[-3000:] + run.stderr[-2000:]
    # Within the default window nothing is due any more.
    again = cluster.run_playbook("playbooks/renew.yml", args=("--limit", f"{agent},localhost"))
    assert again.returncode == 0, again.stdout[-4000:]
    assert f"{agent}: agent certificate kept" in again.stdout
    assert not re.search(r"changed=[1-9]", again.stdout), again.stdout[-4000:]
