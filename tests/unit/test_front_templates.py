"""What the TLS load balancer and the apache front hand on, read from their rendered
templates (issue 15, items 9 and 12); the combo2 scenario proves both on the lab.

- item 9: every TLS connection the load balancer opens to a master or the CA checks the
  backend's certificate against the CRL the refresh timer keeps (proxy_ssl_crl);
- item 12: the apache front passes the client's certificate (X-Client-Cert, URL-encoded
  PEM as nginx's $ssl_client_escaped_cert) so puppetserver reads its extensions, and
  passes the load balancer's header through only from the trusted load balancer.
"""

import re
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule

ROOT = Path(__file__).resolve().parents[2]


def render(role, template, **variables):
    # The loader finds what a template includes in the role's templates, as the template module does.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "roles" / role / "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters.update(FilterModule().filters())
    return env.get_template(template).render(ansible_managed="Ansible managed", **variables)


def role_vars(role, *names):
    """Literal values from a role's vars/main.yml, as the role itself gives them."""
    values = yaml.safe_load((ROOT / "roles" / role / "vars" / "main.yml").read_text())
    return {name: values[name] for name in names}


LB_VARS = dict(
    **role_vars("puppet_cluster", "_puppet_cluster_ca_admin_paths"),
    puppet_lb_mode="tls", puppet_lb_server_name="puppet.domain.org", puppet_lb_port=8140,
    puppet_lb_backends=["puppet1.domain.org", "puppet2.domain.org"], puppet_lb_backend_port=8140,
    puppet_lb_max_fails=1, puppet_lb_fail_timeout="10s", puppet_lb_connect_timeout="2s",
    puppet_lb_ssl_protocols=["TLSv1.2", "TLSv1.3"], puppet_lb_ssl_ciphers="ECDHE+AESGCM",
    puppet_lb_ca_backend="puppetca.domain.org", puppet_lb_ca_backend_port=8140,
    _puppet_lb_cert="/ssl/certs/lb.pem", _puppet_lb_key="/ssl/private_keys/lb.pem",
    _puppet_lb_cacert="/ssl/certs/ca.pem", _puppet_lb_crl="/ssl/crl.pem",
)


def lb_locations(config):
    """The bodies of the http server's location blocks (none nests another)."""
    return re.findall(r"location [^{]*\{(.*?)\n        \}", config, re.S)


def test_lb_checks_every_backend_certificate_against_the_crl():
    locations = lb_locations(render("puppet_lb", "nginx.conf.j2", **LB_VARS))
    proxied = [body for body in locations if "proxy_ssl_verify on;" in body]
    # /puppet-ca/ to the CA and / to the masters.
    assert len(proxied) == 2, locations
    for body in proxied:
        assert "proxy_ssl_crl /ssl/crl.pem;" in body, body


MASTER_VARS = dict(
    **role_vars("puppet_cluster", "_puppet_cluster_ca_admin_paths"),
    **role_vars("puppet_master", "_puppet_master_apache_proxy_ttl"),
    puppet_master_certname="puppet2.domain.org", puppet_master_server_name="puppet.domain.org",
    puppet_master_port=8140, puppet_master_backend_port=18140, puppet_master_ssl_protocols=["TLSv1.2", "TLSv1.3"],
    puppet_master_ssl_ciphers="ECDHE+AESGCM", puppet_master_ca_proxy=False,
    _puppet_master_cert="/ssl/certs/puppet2.pem", _puppet_master_key="/ssl/private_keys/puppet2.pem",
    _puppet_master_cacert="/ssl/certs/ca.pem", _puppet_master_crl="/ssl/crl.pem",
)


def header_lines(config, header):
    return [line.strip() for line in config.splitlines() if "RequestHeader" in line and header in line]


@pytest.mark.parametrize("proxy", ["puppetlb.domain.org", ""])
def test_apache_front_passes_the_client_certificate(proxy):
    config = render("puppet_master", "apache-puppetmaster.conf.j2", puppet_master_trusted_proxy_certname=proxy,
                    **MASTER_VARS)
    lines = header_lines(config, "X-Client-Cert")
    # A client's own header goes first, then the certificate apache verified, URL-encoded.
    assert lines[0].startswith("RequestHeader unset X-Client-Cert"), lines
    setter = 'RequestHeader set X-Client-Cert "expr=%{escape:%{SSL_CLIENT_CERT}}" "expr=%{SSL_CLIENT_VERIFY} == \'SUCCESS\''
    assert lines[1].startswith(setter), lines
    if proxy:
        # From the trusted load balancer its header passes: neither unset nor replaced.
        assert lines[0].endswith(f"%{{SSL_CLIENT_S_DN}} != 'CN={proxy}'\""), lines
        assert lines[1].endswith(f"&& %{{SSL_CLIENT_S_DN}} != 'CN={proxy}'\""), lines
    else:
        assert lines == ["RequestHeader unset X-Client-Cert", setter + '"'], lines
