"""HTTPS requests from this host to the lab, with the load's client certificates."""

import http.client
import os
import socket
import ssl

from .common import CERTDIR, PORT


def tls_context(certname=None):
    ctx = ssl.create_default_context(cafile=os.path.join(CERTDIR, "ca.pem"))
    if certname:
        ctx.load_cert_chain(os.path.join(CERTDIR, "certs", f"{certname}.pem"),
                            os.path.join(CERTDIR, "private_keys", f"{certname}.pem"))
    return ctx


def https_request(addr, name, method, path, certname=None, body=None, headers=None, timeout=10):
    """One HTTPS request to addr with SNI/Host `name`; returns (status, body bytes)."""
    conn = http.client.HTTPSConnection(addr, PORT, context=tls_context(certname), timeout=timeout)
    # Connect to the address, but verify the certificate and send SNI for the name.
    conn.sock = tls_context(certname).wrap_socket(
        socket.create_connection((addr, PORT), timeout), server_hostname=name)
    try:
        hdrs = {"Host": f"{name}:{PORT}", "Accept": "application/json"}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def port_closed(addr):
    try:
        socket.create_connection((addr, PORT), timeout=2).close()
        return False
    except OSError:
        return True
