#!/usr/bin/env bash
# Runs as the anchor of one bed host, inside `ip netns exec hvr-NAME unshare --mount --uts
# --propagation private`: sets the hostname, gives the host its own /run and its own copies of the
# paths below, records its pid, then sleeps forever. Daemons are started later with
# `nsenter -t <anchor pid> -m -u -n`, so they see exactly this view.
set -euo pipefail
name=$1   # hv1
hdir=$2   # <state>/hosts/hv1
shared=${3:-}  # <state>/shared, or empty: the shared instances dir this host mounts

hostname "$name"
mount -t tmpfs -o mode=0755,size=64m "hvr-$name-run" /run
mkdir -p /run/sshd /run/libvirt /run/lock /run/hvr-host
chmod 0755 /run/sshd
# Reach this host's state through /run/hvr-host (on the host's own /run): the binds below put the
# host's own /tmp and /root over the shared ones, which would hide $hdir when the checkout (and so
# the state dir) lives under /tmp or /root, as a CI clone may.
mount --bind "$hdir" /run/hvr-host
hdir=/run/hvr-host
if [[ -n $shared ]]; then
    mkdir -p /run/hvr-shared
    mount --bind "$shared" /run/hvr-shared
fi

# per-host directory (under $hdir)  ->  path inside the host
binds=(
    etc-libvirt:/etc/libvirt
    var-lib-libvirt:/var/lib/libvirt
    var-log-libvirt:/var/log/libvirt
    var-cache-libvirt:/var/cache/libvirt
    etc-ssh:/etc/ssh
    root-home:/root
    tmp:/tmp
    var-tmp:/var/tmp
    hosts:/etc/hosts
    hostname:/etc/hostname
)
for b in "${binds[@]}"; do
    src=$hdir/${b%%:*} dst=${b#*:}
    if [[ -d $src ]]; then mkdir -p "$dst"; fi
    mount --bind "$src" "$dst"
done

# Shared storage last: it sits inside the per-host /var/lib/libvirt bound above.
if [[ -n $shared ]]; then
    mkdir -p /var/lib/libvirt/shared
    mount --bind /run/hvr-shared /var/lib/libvirt/shared
fi

echo $$ >"$hdir/anchor.pid.new"
mv "$hdir/anchor.pid.new" "$hdir/anchor.pid"
exec sleep infinity
