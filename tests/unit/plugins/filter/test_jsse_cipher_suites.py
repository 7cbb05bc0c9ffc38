"""The JSSE names Jetty (the CA, puppetserver) gets for the cluster's OpenSSL cipher list."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.marionette.puppet_cluster.plugins.filter.jsse_cipher_suites import jsse_cipher_suites

TLS13 = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]


def test_the_default_list_gives_the_suites_jetty_offered_before():
    """The list webserver.conf carried as a literal before the cluster's one list existed:
    the same text, so an upgrade of a running cluster restarts nothing."""
    ciphers = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
               "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
    assert jsse_cipher_suites(ciphers, ["TLSv1.2", "TLSv1.3"]) == TLS13 + [
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"]


def test_an_override_reaches_jetty_in_its_order():
    assert jsse_cipher_suites("ECDHE-RSA-AES256-GCM-SHA384 DHE-RSA-CHACHA20-POLY1305", ["TLSv1.2"]) == [
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"]


def test_tls_1_3_suites_only_with_tls_1_3():
    assert jsse_cipher_suites("ECDHE-RSA-AES128-GCM-SHA256", ["TLSv1.3"])[:3] == TLS13
    assert "TLS_AES_128_GCM_SHA256" not in jsse_cipher_suites("ECDHE-RSA-AES128-GCM-SHA256", ["TLSv1.2"])


@pytest.mark.parametrize("ciphers", ["HIGH:!aNULL", "ECDHE-RSA-AES128-SHA256", "AES128-GCM-SHA256", ""])
def test_what_jetty_cannot_be_given_is_refused_by_name(ciphers):
    with pytest.raises(AnsibleFilterError, match="one by one"):
        jsse_cipher_suites(ciphers, ["TLSv1.2", "TLSv1.3"])
