# -*- coding: utf-8 -*-
# Copyright: marionette.puppet_cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a host's release ships Puppet 5 (the legacy stack) rather than Puppet 7+."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: ships_puppet5
short_description: Whether a host's operating system release ships Puppet 5
description:
  - Debian 11 ships Puppet 5 (the legacy stack of the source document, with the Ruby CA
    and the Rack master under Passenger); Debian 12 and 13 ship Puppet 7 and 8 with
    puppetserver. Every role decides between the two stacks with this one test.
  - Facts without a distribution (a play that gathered none) are not Puppet 5.
positional: _input
options:
  _input:
    description: A host's C(ansible_facts), for another host C(hostvars[name]['ansible_facts']).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Choose the master's application server from its release
  ansible.builtin.set_fact:
    app_server: "{{ 'passenger' if ansible_facts | marionette.puppet_cluster.ships_puppet5 else 'puppetserver' }}"

- name: Ask whether the CA host runs the Puppet 5 CA
  ansible.builtin.debug:
    msg: "{{ hostvars[groups['puppet_ca'] | first]['ansible_facts'] | marionette.puppet_cluster.ships_puppet5 }}"
"""

RETURN = r"""
_value:
  description: True on a release whose Puppet is version 5.
  type: bool
"""

# (distribution, major version) of the releases whose own Puppet is version 5.
PUPPET5_RELEASES = {("Debian", "11")}


def ships_puppet5(facts):
    if not isinstance(facts, dict):
        # Imported here: the test itself needs nothing of Ansible's controller.
        from ansible.errors import AnsibleFilterError  # pylint: disable=import-outside-toplevel
        raise AnsibleFilterError("ships_puppet5 expects a host's ansible_facts (a dictionary)")
    release = (facts.get("distribution"), str(facts.get("distribution_major_version", "")))
    return release in PUPPET5_RELEASES


class FilterModule(object):
    def filters(self):
        return {"ships_puppet5": ships_puppet5}
