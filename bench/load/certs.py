"""The load's client certificates: signed by the lab's CA, kept in bench/.state/certs."""

import os
import shutil

from .common import CERTDIR, SSLDIR, log
N_CERTS = 16


def load_certnames(domain, n=N_CERTS):
    return [f"load-{i:03d}.{domain}" for i in range(1, n + 1)]


def certnames_for(users, domain):
    """One certificate per simulated agent, and never fewer than N_CERTS."""
    return load_certnames(domain, max(users, N_CERTS))


def write_private(path, data):
    """A file only its owner reads (0600 from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def ensure_certs(lab, names):
    """Client certificates signed by the lab's CA, copied to bench/.state/certs (keys 0600)."""
    fp = lab.ca_fingerprint()
    stamp = os.path.join(CERTDIR, "ca.sha256")
    if os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as fh:
            if fh.read().strip() != fp:
                log("the lab's CA changed (recreated lab): dropping the old client certificates")
                shutil.rmtree(CERTDIR)
    os.makedirs(os.path.join(CERTDIR, "certs"), exist_ok=True)
    os.makedirs(os.path.join(CERTDIR, "private_keys"), mode=0o700, exist_ok=True)
    with open(os.path.join(CERTDIR, "ca.pem"), "wb") as fh:
        fh.write(lab.run_in(lab.ca, "cat", f"{SSLDIR}/certs/ca.pem").stdout)
    missing = [n for n in names if not os.path.exists(os.path.join(CERTDIR, "private_keys", f"{n}.pem"))]
    if missing:
        on_ca = lab.run_in(lab.ca, "sh", "-c", f"ls {SSLDIR}/private_keys/").stdout.decode().split()
        to_generate = [n for n in missing if f"{n}.pem" not in on_ca]
        if to_generate:
            log(f"generating {len(to_generate)} client certificates on the CA")
            if lab.ca_generate_batch:
                lab.run_in(lab.ca, *lab.ca_generate, ",".join(to_generate))
            else:
                for n in to_generate:
                    lab.run_in(lab.ca, *lab.ca_generate, n)
        for n in missing:
            cert = lab.run_in(lab.ca, "cat", f"{SSLDIR}/certs/{n}.pem").stdout
            key = lab.run_in(lab.ca, "cat", f"{SSLDIR}/private_keys/{n}.pem").stdout
            with open(os.path.join(CERTDIR, "certs", f"{n}.pem"), "wb") as fh:
                fh.write(cert)
            write_private(os.path.join(CERTDIR, "private_keys", f"{n}.pem"), key)
    with open(stamp, "w", encoding="utf-8") as fh:
        fh.write(fp + "\n")
