#!/usr/bin/env bash
# Install the Debian packages the test bed needs (idempotent; a fast no-op when all are present).
# `apt-get update` runs only when something is missing.
set -euo pipefail

PACKAGES=(
    libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils libvirt-dev pkg-config gcc
    python3-dev python3-venv python3-libvirt python3-lxml busybox-static cpio openssh-server
    openssh-client rsync iproute2 make shellcheck ovmf swtpm swtpm-tools
)

if [[ $EUID -ne 0 ]]; then
    echo "install-deps.sh: must run as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    echo "install-deps.sh: all ${#PACKAGES[@]} packages present"
    exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
# Keep the packages' maintainer scripts from starting system daemons (a root-namespace libvirtd
# would autostart the default network with dnsmasq); the bed starts its own daemons, per host.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps.sh: done"
