"""docs/security.md's domain and path rules (D0-D8, P0-P3), table-driven: a source that is
compromised writes whatever domain definition it likes; each row is one such definition."""

import os
import stat
from types import SimpleNamespace

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import _policy
from ansible_collections.hypervisor.resize.plugins.module_utils.domain import parse_xml
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ValidationError

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "web01.xml")
ROOTS = ["/var/lib/libvirt/images"]

BASE = """<domain type='qemu' %(ns)s>
  <name>vm</name><uuid>00000000-0000-0000-0000-000000000001</uuid>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/var/lib/libvirt/boot/k</kernel><initrd>/var/lib/libvirt/boot/i</initrd></os>
  %(top)s
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/vm.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <serial type='file'><source path='/var/log/libvirt/qemu/vm-console.log'/><target port='0'/></serial>
    %(dev)s
  </devices>
</domain>"""
QEMU_NS = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"


def domain(dev="", top="", ns=""):
    return parse_xml(BASE % {"dev": dev, "top": top, "ns": ns})


def problems(root, allow=(), fs=None, roots=None, others=()):
    return _policy.check_domain(root, ROOTS if roots is None else roots, allow, fs=fs, others=others)[0]


def test_an_ordinary_domain_passes():
    assert problems(domain()) == []
    with open(FIXTURE) as fh:
        web01 = parse_xml(fh.read())
    # Its ISO sits in a pool; its rbd disk uses the host's storage network (an opt-in); its source's
    # own record is in its metadata (fine in the source's definition, never in a rendered one).
    assert _policy.check_domain(web01, ROOTS + ["/srv/iso"], ["host_network"], source=True)[0] == []
    got = problems(web01)
    assert any("/srv/iso/tools.iso is outside" in p and "libvirt dir pool" in p for p in got)
    assert any("[rule D9," in p and "rbd" in p for p in got)
    assert any("[rule X2," in p for p in got)


@pytest.mark.parametrize("dev,top,ns,rule,optin", [
    ("<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='0' function='0'/></source>"
     "</hostdev>", "", "", "D1", "hostdev"),
    ("<interface type='hostdev'><source><address type='pci' bus='1' slot='0'/></source></interface>", "", "", "D1",
     "hostdev"),
    ("<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>", "", "", "D1",
     "hostdev"),
    ("<input type='evdev'><source dev='/dev/input/event0'/></input>", "", "", "D1", "hostdev"),
    ("<shmem name='x'><model type='ivshmem-plain'/></shmem>", "", "", "D1", "hostdev"),
    ("<rng model='virtio'><backend model='random'>/etc/shadow</backend></rng>", "", "", "D1", "hostdev"),
    ("<filesystem type='mount'><source dir='/etc'/><target dir='etc'/></filesystem>", "", "", "D2", "filesystem"),
    ("<disk type='dir' device='disk'><source dir='/etc'/><target dev='vdb'/></disk>", "", "", "D2", "filesystem"),
    ("", "<qemu:commandline><qemu:arg value='-device'/></qemu:commandline>", QEMU_NS, "D3", "qemu_namespace"),
    ("<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vdb'/><readonly/></disk>", "", "", "D4",
     "host_block_device"),
    ("<disk type='file' device='cdrom'><source file='/dev/sr0'/><target dev='hdc'/><readonly/></disk>", "", "", "D4",
     "host_block_device"),
    ("<serial type='dev'><source path='/dev/ttyS0'/><target port='1'/></serial>", "", "", "D5", "host_char_device"),
    ("<channel type='pipe'><source path='/tmp/p'/><target type='virtio' name='x'/></channel>", "", "", "D5",
     "host_char_device"),
    ("", "<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>", "", "D6", "seclabel"),
    ("", "<seclabel type='none'/>", "", "D6", "seclabel"),
    ("<interface type='bridge'><source bridge='vmbr0'/><script path='/tmp/evil.sh'/></interface>", "", "", "D7",
     "host_script"),
    ("<interface type='user'/>", "", "", "D9", "host_network"),
    ("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>", "", "", "D9", "host_network"),
    ("<interface type='bridge'><source bridge='vmbr0'/><ip address='0.0.0.0' prefix='1'/></interface>", "", "",
     "D9", "host_network"),
    ("<serial type='tcp'><source mode='connect' host='127.0.0.1' service='6379'/><target port='1'/></serial>", "",
     "", "D9", "host_network"),
    ("<disk type='network' device='disk'><source protocol='rbd' name='other/vol'><host name='mon'/></source>"
     "<auth username='admin'><secret type='ceph' usage='client.admin'/></auth><target dev='vdb'/></disk>", "", "",
     "D9", "host_network"),
    ("<serial type='unix'><source mode='connect' path='/run/openvswitch/db.sock'/><target port='1'/></serial>", "",
     "", "D5", "host_char_device"),
    ("<graphics type='spice'><gl enable='yes'/></graphics>", "", "", "D1", "hostdev"),
    ("<audio id='1' type='alsa'><input dev='hw:0'/></audio>", "", "", "D1", "hostdev"),
    ("<memory model='sgx-epc'><target><size unit='MiB'>64</size></target></memory>", "", "", "D1", "hostdev"),
    ("", "<cputune><vcpusched vcpus='0' scheduler='fifo' priority='99'/></cputune>", "", "D1", "hostdev"),
    ("", "<seclabel type='dynamic' model='selinux'><baselabel>system_u:system_r:unconfined_t:s0</baselabel>"
         "</seclabel>", "", "D6", "seclabel"),
])
def test_host_access_is_refused_unless_the_operator_opts_in(dev, top, ns, rule, optin):
    got = problems(domain(dev, top, ns))
    assert got and all("[rule %s," % rule in p for p in got), got
    assert "resize_allow_host_access: [%s]" % optin in got[0]
    assert problems(domain(dev, top, ns), allow=[optin]) == []


@pytest.mark.parametrize("dev,top,rule,needle", [
    ("<disk type='file' device='disk'><source file='/etc/cron.d/x'/><target dev='vdb'/></disk>", "", "P1",
     "/etc/cron.d/x"),
    ("<disk type='file' device='disk'><source file='/root/.ssh/authorized_keys2'/><target dev='vdb'/></disk>", "",
     "P1", "authorized_keys2"),
    ("<disk type='file' device='disk'><source file='/var/lib/libvirt/images/../../../etc/x'/><target dev='vdb'/>"
     "</disk>", "", "P1", "not a normalized absolute path"),
    ("<disk type='file' device='disk'><source file='/var/lib/libvirt/images/.ssh/x'/><target dev='vdb'/></disk>",
     "", "P1", "hidden component"),
    ("<disk type='file' device='disk'><source file='/var/lib/libvirt/images/x.hvresize-part'/><target dev='vdb'/>"
     "</disk>", "", "P1", "reserved"),
    ("<disk type='file' device='cdrom'><source file='/etc/shadow'/><target dev='hdc'/><readonly/></disk>", "", "P2",
     "/etc/shadow"),
    ("<serial type='pty'><log file='/etc/hvr.log'/><target port='1'/></serial>", "", "P1", "/etc/hvr.log"),
    ("<console type='file'><source path='/root/.bashrc'/><target type='serial'/></console>", "", "P1", ".bashrc"),
    ("<channel type='unix'><source mode='bind' path='/etc/x.sock'/><target type='virtio' name='x'/></channel>", "",
     "P1", "/etc/x.sock"),
    ("<audio id='1' type='file' path='/etc/profile.d/x.sh'/>", "", "P1", "profile.d"),
    ("", "<sysinfo type='fwcfg'><entry name='opt/x' file='/etc/shadow'/></sysinfo>", "P2", "/etc/shadow"),
    ("<graphics type='vnc' socket='/root/x.sock'/>", "", "P1", "/root/x.sock"),
    ("<disk type='volume' device='disk'><source pool='default' volume='other.qcow2'/><target dev='vdb'/></disk>",
     "", "P3", "pool volume"),
    ("<emulator>/tmp/evil</emulator>", "", "D8", "not a QEMU binary"),
    ("<watchdog model='i6300esb' action='reset'><x path='/etc/y'/></watchdog>", "", "P0", "/etc/y"),
    ("<newdevice/>", "", "D0", "newdevice"),
    ("", "<bootloader>/usr/bin/pygrub</bootloader>", "D8", "bootloader"),
])
def test_host_paths_outside_the_rules_are_refused(dev, top, rule, needle):
    got = problems(domain(dev, top))
    assert any("[rule %s," % rule in p and needle in p for p in got), got


def test_opt_ins_are_per_kind():
    root = domain("<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/><product id='0x2'/></source>"
                  "</hostdev><filesystem type='mount'><source dir='/srv'/><target dir='s'/></filesystem>")
    got = problems(root, allow=["hostdev"])
    assert len(got) == 1 and "[rule D2," in got[0]
    with pytest.raises(ValidationError, match="unknown host access opt-in"):
        problems(root, allow=["everything"])


def test_metadata_is_opaque():
    top = "<metadata><app:x xmlns:app='urn:x' path='/etc/shadow'>/root</app:x></metadata>"
    assert problems(domain(top=top)) == []


# --- on the host, with a file system --------------------------------------------------------------

class FakeFS:
    """{path: 'dir' | 'file' | 'link:target' | 'sock'}"""

    def __init__(self, tree):
        self.tree = tree

    def lstat(self, path):
        kind = self.tree.get(path)
        if kind is None:
            return None
        mode = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "sock": stat.S_IFSOCK, "blk": stat.S_IFBLK}.get(
            kind, stat.S_IFLNK)
        return SimpleNamespace(st_mode=mode | 0o644)

    def realpath(self, path):
        kind = self.tree.get(path, "")
        return kind[5:] if kind.startswith("link:") else path


HOST = {"/var/lib/libvirt/images": "dir", "/var/lib/libvirt/boot/k": "file", "/var/lib/libvirt/boot/i": "file",
        "/var/log/libvirt": "dir", "/var/log/libvirt/qemu": "dir", "/usr/bin/qemu-system-x86_64": "file"}


def test_on_the_host_an_ordinary_domain_passes():
    assert problems(domain(), fs=FakeFS(HOST)) == []


@pytest.mark.parametrize("extra,needle", [
    ({"/var/lib/libvirt/images/sub": "link:/etc"}, "is a symbolic link"),
    ({"/var/lib/libvirt/images/sub": "file"}, "is not a directory"),
    ({"/var/lib/libvirt/images/sub": "dir", "/var/lib/libvirt/images/sub/vm.qcow2": "link:/etc/shadow"},
     "is a symbolic link"),
    ({"/var/lib/libvirt/images/sub": "dir", "/var/lib/libvirt/images/sub/vm.qcow2": "sock"}, "not a regular file"),
    ({}, "does not exist"),
])
def test_on_the_host_disk_paths_resolve_without_links(extra, needle):
    dev = "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/sub/vm.qcow2'/><target dev='vdb'/></disk>"
    got = problems(domain(dev), fs=FakeFS(dict(HOST, **extra)))
    assert any(needle in p and "[rule P1," in p for p in got), got


def test_on_the_host_read_only_files_must_exist_and_resolve_inside_the_read_roots():
    dev = "<disk type='file' device='cdrom'><source file='/var/lib/libvirt/images/x.iso'/><target dev='hdc'/>" \
          "<readonly/></disk>"
    got = problems(domain(dev), fs=FakeFS(HOST))
    assert any("does not exist" in p and "[rule P2," in p for p in got), got
    got = problems(domain(dev), fs=FakeFS(dict(HOST, **{"/var/lib/libvirt/images/x.iso": "link:/etc/shadow"})))
    assert any("resolves to /etc/shadow" in p for p in got), got
    assert problems(domain(dev), fs=FakeFS(dict(HOST, **{"/var/lib/libvirt/images/x.iso": "file"}))) == []


def test_storage_roots_never_include_system_directories():
    roots, dropped = _policy.storage_roots(["/var/lib/libvirt/images", "/", "/etc", "/etc/pools", "/srv/vm", "rel",
                                            "/var/lib/libvirt/images"])
    assert roots == ["/var/lib/libvirt/images", "/srv/vm"]
    assert dropped == ["/", "/etc", "/etc/pools", "rel"]


def test_a_pool_that_contains_system_directories_still_never_reaches_them():
    dev = "<disk type='file' device='disk'><source file='/var/lib/libvirt/hvresize/x'/><target dev='vdb'/></disk>"
    got = problems(domain(dev), roots=["/var/lib/libvirt"])
    assert any("never a storage root" in p for p in got), got


def test_refuse_names_every_problem_and_the_rule_document():
    with pytest.raises(ValidationError) as err:
        _policy.refuse(["a [rule D1, docs/security.md]", "b"], domain="vm", host="hv2")
    assert "a [rule D1, docs/security.md]; b" in err.value.full_message() and "nothing was changed" in \
        err.value.full_message()


def test_a_file_of_another_domain_on_the_destination_is_never_this_ones():
    victim = parse_xml(BASE.replace("/var/lib/libvirt/images/vm.qcow2", "/var/lib/libvirt/images/victim.qcow2")
                       .replace("vm-console.log", "victim-console.log")
                       .replace("<devices>", "<devices><disk type='file' device='cdrom'><source "
                                             "file='/var/lib/libvirt/images/tools.iso'/><target dev='hdc'/>"
                                             "<readonly/></disk>") % {"dev": "", "top": "", "ns": ""})
    others = _policy.domain_paths(victim)
    for dev, needle in (
            ("<serial type='file'><source path='/var/lib/libvirt/images/victim.qcow2'/><target port='1'/></serial>",
             "victim.qcow2"),
            ("<disk type='file' device='cdrom'><driver type='qcow2'/><source file='/var/lib/libvirt/images/victim.qcow2'/>"
             "<target dev='hdd'/><readonly/></disk>", "victim.qcow2"),
            ("<console type='file'><source path='/var/log/libvirt/qemu/victim-console.log'/><target type='serial'/>"
             "</console>", "victim-console.log")):
        got = problems(domain(dev), others=others)
        assert any("[rule P4," in p and needle in p for p in got), got
    iso = "<disk type='file' device='cdrom'><source file='/var/lib/libvirt/images/tools.iso'/><target dev='hdc'/>" \
          "<readonly/></disk>"
    assert problems(domain(iso), others=others) == [], "install media both only read is fine"


def test_a_socket_the_guest_listens_on_must_be_new():
    dev = "<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/x.sock'/>" \
          "<target type='virtio' name='x'/></channel>"
    tree = dict(HOST, **{"/var/lib/libvirt/qemu/channel": "dir", "/var/lib/libvirt/qemu/channel/x.sock": "sock"})
    assert any("must be new" in p for p in problems(domain(dev), fs=FakeFS(tree)))
    del tree["/var/lib/libvirt/qemu/channel/x.sock"]
    assert problems(domain(dev), fs=FakeFS(tree)) == []


@pytest.mark.parametrize("address", ["fe80::1%\n@cert-authority * ssh-ed25519 AAAA", "fe80::1%eth0", " hv2"])
def test_T3_no_scope_ids_or_spaces_in_addresses(address):
    with pytest.raises(ValidationError, match="rule T3"):
        _policy.check_address(address)


def test_P3_only_formats_whose_references_can_be_checked():
    dev = "<disk type='file' device='disk'><driver name='qemu' type='vmdk'/>" \
          "<source file='/var/lib/libvirt/images/x.vmdk'/><target dev='vdb'/></disk>"
    assert any("[rule P3," in p and "vmdk" in p for p in problems(domain(dev)))


def test_an_emulated_tpm_travels_unless_its_state_cannot_travel_whole():
    tpm = "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"
    assert problems(domain(tpm)) == []
    for backend, why in (
            ("<backend type='emulator' version='2.0'><encryption secret='6dd3e4a5-1d76-44ce-961f-f119f5aad935'/>"
             "</backend>", "encrypted with libvirt secret 6dd3e4a5"),
            ("<backend type='emulator' version='2.0'><source type='dir' path='/srv/tpm'/></backend>",
             "a path of its own"),
            ("<backend type='emulator' version='3.0'/>", "version '3.0'"),
            ("<backend type='emulator'/>", "version None")):
        got = problems(domain("<tpm model='tpm-crb'>%s</tpm>" % backend))
        assert any("[rule P3," in p and "emulated TPM" in p and why in p for p in got), (backend, got)
        got = problems(domain("<tpm model='tpm-crb'>%s</tpm>" % backend), allow=list(_policy.ALLOW_CHOICES))
        assert any("[rule P3," in p for p in got), "no opt-in"


def test_what_a_move_cannot_carry_yet_is_refused_naming_it():
    # A firmware libvirt chooses is pinned by the source's facts (domain.pin_firmware), not refused.
    auto = domain().getroottree().getroot()
    auto.find("os").set("firmware", "efi")
    assert problems(auto) == []


@pytest.mark.parametrize("os_xml, rule, why", [
    ("<nvram type='network'><source protocol='nbd' name='v'><host name='evil' port='10809'/></source></nvram>",
     "D9", "must name its store as a file path"),
    ("<nvram type='file'><source file='/var/lib/libvirt/qemu/nvram/x.fd'/></nvram>", "P3", "as a file path"),
    ("<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'/>", "P3", "as a file path"),
    ("<nvram format='qcow2'>/var/lib/libvirt/qemu/nvram/vm_VARS.qcow2</nvram>", "P3", "format='qcow2'"),
    ("<loader type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>", "D1", "without readonly='yes'"),
    ("<loader readonly='yes' type='pflash' format='qcow2'>/usr/share/OVMF/OVMF_CODE_4M.qcow2</loader>", "P3",
     "format='qcow2'"),
])
def test_firmware_stores_and_loaders_that_are_not_plain_files_are_refused(os_xml, rule, why):
    root = domain().getroottree().getroot()
    root.find("os").append(parse_xml(os_xml))
    got = problems(root, fs=FakeFS(dict(HOST, **{"/usr/share/OVMF/OVMF_CODE_4M.fd": "file",
                                                 "/usr/share/OVMF/OVMF_CODE_4M.qcow2": "file"})))
    assert any("[rule %s," % rule in p and why in p for p in got), got


def test_the_store_libvirt_keeps_for_another_domain_is_that_domains_file():
    """P4: another domain here whose firmware libvirt chooses owns <name>_VARS.fd though its
    definition does not show it; a definition pointing its store there is refused."""
    victim = domain().getroottree().getroot()
    victim.find("name").text = "victim"
    victim.find("os").set("firmware", "efi")
    others = _policy.domain_paths(victim)
    assert {"kind": "nvram", "path": "/var/lib/libvirt/qemu/nvram/victim_VARS.fd",
            "what": "the NVRAM store libvirt keeps for <os firmware>"} in others
    attacker = domain().getroottree().getroot()
    attacker.find("os").append(parse_xml("<nvram>/var/lib/libvirt/qemu/nvram/victim_VARS.fd</nvram>"))
    got = problems(attacker, fs=FakeFS(dict(HOST)), others=others)
    assert any("[rule P4," in p and "victim_VARS.fd" in p for p in got), got


def test_a_block_device_is_never_a_file_and_must_be_there_with_the_opt_in():
    dev = "<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/data'/>" \
          "<target dev='vdb'/></disk>"
    assert any("[rule D4," in p for p in problems(domain(dev)))
    tree = dict(HOST, **{"/dev/vg0/data": "file"})
    got = problems(domain(dev), allow=["host_block_device"], fs=FakeFS(tree))
    assert any("is not a block device on the destination" in p for p in got), got
    tree["/dev/vg0/data"] = "blk"
    assert problems(domain(dev), allow=["host_block_device"], fs=FakeFS(tree)) == []
