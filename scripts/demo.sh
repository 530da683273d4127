#!/usr/bin/env bash
# The demo: a real cold resize of a real QEMU guest from one hypervisor of the local test bed to
# another, showing what the guest itself reports before and after. Re-runnable.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
BED=tests/testbed/bed
INV=tests/testbed/generated/inventory.yml
VM=${DEMO_VM:-demo01}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Test bed: three hypervisors (hv1, hv2, hv3) on this machine"
$BED up
$BED status

step "A tiny real guest '$VM' on hv1, flavor m1.tiny (1 vCPU, 128 MiB, 1 GiB disk)"
$BED rm-guest "$VM" >/dev/null
$BED guest "$VM" --host hv1 --vcpus 1 --memory-mb 128 --disk-gb 1 >/dev/null
before=$($BED report "$VM" --host hv1)
echo "the guest reports on hv1: $before"

step "Resize to m1.small (2 vCPU, 256 MiB, 2 GiB): ansible-playbook playbooks/resize.yml"
ansible-playbook -i "$INV" playbooks/resize.yml -e instance="$VM" -e flavor=m1.small

dest=""
for h in hv1 hv2 hv3; do
  if $BED ssh "$h" virsh -q -c qemu:///system list --name | grep -qx "$VM"; then dest=$h; fi
done
[ -n "$dest" ] || { echo "demo: $VM is not running on any hypervisor after the resize" >&2; exit 1; }
$BED wait-ready "$VM" --host "$dest" --timeout 90 >/dev/null
after=$($BED report "$VM" --host "$dest")

step "Confirm: playbooks/confirm.yml deletes the backup on hv1"
ansible-playbook -i "$INV" playbooks/confirm.yml -e instance="$VM"

step "What the guest itself reported"
printf '  before, on hv1:    %s\n' "$before"
printf '  after, on %s:     %s\n' "$dest" "$after"
left=$($BED ssh hv1 "virsh -q -c qemu:///system list --all --name | grep -x $VM; ls /var/lib/libvirt/images/ | grep '^$VM' || true")
printf '  left on hv1:       %s\n' "${left:-nothing}"
echo
echo "The bed stays up: try 'tests/testbed/bed ssh $dest virsh list --all', or 'make bed-down' to remove it."
