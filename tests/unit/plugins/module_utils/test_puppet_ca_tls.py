# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PuppetCA over real TLS on the loopback: client certificate, host name check, keep-alive.

A throwaway CA (made with cryptography) signs a server certificate for localhost and a client
certificate; an HTTPS server on 127.0.0.1 that requires the client certificate answers with
the fake CA of puppet_ca_fakes.py, and counts the TCP connections it accepts.
"""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading

import pytest

from ansible_collections.marionette.puppet_cluster.plugins.module_utils.puppet_ca import PuppetCA, PuppetCAError
from puppet_ca_fakes import FakeCA, status

x509 = pytest.importorskip('cryptography.x509')
hashes = pytest.importorskip('cryptography.hazmat.primitives.hashes')
serialization = pytest.importorskip('cryptography.hazmat.primitives.serialization')
ec = pytest.importorskip('cryptography.hazmat.primitives.asymmetric.ec')
NameOID = x509.oid.NameOID


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject, issuer, public_key, signing_key, ca=False, dns=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(path, cert=None, key=None):
    with open(path, 'wb') as f:
        if cert is not None:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert('Puppet CA: test', 'Puppet CA: test', ca_key.public_key(), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _cert('localhost', 'Puppet CA: test', server_key.public_key(), ca_key, dns=['localhost'])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _cert('ca.example.com', 'Puppet CA: test', client_key.public_key(), ca_key)
    return {
        'ca': _write(tmp_path / 'ca.pem', cert=ca_cert),
        'server': _write(tmp_path / 'server.pem', cert=server_cert, key=server_key),
        'client_cert': _write(tmp_path / 'client.pem', cert=client_cert),
        'client_key': _write(tmp_path / 'client.key', key=client_key),
    }


@pytest.fixture
def server(pki):
    fake = FakeCA([status('agent%02d.example.com' % i) for i in range(20)], bulk_sign=False)
    seen = {'connections': 0, 'peers': set()}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def setup(self):
            super().setup()
            seen['connections'] += 1
            seen['peers'].add(self.connection.getpeercert()['subject'][0][0][1])

        def _answer(self):
            length = int(self.headers.get('Content-Length') or 0)
            body = self.rfile.read(length) if length else None
            code, data, content_type = fake.handle(self.command, self.path, body)
            self.send_response(code)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki['server'])
    context.load_verify_locations(pki['ca'])
    context.verify_mode = ssl.CERT_REQUIRED
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], fake, seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_a_run_uses_one_verified_keep_alive_connection(pki, server):
    port, fake, seen = server
    ca = PuppetCA('https://localhost:%d/puppet-ca/v1' % port, client_cert=pki['client_cert'],
                  client_key=pki['client_key'], ca_cert=pki['ca'], timeout=10)
    try:
        names = sorted(s['name'] for s in ca.statuses())
        result = ca.sign(names)
    finally:
        ca.close()
    assert result['failed'] == {} and result['done'] == names
    assert ca.bulk_sign_supported is False
    assert ca.requests == 1 + 1 + 20
    assert len(fake.certs) == 20
    assert seen['connections'] == 1
    assert seen['peers'] == {'ca.example.com'}


def test_the_host_name_is_checked(pki, server):
    port, fake, seen = server
    # The server certificate names localhost, not 127.0.0.1.
    ca = PuppetCA('https://127.0.0.1:%d/puppet-ca/v1' % port, client_cert=pki['client_cert'],
                  client_key=pki['client_key'], ca_cert=pki['ca'], timeout=10)
    with pytest.raises(PuppetCAError, match='certificate verify failed|match'):
        ca.statuses()
    assert fake.log == []


def test_an_unknown_ca_is_refused(pki, server, tmp_path):
    port, fake, seen = server
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _write(tmp_path / 'other.pem', cert=_cert('Other CA', 'Other CA', other_key.public_key(), other_key, ca=True))
    ca = PuppetCA('https://localhost:%d/puppet-ca/v1' % port, client_cert=pki['client_cert'],
                  client_key=pki['client_key'], ca_cert=other, timeout=10)
    with pytest.raises(PuppetCAError, match='certificate verify failed'):
        ca.statuses()
    assert fake.log == []
