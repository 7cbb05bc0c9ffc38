# -*- coding: utf-8 -*-
# Copyright: marionette.puppet_cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read the output of Puppet 5's `puppet cert list --all` into data."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: puppet5_cert_list
short_description: Parse the output of Puppet 5's C(puppet cert list --all)
description:
  - Puppet 5's Ruby CA (Debian 11, the legacy stack) has no C(puppetserver ca) and
    no JSON output; its C(puppet cert list --all) prints one line per certificate.
  - Returns a dictionary keyed by certificate name with C(state) (C(requested),
    C(signed) or C(revoked)) and C(dns_alt_names) (the names without the C(DNS:) prefix).
positional: _input
options:
  _input:
    description: The standard output of C(puppet cert list --all).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Read the CA's certificates
  ansible.builtin.command: puppet cert list --all
  register: cert_list

- name: Show the pending requests
  ansible.builtin.debug:
    msg: "{{ cert_list.stdout | marionette.puppet_cluster.puppet5_cert_list | dict2items | selectattr('value.state', 'eq', 'requested') }}"
"""

RETURN = r"""
_value:
  description: Certificate name to C(state) and C(dns_alt_names).
  type: dict
"""

import re

# '+ "name" (SHA256) AB:CD... (alt names: "DNS:a", "DNS:b")', '- "name" ... (certificate revoked)',
# or two spaces for a pending request.
LINE = re.compile(r'^(?P<mark>[+\- ]) "(?P<name>[^"]+)"\s+\((?P<digest>[A-Z0-9]+)\) (?P<fingerprint>[0-9A-F:]+)(?P<rest>.*)$')
ALT_NAMES = re.compile(r'\(alt names: (?P<names>[^)]*)\)')


def puppet5_cert_list(output):
    if not isinstance(output, str):
        # Imported here: the parser itself needs nothing of Ansible's controller.
        from ansible.errors import AnsibleFilterError  # pylint: disable=import-outside-toplevel
        raise AnsibleFilterError("puppet5_cert_list expects the text output of 'puppet cert list --all'")
    certificates = {}
    for line in output.splitlines():
        match = LINE.match(line.rstrip())
        if not match:
            continue
        alt = ALT_NAMES.search(match.group("rest"))
        names = []
        if alt:
            names = [n.strip().strip('"') for n in alt.group("names").split(",")]
            names = [n[len("DNS:"):] if n.startswith("DNS:") else n for n in names if n]
        certificates[match.group("name")] = {
            "state": {"+": "signed", "-": "revoked", " ": "requested"}[match.group("mark")],
            "fingerprint": match.group("fingerprint"),
            "dns_alt_names": names,
        }
    return certificates


class FilterModule(object):
    def filters(self):
        return {"puppet5_cert_list": puppet5_cert_list}
