#!/bin/sh
# /init of the test bed's tiny guest (busybox-static + the kernel's own virtio modules).
# Prints exactly one HVR-REPORT line and then HVR-READY to ttyS0, then idles; the ACPI power
# button (virsh shutdown) runs `poweroff -f`. A boot counter lives as ASCII digits in sector 0
# of /dev/vda (all zeros = 0), so a disk that travelled with the guest shows it.
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

con=/dev/ttyS0
say() { echo "$*" >"$con"; }

for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
         button evdev; do
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
    disk_bytes=$(( $(cat /sys/block/vda/size) * 512 ))
else
    say "HVR-ERROR no /dev/vda"
    count=0
    disk_bytes=0
fi

nproc=$(nproc)
memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
say "HVR-REPORT nproc=$nproc memtotal_kb=$memtotal_kb disk_bytes=$disk_bytes boot_count=$count"

# busybox acpid reads /dev/input/event* and runs <confdir>/PWRF/00000080 on the power button.
acpid -c /etc/acpi -l /dev/null
say "HVR-READY"
while :; do sleep 3600; done
