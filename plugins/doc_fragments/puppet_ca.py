# -*- coding: utf-8 -*-
# Copyright: (c) 2025, marionette developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """How the CA modules reach and authenticate to the Puppet CA's HTTP API."""

    DOCUMENTATION = r'''
options:
  host_certname:
    description:
      - Certificate name of the host whose certificate authenticates to the CA, used to compute the
        defaults of O(ca_url), O(client_cert) and O(client_key).
      - Defaults to the fully qualified domain name of the host running the module (Python's C(socket.getfqdn())).
    type: str
  ssldir:
    description:
      - Puppet's SSL directory on the host running the module, used to compute the defaults of
        O(client_cert), O(client_key) and O(ca_cert).
    type: path
    default: /var/lib/puppet/ssl
  ca_url:
    description:
      - Root of the CA's HTTP API.
      - Defaults to C(https://<host_certname>:8140/puppet-ca/v1).
      - The host name must be one the CA's server certificate carries; it is checked.
      - A URL without a port means port 8140.
    type: str
  client_cert:
    description:
      - PEM certificate the module authenticates with.
      - Defaults to C(<ssldir>/certs/<host_certname>.pem).
    type: path
  client_key:
    description:
      - PEM private key of O(client_cert).
      - Defaults to C(<ssldir>/private_keys/<host_certname>.pem).
    type: path
  ca_cert:
    description:
      - PEM bundle of the CA certificates the CA's server certificate is verified against.
      - Defaults to C(<ssldir>/certs/ca.pem).
    type: path
  timeout:
    description:
      - Seconds to wait for the CA to answer one request.
    type: int
    default: 60
'''
