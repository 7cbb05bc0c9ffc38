"""TLS and key-file security scan of a running lab (issue 7: the cluster is not an open door).

    .venv/bin/python bench/security_scan.py [--network puppet-lab] [--markdown docs/security-results.md]

Reads the lab from Docker only (the containers on --network and what runs in them), so it
works for every combination's scenario:

- TLS endpoints: every TCP listener of a container on a non-loopback address that completes
  a TLS handshake (the LB's 8140, each master front's or puppetserver's 8140, the CA's 8140).
  Each is scanned with sslscan (Debian package, installed with apt if missing): no SSLv2/3,
  TLS 1.0 or 1.1; no weak cipher (rule in WEAK_CIPHER_RULES); certificate key and signature
  strong; no insecure renegotiation, compression or Heartbleed. Then the chain is verified
  with Python's ssl module against the cluster CA (certs/ca.pem copied from the CA
  container) for each name agents use to reach that endpoint, and a name nobody uses must be
  refused (proof that the verification can fail).
- Plain listeners: a loopback-only listener (puppetserver's 18140 behind a front) must answer
  inside its container and be unreachable from the host and from another container; a
  non-loopback listener that is not TLS must not answer HTTP.
- Key files: owner and mode of private_keys/*, every file of the CA directory, and every key
  file a web server config names: keys never readable or writable by others, no group write,
  owned by root or puppet.

A self-test first runs sslscan against a deliberately weak local `openssl s_server`
(TLS 1.0, AES128-SHA): the scan must report both, or no result of the scanner is trusted.

One line per check ending PASS or FAIL with figures, then a summary; exit status 1 on any
FAIL. Never reads the content of a private key (only `stat`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone

CADIRS = ("/etc/puppet/puppetserver/ca", "/etc/puppetlabs/puppetserver/ca", "/var/lib/puppet/ssl/ca")
SSLDIRS = ("/var/lib/puppet/ssl", "/etc/puppetlabs/puppet/ssl")
PUPPET_CONFS = ("/etc/puppet/puppet.conf", "/etc/puppetlabs/puppet/puppet.conf")
SERVER_CONFDIRS = ("/etc/puppet/puppetserver", "/etc/puppetlabs/puppetserver")
FRONT_CONFS = ("/etc/nginx/sites-enabled/puppetmaster.conf", "/etc/apache2/sites-enabled/puppetmaster.conf")
ALLOWED_PROTOCOLS = {"TLSv1.2", "TLSv1.3"}
KEY_OWNERS = {"root", "puppet"}
# Rule for a weak TLS 1.2 suite (OpenSSL names). TLS 1.3 suites are all AEAD with forward
# secrecy. A CBC suite with a SHA-1 MAC is weak (Lucky13-style padding oracles, SHA-1,
# no AEAD); so is one without forward secrecy (static RSA key exchange: a stolen key
# decrypts recorded traffic).
WEAK_CIPHER_RULES = (
    ("NULL", re.compile(r"NULL")),
    ("EXPORT", re.compile(r"EXP")),
    ("RC4", re.compile(r"RC4")),
    ("DES/3DES", re.compile(r"DES")),
    ("MD5", re.compile(r"MD5")),
    ("anonymous", re.compile(r"^(ADH|AECDH)|anon")),
    ("CBC with SHA-1", re.compile(r"-SHA$")),
    ("no forward secrecy", re.compile(r"^(?!(ECDHE|DHE|EDH|TLS_))")),
)
# The README's promise, stricter than "not weak": TLS 1.2 only with ECDHE and an AEAD cipher.
PROMISED_CIPHER = re.compile(r"^ECDHE-(RSA|ECDSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$")
UNUSED_NAME = "not-a-cluster-name.invalid"


def sh(*args, check=True, timeout=120, input_text=None):
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout, input=input_text)


def dexec(container, script, check=False, timeout=60):
    return sh("docker", "exec", container, "bash", "-c", script, check=check, timeout=timeout)


# --------------------------------------------------------------------------- results

@dataclass
class Result:
    check: str
    target: str
    ok: bool
    figures: str

    def line(self):
        return f"{self.check:<28} {self.target:<44} {self.figures}  {'PASS' if self.ok else 'FAIL'}"


@dataclass
class Report:
    results: list = field(default_factory=list)

    def add(self, check, target, ok, figures):
        result = Result(check, target, bool(ok), figures)
        self.results.append(result)
        print(result.line(), flush=True)
        return result

    @property
    def failed(self):
        return [r for r in self.results if not r.ok]

    def markdown(self):
        rows = ["| check | target | figures | result |", "|---|---|---|---|"]
        for r in self.results:
            figures = r.figures.replace("|", "\\|")
            rows.append(f"| {r.check} | {r.target} | {figures} | {'PASS' if r.ok else '**FAIL**'} |")
        return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- sslscan

def ensure_sslscan():
    """sslscan's path and version; installs Debian's package if missing (and says so)."""
    path = shutil.which("sslscan")
    if not path:
        print("sslscan is not installed: installing Debian's package with apt-get", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "sslscan"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        path = shutil.which("sslscan")
    version = re.sub(r"\x1b\[[0-9;]*m", "", sh(path, "--version").stdout).split()
    return path, " ".join(version)


@dataclass
class Scan:
    protocols: dict          # "TLSv1.2" -> enabled
    ciphers: list            # (protocol, OpenSSL cipher name, DHE group bits or 0)
    renegotiation: tuple     # (supported, secure)
    compression: bool | None
    heartbleed: list         # protocols reported vulnerable
    cert_sig: str
    cert_key: tuple          # (type, bits)


def parse_sslscan_xml(text):
    """The parts of sslscan's --xml=- output the checks use."""
    root = ET.fromstring(text[text.index("<?xml"):])
    test = root.find("ssltest")
    if test is None:
        raise ValueError("sslscan produced no <ssltest> (connection failed?)")
    protocols = {}
    for p in test.findall("protocol"):
        name = ("SSLv" if p.get("type") == "ssl" else "TLSv") + p.get("version")
        protocols[name] = p.get("enabled") == "1"
    ciphers = [(c.get("sslversion"), c.get("cipher"), int(c.get("dhebits", "0")))
               for c in test.findall("cipher") if c.get("status") in ("accepted", "preferred")]
    reneg = test.find("renegotiation")
    renegotiation = (reneg.get("supported") == "1", reneg.get("secure") == "1") if reneg is not None else (False, False)
    comp = test.find("compression")
    compression = None if comp is None else comp.get("supported") == "1"
    heartbleed = [h.get("sslversion") for h in test.findall("heartbleed") if h.get("vulnerable") == "1"]
    cert = test.find("certificates/certificate")
    cert_sig, cert_key = "", ("", 0)
    if cert is not None:
        cert_sig = (cert.findtext("signature-algorithm") or "").strip()
        pk = cert.find("pk")
        if pk is not None:
            cert_key = (pk.get("type", ""), int(pk.get("bits", "0")))
    return Scan(protocols, ciphers, renegotiation, compression, heartbleed, cert_sig, cert_key)


def run_sslscan(sslscan, ip, port, sni):
    result = sh(sslscan, "--no-colour", "--xml=-", f"--sni-name={sni}", f"{ip}:{port}", check=False, timeout=300)
    return parse_sslscan_xml(result.stdout)


def weak_reasons(cipher, protocol, dhe_bits=0):
    """The WEAK_CIPHER_RULES a suite breaks (TLS 1.3 suites break none); finite-field DHE
    also needs a group of 2048 bits or more (Logjam)."""
    if protocol == "TLSv1.3":
        return []
    reasons = [label for label, rule in WEAK_CIPHER_RULES if rule.search(cipher)]
    if cipher.startswith(("DHE", "EDH")) and 0 < dhe_bits < 2048:
        reasons.append(f"DHE group of {dhe_bits} bits")
    return reasons


def scan_checks(report, target, scan):
    bad_protocols = sorted(p for p, on in scan.protocols.items() if on and p not in ALLOWED_PROTOCOLS)
    enabled = sorted(p for p, on in scan.protocols.items() if on)
    report.add("protocols >= TLS 1.2", target, not bad_protocols and enabled,
               f"enabled: {', '.join(enabled) or 'none'}; refused: "
               f"{', '.join(sorted(p for p, on in scan.protocols.items() if not on))}")
    weak = {f"{proto} {name}": weak_reasons(name, proto, dhe) for proto, name, dhe in scan.ciphers}
    weak = {k: v for k, v in weak.items() if v}
    report.add("no weak cipher", target, scan.ciphers and not weak,
               f"{len(scan.ciphers)} suites accepted"
               + (": weak " + "; ".join(f"{k} ({', '.join(v)})" for k, v in weak.items()) if weak else ", none weak"))
    off_promise = sorted({name for proto, name, _dhe in scan.ciphers
                          if proto != "TLSv1.3" and not PROMISED_CIPHER.match(name)})
    report.add("TLS 1.2: ECDHE+AEAD only", target, not off_promise,
               "TLS 1.2 suites: " + ", ".join(sorted({n for p, n, _dhe in scan.ciphers if p == "TLSv1.2"}) or ["none"])
               + (f"; outside the promise: {', '.join(off_promise)}" if off_promise else ""))
    key_type, key_bits = scan.cert_key
    strong_key = (key_type == "RSA" and key_bits >= 2048) or (key_type == "EC" and key_bits >= 256)
    strong_sig = bool(scan.cert_sig) and not re.search(r"md5|sha1With", scan.cert_sig, re.I)
    report.add("certificate key+signature", target, strong_key and strong_sig,
               f"{key_type} {key_bits} bits, {scan.cert_sig or 'no signature read'}")
    supported, secure = scan.renegotiation
    problems = []
    if supported and not secure:
        problems.append("insecure renegotiation")
    if scan.compression:
        problems.append("TLS compression")
    if scan.heartbleed:
        problems.append("heartbleed on " + ",".join(scan.heartbleed))
    report.add("renegotiation/CRIME/heartbleed", target, not problems,
               ", ".join(problems) or f"renegotiation {'secure' if supported else 'not supported'}, "
               f"compression {'off' if scan.compression is False else 'not tested'}, heartbleed no")


def self_test(report, sslscan, workdir):
    """sslscan must see TLS 1.0 and a CBC-SHA1 suite on a server offering exactly those."""
    key, cert = os.path.join(workdir, "selftest-key.pem"), os.path.join(workdir, "selftest.pem")
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
       "-days", "1", "-subj", "/CN=selftest.invalid")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert, "-key", key,
         "-tls1", "-cipher", "AES128-SHA:@SECLEVEL=0", "-www", "-quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    report.add("scanner self-test", f"127.0.0.1:{port}", False, "openssl s_server did not start")
                    return False
                time.sleep(0.1)
        scan = run_sslscan(sslscan, "127.0.0.1", port, "selftest.invalid")
        saw_tls10 = scan.protocols.get("TLSv1.0", False)
        saw_weak = any(weak_reasons(name, proto, dhe) for proto, name, dhe in scan.ciphers)
        # The listener discovery must also count a TLS 1.0-only server as TLS.
        seen_as_tls = tls_handshake("127.0.0.1", port)
        return report.add("scanner self-test", "weak local s_server", saw_tls10 and saw_weak and seen_as_tls,
                          f"TLSv1.0 seen: {saw_tls10}; handshake detected: {seen_as_tls}; weak suites seen: "
                          + ", ".join(f"{p} {n}" for p, n, _dhe in scan.ciphers)).ok
    finally:
        server.terminate()
        server.wait(timeout=10)


# --------------------------------------------------------------------------- the lab

PROBE = r"""
for d in %(cadirs)s; do [ -f "$d/ca_key.pem" ] && echo "cadir $d"; done
for d in %(ssldirs)s; do [ -d "$d" ] && echo "ssldir $d"; done
for f in %(confs)s; do [ -f "$f" ] && echo "puppetconf $f"; done
for d in %(serverdirs)s; do [ -d "$d" ] && echo "puppetserver $d"; done
for f in %(fronts)s; do [ -f "$f" ] && echo "front $f"; done
grep -qs 'upstream puppet_masters' /etc/nginx/nginx.conf && echo "lb /etc/nginx/nginx.conf"
grep -hsE '^[[:space:]]*(server|server_list|ca_server|certname)[[:space:]]*=' %(confs)s | tr -d ' ' | sed 's/^/setting /'
keywords='ssl_certificate_key|proxy_ssl_certificate_key|SSLCertificateKeyFile|SSLProxyMachineCertificateFile'
grep -rhsoE "($keywords)[[:space:]]+[^;[:space:]]+" /etc/nginx /etc/apache2 | awk '{print "keyfile", $2}'
ss -Hltn | awk '{print "listen", $4}'
"""


@dataclass
class Host:
    name: str
    ip: str
    aliases: list
    facts: dict = field(default_factory=dict)

    def all(self, key):
        return self.facts.get(key, [])

    def one(self, key):
        values = self.all(key)
        return values[0] if values else None

    @property
    def settings(self):
        out = {}
        for line in self.all("setting"):
            k, _sep, v = line.partition("=")
            out.setdefault(k, v)
        return out

    @property
    def is_ca(self):
        return bool(self.one("cadir"))

    @property
    def is_lb(self):
        return bool(self.one("lb"))

    @property
    def is_master(self):
        """puppetserver that compiles: a compile-only master, or a CA host with a front (combination 1)."""
        if not self.one("puppetserver"):
            return False
        return not self.is_ca or bool(self.one("front"))

    @property
    def roles(self):
        kinds = (("ca", self.is_ca), ("master", self.is_master), ("lb", self.is_lb), ("agent", self.is_agent_only))
        return "/".join(kind for kind, present in kinds if present) or "?"

    @property
    def is_agent_only(self):
        return bool(self.one("puppetconf")) and not (self.is_ca or self.is_lb or self.one("puppetserver"))

    def listeners(self):
        """(address, port) of every TCP listener, without Docker's embedded DNS (127.0.0.11)."""
        out = []
        for item in self.all("listen"):
            address, _sep, port = item.rpartition(":")
            address = address.strip("[]")
            if address == "127.0.0.11":
                continue
            out.append((address, int(port)))
        return sorted(set(out))


def discover(network):
    try:
        data = json.loads(sh("docker", "network", "inspect", network).stdout)[0]
    except subprocess.CalledProcessError:
        return []
    hosts = []
    for info in data.get("Containers", {}).values():
        name = info["Name"]
        ip = info["IPv4Address"].split("/")[0]
        template = f'{{{{json (index .NetworkSettings.Networks "{network}").Aliases}}}}'
        aliases = json.loads(sh("docker", "inspect", "-f", template, name).stdout) or []
        hosts.append(Host(name, ip, [a for a in aliases if "." in a]))
    probe = PROBE % {"cadirs": " ".join(CADIRS), "ssldirs": " ".join(SSLDIRS), "serverdirs": " ".join(SERVER_CONFDIRS),
                     "fronts": " ".join(FRONT_CONFS), "confs": " ".join(PUPPET_CONFS)}
    for host in hosts:
        for line in dexec(host.name, probe).stdout.splitlines():
            key, _sep, value = line.partition(" ")
            host.facts.setdefault(key, []).append(value.strip())
    return sorted(hosts, key=lambda h: h.name)


def names_agents_use(hosts):
    """The server names in the agents' puppet.conf (server, server_list, ca_server); without
    agents, the lab's network aliases that are no container's name (how agents would find the LB)."""
    servers, ca_servers = set(), set()
    for host in hosts:
        if not host.is_agent_only:
            continue
        s = host.settings
        if s.get("server"):
            servers.add(s["server"])
        for entry in filter(None, s.get("server_list", "").split(",")):
            servers.add(entry.split(":")[0])
        if s.get("ca_server"):
            ca_servers.add(s["ca_server"])
    if not servers:
        container_names = {h.name for h in hosts}
        servers = {a for h in hosts for a in h.aliases if a not in container_names}
    return servers, ca_servers


def expected_names(host, hosts, servers, ca_servers):
    """The names a TLS endpoint on `host` must be valid for, and why."""
    by_name = {}
    for h in hosts:
        for n in [h.name] + h.aliases:
            by_name[n] = h.name
    names = {}
    for n in sorted(servers | ca_servers):
        if by_name.get(n) == host.name:
            names[n] = "agents connect with it"
    if host.is_master:
        for n in sorted(servers):
            # In combination 3 the shared name is not a Docker alias but DNS round robin.
            names.setdefault(n, "the shared name (LB pass-through, DNS round robin or failover)")
    certname = host.settings.get("certname", host.name)
    if (host.is_master or host.is_ca) and certname == host.name:
        names.setdefault(host.name, "the host's own certname")
    return names


def public_listeners(host):
    """Ports a host listens on outside loopback."""
    return sorted({port for address, port in host.listeners()
                   if not (address.startswith("127.") or address == "::1")})


def tls_handshake(ip, port, timeout=5):
    """True if a TLS handshake completes (certificate not checked): tells TLS listeners apart.
    Offers every protocol and suite this OpenSSL has, so a TLS 1.0-only server counts as TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname="probe.invalid"):
                return True
    except (OSError, ssl.SSLError):
        return False


def verify_chain(ip, port, name, cafile, timeout=10):
    """(verified, detail): the chain verifies against the cluster CA for `name`."""
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=name) as tls:
                cert = tls.getpeercert()
                subject = dict(x[0] for x in cert["subject"]).get("commonName", "?")
                return True, f"{tls.version()}, CN={subject}"
    except ssl.SSLCertVerificationError as exc:
        return False, exc.verify_message or str(exc)
    except (OSError, ssl.SSLError) as exc:
        return False, str(exc)


def http_answers(ip, port, timeout=5):
    """The status line if a plain HTTP request gets an HTTP answer, else None."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")
            data = sock.recv(64)
    except OSError:
        return None
    return data.split(b"\r\n")[0].decode(errors="replace") if data.startswith(b"HTTP/") else None


def reachable_from_host(ip, port, timeout=3):
    """True if a TCP connection from this machine to ip:port is accepted."""
    try:
        socket.create_connection((ip, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def reachable_from_container(container, ip, port):
    result = dexec(container, f"timeout 3 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null && echo connected")
    return "connected" in result.stdout


def listening_inside(container, address, port):
    target = "127.0.0.1" if address in ("127.0.0.1", "0.0.0.0", "*") else address
    result = dexec(container, f"timeout 3 bash -c 'exec 3<>/dev/tcp/{target}/{port}' 2>/dev/null && echo connected")
    return "connected" in result.stdout


def key_file_checks(report, host):
    """stat of keys and CA files; rule: keys neither group-writable nor other-accessible, owned by root/puppet."""
    paths = []
    for ssldir in host.all("ssldir"):
        paths.append(f"{ssldir}/private_keys/*")
    for cadir in host.all("cadir"):
        paths += [f"{cadir}/*", f"{cadir}/private/*"]
    paths += host.all("keyfile")
    if not paths:
        return
    out = dexec(host.name, "stat -c '%U:%G %a %n' " + " ".join(paths) + " 2>/dev/null").stdout
    # A host with an SSL directory has at least its own key, the CA its ca_key.pem: a wrong
    # path must fail here rather than pass with nothing listed.
    keys = sorted({l for l in out.splitlines() if "/private_keys/" in l})
    if host.one("ssldir"):
        report.add("private keys found", host.name, bool(keys), f"{len(keys)} in {host.one('ssldir')}/private_keys")
    if host.is_ca:
        report.add("CA key found", host.name, "/ca_key.pem" in out, f"in {', '.join(host.all('cadir'))}")
    for line in sorted(set(out.splitlines()), key=lambda l: l.split(" ", 2)[2]):
        owner_group, mode, path = line.split(" ", 2)
        owner = owner_group.split(":")[0]
        mode_bits = int(mode, 8)
        is_key = ("/private_keys/" in path or "key" in os.path.basename(path) or path in host.all("keyfile")
                  or "/private/" in path)
        if is_key:
            ok = not (mode_bits & 0o027) and owner in KEY_OWNERS
            report.add("private key owner/mode", f"{host.name}:{path}", ok, f"{owner_group} {mode}")
        else:
            ok = not (mode_bits & 0o022)
            report.add("CA dir entry not writable", f"{host.name}:{path}", ok, f"{owner_group} {mode}")


# --------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--network", default=os.environ.get("LAB_NETWORK", "puppet-lab"))
    parser.add_argument("--markdown", metavar="FILE", help="write the results table to FILE")
    parser.add_argument("--wait", type=int, default=0, metavar="SECONDS",
                        help="wait up to SECONDS for a CA and for every CA, master and LB to listen")
    args = parser.parse_args()

    started = datetime.now(timezone.utc)
    args.clock = time.monotonic()
    sslscan, version = ensure_sslscan()
    print(f"# {started:%Y-%m-%d %H:%M} UTC on {platform.node()} ({platform.platform()}), "
          f"network {args.network}, scanner {version}", flush=True)
    report = Report()
    with tempfile.TemporaryDirectory() as workdir:
        if not self_test(report, sslscan, workdir):
            print("the scanner does not see a weak server: no scan result would mean anything")
            return finish(report, args, started, version)

        deadline = time.monotonic() + args.wait
        while True:
            hosts = discover(args.network)
            cas = [h for h in hosts if h.is_ca]
            if (cas and all(public_listeners(h) for h in hosts if h.is_ca or h.is_master or h.is_lb)) \
                    or time.monotonic() >= deadline:
                break
            time.sleep(5)
        report.add("lab found", args.network, bool(cas),
                   f"{len(hosts)} containers: " + ", ".join(f"{h.name}[{h.roles}]" for h in hosts))
        if not cas:
            return finish(report, args, started, version)
        ca = cas[0]
        cafile = os.path.join(workdir, "ca.pem")
        with open(cafile, "w", encoding="ascii") as fh:
            fh.write(dexec(ca.name, f"cat {ca.one('ssldir') or SSLDIRS[0]}/certs/ca.pem", check=True).stdout)
        servers, ca_servers = names_agents_use(hosts)
        report.add("names agents use", "agents' puppet.conf", bool(servers or ca_servers),
                   f"server: {', '.join(sorted(servers)) or '-'}; ca_server: {', '.join(sorted(ca_servers)) or '-'}")

        for host in hosts:
            if host.is_ca or host.is_master or host.is_lb:
                ports = public_listeners(host)
                report.add("serves TLS", host.name, any(tls_handshake(host.ip, p) for p in ports),
                           f"listens on {', '.join(map(str, ports)) or 'no public port'} "
                           "(a CA, master or LB that serves nothing cannot be scanned)")
            public = public_listeners(host)
            for address, port in host.listeners():
                loopback = address.startswith("127.") or address == "::1"
                target = f"{host.name}:{port}"
                if loopback and port in public:
                    continue  # also bound outside loopback (e.g. bind9 on 53): checked as such below
                if loopback:
                    inside = listening_inside(host.name, address, port)
                    from_host = reachable_from_host(host.ip, port)
                    other = next((h.name for h in hosts if h.name != host.name), None)
                    from_other = reachable_from_container(other, host.ip, port) if other else False
                    report.add("loopback-only listener", f"{target} ({address})",
                               inside and not from_host and not from_other,
                               f"answers inside: {inside}; from host to {host.ip}: "
                               f"{'connected' if from_host else 'refused'}; from {other}: "
                               f"{'connected' if from_other else 'refused'}")
                    continue
                if address not in ("0.0.0.0", "*", "::", host.ip) and ":" not in address:
                    continue
                if address == "::" and (("0.0.0.0", port) in host.listeners() or ("*", port) in host.listeners()):
                    continue  # the same port on IPv6; the lab network is IPv4
                if not tls_handshake(host.ip, port):
                    status = http_answers(host.ip, port)
                    report.add("no plain HTTP from outside", f"{target} ({address})", status is None,
                               f"answered {status!r}" if status else "listens, no TLS, no HTTP answer")
                    continue
                names = expected_names(host, hosts, servers, ca_servers)
                scan = run_sslscan(sslscan, host.ip, port, next(iter(names), host.name))
                scan_checks(report, target, scan)
                for name, why in names.items():
                    ok, detail = verify_chain(host.ip, port, name, cafile)
                    report.add("chain verifies for name", f"{target} as {name}", ok, f"{detail} ({why})")
                ok, detail = verify_chain(host.ip, port, UNUSED_NAME, cafile)
                # Refused for the name itself, not because the connection failed.
                report.add("other name refused", f"{target} as {UNUSED_NAME}",
                           not ok and detail.startswith("Hostname mismatch"), detail)
        for host in hosts:
            key_file_checks(report, host)
    return finish(report, args, started, version)


def finish(report, args, started, version):
    passed = len(report.results) - len(report.failed)
    print(f"\n{len(report.results)} checks: {passed} PASS, {len(report.failed)} FAIL"
          f" ({time.monotonic() - args.clock:.0f} s)")
    for r in report.failed:
        print(f"  FAIL {r.check}: {r.target}: {r.figures}")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(f"Scan of network `{args.network}` on {started:%Y-%m-%d %H:%M} UTC, {version}: "
                     f"{len(report.results)} checks, {passed} PASS, {len(report.failed)} FAIL.\n\n")
            fh.write(report.markdown())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
