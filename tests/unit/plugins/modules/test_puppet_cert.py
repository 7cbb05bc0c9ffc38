# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The puppet_cert and puppet_cert_info modules, run in-process against a fake CA.

Each run goes through AnsibleModule (arguments, check mode, diff, exit/fail JSON); the fake
CA (puppet_ca_fakes.py) replaces http.client.HTTPSConnection and records every request.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest

from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils.testing import patch_module_args

from ansible_collections.marionette.puppet_cluster.plugins.modules import puppet_cert, puppet_cert_info
from puppet_ca_fakes import status

CA_ARGS = {
    'ca_url': 'https://ca.example.com:8140/puppet-ca/v1',
    'client_cert': '/nonexistent/cert.pem',
    'client_key': '/nonexistent/key.pem',
    'ca_cert': '/nonexistent/ca.pem',
}


def run(module, capsys, **args):
    """Run a module's main() with args; returns (failed, result)."""
    module_args = dict(CA_ARGS)
    module_args.update(args)
    # As on a target host: once any test has imported Ansible's controller code (a filter
    # plugin's test does), module warnings would go to the controller's display instead
    # of the module's result.
    with patch_module_args(module_args), mock.patch.object(module_utils_internal, 'is_controller', False):
        with pytest.raises(SystemExit) as exit_info:
            module.main()
    result = json.loads(capsys.readouterr().out)
    return exit_info.value.code != 0, result


# ---------------------------------------------------------------------------
# Signing

def test_signs_requests_in_one_bulk_request_and_is_idempotent(fake_ca, capsys):
    fake = fake_ca([status('b.example.com'), status('a.example.com'), status('s.example.com', 'signed')])
    failed, result = run(puppet_cert, capsys, name=['b.example.com', 's.example.com', 'a.example.com'])
    assert not failed, result
    assert result['changed'] is True
    assert result['changed_names'] == ['b.example.com', 'a.example.com']
    assert [c['name'] for c in result['certificates']] == ['b.example.com', 's.example.com', 'a.example.com']
    assert [c['state'] for c in result['certificates']] == ['signed'] * 3
    assert [c['changed'] for c in result['certificates']] == [True, False, True]
    assert result['certificates'][0]['fingerprint'] is None  # signed during the run
    assert result['certificates'][0]['request_fingerprint'] == status('b.example.com')['fingerprint']
    assert result['certificates'][1]['fingerprint'] == status('s.example.com', 'signed')['fingerprint']
    assert result['ca_requests'] == 2 and result['bulk_sign'] is True
    assert fake.writes() == [('POST', '/puppet-ca/v1/sign')]
    assert fake.log[1][2] == {'certnames': ['b.example.com', 'a.example.com']}

    failed, again = run(puppet_cert, capsys, name=['b.example.com', 's.example.com', 'a.example.com'])
    assert not failed and again['changed'] is False
    assert again['changed_names'] == []
    assert again['ca_requests'] == 1 and again['bulk_sign'] is None
    assert all(c['fingerprint'] for c in again['certificates'])


def test_single_name_string_and_alias(fake_ca, capsys):
    fake_ca([status('a.example.com')])
    failed, result = run(puppet_cert, capsys, certname='a.example.com')
    assert not failed and result['changed_names'] == ['a.example.com']


def test_check_mode_changes_nothing(fake_ca, capsys):
    fake = fake_ca([status('a.example.com'), status('s.example.com', 'signed')])
    failed, result = run(puppet_cert, capsys, name=['a.example.com', 's.example.com'], _ansible_check_mode=True, _ansible_diff=True)
    assert not failed
    assert result['changed'] is True and result['changed_names'] == ['a.example.com']
    assert result['certificates'][0]['state'] == 'signed'
    assert result['ca_requests'] == 1
    assert fake.writes() == []
    assert 'a.example.com' in fake.requests
    assert result['diff']['before'] == {'a.example.com': {'state': 'requested', 'fingerprint': status('a.example.com')['fingerprint']}}
    assert result['diff']['after'] == {'a.example.com': {'state': 'signed', 'fingerprint': None}}


def test_check_mode_revoke_and_absent_change_nothing(fake_ca, capsys):
    fake = fake_ca([status('s.example.com', 'signed'), status('q.example.com')])
    for state, names in (('revoked', ['s.example.com']), ('absent', ['s.example.com', 'q.example.com'])):
        failed, result = run(puppet_cert, capsys, name=names, state=state, _ansible_check_mode=True)
        assert not failed and result['changed'] is True and result['changed_names'] == names
    assert fake.writes() == []


def test_diff_reports_state_and_fingerprint(fake_ca, capsys):
    cert = status('s.example.com', 'signed')
    fake_ca([cert])
    failed, result = run(puppet_cert, capsys, name='s.example.com', state='revoked', _ansible_diff=True)
    assert not failed
    assert result['diff'] == {
        'before': {'s.example.com': {'state': 'signed', 'fingerprint': cert['fingerprint']}},
        'after': {'s.example.com': {'state': 'revoked', 'fingerprint': cert['fingerprint']}},
    }


def test_refusal_fails_before_any_change(fake_ca, capsys):
    fake = fake_ca([status('good.example.com'), status('rogue.example.com', alt_names=['rogue.example.com', 'puppet.example.com'])])
    failed, result = run(puppet_cert, capsys, name=['good.example.com', 'rogue.example.com'], dns_alt_names=[])
    assert failed
    assert result['changed'] is False
    assert 'nothing was changed' in result['msg']
    assert 'rogue.example.com: the request asks for alternative names [puppet.example.com]' in result['msg']
    assert [e['name'] for e in result['errors']] == ['rogue.example.com']
    assert result['certificates'][1]['error'].startswith('rogue.example.com: ')
    assert result['certificates'][0]['changed'] is False
    assert fake.writes() == []
    assert 'good.example.com' in fake.requests
    assert result['ca_requests'] == 1


def test_expected_shared_name_is_signed(fake_ca, capsys):
    fake = fake_ca([status('puppet1.example.com', alt_names=['puppet1.example.com', 'puppet.example.com'])])
    failed, result = run(puppet_cert, capsys, name='puppet1.example.com', dns_alt_names=['puppet.example.com'])
    assert not failed and result['changed'] is True
    assert result['certificates'][0]['dns_alt_names'] == ['DNS:puppet1.example.com', 'DNS:puppet.example.com']
    assert fake.certs['puppet1.example.com']['state'] == 'signed'


def test_alt_names_not_allowed(fake_ca, capsys):
    fake = fake_ca([status('a.example.com', alt_names=['x.example.com'])])
    failed, result = run(puppet_cert, capsys, name='a.example.com')
    assert failed and 'allow_dns_alt_names' in result['msg'] and fake.writes() == []
    failed, result = run(puppet_cert, capsys, name='a.example.com', allow_dns_alt_names=True)
    assert not failed and result['changed'] is True


def test_revoked_asked_signed_fails(fake_ca, capsys):
    fake_ca([status('r.example.com', 'revoked')])
    failed, result = run(puppet_cert, capsys, name='r.example.com')
    assert failed and 'r.example.com: the CA holds a revoked certificate' in result['msg']


def test_missing_request(fake_ca, capsys):
    fake_ca([status('a.example.com')])
    failed, result = run(puppet_cert, capsys, name=['a.example.com', 'late.example.com'])
    assert failed and 'late.example.com: no certificate request reached the CA' in result['msg']
    failed, result = run(puppet_cert, capsys, name=['a.example.com', 'late.example.com'], require_request=False)
    assert not failed
    assert result['missing_names'] == ['late.example.com']
    assert result['changed_names'] == ['a.example.com']
    assert result['certificates'][1] == {
        'name': 'late.example.com', 'state': 'absent', 'fingerprint': None, 'request_fingerprint': None,
        'dns_alt_names': [], 'changed': False}


def test_ca_refusal_is_reported_with_its_reason(fake_ca, capsys):
    reason = "CSR 'b.example.com' contains subject alternative names (DNS:puppet), which are disallowed."
    fake = fake_ca([status('a.example.com'), status('b.example.com')], refuse={'b.example.com': reason})
    failed, result = run(puppet_cert, capsys, name=['a.example.com', 'b.example.com'])
    assert failed
    assert 'b.example.com: HTTP 409 Conflict: ' + reason in result['msg']
    assert result['changed'] is True and result['changed_names'] == ['a.example.com']
    assert result['certificates'][1]['state'] == 'requested'
    assert result['certificates'][1]['error'] == 'b.example.com: HTTP 409 Conflict: ' + reason
    assert result['certificates'][1]['changed'] is False
    assert result['errors'] == [{'name': 'b.example.com', 'msg': 'b.example.com: HTTP 409 Conflict: ' + reason}]
    assert fake.certs['a.example.com']['state'] == 'signed'


def test_unreachable_ca_is_reported(fake_ca, capsys):
    fake = fake_ca()
    fake.failures.append(ConnectionRefusedError(111, 'Connection refused'))
    failed, result = run(puppet_cert, capsys, name='a.example.com')
    assert failed
    assert 'Cannot read the certificate statuses from the CA at https://ca.example.com:8140/puppet-ca/v1' in result['msg']
    assert 'Connection refused' in result['msg']


# ---------------------------------------------------------------------------
# Request counts: constant with bulk signing, one PUT per name without

@pytest.mark.parametrize('count', [10, 1000])
def test_batch_costs_two_requests_with_bulk_sign(fake_ca, capsys, count):
    names = ['agent%04d.example.com' % i for i in range(count)]
    fake = fake_ca([status(n) for n in names])
    failed, result = run(puppet_cert, capsys, name=names)
    assert not failed
    assert result['ca_requests'] == 2
    assert len(result['changed_names']) == count
    assert [c['name'] for c in result['certificates']] == names
    assert fake.connections == 1


def test_batch_falls_back_to_one_put_per_name_without_bulk_sign(fake_ca, capsys):
    names = ['agent%04d.example.com' % i for i in range(1000)]
    fake = fake_ca([status(n) for n in names], bulk_sign=False)
    failed, result = run(puppet_cert, capsys, name=names)
    assert not failed
    assert result['bulk_sign'] is False
    assert result['ca_requests'] == 1 + 1 + 1000
    assert len(fake.certs) == 1000
    # All on one keep-alive connection.
    assert fake.connections == 1


# ---------------------------------------------------------------------------
# Revoking and cleaning

def test_revoke(fake_ca, capsys):
    fake = fake_ca([status('s.example.com', 'signed'), status('r.example.com', 'revoked')])
    failed, result = run(puppet_cert, capsys, name=['s.example.com', 'r.example.com', 'x.example.com'], state='revoked')
    assert not failed
    assert result['changed_names'] == ['s.example.com']
    assert [c['state'] for c in result['certificates']] == ['revoked', 'revoked', 'absent']
    assert fake.writes() == [('PUT', '/puppet-ca/v1/certificate_status/s.example.com')]
    failed, again = run(puppet_cert, capsys, name=['s.example.com', 'r.example.com', 'x.example.com'], state='revoked')
    assert not failed and again['changed'] is False


def test_revoke_a_request_fails(fake_ca, capsys):
    fake = fake_ca([status('q.example.com')])
    failed, result = run(puppet_cert, capsys, name='q.example.com', state='revoked')
    assert failed and 'q.example.com: only a certificate request exists' in result['msg']
    assert fake.writes() == []


@pytest.mark.parametrize('bulk_clean', [True, False])
def test_absent(fake_ca, capsys, bulk_clean):
    fake = fake_ca([status('s.example.com', 'signed'), status('r.example.com', 'revoked'), status('q.example.com')], bulk_clean=bulk_clean)
    names = ['s.example.com', 'r.example.com', 'q.example.com', 'x.example.com']
    failed, result = run(puppet_cert, capsys, name=names, state='absent')
    assert not failed
    assert result['changed_names'] == names[:3]
    assert all(c['state'] == 'absent' for c in result['certificates'])
    assert fake.certs == {} and fake.requests == {}
    if bulk_clean:
        assert result['ca_requests'] == 1 + 1 + 1  # statuses, PUT clean, DELETE of the request
    else:
        # statuses, PUT clean (404), revoke + delete s, delete r, delete q
        assert result['ca_requests'] == 1 + 1 + 2 + 1 + 1
    failed, again = run(puppet_cert, capsys, name=names, state='absent')
    assert not failed and again['changed'] is False and again['ca_requests'] == 1


# ---------------------------------------------------------------------------
# puppet_cert_info

def test_info_filters_with_one_request(fake_ca, capsys):
    fake = fake_ca([status('a.example.com'), status('s.example.com', 'signed'), status('r.example.com', 'revoked')])
    failed, result = run(puppet_cert_info, capsys)
    assert not failed and result['changed'] is False
    assert [c['name'] for c in result['certificates']] == ['a.example.com', 'r.example.com', 's.example.com']
    assert result['ca_requests'] == 1

    failed, result = run(puppet_cert_info, capsys, state='requested')
    assert [c['name'] for c in result['certificates']] == ['a.example.com']
    assert fake.log[-1][1].endswith('?state=requested')

    failed, result = run(puppet_cert_info, capsys, name=['s.example.com', 'zz.example.com', 'a.example.com'], state='signed')
    assert [c['name'] for c in result['certificates']] == ['s.example.com']
    assert result['certificates'][0]['fingerprint'] == status('s.example.com', 'signed')['fingerprint']
    assert result['missing_names'] == ['zz.example.com', 'a.example.com']
    assert result['ca_requests'] == 1
    assert fake.writes() == []


# ---------------------------------------------------------------------------
# Failures while changing

def test_connection_lost_while_signing(fake_ca, capsys):
    import http.client
    fake = fake_ca([status('a.example.com')])
    original = fake.handle

    def handle(method, url, body):
        if method == 'POST':
            raise http.client.RemoteDisconnected('Remote end closed connection without response')
        return original(method, url, body)
    fake.handle = handle
    failed, result = run(puppet_cert, capsys, name='a.example.com')
    assert failed
    assert 'failed while changing certificates' in result['msg'] and 'connection was lost' in result['msg']
    assert result['ca_requests'] == 2


def test_partly_cleaned_name_is_changed_and_reported(fake_ca, capsys):
    fake = fake_ca([status('both.example.com', 'signed'), status('both.example.com')])
    original = fake.handle

    def handle(method, url, body):
        if method == 'DELETE':
            fake.log.append((method, url, None))
            return 500, b'Error deleting the request', 'text/plain'
        return original(method, url, body)
    fake.handle = handle
    failed, result = run(puppet_cert, capsys, name='both.example.com', state='absent')
    assert failed
    assert result['changed'] is True and result['changed_names'] == ['both.example.com']
    assert result['certificates'][0]['error'] == 'both.example.com: HTTP 500 Server Error: Error deleting the request'
    assert 'both.example.com' not in fake.certs and 'both.example.com' in fake.requests


def test_signed_with_other_names_warns(fake_ca, capsys):
    fake = fake_ca([status('s.example.com', 'signed', alt_names=['puppet.example.com'])])
    failed, result = run(puppet_cert, capsys, name='s.example.com', dns_alt_names=[])
    assert not failed and result['changed'] is False
    assert any('s.example.com: already signed with alternative names [puppet.example.com]' in json.dumps(w) for w in result.get('warnings', [])), sorted(result)
    assert fake.writes() == []
