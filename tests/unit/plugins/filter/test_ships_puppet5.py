"""The one test every role uses to choose between the Puppet 5 stack and puppetserver."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.marionette.puppet_cluster.plugins.filter.ships_puppet5 import ships_puppet5


@pytest.mark.parametrize("facts, expected", [
    ({"distribution": "Debian", "distribution_major_version": "11"}, True),
    ({"distribution": "Debian", "distribution_major_version": "12"}, False),
    ({"distribution": "Debian", "distribution_major_version": "13"}, False),
    # Another distribution's release 11 is not Debian's.
    ({"distribution": "Ubuntu", "distribution_major_version": "11"}, False),
    # A play that gathered no facts.
    ({}, False),
])
def test_release_decides(facts, expected):
    assert ships_puppet5(facts) is expected


def test_not_facts_is_refused():
    with pytest.raises(AnsibleFilterError, match="ansible_facts"):
        ships_puppet5("11")
