"""Zero trust between hypervisors (issue #9): real attacks on the real test bed.

Each test plays one attack a compromised hypervisor (or a hostile VM definition on it) could make
on its peer during a resize, and checks the attack had no effect:

- a hostile destination rewrites its module results to smuggle ssh options (ProxyCommand) and extra
  known_hosts lines into the source's copy command; the same ssh option given ad hoc to the source
  module as transfer_user;
- a source domain whose disk path is a file the destination must never write (/etc/cron.d,
  root's authorized_keys2), also straight into virt_resize_prep on the destination;
- a symbolic link planted by the destination at the copy's part file, pointing at a file of root;
- domain elements that hand host resources to the guest: a host block device, <qemu:commandline>,
  a serial log under /etc, <hostdev>, a <filesystem> of the host's /etc, a <seclabel> that turns
  confinement off.

A domain that asks for host access or names a forbidden path must be refused up front, before any
host is touched: the playbook fails naming the element or path, the VM and the rule id
(`[rule D3...`, docs/security.md), and the VM stays on hv1 in its old power state with no record,
no claim and no transfer key anywhere. The attacks by the destination itself (1 and 3) may instead
be refused by the source before the power-off, or be defeated while the resize completes. Attack domains are defined shut
off and never started, so that nothing (virtlogd, QEMU) ever writes where the attack points; /etc is
the real machine's /etc in this bed.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET

import pytest
from resize_lib import (
    GIB,
    HOSTS,
    REPO,
    STATE_DIR,
    adhoc,
    exists,
    migrations_dir,
    nothing_left_on,
    playbook,
    playbook_with,
    record,
    report,
    sh,
    sha256,
    transfer_keys,
    where,
)

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_XML = os.path.join(REPO, "tests", "testbed", "lib", "guest-domain.xml.in")
IMG = "/var/lib/libvirt/images/%s.qcow2"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)
TOKEN = uuid.uuid4().hex[:8]  # keeps attack paths of one run apart from any other run's


# --- helpers -----------------------------------------------------------------------------------

def said(proc):
    """What the run said about its failure, from the first failed task on, as one line: Ansible
    folds long messages over several lines (and doubles single quotes in YAML)."""
    out = proc.stdout
    start = out.find("fatal:")
    text = (out[start:] if start >= 0 else out) + "\n" + proc.stderr
    return re.sub(r"\s+", " ", text).replace("''", "'")


def failed(proc):
    """An ad hoc module run (resize_lib.adhoc) failed."""
    return proc.returncode != 0 and "| FAILED!" in proc.stdout


def has_rule(text, rule):
    return re.search(r"\[rule %s[\],]" % re.escape(rule), text) is not None


def assert_refused(bed, proc, vm, rule, *named, power="shut off"):
    """Refused up front, naming what and why; the VM untouched, nothing left on any host."""
    text = said(proc)
    assert proc.returncode != 0, "the resize of %s was not refused:\n%s" % (vm, proc.stdout[-4000:])
    assert has_rule(text, rule), "no [rule %s] in the failure:\n%s" % (rule, text[-3000:])
    for what in (vm, "docs/security.md") + named:
        assert what in text, "the failure does not name %r:\n%s" % (what, text[-3000:])
    assert where(bed, vm) == {"hv1": power}
    assert record(bed, "hv1", vm) is None, "the source's domain got a migration record"
    for h in HOSTS:
        assert migrations_dir(bed, h) == set(), "claim left on %s" % h
        assert transfer_keys(bed, h) == 0, "transfer key left on %s" % h


def define(bed, host, vm, xml):
    path = "/tmp/hvr-sec-%s.xml" % vm
    bed.ssh(host, "cat > %s <<'HVR_XML_EOF'\n%s\nHVR_XML_EOF\nvirsh -q -c qemu:///system define %s; rc=$?; rm -f %s; "
                  "exit $rc" % (path, xml, path, path))


def hostile_vm(bed, guest, name, edit):
    """A bed guest on hv1, shut off, redefined with its XML changed by edit(root); removed
    afterwards, on every host, by the guest fixture."""
    vm = guest(name, start=False, vcpus=1, memory_mb=128, disk_gb=1)
    root = ET.fromstring(sh(bed, "hv1", "virsh -c qemu:///system dumpxml --inactive %s" % vm))
    edit(root)
    define(bed, "hv1", vm, ET.tostring(root, encoding="unicode"))
    assert where(bed, vm) == {"hv1": "shut off"}
    return vm


def add_devices(*snippets):
    def edit(root):
        for snippet in snippets:
            root.find("devices").append(ET.fromstring(snippet))
    return edit


def add_top_level(*snippets):
    def edit(root):
        for snippet in snippets:
            root.append(ET.fromstring(snippet))
    return edit


def only_disk(path, fmt="raw"):
    """The guest's one disk now points at `path`."""
    def edit(root):
        disk = root.find("./devices/disk")
        disk.find("driver").set("type", fmt)
        disk.find("source").set("file", path)
    return edit


def serial_log(path):
    """Serial console on a pty, logged by virtlogd to `path` (the file console goes)."""
    def edit(root):
        devices = root.find("devices")
        for tag in ("serial", "console"):
            for el in devices.findall(tag):
                devices.remove(el)
        devices.append(ET.fromstring("<serial type='pty'><log file='%s' append='off'/><target port='0'/></serial>"
                                     % path))
        devices.append(ET.fromstring("<console type='pty'><target type='serial' port='0'/></console>"))
    return edit


def host_key(bed, host):
    """`type base64` of a host's real sshd host key (as virt_resize_prep reads it)."""
    return " ".join(sh(bed, host, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2])


def guest_xml(vm, vm_uuid, disk, fmt):
    """The bed's guest definition (tests/testbed/lib/guest-domain.xml.in) with this disk."""
    with open(GUEST_XML) as fh:
        xml = fh.read()
    for key, value in {"NAME": vm, "UUID": vm_uuid, "MAX_MEMORY_MB": "128", "MEMORY_MB": "128", "VCPUS": "1",
                       "VCPU_ATTR": "", "CMDLINE_EXTRA": "", "DEVICES_EXTRA": "", "DISK": disk, "FORMAT": fmt}.items():
        xml = xml.replace("@%s@" % key, value)
    return xml


def keypair(tmp_path):
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hvr-security-test", "-f", str(key)],
                   check=True, capture_output=True)
    return key.read_text(), (tmp_path / "id.pub").read_text().strip()


def inventory_with(bed, tmp_path, host_vars):
    """A copy of the bed's generated inventory with extra host_vars; returns its inventory file."""
    inv = tmp_path / "inventory"
    shutil.copytree(os.path.dirname(bed.inventory), inv)
    (inv / "host_vars").mkdir(exist_ok=True)
    for host, values in host_vars.items():
        (inv / "host_vars" / ("%s.yml" % host)).write_text(json.dumps(values) + "\n")  # JSON is YAML
    return str(inv / os.path.basename(bed.inventory))


# --- 1. a hostile destination's module results ------------------------------------------------

PWNED = "/root/pwned-by-dest"
EVIL = "/root/evil-python"


def test_hostile_destination_results_cannot_inject_ssh_options_or_known_hosts(bed, guest, tmp_path):
    """hv2 runs its modules through a wrapper that rewrites their results: the transfer user
    becomes an ssh option (ProxyCommand runs a command on the source) and the host key carries a
    second known_hosts line (@cert-authority). The source must not run it; the resize either
    completes with the transfer user and host key the controller vouches for, or is refused
    while the VM still runs."""
    vm = guest("it-sec-evil-dest", vcpus=1, memory_mb=128, disk_gb=1)
    real = host_key(bed, "hv2")
    evil = {"transfer": {"user": "-oProxyCommand=touch %s;#" % PWNED,
                         "host_key": "%s \n@cert-authority * %s" % (real, real)}}
    with open(os.path.join(HERE, "files", "security", "evil_python.py")) as fh:
        wrapper = "#!/usr/bin/python3\n" + fh.read()  # no shebang in the repository (ansible-test sanity)
    bed.ssh("hv2", "cat > %s <<'HVR_EVIL_EOF'\n%sHVR_EVIL_EOF\nchmod 755 %s; rm -f %s.log; printf '%%s' %s > %s.json"
            % (EVIL, wrapper, EVIL, EVIL, shlex.quote(json.dumps(evil)), EVIL))
    inventory = inventory_with(bed, tmp_path, {"hv2": {"ansible_python_interpreter": EVIL}})
    try:
        proc = playbook_with(bed, inventory, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
        log = sh(bed, "hv2", "cat %s.log 2>/dev/null || true" % EVIL)
        # The attack was delivered: hv2's modules ran through the wrapper, and a hostile result
        # reached the controller (or prep ran, whose result carries the transfer section).
        assert "ran virt_host_facts" in log, "hv2's modules did not run through the hostile interpreter:\n" + log
        assert "ran virt_resize_prep" in log or "tampered" in log, log
        # The key assertion: the injected ProxyCommand never ran, on any host.
        for h in HOSTS:
            assert not exists(bed, h, PWNED), "the destination's ssh option ran a command on %s" % h
        if proc.returncode == 0:
            # Completed safely: with a transfer user and host key not taken from hv2's word.
            assert where(bed, vm) == {"hv1": "shut off", "hv2": "running"}
            assert report(bed, vm, "hv2")["boot_count"] == "2"
            assert sh(bed, "hv1", "grep -rls cert-authority /root/.ssh %s || true" % STATE_DIR).strip() == ""
        else:
            # Refused before the power-off: the VM never stopped, nothing is left on hv2.
            assert where(bed, vm) == {"hv1": "running"}, proc.stdout[-4000:]
            assert report(bed, vm, "hv1")["boot_count"] == "1", "the VM was powered off before the refusal"
            assert record(bed, "hv1", vm) is None
            nothing_left_on(bed, "hv2", vm)
    finally:
        for h in HOSTS:
            bed.ssh(h, "rm -f %s %s %s.json %s.log" % (PWNED, EVIL, EVIL, EVIL), check=False)


def test_source_module_refuses_an_ssh_option_as_transfer_user(bed, guest, tmp_path):
    """The same ssh option handed straight to virt_power_off_migrate on the source (ad hoc)."""
    vm = guest("it-sec-user", vcpus=1, memory_mb=128, disk_gb=1)
    pwned = "/root/pwned2"
    private, _public = keypair(tmp_path)
    args = {"instance": vm, "migration_id": str(uuid.uuid4()), "dest": "hv2", "dest_host": "hv2", "dest_port": 22,
            "dest_host_key": host_key(bed, "hv2"), "transfer_user": "-oProxyCommand=touch %s;#" % pwned,
            "transfer_private_key": private,
            "old_flavor": {"name": "old", "vcpus": 1, "memory_mb": 128, "root_gb": 1},
            "new_flavor": {"name": "m1.small", "vcpus": 2, "memory_mb": 256, "root_gb": 2}}
    try:
        proc, result = adhoc(bed, "hv1", "hypervisor.resize.virt_power_off_migrate", args)
        assert result is not None, proc.stdout + proc.stderr
        for h in HOSTS:
            assert not exists(bed, h, pwned), "transfer_user ran a command on %s" % h
        assert failed(proc), "an ssh option as transfer_user was accepted: %s" % result
        msg = re.sub(r"\s+", " ", result.get("msg", ""))
        assert "transfer_user" in msg and has_rule(msg, "T1"), msg
        assert where(bed, vm) == {"hv1": "running"} and record(bed, "hv1", vm) is None
        assert report(bed, vm, "hv1")["boot_count"] == "1"
    finally:
        for h in HOSTS:
            bed.ssh(h, "rm -f %s" % pwned, check=False)


# --- 2. disk paths the destination must never write --------------------------------------------

def test_disk_path_under_etc_cron_d_is_refused(bed, guest):
    """The only disk of a shut-off VM is /etc/cron.d/hvr-attack-*: a copy would install a cron
    job on the destination (the file is not created on hv1: /etc is the machine's own here)."""
    target = "/etc/cron.d/hvr-attack-%s" % TOKEN
    vm = hostile_vm(bed, guest, "it-sec-crond", only_disk(target))
    try:
        proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
        assert_refused(bed, proc, vm, "P1", target)
        assert not os.path.exists(target)
        assert [f for f in os.listdir("/etc/cron.d") if f.startswith(".hvresize-") or "hvr-attack" in f] == [], \
            "the resize left files in /etc/cron.d"
    finally:
        # Only what this test's attack, or the product acting on it, could have made there.
        for f in os.listdir("/etc/cron.d"):
            if f.startswith(".hvresize-") or f.startswith(os.path.basename(target)):
                os.remove(os.path.join("/etc/cron.d", f))


AK2 = "/root/.ssh/authorized_keys2"


def test_disk_path_at_root_authorized_keys2_is_refused(bed, guest):
    """The disk is root's authorized_keys2 (a 1 MiB raw file on hv1): a copy would let whatever
    the guest writes at its start log in as root on the destination."""
    for h in HOSTS:
        assert not exists(bed, h, AK2), "%s exists on %s before the test" % (AK2, h)
    bed.ssh("hv1", "truncate -s 1M %s" % AK2)
    try:
        vm = hostile_vm(bed, guest, "it-sec-ak2", only_disk(AK2))
        proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
        assert_refused(bed, proc, vm, "P1", AK2)
        assert not exists(bed, "hv2", AK2)
        assert ".hvresize-shared-" not in sh(bed, "hv2", "ls -A /root/.ssh"), "a marker was left in /root/.ssh"
    finally:
        for h in HOSTS:
            bed.ssh(h, "rm -f %s %s.hvresize-* /root/.ssh/.hvresize-shared-*" % (AK2, AK2), check=False)


def test_prep_on_the_destination_refuses_a_disk_at_root_authorized_keys2(bed, tmp_path):
    """The controller bypassed: virt_resize_prep called directly on hv2 with that disk must not
    authorize a key whose receiver may write it, nor open a migration."""
    _private, public = keypair(tmp_path)
    mid = str(uuid.uuid4())
    tiny = {"name": "m1.tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 1, "ephemeral_gb": 0, "swap_mb": 0}
    vm, vm_uuid = "it-sec-prep", str(uuid.uuid4())
    args = {"instance": vm, "uuid": vm_uuid, "migration_id": mid, "source_host": "hv1",
            "flavor": tiny, "old_flavor": tiny, "transfer_public_key": public,
            "disks": [{"path": AK2, "allocation": 1048576, "virtual_size": 1048576, "format": "raw"}],
            # The domain as it would be defined there, consistent with `disks` (the bed's guest).
            "domain_xml": guest_xml(vm, vm_uuid, AK2, "raw")}
    try:
        proc, result = adhoc(bed, "hv2", "hypervisor.resize.virt_resize_prep", args)
        assert result is not None, proc.stdout + proc.stderr
        assert failed(proc), "virt_resize_prep accepted %s as a disk path: %s" % (AK2, result)
        msg = re.sub(r"\s+", " ", result.get("msg", ""))
        assert AK2 in msg and has_rule(msg, "P1"), msg
        assert migrations_dir(bed, "hv2") == set()
        assert transfer_keys(bed, "hv2") == 0
        assert ".hvresize-shared-" not in sh(bed, "hv2", "ls -A /root/.ssh"), "a marker was left in /root/.ssh"
        assert not exists(bed, "hv2", AK2)
    finally:
        bed.ssh("hv2", "rm -rf %s/migrations/%s; rm -f /root/.ssh/.hvresize-shared-%s* %s; "
                       "sed -i '/hvresize-migration:%s/d' /root/.ssh/authorized_keys" % (STATE_DIR, mid, mid, AK2, mid),
                check=False)


def test_prep_makes_the_vtpm_state_path_itself_never_from_the_source(bed, tmp_path):
    """P5, the controller bypassed: a source that names another VM's TPM state, a UUID that is a
    path, or a state file the size of a disk gets nothing authorized, made or opened on hv2."""
    _private, public = keypair(tmp_path)
    tiny = {"name": "m1.tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 1, "ephemeral_gb": 0, "swap_mb": 0}
    vm, vm_uuid, victim = "it-sec-tpm", str(uuid.uuid4()), str(uuid.uuid4())
    disk = "/var/lib/libvirt/images/%s.qcow2" % vm
    xml = guest_xml(vm, vm_uuid, disk, "qcow2").replace(
        "</devices>", "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm></devices>")
    own = "/var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall" % vm_uuid
    size = {"allocation": 8192, "virtual_size": 6101, "format": "raw"}
    attacks = [
        ("another VM's TPM state", vm_uuid, xml,
         [dict(size, path="/var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall" % victim)], "not the disks"),
        ("a UUID that is a path", "../../../root/.ssh", xml.replace(vm_uuid, "../../../root/.ssh"),
         [dict(size, path="/var/lib/libvirt/swtpm/../../../root/.ssh/tpm2/tpm2-00.permall")], "UUID"),
        ("a state file the size of a disk", vm_uuid, xml,
         [dict(size, path=own, virtual_size=2 << 30)], "rule R2"),
    ]
    try:
        for what, claimed_uuid, domain_xml, files, why in attacks:
            mid = str(uuid.uuid4())
            args = {"instance": vm, "uuid": claimed_uuid, "migration_id": mid, "source_host": "hv1",
                    "flavor": tiny, "old_flavor": tiny, "transfer_public_key": public,
                    "disks": [{"path": disk, "allocation": 1 << 20, "virtual_size": 1 << 30, "format": "qcow2"}]
                    + files, "domain_xml": domain_xml}
            proc, result = adhoc(bed, "hv2", "hypervisor.resize.virt_resize_prep", args)
            assert result is not None, proc.stdout + proc.stderr
            assert failed(proc), "%s was accepted: %s" % (what, result)
            assert why in re.sub(r"\s+", " ", result.get("msg", "")), (what, result.get("msg"))
            assert migrations_dir(bed, "hv2") == set() and transfer_keys(bed, "hv2") == 0, what
            assert sh(bed, "hv2", "ls -A /var/lib/libvirt/swtpm 2>/dev/null || true").strip() == "", what
    finally:
        bed.ssh("hv2", "rm -rf /var/lib/libvirt/swtpm/%s /var/lib/libvirt/swtpm/%s" % (vm_uuid, victim), check=False)


# --- 3. a symbolic link planted at the part file ------------------------------------------------

def test_symlink_planted_at_the_part_file_does_not_redirect_the_copy(bed, guest):
    """hv2 plants <disk>.hvresize-part -> /root/victim: the receiver must not write through it."""
    vm = guest("it-sec-symlink", vcpus=1, memory_mb=128, disk_gb=1)
    disk = IMG % vm
    part = disk + ".hvresize-part"
    bed.ssh("hv2", "printf 'precious\\n' > /root/victim && ln -s /root/victim %s" % part)
    try:
        before = sha256(bed, "hv2", "/root/victim")
        proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
        assert sha256(bed, "hv2", "/root/victim") == before, "the copy wrote through the planted link"
        assert sh(bed, "hv2", "cat /root/victim") == "precious\n"
        if proc.returncode == 0:
            # The link was set aside and the copy went into a file of its own.
            assert where(bed, vm) == {"hv1": "shut off", "hv2": "running"}
            assert bed.ssh("hv2", "test -f %s && ! test -L %s" % (disk, disk), check=False).returncode == 0
        else:
            # Refused (or rolled back): the VM runs on hv1 at its old size, nothing of it on hv2.
            assert where(bed, vm) == {"hv1": "running"}, proc.stdout[-4000:]
            assert vm not in sh(bed, "hv2", "virsh -q -c qemu:///system list --all --name").split()
            assert not exists(bed, "hv2", disk) and migrations_dir(bed, "hv2") == set()
            assert transfer_keys(bed, "hv2") == 0
    finally:
        bed.ssh("hv2", "rm -f %s /root/victim" % part, check=False)


# --- 4-9. domain elements that hand host resources to the guest --------------------------------

SERIAL_LOG = "/etc/hvr-attack-%s.log" % TOKEN

HOST_ACCESS = {
    # name: (edit, rule, what the refusal must name, paths that must not appear on the machine)
    "host-block-device": (
        add_devices("<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/sda'/>"
                    "<target dev='vdb' bus='virtio'/><readonly/></disk>"),
        "D4", ("/dev/sda",), ()),
    "serial-log-under-etc": (serial_log(SERIAL_LOG), "P1", (SERIAL_LOG,), (SERIAL_LOG,)),
    "hostdev": (
        add_devices("<hostdev mode='subsystem' type='usb' managed='no'><source><vendor id='0x1234'/>"
                    "<product id='0xbeef'/></source></hostdev>"),
        "D1", ("hostdev",), ()),
    "filesystem": (
        add_devices("<filesystem type='mount' accessmode='passthrough'><source dir='/etc'/>"
                    "<target dir='hostetc'/></filesystem>"),
        "D2", ("filesystem",), ()),
    "seclabel": (
        add_top_level("<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"),
        "D6", ("seclabel",), ()),
}


@pytest.mark.parametrize("attack", sorted(HOST_ACCESS))
def test_host_access_in_the_domain_is_refused(bed, guest, attack):
    edit, rule, named, absent = HOST_ACCESS[attack]
    vm = hostile_vm(bed, guest, "it-sec-" + attack, edit)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert_refused(bed, proc, vm, rule, *named)
    for path in absent:
        assert not os.path.exists(path), "%s was created" % path


QEMU_CMDLINE = ("<qemu:commandline xmlns:qemu='%s'><qemu:arg value='-name'/><qemu:arg value='evil'/>"
                "</qemu:commandline>" % QEMU_NS)


def test_qemu_commandline_is_refused_unless_allowed(bed, guest):
    vm = hostile_vm(bed, guest, "it-sec-qemu-ns", add_top_level(QEMU_CMDLINE))
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert_refused(bed, proc, vm, "D3", "commandline")

    # The operator opts in for this VM: the resize goes ahead and the element travels with it.
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2",
             resize_allow_host_access=["qemu_namespace"])
    assert where(bed, vm) == {"hv1": "shut off", "hv2": "shut off"}
    xml = sh(bed, "hv2", "virsh -c qemu:///system dumpxml --inactive %s" % vm)
    assert "<qemu:arg value='evil'/>" in xml or '<qemu:arg value="evil"/>' in xml, xml


def test_a_live_resize_grows_only_the_vms_own_disk_from_its_own_definition(bed, guest):
    """L1: the disks a live resize grows are the running domain's own, by target and path, at the
    planned size and growing; anything else is refused with nothing changed."""
    vm = guest("it-sec-live", vcpus=1, memory_mb=128, disk_gb=1, max_vcpus=2, max_memory_mb=256)
    vm_uuid = sh(bed, "hv1", "virsh -q -c qemu:///system domuuid %s" % vm).strip()
    other = guest("it-sec-live2", start=False, disk_gb=1)
    base = {"instance": vm, "uuid": vm_uuid, "migration_id": str(uuid.uuid4()), "old_flavor": {"vcpus": 1, "memory_mb": 128},
            "flavor": {"vcpus": 1, "memory_mb": 128, "root_gb": 2}}
    attacks = [
        ({"target": "vda", "path": "/etc/shadow", "before": GIB, "after": 2 * GIB}, "is not a disk of the VM here"),
        ({"target": "vda", "path": IMG % other, "before": GIB, "after": 2 * GIB}, "is not a disk of the VM here"),
        ({"target": "vdz", "path": IMG % vm, "before": GIB, "after": 2 * GIB}, "is not a disk of the VM here"),
        ({"target": "vda", "path": IMG % vm, "before": GIB, "after": GIB // 2}, "grows it to"),
        ({"target": "vda", "path": IMG % vm, "before": 2 * GIB, "after": 3 * GIB}, "the plan started from"),
    ]
    for disk, why in attacks:
        proc, result = adhoc(bed, "hv1", "hypervisor.resize.virt_live_resize", dict(base, disks=[disk]))
        assert proc.returncode != 0 and why in result["msg"], (disk, result)
    proc, result = adhoc(bed, "hv1", "hypervisor.resize.virt_live_resize",
                         dict(base, uuid=str(uuid.uuid4()), disks=[]))
    assert proc.returncode != 0 and "the VM here has UUID" in result["msg"]
    proc, result = adhoc(bed, "hv1", "hypervisor.resize.virt_live_resize",
                         dict(base, old_flavor={"vcpus": 2, "memory_mb": 128}, disks=[]))
    assert proc.returncode != 0 and "the VM changed since the plan was made" in result["msg"]
    # Nothing changed: both disks as they were, no record.
    for name in (vm, other):
        assert json.loads(sh(bed, "hv1", "qemu-img info -U --output=json %s" % (IMG % name)))["virtual-size"] == GIB
    assert record(bed, "hv1", vm) is None
