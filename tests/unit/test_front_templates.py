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


HAPROXY_VARS = dict(LB_VARS, _puppet_lb_haproxy_pem="/etc/haproxy/puppet-lb.pem", puppet_lb_check_interval=2,
                    puppet_lb_check_rise=2, puppet_lb_check_fall=3, puppet_lb_error_limit=5,
                    puppet_cluster_master_health_port=8141)


def haproxy_servers(config):
    return [line.split() for line in config.splitlines() if line.strip().startswith("server ")]


@pytest.mark.parametrize("mode", ["tls", "tcp"])
def test_haproxy_checks_every_master_over_tls_as_itself_and_asks_its_health_agent(mode):
    """Issue 17: the active check of every master is TLS with the LB's certificate, the
    master's certificate checked against the CA and its CRL for the shared name; the
    agent check asks the master's disk. In tcp mode only the checks are TLS: the agents'
    own TLS passes through (no `ssl` on the server line)."""
    config = render("puppet_lb", "haproxy.cfg.j2", **dict(HAPROXY_VARS, puppet_lb_mode=mode))
    assert "http-check send meth GET uri /status/v1/simple" in config
    assert "http-check expect string running" in config
    masters = [server for server in haproxy_servers(config) if server[1] != "puppetca.domain.org"]
    assert [server[1] for server in masters] == ["puppet1.domain.org", "puppet2.domain.org"]
    for server in masters:
        line = " ".join(server)
        for setting in ("check check-ssl check-sni puppet.domain.org", "inter 2s rise 2 fall 3",
                        "crt /etc/haproxy/puppet-lb.pem", "ca-file /ssl/certs/ca.pem", "crl-file /ssl/crl.pem",
                        "verify required verifyhost puppet.domain.org", "agent-check agent-port 8141"):
            assert setting in line, (setting, line)
        assert ("ssl" in server) == (mode == "tls"), line
        assert ("observe layer7 error-limit 5 on-error mark-down" in line) == (mode == "tls"), line
    assert "balance leastconn" in config and "option redispatch" in config


def test_haproxy_replaces_the_client_headers_and_refuses_certificate_administration():
    config = render("puppet_lb", "haproxy.cfg.j2", **HAPROXY_VARS)
    frontend = config.split("frontend puppet", 1)[1].split("\nbackend ", 1)[0]
    # Whatever the client sent is removed before the LB's own values are set.
    for header in ("X-Client-Verify", "X-Client-DN", "X-Client-Cert"):
        assert frontend.index(f"del-header {header}") < frontend.index(f"set-header {header}"), header
    assert "set-header X-Client-Verify SUCCESS if { ssl_c_used } { ssl_c_verify 0 }" in frontend
    admin = role_vars("puppet_cluster", "_puppet_cluster_ca_admin_paths")["_puppet_cluster_ca_admin_paths"]
    assert f"http-request deny deny_status 403 if {{ path_reg -i {admin} }}" in frontend
    assert "use_backend puppet_ca if { path_beg /puppet-ca/ }" in frontend
    assert "ssl-min-ver TLSv1.2" in config
