"""Catalog requests from inside a master, with the master's own certificate (blocks.py
copies this file into the container and runs it with the container's python3; stdlib only).

    python3 backend_probe.py MODE CERTNAME USERS SECONDS ENVIRONMENT < facts.json

MODE "front": through the master's TLS front on 127.0.0.1:8140 (client certificate checked);
MODE "backend": straight to puppetserver's plain loopback port 127.0.0.1:18140, with the
headers the front would add. One persistent connection per thread in both modes: what
differs is the front alone. Catalog requests only (no node, pluginsync or report).

Prints one JSON line: catalogs, catalogs_per_s, catalog_p50_ms, catalog_p95_ms, errors.
"""

import http.client
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

SSLDIR = "/var/lib/puppet/ssl"
FRONT_PORT = 8140
BACKEND_PORT = 18140
TIMEOUT_S = 120


class FrontConnection(http.client.HTTPSConnection):
    """The front on loopback, its certificate checked for the master's name. http.client
    calls connect() again when the front ends a kept-alive connection (apache does after
    MaxKeepAliveRequests, 100): the client reconnects as an agent would, instead of
    checking the certificate against 127.0.0.1 and counting a failure."""

    def __init__(self, certname, context):
        super().__init__("127.0.0.1", FRONT_PORT, timeout=TIMEOUT_S, context=context)
        self.certname = certname
        self.tls = context

    def connect(self):
        self.sock = self.tls.wrap_socket(socket.create_connection(("127.0.0.1", FRONT_PORT), TIMEOUT_S),
                                         server_hostname=self.certname)


def percentile(sorted_vals, p):
    return sorted_vals[min(len(sorted_vals) - 1, int(p * len(sorted_vals)))] if sorted_vals else 0


class Probe:
    """USERS threads posting catalog requests until a deadline; latencies of the good ones."""

    def __init__(self, mode, certname, environment, facts):
        self.mode = mode
        self.certname = certname
        self.environment = environment
        self.facts = facts
        self.context = ssl.create_default_context(cafile=f"{SSLDIR}/certs/ca.pem")
        self.context.load_cert_chain(f"{SSLDIR}/certs/{certname}.pem", f"{SSLDIR}/private_keys/{certname}.pem")
        self.headers = {"Host": certname, "Accept": "application/json",
                        "Content-Type": "application/x-www-form-urlencoded"}
        if mode == "backend":
            # What the front would tell puppetserver after verifying the client certificate.
            self.headers.update({"X-Client-Verify": "SUCCESS", "X-Client-DN": f"CN={certname}"})
        self.latencies_ms = []
        self.errors = 0
        self.lock = threading.Lock()

    def connection(self):
        if self.mode == "backend":
            return http.client.HTTPConnection("127.0.0.1", BACKEND_PORT, timeout=TIMEOUT_S)
        return FrontConnection(self.certname, self.context)

    def catalog_body(self):
        return urllib.parse.urlencode({
            "environment": self.environment, "facts_format": "application/json",
            "facts": urllib.parse.quote(json.dumps({"name": self.certname, "values": self.facts}), safe=""),
            "transaction_uuid": str(uuid.uuid4()), "static_catalog": "true", "checksum_type": "sha256"})

    def worker(self, stop_at):
        conn = None
        path = f"/puppet/v3/catalog/{self.certname}?environment={self.environment}"
        while time.time() < stop_at:
            body = self.catalog_body()
            t0 = time.time()
            try:
                conn = conn or self.connection()
                conn.request("POST", path, body=body, headers=self.headers)
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and json.loads(data).get("name") == self.certname
            except Exception:  # noqa: BLE001 - any failure is a failed request
                # Any failure counts as an error; the next request opens a new connection.
                ok, conn = False, None
            with self.lock:
                if ok:
                    self.latencies_ms.append((time.time() - t0) * 1000)
                else:
                    self.errors += 1

    def run(self, users, seconds):
        start = time.time()
        threads = [threading.Thread(target=self.worker, args=(start + seconds,)) for _user in range(users)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.time() - start
        lat = sorted(self.latencies_ms)
        return {"catalogs": len(lat), "catalogs_per_s": len(lat) / elapsed, "catalog_p50_ms": percentile(lat, 0.5),
                "catalog_p95_ms": percentile(lat, 0.95), "errors": self.errors}


def main(argv):
    mode, certname, users, seconds, environment = argv[1], argv[2], int(argv[3]), float(argv[4]), argv[5]
    probe = Probe(mode, certname, environment, json.load(sys.stdin))
    print(json.dumps(probe.run(users, seconds)))


if __name__ == "__main__":
    main(sys.argv)
