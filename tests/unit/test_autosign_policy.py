"""The autosign executable (roles/puppet_ca/templates/autosign-policy.sh.j2) signs only
what an agent may get without the play (issue 15, item 1): no alternative name beyond
DNS:<certname>, and in policy mode the challenge password, in allowlist mode a certname
matching the allowlist.

The template is rendered for each mode into a script run here as puppetserver runs it:
the certname as its argument, a CSR made with openssl on stdin; exit 0 means signed.
"""

import subprocess
from pathlib import Path

import jinja2
import pytest
from ansible.plugins.filter.core import FilterModule

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "puppet_ca" / "templates" / "autosign-policy.sh.j2"
PASSWORD = "lab-challenge-0123456789"
# What the role computes from the inventory: the shared name, the CA, masters and LB.
INFRA = ["puppet.domain.org", "puppetca.domain.org", "puppet1.domain.org", "puppet2.domain.org", "puppetlb.domain.org"]


def csr(directory, certname, alt_names=(), password=None):
    """A CSR for certname, with these DNS alternative names and challenge password."""
    lines = ["[req]", "prompt = no", "distinguished_name = dn", "attributes = attrs", "[dn]", f"CN = {certname}",
             "[attrs]"]
    if password:
        lines.append(f"challengePassword = {password}")
    config = directory / f"{certname}.cnf"
    config.write_text("\n".join(lines) + "\n")
    args = ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(directory / f"{certname}.key"), "-config", str(config)]
    if alt_names:
        args += ["-addext", "subjectAltName=" + ",".join(f"DNS:{n}" for n in alt_names)]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def policy(directory, mode, allowlist=()):
    """The executable rendered for this mode, with its password or allowlist file."""
    secret = directory / "autosign-challenge"
    secret.write_text(PASSWORD + "\n")
    conf = directory / "autosign.conf"
    conf.write_text("".join(f"{entry}\n" for entry in allowlist))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters.update(FilterModule().filters())
    script = directory / f"policy-{mode}"
    script.write_text(env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="Ansible managed", _puppet_ca_autosign=mode,
        _puppet_ca_autosign_secret=str(secret), _puppet_ca_autosign_conf=str(conf),
        _puppet_ca_infra_names=INFRA,
    ))
    script.chmod(0o755)
    return script


def signs(script, certname, request):
    result = subprocess.run([str(script), certname], input=request, capture_output=True, text=True, check=False)
    return result.returncode == 0, result.stderr


POLICY_CASES = {
    # name: (certname, alt names, password, signed)
    "right password, only its own name": ("agent7.domain.org", (), PASSWORD, True),
    "right password, its own name as the alternative name": ("agent7.domain.org", ("agent7.domain.org",), PASSWORD, True),
    "right password and the masters' shared name": ("agent7.domain.org", ("puppet.domain.org",), PASSWORD, False),
    "right password, its own name and the shared name": (
        "agent7.domain.org", ("agent7.domain.org", "puppet.domain.org"), PASSWORD, False),
    "wrong password": ("agent7.domain.org", (), "not-the-password-0000", False),
    "right password, a master's certname": ("puppet1.domain.org", (), PASSWORD, False),
    "right password, the shared name as certname": ("puppet.domain.org", (), PASSWORD, False),
    "no password": ("agent7.domain.org", (), None, False),
}


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_policy_mode(tmp_path, case):
    certname, alt_names, password, expected = POLICY_CASES[case]
    signed, stderr = signs(policy(tmp_path, "policy"), certname, csr(tmp_path, certname, alt_names, password))
    assert signed is expected, f"{case}: signed={signed}; {stderr}"
    if not expected:
        assert f"autosign: {certname} not signed" in stderr


# The last entry preflight would refuse: the executable refuses it on its own too.
ALLOWLIST = ["# agents only", "agent1.domain.org", "*.agents.domain.org", "puppetlb.domain.org"]
ALLOWLIST_CASES = {
    "listed name": ("agent1.domain.org", (), True),
    "glob match": ("web3.agents.domain.org", (), True),
    "glob match, deeper name": ("a.web3.agents.domain.org", (), True),
    "glob match with its own name as alternative name": ("web3.agents.domain.org", ("web3.agents.domain.org",), True),
    "glob match with a foreign alternative name": ("web3.agents.domain.org", ("puppet.domain.org",), False),
    "listed name with a foreign alternative name": ("agent1.domain.org", ("puppet1.domain.org",), False),
    "name not listed": ("web3.domain.org", (), False),
    "infrastructure name, even if listed": ("puppetlb.domain.org", (), False),
    "the glob's domain itself": ("agents.domain.org", (), False),
}


@pytest.mark.parametrize("case", sorted(ALLOWLIST_CASES))
def test_allowlist_mode(tmp_path, case):
    certname, alt_names, expected = ALLOWLIST_CASES[case]
    signed, stderr = signs(policy(tmp_path, "allowlist", ALLOWLIST), certname, csr(tmp_path, certname, alt_names))
    assert signed is expected, f"{case}: signed={signed}; {stderr}"


def test_unreadable_request_is_not_signed(tmp_path):
    signed, stderr = signs(policy(tmp_path, "policy"), "agent7.domain.org", "not a CSR\n")
    assert not signed
    assert "unreadable request" in stderr
