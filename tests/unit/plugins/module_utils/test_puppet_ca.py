# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""plan() decisions, and PuppetCA against a fake CA: requests sent, fallbacks, reasons."""

from __future__ import annotations

import http.client

import pytest

from ansible_collections.marionette.puppet_cluster.plugins.module_utils import puppet_ca
from ansible_collections.marionette.puppet_cluster.plugins.module_utils.puppet_ca import (
    PuppetCA,
    PuppetCAError,
    alt_names,
    default_connection,
    normalize_alt_name,
    plan,
    validate_certname,
)
from puppet_ca_fakes import status

URL = 'https://ca.example.com:8140/puppet-ca/v1'


def by_name(result):
    return dict((item['name'], item) for item in result['items'])


def error_names(result):
    return [e['name'] for e in result['errors']]


# ---------------------------------------------------------------------------
# plan(): state=signed

def test_already_signed_is_left_alone():
    result = plan([status('a.example.com', 'signed')], ['a.example.com'])
    assert result['sign'] == [] and result['errors'] == []
    item = by_name(result)['a.example.com']
    assert item['action'] is None
    assert item['before'] == item['after']
    assert item['before']['state'] == 'signed'
    assert item['before']['fingerprint'] == status('a.example.com', 'signed')['fingerprints']['SHA256']


def test_request_is_signed():
    request = status('a.example.com')
    result = plan([request], ['a.example.com'])
    assert result['sign'] == ['a.example.com']
    item = by_name(result)['a.example.com']
    assert item['action'] == 'sign'
    assert item['before'] == {'state': 'requested', 'fingerprint': request['fingerprint']}
    assert item['after'] == {'state': 'signed', 'fingerprint': None}
    assert item['request_fingerprint'] == request['fingerprint']


def test_request_naming_only_its_certname_needs_no_permission():
    # Agents put their certname among their alternative names: it is not an extra name.
    result = plan([status('a.example.com', alt_names=['a.example.com'])], ['a.example.com'])
    assert result['sign'] == ['a.example.com'] and not result['errors']


def test_alt_names_refused_when_not_allowed():
    result = plan([status('a.example.com', alt_names=['a.example.com', 'puppet.example.com'])], ['a.example.com'])
    assert result['sign'] == []
    assert error_names(result) == ['a.example.com']
    msg = result['errors'][0]['msg']
    assert msg.startswith('a.example.com: ')
    assert 'puppet.example.com' in msg and 'allow_dns_alt_names' in msg


def test_alt_names_signed_when_allowed():
    result = plan([status('a.example.com', alt_names=['puppet.example.com'])], ['a.example.com'], allow_dns_alt_names=True)
    assert result['sign'] == ['a.example.com'] and not result['errors']


def test_expected_alt_names_match_ignoring_certname_prefix_and_case():
    request = status('puppet1.example.com', alt_names=['puppet1.example.com', 'Puppet.Example.com'])
    result = plan([request], ['puppet1.example.com'], expected_alt_names=['DNS:puppet.example.com', 'puppet1.example.com'])
    assert result['sign'] == ['puppet1.example.com'] and not result['errors']


def test_expected_alt_names_mismatch_is_refused_naming_the_certificate():
    # A rogue host asking for the cluster's shared name, which it is not expected to carry.
    statuses = [status('good.example.com'), status('rogue.example.com', alt_names=['puppet.example.com'])]
    result = plan(statuses, ['good.example.com', 'rogue.example.com'], expected_alt_names=[])
    assert error_names(result) == ['rogue.example.com']
    msg = result['errors'][0]['msg']
    assert msg.startswith('rogue.example.com: ')
    assert '[puppet.example.com]' in msg and 'expected [] (none)' in msg
    # The good one is planned, but the caller changes nothing while errors exist.
    assert result['sign'] == ['good.example.com']


def test_expected_alt_names_missing_one_is_refused():
    request = status('puppet2.example.com', alt_names=['puppet2.example.com'])
    result = plan([request], ['puppet2.example.com'], expected_alt_names=['puppet.example.com'])
    assert error_names(result) == ['puppet2.example.com']
    assert 'expected [puppet.example.com]' in result['errors'][0]['msg']


def test_expected_alt_names_take_precedence_over_allow():
    request = status('a.example.com', alt_names=['other.example.com'])
    result = plan([request], ['a.example.com'], allow_dns_alt_names=True, expected_alt_names=['puppet.example.com'])
    assert error_names(result) == ['a.example.com']


def test_ip_alt_names_are_compared():
    request = status('a.example.com', ips=['10.0.0.1'])
    assert error_names(plan([request], ['a.example.com'])) == ['a.example.com']
    assert plan([request], ['a.example.com'], expected_alt_names=['IP:10.0.0.1'])['sign'] == ['a.example.com']
    assert error_names(plan([request], ['a.example.com'], expected_alt_names=['10.0.0.1'])) == ['a.example.com']


def test_admin_extension_is_refused():
    request = status('a.example.com', extensions={'pp_cli_auth': 'true'})
    result = plan([request], ['a.example.com'], allow_dns_alt_names=True)
    assert error_names(result) == ['a.example.com']
    assert 'pp_cli_auth' in result['errors'][0]['msg']


def test_revoked_asked_signed_is_refused():
    result = plan([status('a.example.com', 'revoked')], ['a.example.com'])
    assert error_names(result) == ['a.example.com']
    assert 'revoked' in result['errors'][0]['msg']
    assert result['sign'] == []


def test_no_request_is_an_error_naming_the_certificate():
    result = plan([], ['a.example.com'])
    assert error_names(result) == ['a.example.com']
    assert result['errors'][0]['msg'].startswith('a.example.com: no certificate request')


def test_no_request_skipped_when_not_required():
    result = plan([status('b.example.com')], ['a.example.com', 'b.example.com'], require_request=False)
    assert not result['errors']
    assert result['missing'] == ['a.example.com']
    assert result['sign'] == ['b.example.com']
    assert by_name(result)['a.example.com']['after']['state'] == 'absent'


def test_signed_with_other_names_warns_only():
    cert = status('a.example.com', 'signed', alt_names=['puppet.example.com'])
    result = plan([cert], ['a.example.com'], expected_alt_names=[])
    assert not result['errors'] and not result['sign']
    assert len(result['warnings']) == 1 and 'a.example.com' in result['warnings'][0]


def test_names_keep_input_order_once():
    statuses = [status(n) for n in ('c.example.com', 'a.example.com', 'b.example.com')]
    result = plan(statuses, ['b.example.com', 'a.example.com', 'b.example.com', 'c.example.com'])
    assert [i['name'] for i in result['items']] == ['b.example.com', 'a.example.com', 'c.example.com']
    assert result['sign'] == ['b.example.com', 'a.example.com', 'c.example.com']


@pytest.mark.parametrize('name', ['', ' a.example.com', 'A.example.com', 'a/b', 'a b', 'caf\u00e9.example.com', '..'])
def test_invalid_names_are_refused(name):
    result = plan([], [name], require_request=False)
    assert len(result['errors']) == 1
    assert validate_certname(name)


def test_unknown_state_is_a_programming_error():
    with pytest.raises(ValueError):
        plan([], ['a.example.com'], state='present')


# ---------------------------------------------------------------------------
# plan(): state=revoked and state=absent

def test_revoke_paths():
    statuses = [status('s.example.com', 'signed'), status('r.example.com', 'revoked'), status('q.example.com')]
    result = plan(statuses, ['s.example.com', 'r.example.com', 'x.example.com'], state='revoked')
    assert result['revoke'] == ['s.example.com'] and not result['errors']
    items = by_name(result)
    assert items['s.example.com']['after']['state'] == 'revoked'
    assert items['s.example.com']['after']['fingerprint'] == items['s.example.com']['before']['fingerprint']
    assert items['r.example.com']['action'] is None
    assert items['x.example.com']['action'] is None and items['x.example.com']['after']['state'] == 'absent'

    refused = plan(statuses, ['q.example.com'], state='revoked')
    assert error_names(refused) == ['q.example.com']
    assert 'state=absent' in refused['errors'][0]['msg']


def test_absent_paths():
    statuses = [
        status('s.example.com', 'signed'),
        status('r.example.com', 'revoked'),
        status('q.example.com'),
        # A certificate and a new request under the same name.
        status('both.example.com', 'signed'),
        status('both.example.com'),
    ]
    names = ['s.example.com', 'r.example.com', 'q.example.com', 'both.example.com', 'x.example.com']
    result = plan(statuses, names, state='absent')
    assert not result['errors']
    assert result['clean'] == ['s.example.com', 'r.example.com', 'both.example.com']
    assert result['clean_revoked'] == ['r.example.com']
    assert result['delete'] == ['q.example.com', 'both.example.com']
    items = by_name(result)
    assert items['both.example.com']['action'] == 'clean+delete'
    assert items['both.example.com']['before']['state'] == 'signed'
    assert items['x.example.com']['action'] is None
    assert all(items[n]['after'] == {'state': 'absent', 'fingerprint': None} for n in names)


# ---------------------------------------------------------------------------
# helpers

def test_normalize_alt_name():
    assert normalize_alt_name('DNS:Puppet.Example.COM') == 'puppet.example.com'
    assert normalize_alt_name('puppet') == 'puppet'
    assert normalize_alt_name('IP:10.000.0.1') == 'IP:10.000.0.1'  # not an address: kept as given
    assert normalize_alt_name('ip:2001:DB8::1') == 'IP:2001:db8::1'
    assert alt_names(status('a', alt_names=['a', 'b']), 'a') == ['b']


def test_default_connection(monkeypatch):
    monkeypatch.setattr(puppet_ca.socket, 'getfqdn', lambda: 'CA.Example.com')
    assert default_connection() == {
        'ca_url': 'https://ca.example.com:8140/puppet-ca/v1',
        'client_cert': '/var/lib/puppet/ssl/certs/ca.example.com.pem',
        'client_key': '/var/lib/puppet/ssl/private_keys/ca.example.com.pem',
        'ca_cert': '/var/lib/puppet/ssl/certs/ca.pem',
    }
    assert default_connection('x.example.com', '/etc/ssl/')['client_key'] == '/etc/ssl/private_keys/x.example.com.pem'


def test_url_must_be_https():
    with pytest.raises(PuppetCAError):
        PuppetCA('http://ca.example.com:8140/puppet-ca/v1')
    ca = PuppetCA('https://ca.example.com')
    assert (ca.host, ca.port, ca.prefix) == ('ca.example.com', 8140, '/puppet-ca/v1')


def test_real_tls_context_is_verified(tmp_path):
    # Without a readable CA bundle, the context cannot be built: a clear error, no request.
    ca = PuppetCA(URL, client_cert=str(tmp_path / 'c.pem'), client_key=str(tmp_path / 'k.pem'), ca_cert=str(tmp_path / 'ca.pem'))
    with pytest.raises(PuppetCAError, match='cannot load the TLS files'):
        ca.statuses()
    assert ca.requests == 0


# ---------------------------------------------------------------------------
# PuppetCA against the fake CA

def test_statuses_is_one_request(fake_ca):
    fake = fake_ca([status('a.example.com'), status('b.example.com', 'signed')])
    ca = PuppetCA(URL)
    assert sorted(s['name'] for s in ca.statuses()) == ['a.example.com', 'b.example.com']
    assert ca.requests == 1
    assert fake.log[0][:2] == ('GET', '/puppet-ca/v1/certificate_statuses/any_key')
    assert [s['name'] for s in ca.statuses(state='signed')] == ['b.example.com']
    assert fake.log[1][1] == '/puppet-ca/v1/certificate_statuses/any_key?state=signed'


def test_statuses_error_gives_the_cas_reason(fake_ca):
    fake = fake_ca()
    fake.prefix = '/other'
    with pytest.raises(PuppetCAError) as e:
        PuppetCA(URL).statuses()
    assert e.value.status == 404
    assert 'HTTP 404' in e.value.msg and 'Not Found' in e.value.msg


def test_bulk_sign_is_one_request_for_a_thousand(fake_ca):
    names = ['agent%04d.example.com' % i for i in range(1000)]
    fake = fake_ca([status(n) for n in names])
    ca = PuppetCA(URL)
    result = ca.sign(names)
    assert result == {'done': names, 'failed': {}}
    assert ca.requests == 1 and ca.bulk_sign_supported is True
    assert fake.log[0][:2] == ('POST', '/puppet-ca/v1/sign')
    assert fake.log[0][2] == {'certnames': names}
    assert fake.connections == 1


@pytest.mark.parametrize('refusal', ['403', '404'])
def test_bulk_sign_falls_back_to_one_put_per_name(fake_ca, refusal):
    names = ['a.example.com', 'b.example.com', 'c.example.com']
    fake = fake_ca([status(n) for n in names], bulk_sign=False)
    if refusal == '404':
        # A server whose auth.conf lets the path through, without the route: 404.
        fake.prefix = '/puppet-ca/v1'
        original = fake.handle

        def handle(method, url, body):
            if url.endswith('/sign'):
                fake.log.append((method, url, None))
                return 404, b'Not Found', 'text/plain'
            return original(method, url, body)
        fake.handle = handle
    ca = PuppetCA(URL)
    result = ca.sign(names)
    assert result == {'done': names, 'failed': {}}
    assert ca.bulk_sign_supported is False
    assert [m for (m, _p, _b) in fake.log] == ['POST', 'PUT', 'PUT', 'PUT']
    assert [p for (_m, p, _b) in fake.log[1:]] == ['/puppet-ca/v1/certificate_status/%s' % n for n in names]
    assert all(b == {'desired_state': 'signed'} for (_m, _p, b) in fake.log[1:])
    assert ca.requests == 4
    # Known now: a second batch on the same client does not try the bulk endpoint again.
    fake.requests['d.example.com'] = status('d.example.com')
    assert ca.sign(['d.example.com'])['done'] == ['d.example.com']
    assert ca.requests == 5
    assert fake.connections == 1


def test_bulk_signing_errors_get_the_cas_reason(fake_ca):
    fake = fake_ca([status('a.example.com'), status('b.example.com')],
                   refuse={'b.example.com': "CSR 'b.example.com' contains subject alternative names (DNS:puppet), which are disallowed."})
    ca = PuppetCA(URL)
    result = ca.sign(['a.example.com', 'b.example.com', 'gone.example.com'])
    assert result['done'] == ['a.example.com']
    assert set(result['failed']) == {'b.example.com', 'gone.example.com'}
    assert result['failed']['b.example.com'].startswith('HTTP 409 Conflict: ')
    assert 'which are disallowed' in result['failed']['b.example.com']
    assert 'no-csr' in result['failed']['gone.example.com']
    # One bulk request, then one PUT for the refused name only.
    assert [(m, p) for (m, p, _b) in fake.log] == [
        ('POST', '/puppet-ca/v1/sign'), ('PUT', '/puppet-ca/v1/certificate_status/b.example.com')]


def test_bulk_sign_server_error_fails_every_name(fake_ca):
    fake = fake_ca([status('a.example.com')])

    def handle(method, url, body):
        fake.log.append((method, url, None))
        return 500, b'Error while signing: disk full', 'text/plain'
    fake.handle = handle
    result = PuppetCA(URL).sign(['a.example.com'])
    assert 'HTTP 500' in result['failed']['a.example.com'] and 'disk full' in result['failed']['a.example.com']


def test_forbidden_stops_the_batch(fake_ca):
    fake = fake_ca([status(n) for n in ('a', 'b', 'c')], bulk_sign=False)
    original = fake.handle

    def handle(method, url, body):
        if method == 'PUT':
            fake.log.append((method, url, None))
            return 403, b'Forbidden request: /puppet-ca/v1/certificate_status/a (method :put).', 'text/plain'
        return original(method, url, body)
    fake.handle = handle
    ca = PuppetCA(URL)
    result = ca.sign(['a', 'b', 'c'])
    assert result['done'] == []
    assert 'HTTP 403' in result['failed']['a']
    assert result['failed']['b'].startswith('not attempted: the CA refused a with HTTP 403')
    assert ca.requests == 2  # the bulk probe and the first PUT


def test_revoke_is_one_put_each_with_reasons(fake_ca):
    fake = fake_ca([status('s.example.com', 'signed'), status('q.example.com')])
    ca = PuppetCA(URL)
    result = ca.revoke(['s.example.com', 'q.example.com'])
    assert result['done'] == ['s.example.com']
    assert 'HTTP 409' in result['failed']['q.example.com']
    assert 'without a signed certificate' in result['failed']['q.example.com']
    assert fake.certs['s.example.com']['state'] == 'revoked'


def test_clean_uses_the_bulk_endpoint(fake_ca):
    fake = fake_ca([status('s.example.com', 'signed'), status('r.example.com', 'revoked')])
    ca = PuppetCA(URL)
    assert ca.clean(['s.example.com', 'r.example.com'], revoked=['r.example.com'])['done'] == ['s.example.com', 'r.example.com']
    assert [(m, p) for (m, p, _b) in fake.log] == [('PUT', '/puppet-ca/v1/clean')]
    assert fake.certs == {}


def test_clean_falls_back_to_revoke_then_delete(fake_ca):
    fake = fake_ca([status('s.example.com', 'signed'), status('r.example.com', 'revoked')], bulk_clean=False)
    ca = PuppetCA(URL)
    assert ca.clean(['s.example.com', 'r.example.com'], revoked=['r.example.com'])['done'] == ['s.example.com', 'r.example.com']
    assert [(m, p) for (m, p, _b) in fake.log] == [
        ('PUT', '/puppet-ca/v1/clean'),
        ('PUT', '/puppet-ca/v1/certificate_status/s.example.com'),
        ('DELETE', '/puppet-ca/v1/certificate_status/s.example.com'),
        # Already revoked: deleted only.
        ('DELETE', '/puppet-ca/v1/certificate_status/r.example.com'),
    ]
    assert fake.log[1][2] == {'desired_state': 'revoked'}
    assert fake.certs == {}
    assert ca.bulk_clean_supported is False


# sign() and clean() share _bulk_or_each: the same refusal, memory and failure for both endpoints.
BULK = {
    'sign': ('POST', '/sign', 'bulk_sign_supported', 'bulk signing', 'PUT', 'requested'),
    'clean': ('PUT', '/clean', 'bulk_clean_supported', 'bulk clean', 'DELETE', 'revoked'),
}


def _bulk_answering(fake_ca, operation, code, text):
    """A client, and a CA holding a.example.com and b.example.com whose bulk endpoint answers code."""
    path, state = BULK[operation][1], BULK[operation][5]
    fake = fake_ca([status(n, state) for n in ('a.example.com', 'b.example.com')])
    original = fake.handle

    def handle(method, url, body):
        if url.endswith(path):
            fake.log.append((method, url, body))
            return code, text, 'text/plain'
        return original(method, url, body)
    fake.handle = handle
    return PuppetCA(URL), fake


@pytest.mark.parametrize('operation', sorted(BULK))
def test_bulk_refused_with_405_falls_back_once_per_client(fake_ca, operation):
    method, path, supported, _what, last, _state = BULK[operation]
    ca, fake = _bulk_answering(fake_ca, operation, 405, b'Method Not Allowed')
    kwargs = {'revoked': ['a.example.com', 'b.example.com']} if operation == 'clean' else {}
    assert getattr(ca, operation)(['a.example.com'], **kwargs) == {'done': ['a.example.com'], 'failed': {}}
    assert getattr(ca, supported) is False
    assert [(m, p) for (m, p, _b) in fake.log] == [
        (method, '/puppet-ca/v1' + path), (last, '/puppet-ca/v1/certificate_status/a.example.com')]
    # The next batch on this client goes straight to one request a name.
    assert getattr(ca, operation)(['b.example.com'], **kwargs)['done'] == ['b.example.com']
    assert [(m, p) for (m, p, _b) in fake.log[2:]] == [(last, '/puppet-ca/v1/certificate_status/b.example.com')]


@pytest.mark.parametrize('operation', sorted(BULK))
def test_bulk_server_error_fails_every_name_and_falls_back_to_nothing(fake_ca, operation):
    method, path, supported, what, _last, _state = BULK[operation]
    ca, fake = _bulk_answering(fake_ca, operation, 500, b'disk full')
    result = getattr(ca, operation)(['a.example.com', 'b.example.com'])
    assert result['done'] == []
    assert set(result['failed']) == {'a.example.com', 'b.example.com'}
    assert result['failed']['a.example.com'].startswith('%s (%s /puppet-ca/v1%s) failed: HTTP 500' % (what, method, path))
    # Not known to be missing: the next batch tries the bulk endpoint again.
    assert getattr(ca, supported) is None
    assert len(fake.log) == 1
    assert getattr(ca, operation)([]) == {'done': [], 'failed': {}} and len(fake.log) == 1


def test_delete_requests(fake_ca):
    fake = fake_ca([status('q.example.com')])
    ca = PuppetCA(URL)
    assert ca.delete(['q.example.com', 'gone.example.com'])['done'] == ['q.example.com', 'gone.example.com']
    assert fake.requests == {}


def test_names_are_quoted_in_paths(fake_ca):
    fake = fake_ca([status('a?b.example.com', 'signed')])
    PuppetCA(URL).revoke(['a?b.example.com'])
    assert fake.log[0][1] == '/puppet-ca/v1/certificate_status/a%3Fb.example.com'
    assert fake.certs['a?b.example.com']['state'] == 'revoked'


def test_one_connection_and_reconnect_once_when_the_server_closed_it(fake_ca):
    fake = fake_ca([status(n, 'signed') for n in ('a', 'b')])
    ca = PuppetCA(URL)
    ca.statuses()
    fake.failures.append(http.client.RemoteDisconnected('Remote end closed connection without response'))
    assert ca.revoke(['a', 'b'])['done'] == ['a', 'b']
    # statuses, the lost PUT, its retry, the second PUT; a new connection after the loss only.
    assert ca.requests == 4
    assert fake.connections == 2


def test_post_is_not_resent(fake_ca):
    fake = fake_ca([status('a')])
    fake.failures.append(http.client.RemoteDisconnected('closed'))
    ca = PuppetCA(URL)
    with pytest.raises(PuppetCAError, match='connection was lost'):
        ca.sign(['a'])
    assert ca.requests == 1


def test_connection_errors_are_reported(fake_ca):
    fake = fake_ca()
    fake.failures.append(ConnectionRefusedError(111, 'Connection refused'))
    with pytest.raises(PuppetCAError, match='Connection refused'):
        PuppetCA(URL).statuses()


LOCK_TIMEOUT = (b'clojure.lang.ExceptionInfo: throw+: {:msg "Failed to acquire write lock \\"serial-file\\" within 5 seconds", '
                b':kind :lock-acquisition-timeout}')


@pytest.mark.parametrize('bulk', [True, False])
def test_sign_retries_while_another_signing_holds_the_serial_lock(fake_ca, monkeypatch, bulk):
    # Two masters signed at once: puppetserver answers 500 lock-acquisition-timeout to the
    # second when the first holds the serial file's lock over 5 s (seen on a busy lab CA).
    # Nothing was signed then, so the request is sent again after a pause.
    monkeypatch.setattr('time.sleep', lambda seconds: None)
    fake = fake_ca([status('a.example.com')], bulk_sign=bulk)
    original = fake.handle
    busy = {'left': 2}

    def handle(method, url, body):
        if method in ('POST', 'PUT') and busy['left']:
            busy['left'] -= 1
            fake.log.append((method, url, None))
            return 500, LOCK_TIMEOUT, 'text/plain'
        return original(method, url, body)
    fake.handle = handle
    result = PuppetCA(URL).sign(['a.example.com'])
    assert result == {'done': ['a.example.com'], 'failed': {}}


def test_sign_gives_up_on_a_lock_that_never_frees(fake_ca, monkeypatch):
    monkeypatch.setattr('time.sleep', lambda seconds: None)
    fake = fake_ca([status('a.example.com')])

    def handle(method, url, body):
        fake.log.append((method, url, None))
        return 500, LOCK_TIMEOUT, 'text/plain'
    fake.handle = handle
    result = PuppetCA(URL).sign(['a.example.com'])
    assert 'lock-acquisition-timeout' in result['failed']['a.example.com']
    assert len(fake.log) == 6
