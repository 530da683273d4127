#!/bin/sh
# /init of the test bed's tiny guest (busybox-static + the kernel's own virtio modules).
# Prints an HVR-REPORT line at boot and then HVR-READY to ttyS0; from then on it checks every
# half second, onlines vCPUs that were hot-plugged, and prints a fresh HVR-REPORT line whenever
# what it reports changed (vCPUs online, memory, disk size). The ACPI power button (virsh shutdown)
# runs `poweroff -f`. A boot counter lives as ASCII digits in sector 0 of /dev/vda (all zeros = 0),
# so a disk that travelled with the guest shows it; uptime_s shows that nothing rebooted.
# Kernel command line flags (bed guest --guest-flags): hvr.noballoon (no virtio_balloon driver: a
# guest that cannot take a memory change), hvr.noonline (hot-plugged vCPUs stay offline),
# hvr.heartbeat (an "HVR-TICK <uptime>" line every 0.1 s: a pause of the guest shows as a gap),
# hvr.agent (a guest agent on the org.qemu.guest_agent.0 port: guest-sync, guest-ping,
# guest-get-vcpus, guest-set-vcpus - what a live resize asks a guest about its vCPUs),
# hvr.writer (keeps writing: 4 MiB of random data at a time over the disk from 64 MiB on, then its
# count of completed writes into sector 1, each with fsync; at boot it prints "HVR-WRITER last=N",
# the count found on the disk, so that a moved disk shows it holds the last write before the stop).
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

con=/dev/ttyS0
say() { echo "$*" >"$con"; }
flag() { case " $(cat /proc/cmdline) " in *" hvr.$1 "*) return 0 ;; esac; return 1; }

mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk button evdev"
flag noballoon || mods="$mods virtio_balloon"
flag agent && mods="$mods virtio_console"
for m in $mods; do
    insmod "/lib/modules/$m.ko" || say "HVR-ERROR insmod $m failed"
done
# Keep kernel messages off the console from here on, so they cannot split our lines.
echo 1 >/proc/sys/kernel/printk

i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/vda ]; then
    count=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | tr '\000' '\n' | head -n 1)
    case "$count" in ''|*[!0-9]*) count=0 ;; esac
    count=$((count + 1))
    printf '%s' "$count" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null \
        || say "HVR-ERROR cannot write the boot counter"
    sync
else
    say "HVR-ERROR no /dev/vda"
    count=0
fi

# The bed's guest agent: one JSON command per line in, one reply per line out (the QEMU guest
# agent protocol, as libvirt speaks it), for the few commands a live resize uses.
vcpus_json() {
    sep=""
    for d in /sys/devices/system/cpu/cpu[0-9]*; do
        n=${d##*/cpu}
        on=true can=false
        if [ -f "$d/online" ]; then
            can=true
            [ "$(cat "$d/online")" = 1 ] || on=false
        fi
        printf '%s{"logical-id": %s, "online": %s, "can-offline": %s}' "$sep" "$n" "$on" "$can"
        sep=", "
    done
}
set_vcpus() {
    done_n=0
    for pair in $(echo "$1" | tr -d ' ' | grep -o '"logical-id":[0-9]*,"online":[a-z]*'); do
        n=$(echo "$pair" | sed 's/.*"logical-id":\([0-9]*\).*/\1/')
        case "$pair" in *true) v=1 ;; *) v=0 ;; esac
        [ -f "/sys/devices/system/cpu/cpu$n/online" ] && echo "$v" >"/sys/devices/system/cpu/cpu$n/online" 2>/dev/null
        done_n=$((done_n + 1))
    done
    printf '{"return": %s}\n' "$done_n"
}
agent() {
    port=""
    for p in /sys/class/virtio-ports/vport*; do
        [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] || { say "HVR-ERROR no guest agent port"; return; }
    while :; do
        exec 3<>"$port" || { sleep 1; continue; }
        while IFS= read -r line <&3; do
            case "$line" in
                *guest-sync*) printf '{"return": %s}\n' "$(echo "$line" | sed -n 's/.*"id": *\([0-9]*\).*/\1/p')" ;;
                *guest-ping*) printf '{"return": {}}\n' ;;
                *guest-get-vcpus*) printf '{"return": [%s]}\n' "$(vcpus_json)" ;;
                *guest-set-vcpus*) set_vcpus "$line" ;;
                *) printf '{"error": {"class": "CommandNotFound", "desc": "not in the bed agent"}}\n' ;;
            esac >&3
        done
        exec 3<&-
        sleep 0.5
    done
}

online_cpus() {
    flag noonline && return 0
    for f in /sys/devices/system/cpu/cpu[0-9]*/online; do
        [ -f "$f" ] && [ "$(cat "$f")" = 0 ] && echo 1 >"$f" 2>/dev/null
    done
    return 0
}
state() {
    nproc=$(grep -c '^processor' /proc/cpuinfo)
    memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    disk_bytes=0
    [ -f /sys/block/vda/size ] && disk_bytes=$(( $(cat /sys/block/vda/size) * 512 ))
    echo "nproc=$nproc memtotal_kb=$memtotal_kb disk_bytes=$disk_bytes"
}
report() {
    say "HVR-REPORT $1 boot_count=$count uptime_s=$(cut -d' ' -f1 /proc/uptime)"
}

online_cpus
last=$(state)
report "$last"

# busybox acpid reads /dev/input/event* and runs <confdir>/PWRF/00000080 on the power button.
acpid -c /etc/acpi -l /dev/null
if flag writer && [ -b /dev/vda ]; then
    last=$(dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | tr '\000' '\n' | head -n 1)
    case "$last" in W[0-9]*) last=${last#W} ;; *) last=0 ;; esac
    say "HVR-WRITER last=$last"
    span=$(( ($(cat /sys/block/vda/size) / 2048 - 64) / 4 ))
    [ "$span" -gt 0 ] || span=1
    (
        n=$last
        while :; do
            n=$((n + 1))
            dd if=/dev/urandom of=/dev/vda bs=1M count=4 seek=$((64 + (n % span) * 4)) conv=fsync 2>/dev/null
            printf 'W%s' "$n" | dd of=/dev/vda bs=512 seek=1 count=1 conv=sync,fsync 2>/dev/null
        done
    ) &
fi
say "HVR-READY"
flag agent && agent &
if flag heartbeat; then
    while :; do say "HVR-TICK $(cut -d' ' -f1 /proc/uptime)"; sleep 0.1; done &
fi
while :; do
    sleep 0.5
    online_cpus
    now=$(state)
    if [ "$now" != "$last" ]; then
        last=$now
        report "$now"
    fi
done
