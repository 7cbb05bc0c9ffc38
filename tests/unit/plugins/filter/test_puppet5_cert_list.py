"""The parser of Puppet 5's `puppet cert list --all` (legacy CA on Debian 11)."""

from ansible_collections.marionette.puppet_cluster.plugins.filter.puppet5_cert_list import puppet5_cert_list

# Captured from Puppet 5.5.22 on Debian 11 (names padded to one column by puppet).
OUTPUT = """\
  "bar.example.test"   (SHA256) AC:8A:6D:AF (alt names: "DNS:bar.example.test", "DNS:puppet.example.test") **
+ "oldca.example.test" (SHA256) EA:44:54:47 (alt names: "DNS:oldca.example.test", "DNS:puppet")
- "foo.example.test"   (SHA256) C8:C3:B3:A3 (certificate revoked)
+ "agent1.example.test" (SHA256) 01:02:03:04
"""


def test_states_and_alt_names():
    certs = puppet5_cert_list(OUTPUT)
    assert certs["bar.example.test"] == {
        "state": "requested", "fingerprint": "AC:8A:6D:AF",
        "dns_alt_names": ["bar.example.test", "puppet.example.test"]}
    assert certs["oldca.example.test"]["state"] == "signed"
    assert certs["oldca.example.test"]["dns_alt_names"] == ["oldca.example.test", "puppet"]
    assert certs["foo.example.test"]["state"] == "revoked"
    assert certs["agent1.example.test"] == {"state": "signed", "fingerprint": "01:02:03:04", "dns_alt_names": []}


def test_warnings_and_blank_lines_are_ignored():
    text = "Warning: `puppet cert` is deprecated\n\n" + OUTPUT
    assert len(puppet5_cert_list(text)) == 4


def test_empty_output_means_no_certificates():
    assert puppet5_cert_list("") == {}
