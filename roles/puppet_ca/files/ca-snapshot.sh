#!/usr/bin/env bash
# Copy the CA directory ($1) into $2 while puppetserver keeps signing, consistently: the
# copy is kept only if the serial counter, the inventory, the signed certificates and
# the CRL were the same before and after it (a certificate signed during the copy could
# leave a serial counter that disagrees with the inventory). Retried, as a signing in
# flight is over within a second.
set -euo pipefail
cadir=$1 dest=$2
state() {
    (cd "$cadir" && cat serial && sha256sum inventory.txt ca_crl.pem && ls -l --time-style=+%s.%N signed)
}
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    before=$(state)
    rm -rf "$dest"
    cp -a "$cadir" "$dest"
    if [ "$before" = "$(state)" ]; then
        echo "copied on attempt $attempt"
        exit 0
    fi
    sleep 1  # paced retry: the CA is signing right now
done
echo "the CA kept changing during 10 copies of $cadir; nothing was saved" >&2
exit 1
