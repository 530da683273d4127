# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure model of a libvirt domain XML. Private to hypervisor.resize. No I/O.

model_from_xml() turns a domain XML into a plain dict that Jinja templates (templates/domain.xml.j2)
render back into a domain with a new size. Everything not about size is kept verbatim: UUID, name,
every device (with its MAC and address), os, features, clock, other metadata.
"""

from __future__ import annotations

import re

try:
    from lxml import etree
    HAS_LXML = True
    LXML_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised by the import sanity test
    etree = None
    HAS_LXML = False
    LXML_IMPORT_ERROR = exc

from . import _policy
from .errors import ValidationError
from .parts import STATE_FILE_DEVICES, state_files

RECORD_NS = "https://hypervisor-resize.dev/xmlns/migration/1"
RECORD_PREFIX = "hvr"

# Elements whose content the resize owns; everything else at the top level is kept verbatim.
_SIZED = ("name", "uuid", "memory", "currentMemory", "vcpu", "vcpus", "devices", "metadata")
_UNITS = {
    "b": 1, "bytes": 1,
    "kb": 1000, "k": 1024, "kib": 1024,
    "mb": 1000 ** 2, "m": 1024 ** 2, "mib": 1024 ** 2,
    "gb": 1000 ** 3, "g": 1024 ** 3, "gib": 1024 ** 3,
    "tb": 1000 ** 4, "t": 1024 ** 4, "tib": 1024 ** 4,
}
DOMAIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}$")


def check_domain_name(name):
    """A plain libvirt domain name: no path, no shell or XML meta-characters."""
    if not isinstance(name, str) or not DOMAIN_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValidationError(
            "%r is not a plain domain name" % (name,),
            hint="use the libvirt domain name: 1-63 characters from A-Z a-z 0-9 _ . + -, "
                 "starting with a letter or digit",
        )
    return name


def to_bytes(value, unit="KiB"):
    factor = _UNITS.get((unit or "KiB").lower())
    if factor is None:
        raise ValidationError("unknown memory unit %r in domain XML" % unit)
    return int(value) * factor


def parse_xml(xml, what="domain XML"):
    """The one way XML from a host is parsed (docs/security.md X1): no entities, no DTD, no
    network, no huge trees."""
    if not HAS_LXML:
        raise ValidationError("the lxml Python library is required", hint="install python3-lxml")
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    try:
        parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True, load_dtd=False,
                                 huge_tree=False)
        return etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        raise ValidationError("%s does not parse: %s" % (what, exc))


def _text(node):
    return etree.tostring(node, encoding="unicode", pretty_print=True).strip()


def disk_role(path):
    """`ephemeral` or `swap` for disks named so (file name stem ending in -ephemeral / -swap, Nova's
    disk.local / disk.swap), else None (the root disk or a data disk)."""
    if not path:
        return None
    stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
    for role in ("ephemeral", "swap"):
        if stem.endswith("-" + role):
            return role
    return None


def disks_from_root(root):
    disks = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        disks.append({
            "device": disk.get("device", "disk"),
            "type": disk.get("type", "file"),
            "target": target.get("dev") if target is not None else None,
            "bus": target.get("bus") if target is not None else None,
            "path": (source.get("file") or source.get("dev")) if source is not None else None,
            "network": source.get("protocol") if (source is not None and disk.get("type") == "network") else None,
            "format": driver.get("type", "raw") if driver is not None else "raw",
            "readonly": disk.find("readonly") is not None,
        })
        disks[-1]["role"] = disk_role(disks[-1]["path"]) if disks[-1]["device"] == "disk" else None
    # The VM's other state files (UEFI NVRAM, vTPM state) travel like disks: parts.STATE_FILE_DEVICES.
    disks += state_files(root)
    return disks


def model_from_xml(xml):
    """Return the model of a domain: a dict of plain values and verbatim XML snippets."""
    root = parse_xml(xml)
    if root.tag != "domain":
        raise ValidationError("expected a <domain> document, got <%s>" % root.tag)
    mem = root.find("memory")
    vcpu = root.find("vcpu")
    name = root.findtext("name")
    warnings = []
    sections = []
    for child in root:
        if not isinstance(child.tag, str) or child.tag in _SIZED:
            continue
        if child.tag == "maxMemory":
            warnings.append("<maxMemory> (memory hot-plug) dropped: the new size is set as static memory")
            continue
        sections.append(_text(child))
    metadata = []
    meta = root.find("metadata")
    if meta is not None:
        for child in meta:
            if isinstance(child.tag, str) and etree.QName(child).namespace != RECORD_NS:
                metadata.append(_text(child))
    devices = [_text(d) for d in root.find("devices")] if root.find("devices") is not None else []
    interfaces = []
    for nic in root.findall("./devices/interface"):
        mac = nic.find("mac")
        src = nic.find("source")
        interfaces.append({
            "type": nic.get("type"),
            "mac": mac.get("address") if mac is not None else None,
            "source": dict(src.attrib) if src is not None else {},
        })
    os_node = root.find("os")
    boot_files = []
    if os_node is not None:
        for tag in ("kernel", "initrd", "loader", "dtb"):
            path = os_node.findtext(tag)
            if path:
                boot_files.append(path.strip())
    vcpu_attrs = dict(vcpu.attrib) if vcpu is not None else {}
    # Values the template writes into attributes: only what libvirt means by them (never markup).
    if vcpu_attrs.get("placement", "static") not in ("static", "auto") or \
            not re.fullmatch(r"[0-9,^-]*", vcpu_attrs.get("cpuset", "")) or root.get("type") not in ("kvm", "qemu"):
        raise ValidationError("domain %s has a <vcpu> placement/cpuset or a domain type this version does not know"
                              % name, domain=name)
    # The size is what the VM has now: <vcpu current> and <currentMemory> (the balloon's target);
    # <vcpu> and <memory> are its hot-plug ceilings (live.py).
    cur = root.find("currentMemory")
    try:
        max_vcpus = int(vcpu.text) if vcpu is not None else 1
        vcpus = int(vcpu_attrs.pop("current", max_vcpus))
        max_memory = to_bytes(mem.text, mem.get("unit", "KiB")) if mem is not None else 0
        memory = to_bytes(cur.text, cur.get("unit", "KiB")) if cur is not None else max_memory
    except (TypeError, ValueError):
        raise ValidationError("domain %s has a <vcpu>, <memory> or <currentMemory> that is not a number" % name,
                              domain=name)
    if not 1 <= vcpus <= max_vcpus or memory > max_memory:
        raise ValidationError("domain %s has <vcpu current> or <currentMemory> outside 1..<vcpu> / <memory>" % name,
                              domain=name)
    max_memory_mb, memory_mb = max_memory // (1024 * 1024), memory // (1024 * 1024)
    vcpus_el = root.find("vcpus")
    if vcpus_el is not None and sorted(int(v.get("id", "-1")) for v in vcpus_el.findall("vcpu")
                                       if v.get("enabled") == "yes") != list(range(vcpus)):
        warnings.append("<vcpus> (which vCPUs are enabled, their hot-plug order) dropped: vCPUs 0-%d are enabled"
                        % (vcpus - 1))
    return {
        "name": name,
        "uuid": root.findtext("uuid"),
        "type": root.get("type"),
        "vcpu_placement": vcpu_attrs.get("placement", "static"),
        "vcpu_cpuset": vcpu_attrs.get("cpuset"),
        "memory_mb": memory_mb,
        "max_memory_mb": max_memory_mb,
        "vcpus": vcpus,
        "max_vcpus": max_vcpus,
        "sections": sections,
        "metadata": metadata,
        "devices": devices,
        "disks": disks_from_root(root),
        "interfaces": interfaces,
        "boot_files": boot_files,
        "warnings": warnings,
    }


def firmware_pin(live):
    """What libvirt chose for a running domain's firmware, from its live XML: {"loader": xml,
    "nvram": xml, "smm": bool} (SMM, which libvirt turns on for Secure Boot), or None."""
    root = parse_xml(live) if live else None
    live_os = root.find("os") if root is not None else None
    loader = live_os.find("loader") if live_os is not None else None
    nvram = live_os.find("nvram") if live_os is not None else None
    if loader is None or nvram is None or not (nvram.text or "").strip():
        return None
    smm = root.find("features/smm")
    return {"loader": etree.tostring(loader, encoding="unicode", with_tail=False),
            "nvram": etree.tostring(nvram, encoding="unicode", with_tail=False),
            "smm": smm is not None and smm.get("state", "on") == "on"}


def pin_firmware(inactive, pin):
    """The definition with the firmware libvirt chose for it (`<os firmware=...>`, no store path)
    written out as `pin` (firmware_pin of the running domain) says: its `<loader>` and `<nvram>`,
    SMM where libvirt turned it on, the `firmware` attribute and `<firmware>` features dropped. So
    the VM keeps that very firmware and variable store on another host, which might otherwise
    choose differently. Returns (xml, pinned)."""
    root = parse_xml(inactive)
    os_el = root.find("os")
    if not pin or not _policy.auto_firmware(os_el):
        return inactive, False
    del os_el.attrib["firmware"]
    for el in os_el.findall("firmware") + os_el.findall("loader") + os_el.findall("nvram"):
        os_el.remove(el)
    at = list(os_el).index(os_el.find("type")) + 1 if os_el.find("type") is not None else 0
    for i, key in enumerate(("loader", "nvram")):
        el = parse_xml(pin[key], "pinned <%s>" % key)
        if el.tag != key:
            raise ValidationError("a pinned <%s> is a <%s>" % (key, el.tag))
        os_el.insert(at + i, el)
    if pin.get("smm"):
        features = root.find("features")
        if features is None:
            features = etree.Element("features")
            root.insert(list(root).index(os_el) + 1, features)
        if features.find("smm") is None:
            etree.SubElement(features, "smm", state="on")
    return etree.tostring(root, encoding="unicode"), True


def own_files(xml):
    """Paths of every file of the domain `xml` defines: its disks and state files, and the store
    libvirt keeps for a firmware it chooses (pin_firmware names it only while the VM runs)."""
    paths = set(d["path"] for d in moved_files(model_from_xml(xml), every=True))
    store = _policy.default_nvram_of(parse_xml(xml))
    return paths | {store} if store else paths


def copy_disks(model_or_disks):
    """The disks a resize moves (and backs up): writable image files, of device type disk.

    Never a block device (its data is not a file: it is refused for a move, or taken as storage
    both hosts see with the operator's opt-in), never a network disk; read-only media (ISOs) must
    exist on every host instead.
    """
    disks = model_or_disks["disks"] if isinstance(model_or_disks, dict) else model_or_disks
    return [d for d in disks if d["device"] == "disk" and d["path"] and d.get("type", "file") == "file"
            and not d["network"] and not d["readonly"]]


def moved_files(model_or_disks, every=False):
    """Every file a move to another host copies and verifies: the disks that move (copy_disks) and
    the VM's other state files (parts.state_files: UEFI NVRAM, vTPM state). An optional state file
    (vTPM state) is in the list once a host found it there (it carries a size), or with `every`."""
    disks = model_or_disks["disks"] if isinstance(model_or_disks, dict) else model_or_disks
    return copy_disks(disks) + [d for d in disks if d["device"] in STATE_FILE_DEVICES and d["path"]
                                and (every or not d.get("optional") or d.get("allocation") is not None)]


def _cpu_set(text):
    """libvirt's cpuset syntax ("0-3,^2,8") as a set of ints."""
    out, drop = set(), set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        target = drop if part.startswith("^") else out
        part = part.lstrip("^")
        lo, _sep, hi = part.partition("-")
        target.update(range(int(lo), int(hi or lo) + 1))
    return out - drop


def _cpu_text(cpus):
    cpus = sorted(cpus)
    runs, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            runs.append(str(start) if start == c else "%d-%d" % (start, c))
            start = None
    return ",".join(runs)


CPU_TOPOLOGY_POLICIES = ("scale", "flatten")


def resized_model(xml, vcpus, memory_mb, cpu_topology="scale"):
    """The model of `xml` with its CPU layout made right for `vcpus` vCPUs and `memory_mb` MiB:
    sockets, dies and threads kept and cores scaled (policy "scale", refused when it does not
    divide) or the topology dropped (policy "flatten", with a warning); pins of vCPUs that no longer
    exist removed (new vCPUs follow <vcpu cpuset>); NUMA cells split evenly or refused. Every change
    is a warning; what cannot be done right raises ValidationError naming the element."""
    if cpu_topology not in CPU_TOPOLOGY_POLICIES:
        raise ValidationError("resize_cpu_topology must be one of %s, got %r" % (", ".join(CPU_TOPOLOGY_POLICIES),
                                                                                 cpu_topology))
    model = model_from_xml(xml)
    name = model["name"]
    root = parse_xml(xml)
    warnings = list(model["warnings"])
    hotplug = [d.get("model") for d in root.findall("./devices/memory")]
    if root.find("maxMemory") is not None and hotplug:
        raise ValidationError("the VM has memory hot-plug devices (%s) under <maxMemory>; this version cannot carry "
                              "them yet" % ", ".join(m or "?" for m in hotplug), domain=name,
                              hint="nothing was changed; remove them, or resize this domain by hand")
    sections = []
    for child in root:
        if not isinstance(child.tag, str) or child.tag in _SIZED or child.tag == "maxMemory":
            continue
        if child.tag == "cpu":
            # NUMA cells describe the maxima (<vcpu>, <memory>), which the template writes as the new size.
            _resize_cpu_element(child, name, vcpus, memory_mb, cpu_topology, warnings,
                                changed=(vcpus, memory_mb) != (model["max_vcpus"], model["max_memory_mb"]))
        elif child.tag == "cputune":
            _resize_cputune(child, name, vcpus, warnings)
        sections.append(_text(child))
    return dict(model, sections=sections, warnings=warnings)


def _resize_cpu_element(cpu, name, vcpus, memory_mb, policy, warnings, changed=True):
    topo = cpu.find("topology")
    if topo is not None:
        keep = {k: int(topo.get(k, "1")) for k in ("sockets", "dies", "clusters", "threads")}
        rest = keep["sockets"] * keep["dies"] * keep["clusters"] * keep["threads"]
        if vcpus % rest == 0:
            if str(vcpus // rest) != topo.get("cores"):
                warnings.append("<cpu><topology>: cores %s -> %d (sockets %d, dies %d, threads %d kept)"
                                % (topo.get("cores"), vcpus // rest, keep["sockets"], keep["dies"], keep["threads"]))
            topo.set("cores", str(vcpus // rest))
        elif policy == "flatten":
            cpu.remove(topo)
            warnings.append("<cpu><topology> dropped (resize_cpu_topology=flatten): %d vCPUs do not divide into "
                            "%d sockets x %d dies x %d clusters x %d threads; QEMU will show %d sockets"
                            % (vcpus, keep["sockets"], keep["dies"], keep["clusters"], keep["threads"], vcpus))
        else:
            raise ValidationError(
                "%d vCPUs do not fit the VM's CPU topology (%d sockets x %d dies x %d threads, cores scaled): "
                "<cpu><topology> would change how many sockets the guest sees"
                % (vcpus, keep["sockets"], keep["dies"], keep["threads"]),
                domain=name, hint="choose a flavor whose vCPUs are a multiple of %d, or set "
                                  "resize_cpu_topology=flatten to drop the topology" % rest)
    numa = cpu.find("numa")
    threads = int(topo.get("threads", "1")) if topo is not None else 1
    if numa is not None and changed:
        cells = numa.findall("cell")
        if any(not c.get("cpus") for c in cells):
            raise ValidationError("the VM has NUMA cells without vCPUs (memory-only nodes); this version cannot "
                                  "resize them", domain=name, hint="resize this domain by hand")
        if not cells or vcpus % len(cells) or (vcpus // len(cells)) % threads or (memory_mb * 1024) % len(cells):
            raise ValidationError("%d vCPUs and %d MiB do not split evenly over the VM's %d NUMA cells (whole "
                                  "cores of %d threads)" % (vcpus, memory_mb, len(cells), threads), domain=name,
                                  hint="choose a flavor whose vCPUs and memory divide by %d" % len(cells))
        per = vcpus // len(cells)
        for i, cell in enumerate(cells):
            cell.set("cpus", _cpu_text(range(i * per, (i + 1) * per)))
            cell.set("memory", str(memory_mb * 1024 // len(cells)))
            cell.set("unit", "KiB")
        warnings.append("<cpu><numa>: %d cells of %d vCPUs and %d MiB each"
                        % (len(cells), per, memory_mb // len(cells)))


def _resize_cputune(tune, name, vcpus, warnings):
    for pin in tune.findall("vcpupin"):
        if int(pin.get("vcpu", "0")) >= vcpus:
            tune.remove(pin)
            warnings.append("<cputune><vcpupin vcpu='%s'> removed: the VM has %d vCPUs now" % (pin.get("vcpu"), vcpus))
    for el in tune:
        if isinstance(el.tag, str) and el.get("vcpus") and max(_cpu_set(el.get("vcpus")) or {0}) >= vcpus:
            raise ValidationError("<cputune><%s vcpus='%s'> names vCPUs the VM would not have any more (%d vCPUs)"
                                  % (el.tag, el.get("vcpus"), vcpus), domain=name,
                                  hint="change or remove that element first, or choose a flavor with more vCPUs")


def root_disk(model_or_disks):
    """The disk the guest boots from: the first disk that moves and is neither ephemeral nor swap."""
    return next((d for d in copy_disks(model_or_disks) if not d.get("role")), None)


def role_disk(model_or_disks, role):
    """The ephemeral or swap disk, if the VM has one."""
    return next((d for d in copy_disks(model_or_disks) if d.get("role") == role), None)


def summary(xml):
    """Identity and size of a rendered domain XML, for checks before define."""
    model = model_from_xml(xml)
    return {
        "name": model["name"],
        "uuid": model["uuid"],
        "vcpus": model["vcpus"],
        "memory_mb": model["memory_mb"],
        "macs": sorted(i["mac"] for i in model["interfaces"] if i["mac"]),
        "disks": [d["path"] for d in model["disks"]],
    }


def normalize(xml):
    """Canonical pretty form, for diffs."""
    return _text(parse_xml(xml)) + "\n"
