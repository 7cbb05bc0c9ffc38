# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake puppetserver CA for the plugin tests.

``FakeCA`` answers the requests of ``PuppetCA`` the way puppetserver's CA API does (status
codes, JSON and text bodies), in memory, and records them; ``FakeHTTPSConnection`` stands for
``http.client.HTTPSConnection``. conftest.py's ``fake_ca`` fixture installs them.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qs, unquote, urlsplit


def fingerprint(*parts):
    """A SHA256 fingerprint formatted as puppetserver does (upper case, colon separated)."""
    digest = hashlib.sha256('/'.join(parts).encode()).hexdigest().upper()
    return ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2))


def status(name, state='requested', alt_names=(), ips=(), extensions=None, serial=None):
    """A certificate_status entry as puppetserver returns it."""
    fp = fingerprint(name, state, str(serial))
    dns = ['DNS:%s' % n for n in alt_names]
    entry = {
        'name': name,
        'state': state,
        'fingerprint': fp,
        'fingerprints': {'SHA1': 'AA', 'SHA256': fp, 'SHA512': 'BB', 'default': fp},
        'dns_alt_names': dns,
        'subject_alt_names': ['IP:%s' % ip for ip in ips] + dns,
        'authorization_extensions': dict(extensions or {}),
    }
    if state != 'requested':
        entry.update({'not_before': '2025-01-01T00:00:00UTC', 'not_after': '2030-01-01T00:00:00UTC',
                      'serial_number': serial or 2})
    return entry


class FakeCA:
    """puppetserver's CA v1 API in memory.

    bulk_sign: the server has POST /sign (8.4.0+); when false it answers like 7.9 with
      Debian's auth.conf: 403 from the "deny all" rule.
    bulk_clean: the server has PUT /clean.
    refuse: {name: message}: requests the CA refuses to sign (409 with that message; listed
      in signing-errors by the bulk endpoint).
    """

    def __init__(self, statuses=(), bulk_sign=True, bulk_clean=True, refuse=None, prefix='/puppet-ca/v1'):
        self.requests = {}
        self.certs = {}
        for entry in statuses:
            (self.requests if entry['state'] == 'requested' else self.certs)[entry['name']] = dict(entry)
        self.bulk_sign = bulk_sign
        self.bulk_clean = bulk_clean
        self.refuse = dict(refuse or {})
        self.prefix = prefix
        self.log = []
        self.connections = 0
        self.serial = 100
        # Exceptions to raise instead of answering, consumed in order (connection failures).
        self.failures = []

    # -- helpers ------------------------------------------------------------

    def writes(self):
        return [(m, p) for (m, p, _b) in self.log if m != 'GET']

    def statuses(self):
        return list(self.requests.values()) + list(self.certs.values())

    def _sign(self, name):
        request = self.requests.pop(name)
        self.serial += 1
        cert = dict(request)
        cert.update(state='signed', serial_number=self.serial,
                    not_before='2025-01-01T00:00:00UTC', not_after='2030-01-01T00:00:00UTC')
        cert['fingerprint'] = fingerprint(name, 'signed', str(self.serial))
        cert['fingerprints'] = dict(request['fingerprints'], SHA256=cert['fingerprint'], default=cert['fingerprint'])
        self.certs[name] = cert

    @staticmethod
    def _text(status, text):
        return status, text.encode(), 'text/plain; charset=UTF-8'

    @staticmethod
    def _json(status, data):
        return status, json.dumps(data).encode(), 'application/json'

    # -- the API --------------------------------------------------------------

    def handle(self, method, url, body):
        parts = urlsplit(url)
        path = parts.path
        payload = json.loads(body) if body else None
        self.log.append((method, url, payload))
        if not path.startswith(self.prefix + '/'):
            return self._text(404, 'Not Found')
        path = path[len(self.prefix):]

        if method == 'GET' and path.startswith('/certificate_statuses/'):
            state = parse_qs(parts.query).get('state', [None])[0]
            entries = self.statuses()
            if state:
                entries = [e for e in entries if e['state'] == state]
            return self._json(200, entries)

        if path == '/sign' and method == 'POST':
            if not self.bulk_sign:
                return self._text(403, "Forbidden request: /puppet-ca/v1/sign (method :post). Please see the server logs for details.")
            result = {'signed': [], 'no-csr': [], 'signing-errors': []}
            for name in payload['certnames']:
                if name not in self.requests:
                    result['no-csr'].append(name)
                elif name in self.refuse:
                    result['signing-errors'].append(name)
                else:
                    self._sign(name)
                    result['signed'].append(name)
            return self._json(200, result)

        if path == '/clean' and method == 'PUT':
            if not self.bulk_clean:
                return self._text(404, 'Not Found')
            missing = [n for n in payload['certnames'] if n not in self.certs]
            for name in payload['certnames']:
                self.certs.pop(name, None)
            if missing:
                return self._text(200, 'The following certs do not exist and cannot be revoked: %s' % missing)
            return self._text(200, 'Successfully cleaned all certs.')

        if path.startswith('/certificate_status/'):
            name = unquote(path[len('/certificate_status/'):])
            if method == 'PUT':
                desired = payload.get('desired_state')
                if desired == 'signed':
                    if name not in self.requests:
                        if name not in self.certs:
                            return self._text(404, 'Invalid certificate subject.')
                        return self._text(409, 'Cannot sign certificate for host %s without a certificate request' % name)
                    if name in self.refuse:
                        return self._text(409, self.refuse[name])
                    self._sign(name)
                    return 204, b'', 'text/plain'
                if desired == 'revoked':
                    if name not in self.certs:
                        if name not in self.requests:
                            return self._text(404, 'Invalid certificate subject.')
                        return self._text(409, 'Cannot revoke certificate for host %s without a signed certificate' % name)
                    self.certs[name]['state'] = 'revoked'
                    return 204, b'', 'text/plain'
                return self._text(400, "State %s invalid; Must specify desired state of 'signed' or 'revoked' for host %s." % (desired, name))
            if method == 'DELETE':
                if name not in self.requests and name not in self.certs:
                    return self._text(404, 'Resource not found.')
                self.requests.pop(name, None)
                self.certs.pop(name, None)
                return 204, b'', 'text/plain'
            if method == 'GET':
                entry = self.certs.get(name) or self.requests.get(name)
                return self._json(200, entry) if entry else self._text(404, 'Not Found')
        return self._text(404, 'Not Found')


class FakeResponse:
    def __init__(self, status, body, content_type):
        self.status = status
        self.reason = {200: 'OK', 204: 'No Content', 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found',
                       409: 'Conflict', 500: 'Server Error'}.get(status, '')
        self._body = body
        self._content_type = content_type

    def read(self):
        return self._body

    def getheader(self, name, default=None):
        return self._content_type if name.lower() == 'content-type' else default


class FakeHTTPSConnection:
    """Stands for http.client.HTTPSConnection, talking to a FakeCA."""

    def __init__(self, ca, host, port=None, timeout=None, context=None):
        self.ca = ca
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context
        self.closed = False
        self._pending = None
        ca.connections += 1

    def request(self, method, url, body=None, headers=None):
        if self.ca.failures:
            raise self.ca.failures.pop(0)
        self._pending = (method, url, body)

    def getresponse(self):
        method, url, body = self._pending
        self._pending = None
        return FakeResponse(*self.ca.handle(method, url, body))

    def close(self):
        self.closed = True
