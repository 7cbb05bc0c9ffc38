#!/usr/bin/env bash
# Recipe of a lab base image: a minimal Debian with systemd and python3.
# The image tag is a hash of this file, so editing it rebuilds the images.
# Called by ./lab as: image-recipe.sh SUITE ROOTFS MIRROR APT_PROXY
set -euo pipefail
suite=$1 rootfs=$2 mirror=$3 apt_proxy=$4

debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,curl,openssl,iproute2,procps,bind9-dnsutils \
  "$suite" "$rootfs" "$mirror"

# apt inside lab containers goes through the host's apt-cacher-ng.
cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb http://deb.debian.org/debian $suite main
SOURCES
echo "Acquire::http::Proxy \"$apt_proxy\";" > "$rootfs/etc/apt/apt.conf.d/01lab-proxy"
echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/02lab-nolanguages"
# Documentation is never read in a lab container; not unpacking it saves time.
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/01lab-nodoc" <<'NODOC'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
NODOC
# systemd in a container: no getty, no udev settle, no hardware units.
for unit in getty.target systemd-udevd.service systemd-udev-trigger.service \
            systemd-networkd-wait-online.service systemd-timesyncd.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
rm -f "$rootfs/etc/machine-id" "$rootfs/var/lib/dbus/machine-id"
touch "$rootfs/etc/machine-id"
# Package lists stay, renamed from the build mirror's URL to the one in sources.list:
# apt in a fresh container starts with the index of the build.
for list in "$rootfs"/var/lib/apt/lists/*_deb.debian.org_debian_*; do
  mv "$list" "$rootfs/var/lib/apt/lists/deb.debian.org_debian_${list##*_deb.debian.org_debian_}"
done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb
