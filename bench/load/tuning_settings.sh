#!/bin/sh
# Run inside a master by bench/load/blocks.py (block `tuning`), copied there first:
#   sh tuning_settings.sh stock SAVE FILE...    save FILEs into SAVE, then Debian's stock settings
#   sh tuning_settings.sh restore SAVE FILE...  the saved FILEs back in place, SAVE removed
# Debian's stock settings, on the master's files the role wrote: no environment_timeout (Puppet's
# default, 0: every compile loads the environment again), max-active-instances commented out
# (puppetserver's default: CPUs - 1, at least 1, so 1 on 2 cores) and /etc/default/puppetserver
# as the package ships it, taken from the package itself. Prints the stock JAVA_ARGS line.
set -eu
action=$1
save=$2
shift 2

case $action in
    stock)
        mkdir -p "$save"
        cp -a "$@" "$save"/
        puppet config delete --section server environment_timeout >/dev/null
        if grep -q environment_timeout /etc/puppet/puppet.conf; then
            echo "environment_timeout is still set in /etc/puppet/puppet.conf" >&2
            exit 1
        fi
        sed -i -E 's/^(\s*)max-active-instances:/\1# max-active-instances:/' /etc/puppet/puppetserver/conf.d/puppetserver.conf
        tmp=$(mktemp -d)
        cd "$tmp"
        apt-get download -q=2 puppetserver 2>/dev/null
        dpkg-deb --fsys-tarfile puppetserver_*.deb | tar -xO ./etc/default/puppetserver > /etc/default/puppetserver
        rm -rf "$tmp"
        grep -E '^JAVA_ARGS' /etc/default/puppetserver
        ;;
    restore)
        for file in "$@"; do
            cp -a "$save/$(basename "$file")" "$file"
        done
        rm -rf "$save"
        ;;
    *)
        echo "usage: sh tuning_settings.sh stock|restore SAVE FILE..." >&2
        exit 2
        ;;
esac
