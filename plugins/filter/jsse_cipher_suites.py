# -*- coding: utf-8 -*-
# Copyright: marionette.puppet_cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The JSSE names (Jetty: the CA and puppetserver) of an OpenSSL cipher list (nginx, apache)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: jsse_cipher_suites
short_description: JSSE names of the suites an OpenSSL cipher list names
description:
  - The cluster keeps one cipher list, in OpenSSL names, for nginx and apache
    (C(puppet_cluster_ssl_ciphers)). Jetty, which serves the CA and puppetserver, takes
    the same suites under their JSSE names; this filter derives them, so an override of
    the list reaches every endpoint.
  - TLS 1.3's suites (which OpenSSL configures apart from the list) come first when
    C(TLSv1.3) is among the protocols; without them Jetty would offer no TLS 1.3.
  - Only explicit ECDHE or DHE suites with AES-GCM or ChaCha20-Poly1305 are translated.
    Keywords (C(HIGH), C(!aNULL)) and other suites fail with a message naming them, as
    Jetty cannot be given the same set and the cluster would then offer two policies.
positional: _input, protocols
options:
  _input:
    description: Colon-separated OpenSSL suite names (spaces and commas also separate).
    type: str
    required: true
  protocols:
    description: The TLS protocols of the endpoint.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: The suites of puppetserver's webserver.conf
  ansible.builtin.debug:
    msg: "{{ puppet_cluster_ssl_ciphers | marionette.puppet_cluster.jsse_cipher_suites(puppet_cluster_ssl_protocols) }}"
"""

RETURN = r"""
_value:
  description: JSSE suite names, TLS 1.3's first, then the list's in its order.
  type: list
  elements: str
"""

TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]

# OpenSSL: ECDHE-ECDSA-AES128-GCM-SHA256, DHE-RSA-CHACHA20-POLY1305
# JSSE:    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256
_AEAD_SUITE = re.compile(
    r"^(?P<kx>ECDHE-ECDSA|ECDHE-RSA|DHE-RSA)-"
    r"(?:AES(?P<bits>128|256)-GCM-(?P<hash>SHA256|SHA384)|(?P<chacha>CHACHA20-POLY1305))$"
)


def jsse_name(openssl_name):
    match = _AEAD_SUITE.match(openssl_name)
    if not match:
        return None
    kx = match.group("kx").replace("-", "_")
    if match.group("chacha"):
        return "TLS_%s_WITH_CHACHA20_POLY1305_SHA256" % kx
    return "TLS_%s_WITH_AES_%s_GCM_%s" % (kx, match.group("bits"), match.group("hash"))


def jsse_cipher_suites(openssl_ciphers, protocols):
    names = [name for name in re.split(r"[:, ]+", str(openssl_ciphers).strip()) if name]
    translated = [jsse_name(name) for name in names]
    unknown = [name for name, jsse in zip(names, translated) if jsse is None]
    if unknown or not names:
        raise AnsibleFilterError(
            "jsse_cipher_suites: %s: the cluster's cipher list must name ECDHE or DHE suites with "
            "AES-GCM or ChaCha20-Poly1305 one by one (OpenSSL names), so that Jetty offers the same "
            "suites as nginx and apache" % (", ".join(unknown) or "an empty list"))
    suites = list(TLS13_SUITES) if "TLSv1.3" in (protocols or []) else []
    for jsse in translated:
        if jsse not in suites:
            suites.append(jsse)
    return suites


class FilterModule(object):
    def filters(self):
        return {"jsse_cipher_suites": jsse_cipher_suites}
