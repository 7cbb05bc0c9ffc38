#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: puppet_cert
short_description: Sign, revoke or clean certificates on a Puppet CA
version_added: 0.2.0
description:
  - Manages certificates on puppetserver's certificate authority through its HTTP API (C(/puppet-ca/v1)),
    with a client certificate the CA's C(auth.conf) lets administer it (one carrying the C(pp_cli_auth)
    extension, such as the CA host's own certificate).
  - Runs on the CA host, or on any host holding such a certificate.
  - Reads the state of every certificate with a single C(certificate_statuses) request per run, whatever
    the number of names, and sends every request of a run on one keep-alive HTTPS connection.
  - Signs in bulk (one C(POST /puppet-ca/v1/sign) for the whole batch) on puppetserver 8.4.0 and later;
    on older servers, such as Debian 12's puppetserver 7.9, the bulk request is refused (HTTP 403 or 404)
    and the module signs with one C(PUT certificate_status/<name>) per name instead.
  - Validates the whole batch before it changes anything. If any name is refused (a request whose
    alternative names are not the expected ones or are not allowed, a revoked certificate asked to be
    signed, a request asked to be revoked, a missing request), the module fails and the CA is left
    untouched, in check mode or not.
  - A failure of the CA itself while changing (the CA refusing a name the module accepted) leaves the
    names done before it changed; the failure names every certificate that was not changed and gives the
    CA's answer (status code and body).
author:
  - marionette developers (@marionette)
options:
  name:
    description:
      - Certificate name, or list of certificate names, to manage.
      - Duplicates are handled once; results keep the order of first appearance.
    type: list
    elements: str
    required: true
    aliases: [certname, names]
  state:
    description:
      - V(signed) signs each request; a name already signed is left alone.
      - V(revoked) revokes each signed certificate; a revoked or unknown name is left alone, a name with
        only a certificate request is an error (a request cannot be revoked; use V(absent) to delete it).
      - V(absent) removes every trace of each name from the CA, as C(puppetserver ca clean) does, plus
        pending requests; a signed certificate is revoked before it is deleted.
    type: str
    choices: [signed, revoked, absent]
    default: signed
  allow_dns_alt_names:
    description:
      - Sign requests that carry subject alternative names other than their certname.
      - When false, such a request is refused unless O(dns_alt_names) lists exactly its names.
      - Only used with O(state=signed).
    type: bool
    default: false
  dns_alt_names:
    description:
      - The exact subject alternative names every request must carry to be signed; a request whose
        names differ is refused. The certname itself is ignored in the comparison.
      - Names are compared without their C(DNS:) prefix and in lower case; write IP addresses as C(IP:<address>).
      - When set (even to an empty list), it takes precedence over O(allow_dns_alt_names); the listed names
        are accepted, any other is refused. This is how a host asking for the cluster's shared name,
        which only the masters may carry, is kept from getting it.
      - An already signed certificate whose names differ is left as it is, with a warning.
      - Only used with O(state=signed).
    type: list
    elements: str
  require_request:
    description:
      - With O(state=signed), a name that has neither a request nor a certificate on the CA is an error
        naming the certificate.
      - When false, such a name is skipped and listed in RV(missing_names).
    type: bool
    default: true
extends_documentation_fragment:
  - marionette.puppet_cluster.puppet_ca
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the CA's state (one request) and reports what would change; sends no request that changes anything.
  diff_mode:
    support: full
    details: The state and SHA256 fingerprint of each name that changes, before and after.
  platform:
    platforms: posix
notes:
  - Only the Python standard library is needed on the host running the module.
  - The CA's own settings still apply after the module's checks; for example puppetserver refuses requests
    with alternative names unless C(allow-subject-alt-names) is true in its C(ca.conf).
  - The SHA256 fingerprint of a certificate signed during the run is not known to the module (the state
    is read once, before signing); RV(certificates[].fingerprint) is then null and the next run reports it.
  - See C(docs/puppet_cert.md) in the collection for the endpoints used per puppetserver version.
seealso:
  - module: marionette.puppet_cluster.puppet_cert_info
  - name: Puppet Server CA API
    description: The certificate_status endpoint of puppetserver's CA.
    link: https://www.puppet.com/docs/puppet/8/server/http_certificate_status
  - name: Bulk certificate sign
    description: The bulk signing endpoint of puppetserver 8.4.0 and later.
    link: https://www.puppet.com/docs/puppet/8/server/http_certificate_sign
'''

EXAMPLES = r'''
- name: Sign an agent's request, which must carry no alternative name
  marionette.puppet_cluster.puppet_cert:
    name: agent1.example.com

- name: Sign the masters' requests, each carrying exactly the cluster's shared name
  marionette.puppet_cluster.puppet_cert:
    name:
      - puppet1.example.com
      - puppet2.example.com
    dns_alt_names: [puppet.example.com]

- name: Sign whatever of a large batch has reached the CA, from the CA host, with its own certificate
  marionette.puppet_cluster.puppet_cert:
    name: "{{ groups['puppet_agents'] }}"
    require_request: false
    host_certname: ca.example.com
  register: signed

- name: Sign through another host's API address and files
  marionette.puppet_cluster.puppet_cert:
    name: agent2.example.com
    ca_url: https://ca.example.com:8140/puppet-ca/v1
    client_cert: /etc/puppet-admin/admin.pem
    client_key: /etc/puppet-admin/admin.key
    ca_cert: /etc/puppet-admin/ca.pem

- name: Revoke a retired master's certificate
  marionette.puppet_cluster.puppet_cert:
    name: puppet3.example.com
    state: revoked

- name: Remove a decommissioned host from the CA (revoke, then delete the certificate and any request)
  marionette.puppet_cluster.puppet_cert:
    certname: old-agent.example.com
    state: absent
'''

RETURN = r'''
certificates:
  description:
    - One entry per name, in the order of O(name), with the state after the run (the predicted state in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Certificate name.
      type: str
      returned: always
      sample: agent1.example.com
    state:
      description: V(requested), V(signed), V(revoked) or V(absent).
      type: str
      returned: always
      sample: signed
    fingerprint:
      description:
        - SHA256 fingerprint of the certificate, or of the request while only a request exists.
        - Null when the name is absent, and for a certificate signed during this run.
      type: str
      returned: always
      sample: "9D:8B:4A:E2:C4:46:D8:65:60:5F:CA:6C:42:74:9A:FF:04:BC:0C:EE:6B:64:CC:5D:14:D1:71:3F:A3:40:38:73"
    request_fingerprint:
      description: SHA256 fingerprint of the pending certificate request the run read, if there was one (the request signed, for a name just signed).
      type: str
      returned: always
      sample: "01:B8:AB:3B:F7:3E:44:30:E1:77:3A:E8:2A:29:B1:90:A1:B1:84:4A:E0:54:C6:D0:3C:3B:D2:F5:4C:17:66:A7"
    dns_alt_names:
      description: Subject alternative names of the certificate or request as the CA lists them (C(DNS:) or C(IP:) prefixed), as read before the run.
      type: list
      elements: str
      returned: always
      sample: ["DNS:puppet.example.com", "DNS:puppet1.example.com"]
    changed:
      description: Whether the run changed (would change, in check mode) this name.
      type: bool
      returned: always
      sample: true
    error:
      description: Why this name was refused or not changed.
      type: str
      returned: when the name failed
      sample: "rogue.example.com: the request asks for alternative names [puppet.example.com], expected [] (none): not signed"
changed_names:
  description: Names the run changed (would change, in check mode), in the order of O(name).
  returned: always
  type: list
  elements: str
  sample: [agent1.example.com]
missing_names:
  description: Names skipped because they have neither request nor certificate and O(require_request) is false.
  returned: always
  type: list
  elements: str
  sample: []
errors:
  description: The refusals and failures, one per certificate, each naming it and giving the reason (the CA's status code and body when the CA refused).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Certificate name.
      type: str
      returned: always
    msg:
      description: The reason.
      type: str
      returned: always
  sample: []
ca_requests:
  description: Number of HTTP requests sent to the CA during the run.
  returned: always
  type: int
  sample: 2
bulk_sign:
  description:
    - Whether the CA accepted bulk signing (C(POST /puppet-ca/v1/sign)); null when the run signed nothing.
  returned: always
  type: bool
  sample: true
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.marionette.puppet_cluster.plugins.module_utils.puppet_ca import (
    PuppetCAError,
    connect,
    connection_argument_spec,
    plan,
)


def argument_spec():
    spec = dict(
        name=dict(type='list', elements='str', required=True, aliases=['certname', 'names']),
        state=dict(type='str', default='signed', choices=['signed', 'revoked', 'absent']),
        allow_dns_alt_names=dict(type='bool', default=False),
        dns_alt_names=dict(type='list', elements='str'),
        require_request=dict(type='bool', default=True),
    )
    spec.update(connection_argument_spec())
    return spec


def execute(ca, decided):
    """Apply the plan; returns the names the CA changed and {name: reason} for those it refused."""
    done = set()
    failed = {}
    for outcome in (
        ca.sign(decided['sign']),
        ca.revoke(decided['revoke']),
        ca.clean(decided['clean'], revoked=decided['clean_revoked']),
        ca.delete(decided['delete']),
    ):
        done.update(outcome['done'])
        failed.update(outcome['failed'])
    return done, failed


def report(decided, failed, errors, done=None, applied=True):
    """The certificates list, changed names and diff from the plan and what the CA did.

    done: the names the CA changed; None in check mode, where every planned change counts.
    applied: false when the batch was refused, so that no name changed.
    """
    reasons = dict((e['name'], e['msg']) for e in errors)
    reasons.update((name, '%s: %s' % (name, reason)) for name, reason in failed.items())
    certificates = []
    changed_names = []
    before = {}
    after = {}
    for item in decided['items']:
        name = item['name']
        changed = applied and item['action'] is not None and (done is None or name in done)
        # A name with an error keeps the state read (one of its operations may have been done).
        final = item['after'] if changed and name not in reasons else item['before']
        entry = {
            'name': name,
            'state': final['state'],
            'fingerprint': final['fingerprint'],
            'request_fingerprint': item['request_fingerprint'],
            'dns_alt_names': item['dns_alt_names'],
            'changed': changed,
        }
        if name in reasons:
            entry['error'] = reasons[name]
        certificates.append(entry)
        if changed:
            changed_names.append(name)
            before[name] = dict(item['before'])
            after[name] = dict(final)
    return certificates, changed_names, {'before': before, 'after': after}


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params

    ca = None
    statuses = []
    try:
        ca = connect(params)
    except PuppetCAError as e:
        module.fail_json(msg=e.msg, ca_requests=0)

    try:
        try:
            statuses = ca.statuses()
        except PuppetCAError as e:
            module.fail_json(msg='Cannot read the certificate statuses from the CA at %s: %s' % (ca.url, e.msg), ca_requests=ca.requests)

        decided = plan(
            statuses,
            params['name'],
            state=params['state'],
            allow_dns_alt_names=params['allow_dns_alt_names'],
            expected_alt_names=params['dns_alt_names'],
            require_request=params['require_request'],
        )
        for warning in decided['warnings']:
            module.warn(warning)

        errors = list(decided['errors'])
        done = None
        failed = {}
        if errors:
            # Refusals: nothing is sent that changes the CA.
            certificates, dummy, dummy = report(decided, failed, errors, applied=False)
            module.fail_json(
                msg='Refused %d certificate(s), nothing was changed on the CA: %s' % (len(errors), '; '.join(e['msg'] for e in errors)),
                changed=False, certificates=certificates, changed_names=[], missing_names=decided['missing'],
                errors=errors, ca_requests=ca.requests, bulk_sign=ca.bulk_sign_supported,
            )

        if not module.check_mode:
            try:
                done, failed = execute(ca, decided)
            except PuppetCAError as e:
                # The connection itself failed: what was done before it is unknown for this batch.
                module.fail_json(
                    msg='The CA at %s failed while changing certificates (the next run shows what was done): %s' % (ca.url, e.msg),
                    changed=True, ca_requests=ca.requests, bulk_sign=ca.bulk_sign_supported,
                )

        certificates, changed_names, diff = report(decided, failed, errors, done)
        failures = [{'name': name, 'msg': '%s: %s' % (name, reason)} for name, reason in failed.items()]
        result = dict(
            changed=bool(changed_names),
            certificates=certificates,
            changed_names=changed_names,
            missing_names=decided['missing'],
            errors=failures,
            ca_requests=ca.requests,
            bulk_sign=ca.bulk_sign_supported,
        )
        if module._diff:
            result['diff'] = diff
        if failures:
            module.fail_json(
                msg='The CA did not change %d certificate(s): %s' % (len(failures), '; '.join(f['msg'] for f in failures)),
                **result
            )
        module.exit_json(**result)
    finally:
        if ca is not None:
            ca.close()


if __name__ == '__main__':
    main()
