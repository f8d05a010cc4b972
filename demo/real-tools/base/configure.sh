#!/bin/sh
# Runs inside the freshly debootstrapped rootfs (chroot), after the host's
# extra CA certificates were copied to /usr/local/share/ca-certificates/.
# Part of the rootfs cache key: changing this file rebuilds the rootfs.
set -eu

# Trust the host's extra CAs (this machine re-signs TLS through a proxy),
# for apt, curl and OpenSSL alike.
update-ca-certificates

# pip bundles its own CA list (certifi); point it at the system bundle.
cat > /etc/pip.conf <<'PIP'
[global]
cert = /etc/ssl/certs/ca-certificates.crt
PIP

# Debian's own apt sources for bookworm, with its updates and security.
cat > /etc/apt/sources.list <<'APT'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
APT

# What Debian's official docker images do: no recommends, no caches, no docs.
cat > /etc/apt/apt.conf.d/90berth-docker <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/tmp/*
