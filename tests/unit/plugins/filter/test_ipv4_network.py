"""Where the load balancers' virtual IP may live: the network of the LB's interface."""

from ansible_collections.marionette.puppet_cluster.plugins.filter.ipv4_network import ipv4_host_in, ipv4_network


def test_the_network_of_an_interface():
    assert ipv4_network({"address": "172.30.56.3", "netmask": "255.255.255.0"}) == "172.30.56.0/24"
    assert ipv4_network({"address": "10.1.2.3", "netmask": "255.255.0.0"}) == "10.1.0.0/16"
    assert ipv4_network({}) == ""


def test_a_host_address_of_the_network_only():
    assert ipv4_host_in("172.30.56.250", "172.30.56.0/24")
    assert not ipv4_host_in("172.30.57.250", "172.30.56.0/24")
    assert not ipv4_host_in("172.30.56.0", "172.30.56.0/24")
    assert not ipv4_host_in("172.30.56.255", "172.30.56.0/24")
    assert not ipv4_host_in("puppet.domain.org", "172.30.56.0/24")
    assert not ipv4_host_in("172.30.56.250", "")
