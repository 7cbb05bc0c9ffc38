"""Offline tests of bench/security_scan.py: sslscan's XML, the weak-cipher rule and the
checks built on them (the scan itself needs a running lab)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("security_scan", ROOT / "bench" / "security_scan.py")
scan_mod = importlib.util.module_from_spec(_spec)
sys.modules["security_scan"] = scan_mod  # dataclasses look their module up there
_spec.loader.exec_module(scan_mod)

# sslscan 2.0.7 (Debian 12) against puppetserver 8.7's Jetty on the lab's CA, shortened.
CA_XML = """Version: 2.0.7
<?xml version="1.0" encoding="UTF-8"?>
<document title="SSLScan Results" version="2.0.7" web="http://github.com/rbsec/sslscan">
 <ssltest host="172.30.55.2" sniname="puppetca.domain.com" port="8140">
  <protocol type="ssl" version="2" enabled="0" />
  <protocol type="ssl" version="3" enabled="0" />
  <protocol type="tls" version="1.0" enabled="0" />
  <protocol type="tls" version="1.1" enabled="0" />
  <protocol type="tls" version="1.2" enabled="1" />
  <protocol type="tls" version="1.3" enabled="1" />
  <heartbleed sslversion="TLSv1.3" vulnerable="0" />
  <heartbleed sslversion="TLSv1.2" vulnerable="0" />
  <cipher status="preferred" sslversion="TLSv1.3" bits="256" cipher="TLS_AES_256_GCM_SHA384" id="0x1302" strength="strong" curve="25519" ecdhebits="253" />
  <cipher status="preferred" sslversion="TLSv1.2" bits="256" cipher="ECDHE-RSA-AES256-GCM-SHA384" id="0xC030" strength="strong" curve="25519" ecdhebits="253" />
  <cipher status="accepted" sslversion="TLSv1.2" bits="256" cipher="DHE-RSA-AES256-GCM-SHA384" id="0x009F" strength="strong" dhebits="2048" />
 <certificates>
  <certificate type="short">
   <signature-algorithm>sha256WithRSAEncryption</signature-algorithm>
   <pk error="false" type="RSA" bits="4096" />
   <subject><![CDATA[puppetca.domain.com]]></subject>
  </certificate>
 </certificates>
 </ssltest>
</document>
"""

# The scanner's self-test server: TLS 1.0 only, AES128-SHA, RSA 1024, SHA-1 signature.
WEAK_XML = """<?xml version="1.0" encoding="UTF-8"?>
<document title="SSLScan Results" version="2.0.7" web="http://github.com/rbsec/sslscan">
 <ssltest host="127.0.0.1" sniname="selftest.invalid" port="48443">
  <protocol type="ssl" version="2" enabled="0" />
  <protocol type="ssl" version="3" enabled="0" />
  <protocol type="tls" version="1.0" enabled="1" />
  <protocol type="tls" version="1.1" enabled="0" />
  <protocol type="tls" version="1.2" enabled="0" />
  <protocol type="tls" version="1.3" enabled="0" />
  <renegotiation supported="1" secure="0" />
  <compression supported="1" />
  <heartbleed sslversion="TLSv1.0" vulnerable="1" />
  <cipher status="preferred" sslversion="TLSv1.0" bits="128" cipher="AES128-SHA" id="0x002F" strength="acceptable" />
  <cipher status="accepted" sslversion="TLSv1.0" bits="128" cipher="EDH-RSA-DES-CBC3-SHA" id="0x0016" strength="medium" dhebits="1024" />
 <certificates>
  <certificate type="short">
   <signature-algorithm>sha1WithRSAEncryption</signature-algorithm>
   <pk error="false" type="RSA" bits="1024" />
  </certificate>
 </certificates>
 </ssltest>
</document>
"""


def run_checks(xml):
    report = scan_mod.Report()
    scan_mod.scan_checks(report, "target:8140", scan_mod.parse_sslscan_xml(xml))
    return {r.check: r for r in report.results}


def test_parse_reads_protocols_ciphers_and_certificate():
    scan = scan_mod.parse_sslscan_xml(CA_XML)
    assert scan.protocols == {"SSLv2": False, "SSLv3": False, "TLSv1.0": False, "TLSv1.1": False,
                              "TLSv1.2": True, "TLSv1.3": True}
    assert ("TLSv1.2", "DHE-RSA-AES256-GCM-SHA384", 2048) in scan.ciphers
    assert scan.cert_key == ("RSA", 4096) and scan.cert_sig == "sha256WithRSAEncryption"
    assert scan.heartbleed == []


def test_a_failed_connection_is_an_error_not_an_empty_pass():
    with pytest.raises(ValueError):
        scan_mod.parse_sslscan_xml('<?xml version="1.0"?><document title="SSLScan Results"></document>')


@pytest.mark.parametrize("cipher,protocol,reasons", [
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLSv1.2", []),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLSv1.2", []),
    ("TLS_AES_128_GCM_SHA256", "TLSv1.3", []),
    ("ECDHE-RSA-AES128-SHA", "TLSv1.2", ["CBC with SHA-1"]),
    ("AES256-GCM-SHA384", "TLSv1.2", ["no forward secrecy"]),
    ("DES-CBC3-SHA", "TLSv1.2", ["DES/3DES", "CBC with SHA-1", "no forward secrecy"]),
    ("RC4-MD5", "TLSv1.0", ["RC4", "MD5", "no forward secrecy"]),
    ("ADH-AES128-GCM-SHA256", "TLSv1.2", ["anonymous", "no forward secrecy"]),
    ("NULL-SHA256", "TLSv1.2", ["NULL", "no forward secrecy"]),
    ("EXP-RC4-MD5", "SSLv3", ["EXPORT", "RC4", "MD5", "no forward secrecy"]),
])
def test_weak_cipher_rule(cipher, protocol, reasons):
    assert scan_mod.weak_reasons(cipher, protocol) == reasons


def test_small_dhe_group_is_weak():
    assert scan_mod.weak_reasons("DHE-RSA-AES128-GCM-SHA256", "TLSv1.2", 1024) == ["DHE group of 1024 bits"]
    assert scan_mod.weak_reasons("DHE-RSA-AES128-GCM-SHA256", "TLSv1.2", 2048) == []


def test_good_endpoint_passes_but_dhe_is_outside_the_promise():
    checks = run_checks(CA_XML)
    assert checks["protocols >= TLS 1.2"].ok
    assert checks["no weak cipher"].ok
    assert checks["certificate key+signature"].ok
    assert checks["renegotiation/CRIME/heartbleed"].ok
    assert not checks["TLS 1.2: ECDHE+AEAD only"].ok
    assert "DHE-RSA-AES256-GCM-SHA384" in checks["TLS 1.2: ECDHE+AEAD only"].figures


def test_weak_endpoint_fails_every_check():
    checks = run_checks(WEAK_XML)
    assert not any(r.ok for r in checks.values()), [r.line() for r in checks.values()]
    assert "TLSv1.0" in checks["protocols >= TLS 1.2"].figures
    assert "DHE group of 1024 bits" in checks["no weak cipher"].figures
    assert "insecure renegotiation" in checks["renegotiation/CRIME/heartbleed"].figures


def test_markdown_table_marks_failures():
    report = scan_mod.Report()
    report.add("a", "x", True, "1 | 2")
    report.add("b", "y", False, "3")
    table = report.markdown()
    assert "| a | x | 1 \\| 2 | PASS |" in table and "| b | y | 3 | **FAIL** |" in table


def test_listeners_skip_docker_dns_and_read_ipv6():
    host = scan_mod.Host("h", "10.0.0.2", [], {"listen": ["127.0.0.11:41905", "0.0.0.0:8140", "[::]:80",
                                                          "127.0.0.1:18140"]})
    assert host.listeners() == [("0.0.0.0", 8140), ("127.0.0.1", 18140), ("::", 80)]


def test_expected_names_per_role():
    def host(name, aliases=(), **facts):
        return scan_mod.Host(name, "ip", list(aliases), {k: [v] for k, v in facts.items()})
    ca = host("ca.d", cadir="/etc/puppet/puppetserver/ca", puppetserver="/etc/puppet/puppetserver")
    master = host("m1.d", puppetserver="/etc/puppet/puppetserver", front="/etc/nginx/sites-enabled/puppetmaster.conf")
    lb = host("lb.d", ["puppet.d"], lb="/etc/nginx/nginx.conf")
    agent = host("a1.d", puppetconf="/etc/puppet/puppet.conf")
    agent.facts["setting"] = ["server=puppet.d", "ca_server=ca.d"]
    hosts = [ca, master, lb, agent]
    servers, ca_servers = scan_mod.names_agents_use(hosts)
    assert (servers, ca_servers) == ({"puppet.d"}, {"ca.d"})
    assert set(scan_mod.expected_names(lb, hosts, servers, ca_servers)) == {"puppet.d"}
    assert set(scan_mod.expected_names(master, hosts, servers, ca_servers)) == {"puppet.d", "m1.d"}
    assert set(scan_mod.expected_names(ca, hosts, servers, ca_servers)) == {"ca.d"}
    # Combination 5: the master's certname is the shared name; its own host name is not expected.
    master.facts["setting"] = ["certname=puppet.d"]
    assert set(scan_mod.expected_names(master, hosts, servers, ca_servers)) == {"puppet.d"}
