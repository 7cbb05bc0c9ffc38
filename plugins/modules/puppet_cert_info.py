#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: puppet_cert_info
short_description: List the certificates and requests of a Puppet CA
version_added: 0.2.0
description:
  - Reads the certificates and certificate requests puppetserver's CA holds, through its HTTP API
    (C(/puppet-ca/v1)), with a client certificate the CA's C(auth.conf) lets administer it (one carrying
    the C(pp_cli_auth) extension, such as the CA host's own certificate).
  - Makes exactly one C(certificate_statuses) request, whatever the number of names.
  - Changes nothing.
author:
  - marionette developers (@marionette)
options:
  name:
    description:
      - Only report these certificate names; names the CA does not know are listed in RV(missing_names).
      - All names when omitted.
    type: list
    elements: str
    aliases: [certname, names]
  state:
    description:
      - Only report certificates or requests in this state.
      - Without O(name), the CA filters them itself (C(?state=)).
    type: str
    choices: [requested, signed, revoked]
extends_documentation_fragment:
  - marionette.puppet_cluster.puppet_ca
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module changes nothing; it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: marionette.puppet_cluster.puppet_cert
'''

EXAMPLES = r'''
- name: List the pending requests on the CA host
  marionette.puppet_cluster.puppet_cert_info:
    state: requested
  register: pending

- name: Show their names
  ansible.builtin.debug:
    msg: "{{ pending.certificates | map(attribute='name') }}"

- name: Read two certificates through the CA's own certificate
  marionette.puppet_cluster.puppet_cert_info:
    name: [puppet1.example.com, puppet2.example.com]
    host_certname: ca.example.com
'''

RETURN = r'''
certificates:
  description:
    - The certificates and requests, as the CA describes them, sorted by name then state; a name with both
      a certificate and a new request appears twice.
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
      description: V(requested), V(signed) or V(revoked).
      type: str
      returned: always
      sample: signed
    fingerprint:
      description: SHA256 fingerprint.
      type: str
      returned: always
      sample: "9D:8B:4A:E2:C4:46:D8:65:60:5F:CA:6C:42:74:9A:FF:04:BC:0C:EE:6B:64:CC:5D:14:D1:71:3F:A3:40:38:73"
    fingerprints:
      description: Fingerprints by algorithm, as the CA gives them.
      type: dict
      returned: always
    dns_alt_names:
      description: DNS alternative names, C(DNS:) prefixed.
      type: list
      elements: str
      returned: always
    subject_alt_names:
      description: DNS and IP alternative names, C(DNS:) or C(IP:) prefixed.
      type: list
      elements: str
      returned: when the CA gives them
    authorization_extensions:
      description: Authorization extensions (such as C(pp_cli_auth)) and their values.
      type: dict
      returned: when the CA gives them
    not_before:
      description: Start of validity.
      type: str
      returned: for certificates
    not_after:
      description: End of validity.
      type: str
      returned: for certificates
    serial_number:
      description: Serial number.
      type: int
      returned: for certificates
missing_names:
  description: Names of O(name) the CA holds nothing for (in the asked O(state), when given).
  returned: always
  type: list
  elements: str
  sample: []
ca_requests:
  description: Number of HTTP requests sent to the CA (always 1).
  returned: always
  type: int
  sample: 1
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.marionette.puppet_cluster.plugins.module_utils.puppet_ca import (
    PuppetCAError,
    connect,
    connection_argument_spec,
    sha256,
    unique,
)


def select(statuses, names=None, state=None):
    """The statuses of names (all when None) in state (any when None), sorted; and the names not found."""
    wanted = set(names) if names is not None else None
    found = set()
    selected = []
    for status in statuses:
        if not isinstance(status, dict):
            continue
        if wanted is not None and status.get('name') not in wanted:
            continue
        if state and status.get('state') != state:
            continue
        entry = dict(status)
        entry['fingerprint'] = sha256(status)
        selected.append(entry)
        found.add(status.get('name'))
    order = {'requested': 0, 'signed': 1, 'revoked': 2}
    selected.sort(key=lambda s: (s.get('name') or '', order.get(s.get('state'), 3)))
    missing = [n for n in unique(names) if n not in found] if names is not None else []
    return selected, missing


def main():
    spec = dict(
        name=dict(type='list', elements='str', aliases=['certname', 'names']),
        state=dict(type='str', choices=['requested', 'signed', 'revoked']),
    )
    spec.update(connection_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    names = module.params['name']
    state = module.params['state']

    ca = None
    statuses = []
    try:
        ca = connect(module.params)
    except PuppetCAError as e:
        module.fail_json(msg=e.msg, ca_requests=0)
    try:
        try:
            # The CA filters by state itself only when every name is wanted.
            statuses = ca.statuses(state=state if names is None else None)
        except PuppetCAError as e:
            module.fail_json(msg='Cannot read the certificate statuses from the CA at %s: %s' % (ca.url, e.msg), ca_requests=ca.requests)
        certificates, missing = select(statuses, names, state)
        module.exit_json(changed=False, certificates=certificates, missing_names=missing, ca_requests=ca.requests)
    finally:
        if ca is not None:
            ca.close()


if __name__ == '__main__':
    main()
