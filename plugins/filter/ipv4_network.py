# -*- coding: utf-8 -*-
# Copyright: marionette.puppet_cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The IPv4 network of an interface's facts, and whether it holds an address: where the
load balancers' virtual IP may live (Python's ipaddress, no netaddr needed)."""

from __future__ import absolute_import, division, print_function

import ipaddress

__metaclass__ = type

DOCUMENTATION = r"""
name: ipv4_network
short_description: The IPv4 network (C(address/prefix)) of an interface's facts, or whether it holds an address
description:
  - C(ipv4_network) turns an interface's IPv4 facts (C(ansible_facts.default_ipv4)) into its network, such as C(172.30.56.0/24).
  - C(ipv4_host_in) tells whether an address is a host address of such a network (not its network or broadcast address).
  - The C(puppet_lb) role places its virtual IP with them.
positional: _input
options:
  _input:
    description: An interface's IPv4 facts, with C(address) and C(netmask) (C(ipv4_network)); an address (C(ipv4_host_in)).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check that the virtual IP is on the load balancer's network
  ansible.builtin.assert:
    that: puppet_lb_virtual_ip | marionette.puppet_cluster.ipv4_host_in(ansible_facts.default_ipv4 | marionette.puppet_cluster.ipv4_network)
"""

RETURN = r"""
_value:
  description: The network as C(address/prefix) (C(ipv4_network)); true or false (C(ipv4_host_in)).
  type: raw
"""


def ipv4_network(facts):
    """'172.30.56.0/24' from {'address': '172.30.56.3', 'netmask': '255.255.255.0'}; '' without them."""
    if not isinstance(facts, dict) or not facts.get("address") or not facts.get("netmask"):
        return ""
    return str(ipaddress.IPv4Interface(f"{facts['address']}/{facts['netmask']}").network)


def ipv4_host_in(address, network):
    """Whether address is a usable host address of network (address/prefix)."""
    try:
        net = ipaddress.IPv4Network(str(network))
        ip = ipaddress.IPv4Address(str(address))
    except ValueError:
        return False
    return ip in net and ip not in (net.network_address, net.broadcast_address)


class FilterModule:
    def filters(self):
        return {"ipv4_network": ipv4_network, "ipv4_host_in": ipv4_host_in}
