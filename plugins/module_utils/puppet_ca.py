# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Client for puppetserver's CA HTTP API (v1), and the pure planning the modules share.

Endpoints used, all under the API root (``https://<ca>:8140/puppet-ca/v1``):

- ``GET certificate_statuses/any_key`` once a run, to read every request and certificate.
- ``POST sign`` with ``{"certnames": [...]}``: bulk signing, puppetserver 8.4.0 and later.
  Older servers answer 403 (auth.conf's "deny all" rule: no rule names the path) or 404
  (a rule allows it, no route exists): the client then signs with one
  ``PUT certificate_status/<name>`` per name, on the same connection.
- ``PUT certificate_status/<name>`` with ``{"desired_state": "signed"|"revoked"}``.
- ``PUT clean`` with ``{"certnames": [...]}``: revokes then deletes certificates in bulk
  (puppetserver 5.3.15 and later; 7.9 and 8.7 have it); the fallback is ``PUT ... revoked`` then ``DELETE``.
- ``DELETE certificate_status/<name>``: deletes a certificate request (and certificate).

``plan()`` decides, without any I/O, what a run must do; ``PuppetCA`` does the I/O over one
persistent HTTPS connection and counts its requests.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import time

from http import client as http_client
from urllib.parse import quote, urlsplit

DEFAULT_SSLDIR = '/var/lib/puppet/ssl'
DEFAULT_PORT = 8140
API_PATH = '/puppet-ca/v1'

STATES = ('signed', 'revoked', 'absent')

# Authorization extensions that give a certificate administrative rights on the CA.
_ADMIN_EXTENSIONS = ('pp_cli_auth', '1.3.6.1.4.1.34380.1.3.39')

# How much of a CA's answer goes into a message.
_REASON_MAX = 2000

# puppetserver's answer when a request waited over 5 s for a lock another request held.
LOCK_TIMEOUT_MARK = b'lock-acquisition-timeout'
# The pauses before each new attempt (seconds): at most 15 s more than the CA's own waits.
LOCK_RETRY_PAUSES = (1, 2, 3, 4, 5)


class PuppetCAError(Exception):
    """A request to the CA failed as a whole (connection, TLS, unexpected answer)."""

    def __init__(self, msg, status=None, body=None):
        super(PuppetCAError, self).__init__(msg)
        self.msg = msg
        self.status = status
        self.body = body


class Response:
    """An HTTP answer, read in full so that the connection can carry the next request."""

    def __init__(self, status, reason, body, content_type=''):
        self.status = status
        self.reason = reason
        self.body = body
        self.content_type = content_type or ''

    @property
    def text(self):
        return self.body.decode('utf-8', 'replace') if isinstance(self.body, bytes) else (self.body or '')

    def json(self):
        return json.loads(self.text)

    def describe(self):
        """The CA's reason: status code and body, as a message shows it."""
        text = ' '.join(self.text.split())
        if len(text) > _REASON_MAX:
            text = text[:_REASON_MAX] + '...'
        status = ('HTTP %s %s' % (self.status, self.reason or '')).rstrip()
        return '%s: %s' % (status, text or '(empty body)')


# ---------------------------------------------------------------------------
# Connection defaults

def default_host_certname():
    """The certname Puppet gives a host that sets none: its fully qualified name, lower case."""
    return socket.getfqdn().lower()


def default_connection(host_certname=None, ssldir=None):
    """The CA URL and TLS files of a host whose own certificate administers the CA."""
    certname = host_certname or default_host_certname()
    ssldir = (ssldir or DEFAULT_SSLDIR).rstrip('/')
    return {
        'ca_url': 'https://%s:%d%s' % (certname, DEFAULT_PORT, API_PATH),
        'client_cert': '%s/certs/%s.pem' % (ssldir, certname),
        'client_key': '%s/private_keys/%s.pem' % (ssldir, certname),
        'ca_cert': '%s/certs/ca.pem' % ssldir,
    }


def connection_argument_spec():
    """The options every module of the collection uses to reach the CA."""
    return dict(
        host_certname=dict(type='str'),
        ssldir=dict(type='path', default=DEFAULT_SSLDIR),
        ca_url=dict(type='str'),
        client_cert=dict(type='path'),
        client_key=dict(type='path', no_log=False),
        ca_cert=dict(type='path'),
        timeout=dict(type='int', default=60),
    )


def connect(params):
    """A PuppetCA from module parameters (see connection_argument_spec) and their defaults."""
    defaults = default_connection(params.get('host_certname'), params.get('ssldir'))
    return PuppetCA(
        params.get('ca_url') or defaults['ca_url'],
        client_cert=params.get('client_cert') or defaults['client_cert'],
        client_key=params.get('client_key') or defaults['client_key'],
        ca_cert=params.get('ca_cert') or defaults['ca_cert'],
        timeout=params.get('timeout') or 60,
    )


# ---------------------------------------------------------------------------
# Pure helpers

def validate_certname(name):
    """Why a name can't be a Puppet certname, or None."""
    if not isinstance(name, str) or not name.strip():
        return 'an empty certificate name'
    if name != name.strip():
        return 'certificate name %r has leading or trailing blanks' % name
    if any(ord(c) < 0x21 or ord(c) > 0x7e for c in name):
        return 'certificate name %r has blanks, control or non-ASCII characters' % name
    if '/' in name or name in ('.', '..'):
        return 'certificate name %r is not a valid file name' % name
    if name != name.lower():
        return 'certificate name %r has upper case letters, which Puppet refuses in certnames' % name
    return None


def normalize_alt_name(value):
    """One alternative name as compared: DNS names bare and lower case, IP addresses as ``IP:<addr>``."""
    value = str(value).strip()
    lower = value.lower()
    if lower.startswith('dns:'):
        return value[4:].strip().lower()
    if lower.startswith('ip:'):
        address = value[3:].strip()
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            pass
        return 'IP:' + address
    return lower


def alt_names(status, certname):
    """The alternative names a status carries besides its certname, normalised and sorted."""
    raw = status.get('subject_alt_names')
    if not isinstance(raw, list):
        raw = status.get('dns_alt_names') or []
    names = set(normalize_alt_name(n) for n in raw)
    names.discard(certname.lower())
    return sorted(names)


def expected_names(expected, certname):
    """The alternative names expected for certname, normalised, the certname itself left out."""
    names = set(normalize_alt_name(n) for n in expected or [])
    names.discard(certname.lower())
    return sorted(names)


def raw_alt_names(status):
    """The alternative names as the CA lists them (``DNS:``/``IP:`` prefixed)."""
    if not status:
        return []
    raw = status.get('subject_alt_names')
    if not isinstance(raw, list):
        raw = status.get('dns_alt_names') or []
    return list(raw)


def sha256(status):
    """The SHA256 fingerprint of a status, or None."""
    if not status:
        return None
    fingerprints = status.get('fingerprints')
    if isinstance(fingerprints, dict) and fingerprints.get('SHA256'):
        return fingerprints['SHA256']
    return status.get('fingerprint')


def index_statuses(statuses):
    """Map each name to its certificate status and its request status.

    puppetserver lists requests and certificates separately, so a name can appear twice
    (a certificate and a new request): both are kept.
    """
    index = {}
    for status in statuses or []:
        if not isinstance(status, dict) or not isinstance(status.get('name'), str):
            continue
        slot = index.setdefault(status['name'], {'cert': None, 'request': None})
        if status.get('state') == 'requested':
            slot['request'] = status
        else:
            slot['cert'] = status
    return index


def current_state(slot):
    """requested, signed, revoked or absent."""
    if slot and slot['cert']:
        return slot['cert'].get('state') or 'signed'
    if slot and slot['request']:
        return 'requested'
    return 'absent'


def unique(names):
    """Names in input order, each once."""
    seen = set()
    out = []
    for name in names or []:
        if name in seen:
            continue
        seen.add(name)
        out.append(name)
    return out


def _fmt(names):
    return '[%s]' % ', '.join(names) if names else '[] (none)'


def _has_admin_extension(status):
    extensions = status.get('authorization_extensions') or {}
    return any(key in extensions for key in _ADMIN_EXTENSIONS)


def plan(current_statuses, names, state='signed', allow_dns_alt_names=False, expected_alt_names=None, require_request=True):
    """Decide what a run must do, without any I/O.

    current_statuses: the list ``GET certificate_statuses/any_key`` returned.
    names: certificate names, in the order the results keep (duplicates dropped).
    state: signed, revoked or absent.
    allow_dns_alt_names: sign requests carrying alternative names besides the certname.
    expected_alt_names: None, or the exact alternative names every request must carry (the
      certname itself ignored); it accepts those names whatever allow_dns_alt_names says.
    require_request: for state=signed, a name with neither request nor certificate is an
      error; when false it is left alone and listed in ``missing``.

    Returns a dict:
      items: one dict per name, in input order: name, before {state, fingerprint},
        after {state, fingerprint}, action (None, sign, revoke, clean, delete or clean+delete),
        request_fingerprint, dns_alt_names.
      sign, revoke, clean, delete: names for each CA operation (clean: certificates to revoke
        and delete; delete: requests to delete); clean_revoked: names in clean whose
        certificate is already revoked.
      errors: [{name, msg}]: refusals; the caller must change nothing when there is any.
      warnings: messages that refuse nothing.
      missing: names skipped because require_request is false.
    """
    if state not in STATES:
        raise ValueError('state must be one of %s, not %r' % (', '.join(STATES), state))
    index = index_statuses(current_statuses)
    result = {
        'items': [], 'sign': [], 'revoke': [], 'clean': [], 'clean_revoked': [], 'delete': [],
        'errors': [], 'warnings': [], 'missing': [],
    }

    def refuse(name, msg):
        result['errors'].append({'name': name, 'msg': '%s: %s' % (name, msg)})

    for name in unique(names):
        invalid = validate_certname(name)
        slot = index.get(name) if not invalid else None
        before_state = current_state(slot)
        cert = slot['cert'] if slot else None
        request = slot['request'] if slot else None
        shown = cert or request
        before = {'state': before_state, 'fingerprint': sha256(shown)}
        item = {
            'name': name,
            'before': before,
            'after': dict(before),
            'action': None,
            'request_fingerprint': sha256(request),
            'dns_alt_names': raw_alt_names(shown),
        }
        result['items'].append(item)
        if invalid:
            result['errors'].append({'name': name, 'msg': invalid})
            continue

        if state == 'signed':
            if before_state == 'signed':
                if expected_alt_names is not None and alt_names(cert, name) != expected_names(expected_alt_names, name):
                    result['warnings'].append(
                        '%s: already signed with alternative names %s, expected %s; left as it is (revoke and clean it to re-enrol)'
                        % (name, _fmt(alt_names(cert, name)), _fmt(expected_names(expected_alt_names, name))))
                continue
            if before_state == 'revoked':
                refuse(name, 'the CA holds a revoked certificate for it, which cannot be signed again; clean it (state=absent, '
                             'or puppetserver ca clean --certname %s) and have the host submit a new request' % name)
                continue
            if before_state == 'absent':
                if require_request:
                    refuse(name, 'no certificate request reached the CA (nothing to sign)')
                else:
                    result['missing'].append(name)
                continue
            # requested
            requested = alt_names(request, name)
            if _has_admin_extension(request):
                refuse(name, 'the request carries the pp_cli_auth extension, which would let its holder administer the CA: not signed')
                continue
            if expected_alt_names is not None:
                expected = expected_names(expected_alt_names, name)
                if requested != expected:
                    refuse(name, 'the request asks for alternative names %s, expected %s: not signed' % (_fmt(requested), _fmt(expected)))
                    continue
            elif requested and not allow_dns_alt_names:
                refuse(name, 'the request asks for alternative names %s and allow_dns_alt_names is false '
                             '(list the expected names in dns_alt_names to accept exactly those): not signed' % _fmt(requested))
                continue
            item['action'] = 'sign'
            item['after'] = {'state': 'signed', 'fingerprint': None}
            result['sign'].append(name)

        elif state == 'revoked':
            if before_state == 'signed':
                item['action'] = 'revoke'
                item['after'] = {'state': 'revoked', 'fingerprint': before['fingerprint']}
                result['revoke'].append(name)
            elif before_state == 'requested':
                refuse(name, 'only a certificate request exists, and a request cannot be revoked; '
                             'use state=absent to delete it')
            # revoked or absent: nothing to do

        else:  # absent
            actions = []
            if cert:
                actions.append('clean')
                result['clean'].append(name)
                if before_state == 'revoked':
                    result['clean_revoked'].append(name)
            if request:
                actions.append('delete')
                result['delete'].append(name)
            if actions:
                item['action'] = '+'.join(actions)
                item['after'] = {'state': 'absent', 'fingerprint': None}

    return result


# ---------------------------------------------------------------------------
# HTTP client

class PuppetCA:
    """puppetserver's CA API over one keep-alive HTTPS connection.

    ``requests`` counts the HTTP requests sent. Write methods return a dict
    ``{'done': [names], 'failed': {name: reason}}`` and never raise for a refusal of the CA:
    the reason carries its status code and body.
    """

    # Per-name answers after which the rest of a batch is not attempted: the CA refuses
    # this client, not one name.
    _FORBIDDEN = (401, 403)

    def __init__(self, url, client_cert=None, client_key=None, ca_cert=None, timeout=30, context=None):
        parts = urlsplit(url)
        if parts.scheme != 'https':
            raise PuppetCAError('ca_url must be an https:// URL, not %r' % url)
        if not parts.hostname:
            raise PuppetCAError('ca_url %r names no host' % url)
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORT
        self.prefix = parts.path.rstrip('/') or API_PATH
        self.client_cert = client_cert
        self.client_key = client_key
        self.ca_cert = ca_cert
        self.timeout = timeout
        self._context = context
        self._conn = None
        self.requests = 0
        # None: not tried yet; True/False once the server answered.
        self.bulk_sign_supported = None
        self.bulk_clean_supported = None

    # -- connection ---------------------------------------------------------

    def _make_context(self):
        """TLS context: the CA's certificate as the only trust anchor, the host's certificate as client."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_cert)
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if self.client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def _connection(self):
        if self._conn is None:
            if self._context is None:
                try:
                    self._context = self._make_context()
                except (OSError, ssl.SSLError) as e:
                    raise PuppetCAError('cannot load the TLS files (client_cert %s, client_key %s, ca_cert %s): %s'
                                        % (self.client_cert, self.client_key, self.ca_cert, e))
            self._conn = http_client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._context)
        return self._conn

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def request(self, method, path, payload=None):
        """Send one request on the shared connection and read its whole answer.

        An idempotent request (GET, PUT, DELETE) whose connection the server had closed
        is sent once more on a new connection; a POST is not. Any request the CA refused
        because its serial or inventory lock stayed taken is sent again after a pause.
        """
        url = self.prefix + path
        headers = {'Accept': 'application/json'}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode('utf-8')
            headers['Content-Type'] = 'application/json'
        attempts = 1 if method == 'POST' else 2
        attempt = lock_waits = 0
        while attempt < attempts:
            conn = self._connection()
            self.requests += 1
            try:
                conn.request(method, url, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http_client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                attempt += 1
                if attempt < attempts:
                    continue
                raise PuppetCAError('%s %s on %s:%s: the connection was lost: %s' % (method, url, self.host, self.port, e))
            except (ssl.SSLError, ssl.CertificateError, socket.timeout, OSError, http_client.HTTPException) as e:
                self.close()
                raise PuppetCAError('%s %s on %s:%s failed: %s' % (method, url, self.host, self.port, e))
            if resp.status == 500 and LOCK_TIMEOUT_MARK in data and lock_waits < len(LOCK_RETRY_PAUSES):
                # Another signing or revocation held the CA's serial (or inventory) lock
                # longer than puppetserver waits for it (5 s): nothing was written, and
                # the same request is sent again once the holder is done.
                time.sleep(LOCK_RETRY_PAUSES[lock_waits])
                lock_waits += 1
                continue
            return Response(resp.status, resp.reason, data, resp.getheader('Content-Type', ''))
        raise PuppetCAError('%s %s: no answer' % (method, url))  # pragma: no cover

    @staticmethod
    def _status_path(name):
        return '/certificate_status/' + quote(name, safe='')

    # -- reading ------------------------------------------------------------

    def statuses(self, state=None):
        """Every request and certificate the CA holds: one request."""
        path = '/certificate_statuses/any_key'
        if state:
            path += '?state=' + quote(state, safe='')
        resp = self.request('GET', path)
        if resp.status != 200:
            raise PuppetCAError('GET %s%s: %s' % (self.prefix, path, resp.describe()), resp.status, resp.text)
        try:
            data = resp.json()
        except ValueError as e:
            raise PuppetCAError('GET %s%s: the answer is not JSON (%s): %s' % (self.prefix, path, e, resp.text[:200]))
        if not isinstance(data, list):
            raise PuppetCAError('GET %s%s: expected a list, got %s' % (self.prefix, path, type(data).__name__))
        return data

    # -- writing ------------------------------------------------------------

    @staticmethod
    def _result():
        return {'done': [], 'failed': {}}

    def _each(self, names, action, result):
        """Run action(name) -> reason or None for each name; stop a batch the CA forbids."""
        names = list(names)
        for position, name in enumerate(names):
            outcome = action(name)
            if outcome is None:
                result['done'].append(name)
                continue
            reason, status = outcome
            result['failed'][name] = reason
            if status in self._FORBIDDEN:
                for rest in names[position + 1:]:
                    result['failed'][rest] = 'not attempted: the CA refused %s with %s' % (name, reason)
                break
        return result

    def _put_state(self, name, desired_state, accept=(200, 204)):
        resp = self.request('PUT', self._status_path(name), {'desired_state': desired_state})
        if resp.status in accept:
            return None
        return resp.describe(), resp.status

    def _delete(self, name):
        resp = self.request('DELETE', self._status_path(name))
        # 404: already gone, which is what was asked.
        if resp.status in (200, 204, 404):
            return None
        return resp.describe(), resp.status

    @staticmethod
    def _fail_all(names, reason, result):
        for name in names:
            result['failed'][name] = reason
        return result

    def _bulk_or_each(self, names, supported, method, path, what, read_answer, one):
        """One bulk request for all of names where the server has the endpoint, else one(name) each.

        supported names the attribute that remembers whether it has (None: not tried yet), so a
        later batch on the same client goes straight to one request a name. read_answer(names,
        resp, result) reads a 200; any answer but 200 or a refusal fails every name with it.
        """
        result = self._result()
        names = list(names)
        if not names:
            return result
        if getattr(self, supported) is not False:
            resp = self.request(method, path, {'certnames': names})
            if resp.status in (403, 404, 405):
                # No such endpoint on this server (an older puppetserver) or no auth.conf rule for it.
                setattr(self, supported, False)
            elif resp.status == 200:
                setattr(self, supported, True)
                return read_answer(names, resp, result)
            else:
                reason = '%s (%s %s%s) failed: %s' % (what, method, self.prefix, path, resp.describe())
                return self._fail_all(names, reason, result)
        return self._each(names, one, result)

    def sign(self, names):
        """Sign the requests of names: one POST when the server has bulk signing (8.4.0+), else a PUT each."""
        return self._bulk_or_each(names, 'bulk_sign_supported', 'POST', '/sign', 'bulk signing',
                                  self._bulk_sign_result, lambda n: self._put_state(n, 'signed'))

    def _bulk_sign_result(self, names, resp, result):
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            reason = 'bulk signing (POST %s/sign) answered something else than the expected JSON object: %s' % (self.prefix, resp.describe())
            return self._fail_all(names, reason, result)
        signed = set(data.get('signed') or [])
        no_csr = set(data.get('no-csr') or [])
        errors = set(data.get('signing-errors') or [])
        retry = []
        for name in names:
            if name in signed:
                result['done'].append(name)
            elif name in no_csr:
                result['failed'][name] = 'the CA found no certificate request to sign (POST %s/sign listed it in no-csr)' % self.prefix
            elif name in errors:
                retry.append(name)
            else:
                result['failed'][name] = 'the CA did not report it as signed (POST %s/sign answered %s)' % (self.prefix, resp.text[:500])
        # The bulk answer gives no reason: a PUT per refused name gets the CA's own.
        return self._each(retry, lambda n: self._put_state(n, 'signed'), result)

    def revoke(self, names):
        """Revoke the certificates of names: a PUT each (the CA has no bulk revocation that keeps them)."""
        return self._each(names, lambda n: self._put_state(n, 'revoked'), self._result())

    def clean(self, names, revoked=()):
        """Revoke (unless in revoked) and delete the certificates of names.

        One ``PUT clean`` when the server has it, else ``PUT ... revoked`` then ``DELETE``
        per name, as ``puppetserver ca clean`` does.
        """
        already_revoked = set(revoked)

        def clean_one(name):
            if name not in already_revoked:
                # 409: no signed certificate (any more); 404: nothing at all. The DELETE decides.
                outcome = self._put_state(name, 'revoked', accept=(200, 204, 404, 409))
                if outcome is not None:
                    return outcome
            return self._delete(name)

        def cleaned(all_names, _resp, result):
            # Names the CA says do not exist are gone already, which is what was asked.
            result['done'].extend(all_names)
            return result

        return self._bulk_or_each(names, 'bulk_clean_supported', 'PUT', '/clean', 'bulk clean', cleaned, clean_one)

    def delete(self, names):
        """Delete the requests (and any certificate) of names: a DELETE each."""
        return self._each(names, self._delete, self._result())
