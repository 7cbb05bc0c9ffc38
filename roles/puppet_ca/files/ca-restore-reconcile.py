"""Bring a CA directory restored from a backup up to what the cluster saw after it.

usage: ca-restore-reconcile.py CADIR SKIP [CRL_BUNDLE ...]

The backup cannot know what the CA did after it was taken. Two things matter:
- revocations: the masters and load balancers keep the CA's CRL bundle. The newest one
  signed by this CA (highest CRL number, every CRL in it verified against CADIR's
  certificates) replaces CADIR/ca_crl.pem when it is newer: a node revoked after the
  backup stays revoked, and the restored CA's next CRL is numbered above what the hosts
  hold (they refuse a CRL whose number goes down);
- serials: certificates signed after the backup are on their hosts only. The counter
  continues after the highest serial the chosen CRL lists and after the backup's own,
  then skips SKIP more, so that a new certificate does not repeat the serial of one
  signed after the backup.
Prints what it did, one line per decision.
"""
import os
import re
import subprocess
import sys
import tempfile


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, text=True, check=False)


def crls_of(path):
    with open(path, encoding="ascii", errors="replace") as handle:
        return re.findall(r"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\n?", handle.read(), re.S)


def verified(crl, cafile):
    """Whether the CRL is signed by a certificate of cafile: only "verify OK" counts
    (openssl prints "verify failure" and still exits 0 on a bad signature)."""
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as piece:
        piece.write(crl)
        piece.flush()
        result = openssl("crl", "-in", piece.name, "-noout", "-CAfile", cafile)
    return (result.stdout + result.stderr).strip() == "verify OK"


def crl_number(crl):
    shown = openssl("crl", "-noout", "-crlnumber", data=crl).stdout.strip()
    return int(shown.split("=", 1)[1].removeprefix("0x"), 16)


def revoked_serials(crl):
    text = openssl("crl", "-noout", "-text", data=crl).stdout
    return [int(serial, 16) for serial in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", text)]


def main():
    cadir, skip, bundles = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    cafile = os.path.join(cadir, "ca_crt.pem")
    ca_crl_path = os.path.join(cadir, "ca_crl.pem")
    chosen = crls_of(ca_crl_path)
    best = crl_number(chosen[0])
    print(f"backup's CRL number {best}")
    for bundle in bundles:
        crls = crls_of(bundle)
        if not crls or not all(verified(crl, cafile) for crl in crls):
            print(f"{bundle}: not this CA's CRL bundle, ignored")
            continue
        number = crl_number(crls[0])
        if number > best:
            chosen, best = crls, number
            print(f"{bundle}: newer CRL, number {number}")
    with open(ca_crl_path, "w", encoding="ascii") as handle:
        handle.write("".join(crl if crl.endswith("\n") else crl + "\n" for crl in chosen))
    print(f"CRL kept: number {best}")

    serial_path = os.path.join(cadir, "serial")
    with open(serial_path, encoding="ascii") as handle:
        counter = int(handle.read().strip(), 16)
    highest_revoked = max(revoked_serials(chosen[0]), default=0)
    following = max(counter, highest_revoked + 1) + skip
    # No newline: puppetserver parses the whole file as the number.
    with open(serial_path, "w", encoding="ascii") as handle:
        handle.write(f"{following:04X}")
    print(f"serial counter {counter:04X} in the backup, highest revoked {highest_revoked:04X}, next {following:04X}")


if __name__ == "__main__":
    main()
