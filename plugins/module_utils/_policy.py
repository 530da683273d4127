# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a migration between two hypervisors may touch. Private to hypervisor.resize.

Every rule of docs/security.md that decides on something one host hands to another lives here, with
its id, so that the controller's scheduler filter, virt_resize_prep and virt_finish_migration on the
destination, and virt_power_off_migrate on the source apply the very same rule. Pure: the file
system is reached only through the `fs` object passed in (`LocalFS` on a host, a fake in unit tests).

Rule ids (docs/security.md explains each):
  T1 transfer user   T2 host key   T3 ssh command line / addresses   T4 one-off key options
  P0 unclassified host path   P1 written paths   P2 read-only paths   P3 disks that cannot be checked
  D0 unknown element  D1 host devices and resources  D2 host file systems  D3 hypervisor-specific
  namespaces  D4 host block devices  D5 host character devices and sockets  D6 confinement  D7 host
  scripts  D8 executables  D9 host network identity  P4 another domain's files  P5 state files  X2 our record
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import stat

from . import parts
from .errors import ValidationError

SECURITY_DOC = "docs/security.md"

# Opt-ins an operator may give per VM (role variable resize_allow_host_access) for a move to
# another host: each lets the named kind of host access travel with the VM.
ALLOW_CHOICES = ("hostdev", "filesystem", "qemu_namespace", "host_block_device", "host_char_device",
                 "seclabel", "host_script", "host_network")
_OPT_IN = {"D1": "hostdev", "D2": "filesystem", "D3": "qemu_namespace", "D4": "host_block_device",
           "D5": "host_char_device", "D6": "seclabel", "D7": "host_script", "D9": "host_network"}
# Image formats whose every host reference qemu-img shows (backing file, data file); others (vmdk
# extents, ...) could name host files no check sees.
IMAGE_FORMATS = ("raw", "qcow2")
RECORD_NS = "https://hypervisor-resize.dev/xmlns/migration/1"

# Never a storage root, whatever a pool says; a path under one of these is refused (P1).
DENY = ("/etc", "/root", "/boot", "/dev", "/proc", "/sys", "/run", "/var/run", "/bin", "/sbin",
        "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/tmp", "/var/tmp", "/var/spool",
        "/var/log", "/var/lib/libvirt/qemu", "/var/lib/libvirt/hvresize", "/var/lib/libvirt/swtpm",
        "/var/lib/libvirt/dnsmasq", "/var/cache")
# Fixed roots for what is not a disk (ours, not configurable: the deny list does not apply to them).
LOG_ROOTS = ("/var/log/libvirt",)
SOCKET_ROOTS = ("/var/lib/libvirt/qemu/channel", "/run/libvirt/qemu/channel", "/var/run/libvirt/qemu/channel",
                "/run/openvswitch", "/var/run/openvswitch")
READ_ROOTS = ("/var/lib/libvirt/boot", "/usr/share/OVMF", "/usr/share/AAVMF", "/usr/share/edk2",
              "/usr/share/qemu", "/usr/share/seabios", "/usr/share/ipxe", "/usr/lib/ipxe")
NVRAM_ROOTS = ("/var/lib/libvirt/qemu/nvram",)
RESERVED_MARK = ".hvresize-"  # our own files' names (parts, backups, markers): never a VM's path
EMULATOR_RE = re.compile(r"^/usr/(?:local/)?(?:bin|libexec)/(?:qemu-system-[a-z0-9_]+|qemu-kvm|kvm)$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
CIPHER_RE = re.compile(r"^[a-z0-9@.,-]{1,200}$")

# Elements a domain may have (libvirt 9), at the top level and under <devices>. Anything else is
# refused (D0): a new element may carry a host path or host access that no rule here checks yet.
TOP_LEVEL = frozenset((
    "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory", "currentMemory",
    "memoryBacking", "blkiotune", "memtune", "numatune", "vcpu", "vcpus", "iothreads", "iothreadids",
    "defaultiothread", "cputune", "cpu", "resource", "sysinfo", "os", "features", "clock", "on_poweroff",
    "on_reboot", "on_crash", "on_lockfailure", "pm", "perf", "devices", "seclabel", "keywrap",
    "launchSecurity", "throttlegroups", "bootloader", "bootloader_args", "idmap"))
DEVICES = frozenset((
    "emulator", "disk", "controller", "interface", "input", "graphics", "video", "console", "serial",
    "parallel", "channel", "sound", "audio", "memballoon", "rng", "watchdog", "panic", "tpm", "smartcard",
    "redirdev", "redirfilter", "hub", "hostdev", "filesystem", "shmem", "memory", "iommu", "vsock", "lease",
    "crypto", "pstore"))
_CHAR_DEVICES = ("serial", "parallel", "console", "channel", "redirdev")
# Text that may start with "/" without being a host path.
_FREE_TEXT = frozenset(("description", "title", "cmdline", "label", "imagelabel", "baselabel"))
_FREE_ATTRS = frozenset(("passwd",))


def _rule(rule_id):
    return "[rule %s, %s]" % (rule_id, SECURITY_DOC)


def under(path, root):
    """Lexically: `path` is `root` or inside it."""
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def normalized_abs(path):
    return isinstance(path, str) and path.startswith("/") and "\x00" not in path and "\n" not in path \
        and posixpath.normpath(path) == path and not path.startswith("//")


# --- the transfer: what reaches the source's ssh command line (T1-T4) -------------------------

def check_transfer_user(user):
    """T1: a plain login name; never an ssh option."""
    if not isinstance(user, str) or not USER_RE.fullmatch(user):
        raise ValidationError("transfer_user %r is not a plain user name %s" % (user, _rule("T1")),
                              hint="set resize_transfer_user to a login name such as root")
    return user


def check_public_key(line, what="transfer_public_key"):
    """T2: exactly one ssh public key (type and base64 blob, optional plain comment); returns
    "type blob", so nothing else of the line (options, newlines, markers) can travel on."""
    text = line if isinstance(line, str) else ""
    parts = text.strip().split()
    if "\n" in text.strip() or "\r" in text or len(parts) < 2 or len(parts) > 3 or parts[0] not in KEY_TYPES \
            or not BASE64_RE.fullmatch(parts[1]) or len(parts[1]) > 4096:
        raise ValidationError("%s is not one ssh public key line (type base64 [comment]) %s" % (what, _rule("T2")))
    return parts[0] + " " + parts[1]


def check_address(address, what="address"):
    """T3: a host name or an IP address, nothing an ssh option or a shell could read otherwise
    (no IPv6 scope id either: it may hold any character)."""
    if isinstance(address, str) and "%" not in address and address == address.strip():
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            if HOSTNAME_RE.fullmatch(address):
                return address
    raise ValidationError("%s %r is neither a host name nor an IP address %s" % (what, address, _rule("T3")))


def check_port(port):
    try:
        value = int(port)
    except (TypeError, ValueError):
        value = 0
    if not 0 < value < 65536:
        raise ValidationError("ssh port %r is not a port number %s" % (port, _rule("T3")))
    return value


def check_cipher(cipher):
    if cipher and not CIPHER_RE.fullmatch(cipher):
        raise ValidationError("ssh cipher %r is not a cipher name %s" % (cipher, _rule("T3")))
    return cipher or None


def known_hosts_line(dest, port, host_key):
    """T2/T3: the one line the source's private known_hosts file holds for the destination."""
    dest = check_address(dest, "destination")
    key = check_public_key(host_key, "the destination's host key")
    port = check_port(port)
    return "%s %s\n" % (dest if port == 22 else "[%s]:%d" % (dest, port), key)


def check_allow(allow):
    bad = [a for a in (allow or []) if a not in ALLOW_CHOICES]
    if bad:
        raise ValidationError("unknown host access opt-in(s) %s; choose from %s"
                              % (", ".join(map(str, bad)), ", ".join(ALLOW_CHOICES)))
    return list(allow or [])


# --- the domain: what the source's definition may make the destination do (D0-D8, P0-P3) -------

def _describe(el):
    attrs = " ".join("%s='%s'" % (k, v) for k, v in sorted(el.attrib.items()) if isinstance(k, str))
    tag = el.tag if isinstance(el.tag, str) else "?"
    return "<%s%s>" % (tag, (" " + attrs) if attrs else "")


class Review:
    """What a domain asks of the host it is defined on: refusals (rule, text) and the host paths it
    names, each with its kind: disk (written: a disk that moves), read (must exist: media, boot
    files), log (written by virtlogd/QEMU), socket, nvram, emulator."""

    def __init__(self, allow):
        self.allow = set(allow or [])
        self.refusals = []
        self.paths = []
        self.classified = set()
        self.source = False
        self.uuid = None

    def refuse(self, rule, what):
        if _OPT_IN.get(rule) in self.allow:
            return
        hint = (" (allow it with resize_allow_host_access: [%s])" % _OPT_IN[rule]) if rule in _OPT_IN else ""
        self.refusals.append((rule, "%s %s%s" % (what, _rule(rule), hint)))

    def path(self, kind, value, el, attr=None, what=None):
        self.classified.add((el, attr))
        if value:
            self.paths.append({"kind": kind, "path": value, "what": what or _describe(el)})


def review_domain(root, allow=(), source=False):
    """Review a parsed <domain> (lxml element) for a move to another host. Returns a Review.

    source: `root` is the source's own definition (the controller's review), which carries the
    source's records; the definition rendered for the destination never does (X2)."""
    rv = Review(check_allow(allow))
    rv.source = source
    rv.uuid = (root.findtext("uuid") or "").strip()
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if child.tag not in TOP_LEVEL and not _foreign(child):
            rv.refuse("D0", "element <%s> is not known to this version" % child.tag)
    _namespaces(root, rv)
    _os_and_sysinfo(root, rv)
    _seclabels(root, rv)
    devices = root.find("devices")
    for dev in (devices if devices is not None else []):
        if not isinstance(dev.tag, str) or _foreign(dev):
            continue
        if dev.tag not in DEVICES:
            rv.refuse("D0", "device <%s> is not known to this version" % dev.tag)
            continue
        _device(dev, rv)
    _unclassified_paths(root, rv)
    return rv


def _foreign(el):
    return isinstance(el.tag, str) and el.tag.startswith("{")


def _namespaces(root, rv):
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        if _in_metadata(el):
            if el.tag.startswith("{%s}" % RECORD_NS) and not rv.source:
                rv.refusals.append(("X2", "<metadata> holds an element in hypervisor.resize's record namespace; "
                                          "only this host writes its records %s" % _rule("X2")))
            continue
        if _foreign(el):
            rv.refuse("D3", "element %s in namespace %s" % (el.tag.split("}", 1)[1], el.tag[1:].split("}", 1)[0]))
            continue
        for key in el.attrib:
            if key.startswith("{"):
                rv.refuse("D3", "attribute %s of <%s>" % (key, el.tag))


def _in_metadata(el):
    while el is not None:
        if el.tag == "metadata":
            return True
        el = el.getparent()
    return False


def _os_and_sysinfo(root, rv):
    os_el = root.find("os")
    if os_el is not None:
        for tag in ("kernel", "initrd", "dtb", "loader"):
            for el in os_el.findall(tag):
                rv.path("read", (el.text or "").strip(), el, what="<os><%s>" % tag)
                if tag == "loader" and el.get("readonly") == "no":
                    rv.refuse("D1", "<os><loader readonly='no'> lets the guest write a host file")
        for el in os_el.findall("smbios"):
            if el.get("mode") == "host":
                rv.refuse("D1", "<os><smbios mode='host'> shows the guest the host's SMBIOS (serial numbers)")
        for el in os_el.findall("loader"):
            if el.get("type") == "pflash" and el.get("readonly") != "yes":
                rv.refuse("D1", "<os><loader type='pflash'> without readonly='yes': libvirt opens it for writing")
            if el.get("format") not in (None, "raw"):
                rv.refuse("P3", "<os><loader format='%s'>: only raw firmware images are checked" % el.get("format"))
        for el in os_el.findall("nvram"):
            path = (el.text or "").strip()
            if el.get("type") not in (None, "file") or len(el) or not path:
                # A store on the network (NBD, iSCSI with the host's secrets), or one libvirt names itself.
                rv.refuse("D9" if el.get("type") == "network" else "P3",
                          "<os><nvram%s> must name its store as a file path in its text"
                          % ("".join(" %s='%s'" % kv for kv in sorted(el.attrib.items()) if kv[0] == "type")))
                for sub in el.iter():
                    rv.classified.update([(sub, None)] + [(sub, k) for k in sub.attrib])
                continue
            rv.path("nvram", path, el, what="<os><nvram>")
            if el.get("template"):
                rv.path("read", el.get("template"), el, "template", "<os><nvram template>")
            for attr in ("format", "templateFormat"):
                if el.get(attr) not in (None, "raw"):
                    rv.refuse("P3", "<os><nvram %s='%s'>: only raw variable stores are carried and checked"
                              % (attr, el.get(attr)))
        for el in os_el.iter("table"):
            rv.path("read", (el.text or "").strip(), el, what="<os><acpi><table>")
    for tag in ("bootloader",):
        if root.find(tag) is not None:
            rv.refuse("D8", "<%s> names a program the host would run" % tag)
            rv.classified.add((root.find(tag), None))
    for entry in root.findall("./sysinfo/entry"):
        if entry.get("file"):
            rv.path("read", entry.get("file"), entry, "file", "<sysinfo><entry file>")
    for sched in root.findall("./cputune/*"):
        if sched.get("scheduler") in ("fifo", "rr"):
            rv.refuse("D1", "<cputune><%s scheduler='%s'> gives the guest real-time priority on the host"
                      % (sched.tag, sched.get("scheduler")))


def _seclabels(root, rv):
    for el in root.iter("seclabel"):
        if el.getparent() is root:
            relaxed = el.get("type") in ("none", "static") or el.get("relabel") == "no" or any(
                el.find(tag) is not None for tag in ("label", "baselabel", "imagelabel"))
        else:  # a device's own label: libvirt would give that file an ownership the source chose
            relaxed = el.find("label") is not None
        if relaxed:
            rv.refuse("D6", "%s relaxes the confinement libvirt gives the guest" % _describe(el))


def _device(dev, rv):
    tag = dev.tag
    if tag == "emulator":
        value = (dev.text or "").strip()
        rv.path("emulator", value, dev, what="<emulator>")
        if not EMULATOR_RE.fullmatch(value):
            rv.refuse("D8", "<emulator>%s</emulator> is not a QEMU binary" % value)
    elif tag == "disk":
        _disk(dev, rv)
    elif tag in ("hostdev", "shmem") or (
            tag == "memory" and (dev.find("./source/path") is not None or dev.get("model") == "sgx-epc")):
        rv.refuse("D1", "%s gives the guest a host device or host memory" % _describe(dev))
        for el in dev.iter():
            for key in el.attrib:
                rv.classified.add((el, key))
            rv.classified.add((el, None))
    elif tag == "filesystem":
        rv.refuse("D2", "%s shares a host file system with the guest" % _describe(dev))
        for el in dev.iter():
            for key in el.attrib:
                rv.classified.add((el, key))
    elif tag == "interface":
        _interface(dev, rv)
    elif tag in _CHAR_DEVICES or (tag == "smartcard" and dev.get("mode") == "passthrough"):
        _char(dev, rv)
    elif tag == "smartcard" and dev.get("mode") == "host":
        rv.refuse("D1", "%s gives the guest the host's smartcard reader" % _describe(dev))
    elif tag == "input" and dev.get("type") in ("passthrough", "evdev"):
        rv.refuse("D1", "%s gives the guest a host input device" % _describe(dev))
        for el in dev.iter():
            for key in el.attrib:
                rv.classified.add((el, key))
    elif tag == "tpm":
        backend = dev.find("backend")
        if backend is not None and backend.get("type") == "emulator":
            # Its state travels (parts.state_files) when it can travel whole; else refused, named.
            for problem in parts.tpm_problems(backend, rv.uuid):
                rv.refuse("P3", "<tpm> with an emulated TPM: %s; the VM would lose its TPM's keys (BitLocker, "
                                "measured boot)" % problem)
            for el in backend.iter():
                if el.tag in ("encryption", "source"):
                    for key in el.attrib:
                        rv.classified.add((el, key))
        if backend is not None and backend.get("type") == "passthrough":
            rv.refuse("D1", "<tpm> passes the host's TPM through")
            for el in dev.iter():
                for key in el.attrib:
                    rv.classified.add((el, key))
    elif tag == "rng":
        backend = dev.find("backend")
        if backend is not None and backend.get("model") == "random":
            value = (backend.text or "").strip()
            rv.classified.add((backend, None))
            if value not in ("", "/dev/random", "/dev/urandom", "/dev/hwrng"):
                rv.refuse("D1", "<rng> reads host file %s" % value)
        elif backend is not None and backend.get("model") == "egd":
            _char(backend, rv)
    elif tag == "graphics":
        for el in [dev] + dev.findall("listen"):
            if el.get("socket"):
                rv.path("socket", el.get("socket"), el, "socket", "<graphics> socket")
        gl_on = any(gl.get("enable") == "yes" or gl.get("rendernode") for gl in dev.findall("gl"))
        if dev.get("type") == "egl-headless" or gl_on:
            rv.refuse("D1", "<graphics type='%s'> with GL gives the guest a host GPU" % dev.get("type"))
            for gl in dev.findall("gl"):
                rv.classified.add((gl, "rendernode"))
    elif tag == "video" and any(a.get("accel3d") == "yes" for a in dev.iter("acceleration")):
        rv.refuse("D1", "<video><acceleration accel3d='yes'> gives the guest a host GPU")
    elif tag == "audio":
        if dev.get("type") == "file":
            rv.path("log", dev.get("path"), dev, "path", "<audio type='file'> path")
        elif dev.get("type") not in ("none", "spice"):
            rv.refuse("D1", "<audio type='%s'> gives the guest the host's sound system" % dev.get("type"))
            for el in dev.iter():
                for key in el.attrib:
                    rv.classified.add((el, key))


def _disk(dev, rv):
    dtype = dev.get("type", "file")
    device = dev.get("device", "disk")
    source = dev.find("source")
    readonly = dev.find("readonly") is not None
    if dtype == "block" or (source is not None and source.get("dev")):
        path = (source.get("dev") if source is not None else None) or ""
        rv.refuse("D4", "disk %s is a host block device; its data is never copied: without the opt-in it is "
                        "refused, with it the destination must see the same device" % (path or "?"))
        if source is not None:
            rv.path("device", path, source, "dev", "block device %s" % path)
        return
    if dtype == "dir":
        where = source.get("dir") if source is not None else ""
        rv.refuse("D2", "disk <source dir='%s'> exposes a host directory" % where)
        if source is not None:
            rv.classified.add((source, "dir"))
        return
    if dtype == "volume":
        rv.refuse("P3", "disk <source pool='%s' volume='%s'> is a storage pool volume; this version cannot "
                        "check or carry it" % (source.get("pool") if source is not None else "",
                                               source.get("volume") if source is not None else ""))
        return
    if dtype == "network":
        rv.refuse("D9", "network disk <source protocol='%s' name='%s'> uses the host's storage network and "
                        "credentials" % (source.get("protocol") if source is not None else "",
                                         source.get("name") if source is not None else ""))
        for el in dev.iter():
            for key in el.attrib:
                rv.classified.add((el, key))
            rv.classified.add((el, None))
        return
    if dtype != "file":
        rv.refuse("D0", "disk type '%s' is not known to this version" % dtype)
        return
    if dev.find("backingStore") is not None and dev.find("backingStore/source") is not None:
        rv.refuse("P3", "disk %s has a backing chain in its definition; this version cannot carry it"
                  % (source.get("file") if source is not None else "?"))
        for el in dev.find("backingStore").iter():
            for key in el.attrib:
                rv.classified.add((el, key))
    path = source.get("file") if source is not None else None
    fmt = dev.find("driver").get("type", "raw") if dev.find("driver") is not None else "raw"
    if path and fmt not in IMAGE_FORMATS:
        rv.refuse("P3", "disk %s has format '%s'; this version checks only %s images"
                  % (path, fmt, " and ".join(IMAGE_FORMATS)))
    if path and (path.startswith("/dev/") or path == "/dev"):
        rv.refuse("D4", "disk %s is a host device node" % path)
        rv.classified.add((source, "file"))
        return
    if source is not None:
        kind = "disk" if device == "disk" and not readonly else "read"
        rv.path(kind, path, source, "file", "disk %s" % path)


NIC_TYPES = ("bridge", "network")


def _interface(dev, rv):
    itype = dev.get("type")
    if itype not in NIC_TYPES and itype != "hostdev":
        rv.refuse("D9", "<interface type='%s'> connects the guest through the host's own network stack" % itype)
    for tag in ("ip", "route", "portForward"):
        if dev.find(tag) is not None:
            rv.refuse("D9", "<interface><%s> changes the host's own network configuration" % tag)
    if itype == "hostdev":
        rv.refuse("D1", "<interface type='hostdev'> gives the guest a host PCI device")
        for el in dev.iter():
            for key in el.attrib:
                rv.classified.add((el, key))
    for tag in ("script", "downscript"):
        for el in dev.findall(tag):
            rv.refuse("D7", "<interface><%s path='%s'> runs a program on the host" % (tag, el.get("path")))
            rv.classified.add((el, "path"))
    backend = dev.find("backend")
    if backend is not None:
        for key in ("tap", "vhost"):
            if backend.get(key):
                rv.refuse("D1", "<interface><backend %s='%s'> opens a host device" % (key, backend.get(key)))
                rv.classified.add((backend, key))
    source = dev.find("source")
    if itype not in NIC_TYPES and source is not None:
        for key in source.attrib:
            rv.classified.add((source, key))


def _char(dev, rv):
    ctype = dev.get("type")
    source = dev.find("source")
    if ctype in ("dev", "pipe"):
        rv.refuse("D5", "%s type '%s' opens a host %s" % (_describe(dev), ctype,
                                                          "device" if ctype == "dev" else "pipe"))
        if source is not None:
            rv.classified.add((source, "path"))
    elif ctype in ("tcp", "udp"):
        rv.refuse("D9", "%s type '%s' makes the host open network connections for the guest" % (_describe(dev), ctype))
    elif ctype == "file" and source is not None:
        rv.path("log", source.get("path"), source, "path", "<%s type='file'> %s" % (dev.tag, source.get("path")))
    elif ctype == "unix" and source is not None:
        if source.get("mode", "bind") != "bind":
            rv.refuse("D5", "%s connects to an existing host socket %s" % (_describe(dev), source.get("path")))
            rv.classified.add((source, "path"))
        else:
            rv.path("socket", source.get("path"), source, "path", "<%s type='unix'> socket" % dev.tag)
    for log in dev.findall("log"):
        rv.path("log", log.get("file"), log, "file", "<%s><log file='%s'>" % (dev.tag, log.get("file")))


def _unclassified_paths(root, rv):
    """P0: any other value that may name a host path (it holds a "/": absolute, relative, unix:/...)
    is refused: no rule here checked it."""
    for el in root.iter():
        if not isinstance(el.tag, str) or _in_metadata(el) or el.tag in _FREE_TEXT:
            continue
        for key, value in el.attrib.items():
            if isinstance(value, str) and "/" in value and (el, key) not in rv.classified \
                    and key not in _FREE_ATTRS:
                rv.refuse("P0", "<%s %s='%s'> names a host path that this version does not check"
                          % (el.tag, key, value))
        text = (el.text or "").strip()
        if "/" in text and (el, None) not in rv.classified:
            rv.refuse("P0", "<%s>%s</%s> names a host path that this version does not check" % (el.tag, text, el.tag))


# --- host paths against a host's roots (P1, P2) ----------------------------------------------

def storage_roots(candidates):
    """The writable storage roots of a host from its configuration (instances path, active dir
    pools' targets): normalized, absolute, never under the deny list. Returns (roots, dropped)."""
    roots, dropped = [], []
    for path in candidates:
        if not normalized_abs(path) or path == "/" or any(under(path, d) for d in DENY):
            dropped.append(path)
        elif path not in roots:
            roots.append(path)
    return roots, dropped


def roots_for(kind, storage):
    return {"disk": list(storage), "nvram": list(NVRAM_ROOTS), "log": list(LOG_ROOTS) + list(storage),
            "socket": list(SOCKET_ROOTS), "read": list(READ_ROOTS) + list(storage),
            "emulator": ["/usr"], "device": ["/dev"]}[kind]


def lexical_problem(path, kind, storage):
    """What the controller can tell without the host's file system: None, or why `path` is refused."""
    if not normalized_abs(path):
        return "is not a normalized absolute path"
    name = path.rsplit("/", 1)[-1]
    if RESERVED_MARK in name:
        return "uses a name reserved for hypervisor.resize's own files (%s...)" % RESERVED_MARK
    roots = roots_for(kind, storage)
    root = next((r for r in roots if under(path, r) and path != r), None)
    if root is None:
        return "is outside the destination's %s roots (%s)%s" % (
            {"disk": "storage", "read": "read-only", "log": "log", "socket": "socket", "nvram": "NVRAM",
             "emulator": "program", "device": "device"}[kind], ", ".join(roots) or "none",
            "; a directory becomes a root as the target of an active libvirt dir pool on the destination"
            if kind in ("disk", "read") else "")
    if root in storage:
        if any(under(path, d) for d in DENY):
            return "is under a directory that is never a storage root"
        if any(part.startswith(".") for part in path[len(root):].split("/")):
            return "has a hidden component below its root %s" % root
    return None


class LocalFS:
    """The real file system, for the checks on a host."""

    @staticmethod
    def lstat(path):
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None

    @staticmethod
    def realpath(path):
        return os.path.realpath(path)


def path_problem(path, kind, storage, fs):
    """P1/P2 on a host: None if `path` may be used for `kind`, else the reason.

    Written kinds (disk, nvram, log, socket): every component below its root is a real directory
    (no symbolic link), and the last one is absent or a regular file (a socket for sockets).
    Read kinds (read, emulator): the file exists; it may be reached through links, but what it
    resolves to must itself be allowed."""
    problem = lexical_problem(path, kind, storage)
    if problem:
        return problem
    if kind == "device":
        st = fs.lstat(fs.realpath(path))
        if st is None or not stat.S_ISBLK(st.st_mode):
            return "is not a block device on the destination"
        return None
    if kind in ("read", "emulator"):
        real = fs.realpath(path)
        if real != path:
            problem = lexical_problem(real, kind, storage)
            if problem:
                return "resolves to %s, which %s" % (real, problem)
        st = fs.lstat(real)
        if st is None:
            return "does not exist on the destination"
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file on the destination"
        return None
    roots = roots_for(kind, storage)
    root = max((r for r in roots if under(path, r) and path != r), key=len)
    st = fs.lstat(root)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return "its root %s is not a directory on the destination" % root
    parts = path[len(root.rstrip("/")):].strip("/").split("/")
    cur = root.rstrip("/")
    for i, comp in enumerate(parts):
        cur = cur + "/" + comp
        st = fs.lstat(cur)
        last = i == len(parts) - 1
        if st is None:
            return None if last else "needs the directory %s, which does not exist on the destination" % cur
        if stat.S_ISLNK(st.st_mode):
            return "%s is a symbolic link" % cur
        if not last and not stat.S_ISDIR(st.st_mode):
            return "%s is not a directory" % cur
        if last:
            if kind == "socket":
                return "exists: a socket the guest listens on must be new"
            if not stat.S_ISREG(st.st_mode):
                return "exists and is not a regular file"
    return None


def refuse(problems, domain=None, host=None):
    """Raise one ValidationError naming every problem (changes nothing)."""
    if problems:
        raise ValidationError("refused for a move to another host: %s" % "; ".join(problems), domain=domain,
                              host=host, hint="nothing was changed; see %s for each rule" % SECURITY_DOC,
                              details={"refusals": problems})


def check_domain(root, storage, allow=(), fs=None, source=False, others=()):
    """The whole domain review: element rules, then every path against the roots (with `fs`: on
    the host, component by component; without: lexically, as the controller can), then against
    the files of the other domains defined on the host (`others`: their reviews' paths).
    Returns (problems, review)."""
    rv = review_domain(root, allow, source=source)
    problems = [text for _rule_id, text in rv.refusals]
    for entry in rv.paths:
        if fs is None:
            problem = lexical_problem(entry["path"], entry["kind"], storage)
        else:
            problem = path_problem(entry["path"], entry["kind"], storage, fs)
        if problem:
            rule = "P2" if entry["kind"] in ("read", "emulator", "device") else "P1"
            what = entry["what"] if entry["path"] in entry["what"] else "%s %s" % (entry["what"], entry["path"])
            problems.append("%s %s %s" % (what, problem, _rule(rule)))
    problems += owned_elsewhere(rv.paths, others)
    return problems, rv


SHARED_KINDS = ("read", "emulator")


def owned_elsewhere(paths, others):
    """P4: a file another domain of this host uses is never this domain's, except media and boot
    files that both only read."""
    theirs: dict = {}
    for entry in others:
        theirs.setdefault(entry["path"], set()).add(entry["kind"])
    out = []
    for entry in paths:
        kinds = theirs.get(entry["path"])
        if kinds and not (entry["kind"] in SHARED_KINDS and kinds <= set(SHARED_KINDS)):
            out.append("%s: %s is used by another domain on the destination %s" % (entry["what"], entry["path"],
                                                                                   _rule("P4")))
    return out


def domain_paths(root):
    """The host paths a defined domain uses (for P4), whatever it is allowed; with the store libvirt
    keeps for a firmware it chooses itself (<os firmware>, no store named), which the definition
    does not show."""
    paths = review_domain(root, ALLOW_CHOICES, source=True).paths
    store = default_nvram_of(root)
    if store:
        paths.append({"kind": "nvram", "path": store, "what": "the NVRAM store libvirt keeps for <os firmware>"})
    return paths


def auto_firmware(os_el):
    """<os firmware=...> with no store path of its own: libvirt chooses the firmware and names the store."""
    return os_el is not None and bool(os_el.get("firmware")) and not any(
        (el.text or "").strip() for el in os_el.findall("nvram"))


def default_nvram_of(root):
    """The store libvirt makes for a domain whose firmware it chooses (auto_firmware), or None."""
    name = (root.findtext("name") or "").strip()
    if not auto_firmware(root.find("os")):
        return None
    if not name or "/" in name or name in (".", ".."):
        return None
    return "%s/%s_VARS.fd" % (NVRAM_ROOTS[0], name)
