"""The CRL refresh script (roles/puppet_agent/templates/puppet-crl-refresh.sh.j2) installs
only CRLs that every front can use: each CRL of the bundle signed by its issuer in the CA
file, none expired, none numbered lower than the installed one of the same issuer.

The template is rendered with test variables into a script that runs in a temporary
directory against a CA made with openssl here (a root and an intermediate, as puppetserver
has), with `curl` and `systemctl` replaced by stubs on PATH: the curl stub copies the file
named by $CRL_DOWNLOAD to the `-o` path, the systemctl stub logs its arguments.
Making a CRL with chosen dates needs OpenSSL 3 (`openssl ca -crl_nextupdate`); the
script itself uses only options OpenSSL 1.1.1 has too.
"""

import os
import subprocess
from pathlib import Path

import jinja2
import pytest
from ansible.plugins.filter.core import FilterModule

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "puppet_agent" / "templates" / "puppet-crl-refresh.sh.j2"

CURL_STUB = """#!/bin/sh
# Stands in for curl: "downloads" $CRL_DOWNLOAD to the path given with -o.
while [ $# -gt 0 ]; do
  if [ "$1" = -o ]; then out=$2; shift; fi
  shift
done
cp "$CRL_DOWNLOAD" "$out"
"""

SYSTEMCTL_STUB = """#!/bin/sh
# Stands in for systemctl: every service is active; each call is logged.
echo "$*" >> "$SYSTEMCTL_LOG"
"""


def openssl(*args, cwd):
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"
    return result.stdout


class OpensslCA:
    """A CA made with openssl: its own key and certificate, and a database to sign CRLs."""

    def __init__(self, directory, name, parent=None):
        self.dir = directory
        self.name = name
        directory.mkdir()
        (directory / "index.txt").write_text("")
        (directory / "ca.cnf").write_text(
            "[ca]\ndefault_ca = this\n[this]\ndatabase = index.txt\ncrlnumber = crlnumber\n"
            "default_md = sha256\ndefault_crl_days = 30\n"
            "[ext]\nbasicConstraints = critical,CA:true\nkeyUsage = critical,keyCertSign,cRLSign\n"
        )
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "key.pem", "-out", "req.pem", "-subj", f"/CN={name}", cwd=directory)
        signer = ["-signkey", "key.pem"] if parent is None else \
            ["-CA", str(parent.dir / "cert.pem"), "-CAkey", str(parent.dir / "key.pem"), "-CAcreateserial"]
        openssl("x509", "-req", "-in", "req.pem", "-out", "cert.pem", "-days", "30",
                "-extfile", "ca.cnf", "-extensions", "ext", *signer, cwd=directory)

    def cert(self):
        return (self.dir / "cert.pem").read_text()

    def crl(self, number, last_update=None, next_update=None):
        """A CRL signed by this CA, with this CRL number (and dates, as YYYYMMDDHHMMSSZ)."""
        (self.dir / "crlnumber").write_text(f"{number:02X}\n")
        dates = []
        if last_update:
            dates += ["-crl_lastupdate", last_update]
        if next_update:
            dates += ["-crl_nextupdate", next_update]
        openssl("ca", "-gencrl", "-config", "ca.cnf", "-keyfile", "key.pem", "-cert", "cert.pem",
                "-out", "crl.pem", *dates, cwd=self.dir)
        return (self.dir / "crl.pem").read_text()


def tampered(pem, directory):
    """The same CRL with its signature's last byte changed (`openssl crl -badsig`): it still parses."""
    (directory / "good.pem").write_text(pem)
    openssl("crl", "-badsig", "-in", "good.pem", "-out", "bad.pem", cwd=directory)
    return (directory / "bad.pem").read_text()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """puppetserver's layout: an intermediate CA signs, the root signs the intermediate;
    the CA file and the CRL bundle list the intermediate's first, then the root's.
    The impostor has the intermediate's name and another key."""
    base = tmp_path_factory.mktemp("pki")
    root = OpensslCA(base / "root", "Puppet Root CA: test")
    intermediate = OpensslCA(base / "intermediate", "Puppet CA: test", parent=root)
    impostor = OpensslCA(base / "impostor", "Puppet CA: test")
    root_crl = root.crl(1)
    return {
        "ca_file": intermediate.cert() + root.cert(),
        "installed": intermediate.crl(5) + root_crl,
        "newer": intermediate.crl(6) + root_crl,
        "tampered": tampered(intermediate.crl(6), base) + root_crl,
        "second tampered": intermediate.crl(6) + tampered(root.crl(2), base),
        "impostor": impostor.crl(6) + root_crl,
        "impostor, higher number": impostor.crl(9) + root_crl,
        "expired": intermediate.crl(6, "20200101000000Z", "20200201000000Z") + root_crl,
        "second expired": intermediate.crl(6) + root.crl(2, "20200101000000Z", "20200201000000Z"),
        "older": intermediate.crl(4) + root_crl,
        "second older": intermediate.crl(6) + root.crl(0),
        "not a CRL": "<html>Service Unavailable</html>\n",
        "empty": "",
    }


class Host:
    """A host's SSL directory with the CA file, the script rendered for it and the stubs."""

    def __init__(self, directory, ca_file):
        self.dir = directory
        ssldir = directory / "ssl"
        (ssldir / "certs").mkdir(parents=True)
        (ssldir / "certs" / "ca.pem").write_text(ca_file)
        self.ssldir = ssldir
        self.crl = ssldir / "crl.pem"
        self.bin = directory / "bin"
        self.bin.mkdir()
        for name, text in (("curl", CURL_STUB), ("systemctl", SYSTEMCTL_STUB)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
        env.filters.update(FilterModule().filters())
        script = env.from_string(TEMPLATE.read_text()).render(
            ansible_managed="Ansible managed",
            _puppet_agent_ssldir=str(ssldir),
            puppet_agent_crl_file=str(self.crl),
            puppet_agent_ca_server="puppetca.domain.com",
            puppet_agent_ca_port=8140,
            puppet_agent_certname="puppet1.domain.com",
            _puppet_agent_ca_query="",
            _puppet_agent_ca_legacy=False,
            puppet_agent_crl_reload_services=["nginx"],
        )
        self.script = directory / "puppet-crl-refresh"
        self.script.write_text(script)

    def refresh(self, download):
        """Run the script with `download` as the CA's answer."""
        (self.dir / "download.pem").write_text(download)
        environ = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}",
                       CRL_DOWNLOAD=str(self.dir / "download.pem"),
                       SYSTEMCTL_LOG=str(self.dir / "systemctl.log"), TMPDIR=str(self.dir))
        return subprocess.run(["sh", str(self.script)], env=environ,
                              capture_output=True, text=True, timeout=60, check=False)

    def reloads(self):
        log = self.dir / "systemctl.log"
        return [line for line in (log.read_text().splitlines() if log.exists() else []) if "reload" in line]

    def leftovers(self):
        """Temporary files the script left next to the CRL or in TMPDIR."""
        return sorted(p.name for p in (*self.ssldir.iterdir(), *self.dir.iterdir())
                      if p.name.startswith(("crl.pem.", "tmp.")))


@pytest.fixture
def host(tmp_path, pki):
    return Host(tmp_path, pki["ca_file"])


# Each refused download: the words stderr must contain.
REFUSED = {
    "tampered": "CRL 1 of 2 (issuer=CN = Puppet CA: test) does not verify",
    "second tampered": "CRL 2 of 2 (issuer=CN = Puppet Root CA: test) does not verify",
    "impostor": "CRL 1 of 2 (issuer=CN = Puppet CA: test) does not verify",
    "expired": "CRL 1 of 2 (issuer=CN = Puppet CA: test) expired on Feb  1 00:00:00 2020 GMT",
    "second expired": "CRL 2 of 2 (issuer=CN = Puppet Root CA: test) expired on Feb  1 00:00:00 2020 GMT",
    "older": "CRL 1 of 2 (issuer=CN = Puppet CA: test) has number 0x4, lower than the installed 0x5",
    "second older": "CRL 2 of 2 (issuer=CN = Puppet Root CA: test) has number 0x0, lower than the installed 0x1",
    "not a CRL": "CRL 1 of 1 cannot be read",
    "empty": "no CRL in it",
}


@pytest.mark.parametrize("download", sorted(REFUSED))
def test_a_bad_crl_is_refused_and_the_installed_one_kept(host, pki, download):
    host.crl.write_text(pki["installed"])
    result = host.refresh(pki[download])
    assert result.returncode != 0, result.stdout
    assert REFUSED[download] in result.stderr
    assert "keeping" in result.stderr and str(host.crl) in result.stderr
    assert host.crl.read_text() == pki["installed"]
    assert host.reloads() == []
    assert host.leftovers() == []


def test_a_newer_crl_is_installed_and_the_front_reloaded(host, pki):
    host.crl.write_text(pki["installed"])
    result = host.refresh(pki["newer"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "updated\n"
    assert host.crl.read_text() == pki["newer"]
    assert oct(host.crl.stat().st_mode & 0o777) == "0o644"
    assert host.reloads() == ["reload nginx"]
    assert host.leftovers() == []


def test_the_same_crl_again_is_current(host, pki):
    host.crl.write_text(pki["installed"])
    result = host.refresh(pki["installed"])
    assert (result.returncode, result.stdout) == (0, "current\n"), result.stderr
    assert host.reloads() == []


@pytest.mark.parametrize("installed", ["none", "unreadable", "impostor, higher number"])
def test_a_good_crl_replaces_one_that_proves_nothing(host, pki, installed):
    """A missing or corrupted CRL file, or one that no key of the CA file signed (left by
    a CA built again), gives no number to compare with: a good CRL replaces it."""
    if installed == "unreadable":
        host.crl.write_text("garbage\n")
    elif installed != "none":
        host.crl.write_text(pki[installed])
    result = host.refresh(pki["newer"])
    assert (result.returncode, result.stdout) == (0, "updated\n"), result.stderr
    assert host.crl.read_text() == pki["newer"]
