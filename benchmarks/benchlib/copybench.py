"""Benchmarks 1 (copy) and 5 (peak memory of the sender): hv1 -> hv2 over the bed's ssh.

Two kinds of disk: a sparse one holding random (incompressible) data, and a realistic one - an ext4
file system made with `mke2fs -d` from a copy of this machine's own /usr (programs, libraries,
text), raw and qcow2 - on which compression and zero detection are judged as on a real VM's.

Every copy starts from a cold page cache (sync + drop_caches before each one), is timed inside hv1
from the spawn of the transfer process to its exit, and is checked on hv2 against the source's
content digest; a copy that differs fails the run.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import struct
import subprocess

from .common import (
    CIPHER,
    IMAGES,
    MIB,
    PREFIX,
    BenchError,
    WrongResult,
    allocated,
    drop_caches,
    fmt_bytes,
    fmt_ratio,
    fmt_s,
    helper,
    host_path,
    median,
    run,
    rx_bytes,
)

SRC, DST = "hv1", "hv2"
TOOLS = ("floor", "floor-file", "ours", "rsync", "scp")
# The realistic disk: the same tools, and ours with ssh compression (resize_compress: true).
EXT4_TOOLS = ("floor", "ours", "ours-z", "rsync", "scp")
EXT4_FORMATS = ("ext4-raw", "ext4-qcow2")
USR_DIRS = ("/usr/lib", "/usr/share", "/usr/bin")
LABELS = {
    "floor": "floor: allocated bytes only, ssh to /dev/null",
    "floor-file": "same stream into a file on hv2 (dd conv=fsync)",
    "ours": "ours: transfer.send -> receiver",
    "ours-z": "ours with ssh compression (resize_compress)",
    "rsync": "rsync --sparse --whole-file",
    "scp": "scp (Nova's default)",
}
FAR_AHEAD = 5.0   # "far ahead of scp": at least this many times faster
NEAR_FLOOR = 1.1  # "within 1.1x of the floor"
SAME_RSS = 0.10   # peak RSS of 1 GiB and 4 GiB copies within 10%


def make_disk(path, virtual, data, extent=16 * MIB, seed="bench"):
    """A sparse raw file: `data` bytes of random data in extents of `extent` bytes spread evenly
    over `virtual` (the same extent size at every data size, so that only the amount changes).

    The data is an AES-CTR keystream (openssl), i.e. incompressible, reproducible from `seed`.
    The first MiB stays zero (the test bed's guest keeps its boot counter in sector 0).
    """
    key = hashlib.sha256(seed.encode()).hexdigest()[:32]
    chunk = min(extent, data)
    chunks = data // chunk
    stride = (virtual - MIB) // chunks
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    gen = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-K", key, "-iv", "0", "-nosalt", "-in", "/dev/zero"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        os.ftruncate(fd, virtual)
        for i in range(chunks):
            offset = MIB + i * stride
            offset -= offset % MIB
            left = chunk
            while left:
                buf = gen.stdout.read(min(left, 4 * MIB))
                if not buf:
                    raise BenchError("openssl stopped producing data")
                os.pwrite(fd, buf, offset + chunk - left)
                left -= len(buf)
        os.fsync(fd)
    finally:
        gen.kill()
        gen.wait()
        os.close(fd)


def copy_usr(tree, budget):
    """Copy regular files of this machine's /usr into `tree` (hierarchy kept) until `budget` bytes;
    returns (files, bytes). Real programs, libraries and text: what a VM's root disk holds."""
    files = total = 0
    for top in USR_DIRS:
        for root, dirs, names in os.walk(top):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(root, name)
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                size = os.path.getsize(path)
                if total + size > budget:
                    if total > 0.98 * budget:
                        return files, total
                    continue
                dest = os.path.join(tree, path.lstrip("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                try:
                    shutil.copyfile(path, dest)
                except OSError:
                    continue
                files += 1
                total += size
    return files, total


def data_bytes(path):
    """Bytes in the file's data extents (SEEK_DATA/SEEK_HOLE): what a sparse-aware copy must read."""
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            offset = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            total += offset - start
    finally:
        os.close(fd)
    return total


def content_digest(path, block=MIB):
    """sha256 of a file's content that does not depend on how it is allocated: the size, then every
    non-zero 1 MiB block with its offset. Two files have the same digest iff they read the same."""
    digest = hashlib.sha256()
    zero = bytes(block)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        digest.update(b"size=%d;" % size)
        done = 0
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            pos = max(start - start % block, done)
            while pos < end:
                data = os.pread(fd, min(block, size - pos), pos)
                if data != zero[:len(data)]:
                    digest.update(struct.pack(">Q", pos))
                    digest.update(data)
                pos += block
            done = pos
            offset = end
    finally:
        os.close(fd)
    return digest.hexdigest()


def copy_with(trust, tool, src_in, dst_in, label):
    """Run one copy hv1 -> hv2; returns the helper's JSON plus rx bytes on hv2's eth0."""
    log = trust.ssh_log(label)
    log_host = host_path(SRC, log)
    if os.path.exists(log_host):
        os.unlink(log_host)
    if tool in ("ours", "ours-z"):
        args = ("send.py", src_in, dst_in, DST, trust.key("recv"), trust.known_hosts, CIPHER, log) + \
            (("compress",) if tool == "ours-z" else ())
    elif tool == "floor":
        args = ("floor.py", src_in, log, "--", "ssh", *trust.ssh_options(), "root@%s" % DST, "cat >/dev/null")
    elif tool == "floor-file":
        # Not a copy (the extents end to end, not at their offsets): what writing and syncing adds.
        args = ("floor.py", src_in, log, "--", "ssh", *trust.ssh_options(), "root@%s" % DST,
                "dd of=%s bs=4M conv=fsync status=none" % shlex.quote(dst_in))
    elif tool == "rsync":
        ssh = shlex.join(["ssh", "-E", log, "-o", "LogLevel=VERBOSE", *trust.ssh_options()])
        args = ("timed.py", log, "--", "rsync", "--sparse", "--whole-file", "-e", ssh, src_in,
                "root@%s:%s" % (DST, dst_in))
    elif tool == "scp":
        opts = trust.ssh_options()
        o_pairs = [x for i, x in enumerate(opts) if x == "-o" or (i and opts[i - 1] == "-o")]
        args = ("timed.py", log, "--", "scp", "-i", trust.key("plain"), "-P", "22", *o_pairs, "-c", CIPHER,
                "-o", "LogLevel=VERBOSE", src_in, "root@%s:%s" % (DST, dst_in))
    else:
        raise ValueError(tool)
    trust.ensure()
    drop_caches()
    rx0 = rx_bytes(DST)
    res = helper(SRC, *args)
    res["rx"] = rx_bytes(DST) - rx0
    return res


class CopyBench:
    def __init__(self, report, trust, profile):
        self.report, self.trust, self.p = report, trust, profile
        self.sources = {}     # fmt -> {in, host, digest, allocated, size}
        self.results = []     # dicts: run, fmt, tool, seconds, ssh_sent, rx, dest_alloc, ok, maxrss_kib
        self.floor_of = {}    # (run, fmt) -> floor seconds

    # -- sources -----------------------------------------------------------------------------

    def make_sources(self):
        raw_in = "%s/%ssrc.raw" % (IMAGES, PREFIX)
        qcow_in = "%s/%ssrc.qcow2" % (IMAGES, PREFIX)
        make_disk(host_path(SRC, raw_in), self.p["virtual"], self.p["data"], seed="bench-src")
        self._add_raw_and_qcow2("", raw_in, qcow_in)

    def _add_raw_and_qcow2(self, prefix, raw_in, qcow_in, **extra):
        """The raw source, its qcow2 (qemu-img convert), and what each holds, as sources PREFIXraw/qcow2."""
        run(["qemu-img", "convert", "-q", "-O", "qcow2", host_path(SRC, raw_in), host_path(SRC, qcow_in)])
        os.sync()
        # What the file system reports as data depends on the page cache (seen with mke2fs's image):
        # measure it as every copy will find it, from a cold cache.
        drop_caches()
        for fmt, path_in in ((prefix + "raw", raw_in), (prefix + "qcow2", qcow_in)):
            path = host_path(SRC, path_in)
            # Before the digest reads it: ext4 counts cached pages of unwritten extents as data.
            data = data_bytes(path)
            self.sources[fmt] = dict({"in": path_in, "host": path, "digest": content_digest(path),
                                      "allocated": allocated(path), "data": data,
                                      "size": os.stat(path).st_size}, **extra)

    def make_ext4_sources(self):
        """The realistic disk: ext4 (mke2fs -d) holding up to the profile's data size of this machine's
        own /usr, as raw (sparse: what ext4 never wrote stays a hole) and as qcow2."""
        tree = host_path(SRC, "/tmp/%sext4-tree" % PREFIX)
        raw_in = "%s/%sext4.raw" % (IMAGES, PREFIX)
        qcow_in = "%s/%sext4.qcow2" % (IMAGES, PREFIX)
        copied = copy_usr(tree, self.p["data"])
        try:
            run(["mke2fs", "-q", "-t", "ext4", "-F", "-d", tree, host_path(SRC, raw_in),
                 "%dk" % max(self.p["virtual"] // 1024, 4 * self.p["data"] // 1024)])
        finally:
            run(["rm", "-rf", tree])
        self._add_raw_and_qcow2("ext4-", raw_in, qcow_in, files=copied)

    # -- one copy ----------------------------------------------------------------------------

    def copy(self, tool, src_in, dst_in, label):
        return copy_with(self.trust, tool, src_in, dst_in, label)

    def checked_copy(self, tool, fmt, src, run_no):
        ext = "qcow2" if fmt.endswith("qcow2") else "raw"
        dst_in = "%s/%sdst-%s.%s" % (IMAGES, PREFIX, tool, ext)
        dst = host_path(DST, dst_in)
        for leftover in (dst, dst + ".hvresize-part"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        if tool in ("ours", "ours-z"):
            self.trust.allow(dst_in)
        res = self.copy(tool, src["in"], dst_in, "%s-%s-%d" % (tool, fmt, run_no))
        row = {"run": run_no, "fmt": fmt, "tool": tool, "seconds": res["seconds"], "ssh_sent": res.get("ssh_sent"),
               "rx": res["rx"], "dest_alloc": None, "ok": True, "maxrss_kib": res.get("maxrss_kib"),
               "cpu": res.get("cpu")}
        if tool == "floor-file":
            row["dest_alloc"] = allocated(dst)
            os.unlink(dst)
        elif tool != "floor":
            try:
                if content_digest(dst) != src["digest"]:
                    raise WrongResult("%s copy of the %s disk differs from its source (run %d)" % (tool, fmt, run_no))
                row["dest_alloc"] = allocated(dst)
            finally:
                if os.path.exists(dst):
                    os.unlink(dst)
        # On the random disk every extent is written data; mke2fs's image has unwritten extents, which
        # ext4 counts as data or not depending on the page cache and writeback: no exact count there.
        if tool.startswith("floor") and res["bytes"] != src["data"] and not fmt.startswith("ext4"):
            raise BenchError("floor streamed %d bytes, the source has %d in data extents" % (res["bytes"], src["data"]))
        self.results.append(row)
        return row

    # -- benchmark 1 -------------------------------------------------------------------------

    def run_copies(self):
        for run_no in range(1, self.p["runs"] + 1):
            for fmt in ("raw", "qcow2"):
                for tool in TOOLS:
                    self.checked_copy(tool, fmt, self.sources[fmt], run_no)

    def copy_tables(self):
        p = self.p
        for fmt in ("raw", "qcow2"):
            src = self.sources[fmt]
            rows_of = {t: [r for r in self.results if r["fmt"] == fmt and r["tool"] == t] for t in TOOLS}
            floor_s = median([r["seconds"] for r in rows_of["floor"]])
            rows = []
            med = {}
            for tool in TOOLS:
                rs = rows_of[tool]
                med[tool] = median([r["seconds"] for r in rs])
                rows.append((LABELS[tool], fmt_s(med[tool]),
                             ", ".join(fmt_s(r["seconds"]) for r in rs) if len(rs) > 1 else "-",
                             fmt_bytes(median([r["ssh_sent"] for r in rs if r["ssh_sent"] is not None])),
                             fmt_bytes(median([r["rx"] for r in rs])),
                             fmt_bytes(median([r["dest_alloc"] for r in rs if r["dest_alloc"] is not None])),
                             fmt_ratio(med[tool] / floor_s if floor_s else None),
                             fmt_s(median([r["cpu"] for r in rs if r["cpu"] is not None])),
                             "-" if tool.startswith("floor") else "identical"))
            what = ("raw, %s virtual, %s of random data in 16 MiB extents"
                    % (fmt_bytes(p["virtual"]), fmt_bytes(p["data"]))
                    if fmt == "raw" else "qcow2 (qemu-img convert of the raw): file %s, %s allocated"
                    % (fmt_bytes(src["size"]), fmt_bytes(src["allocated"])))
            self.report.table(
                "1. Copy hv1 -> hv2, %s (cold cache, median of %d)" % (what, p["runs"]),
                ("copy", "seconds", "each run", "ssh bytes sent", "hv2 eth0 rx", "allocated on hv2", "x floor",
                 "CPU s on hv1", "content"),
                rows,
                notes=["Source allocated: %s. Cipher %s for every row (the product's default). "
                       "`ssh bytes sent`: the ssh client's own count for its connection (LogLevel=VERBOSE); "
                       "`hv2 eth0 rx`: all bytes hv2 received meanwhile, including any other traffic on the bed. "
                       "`CPU s on hv1`: user + sys of every sending process (the tool and its ssh); the "
                       "receiving side's CPU is not in it. The second row is no copy (the extents end to end): "
                       "it shows what writing and syncing on hv2 add to the floor; ours vs that row: %s."
                       % (fmt_bytes(src["allocated"]), CIPHER,
                          fmt_ratio(med["ours"] / med["floor-file"] if med.get("floor-file") else None))])
            ratio = med["ours"] / floor_s if floor_s else None
            self.report.target("1 copy %s" % fmt, "ours <= %.1fx floor" % NEAR_FLOOR,
                               "%s (%.2f s vs %.2f s)" % (fmt_ratio(ratio), med["ours"], floor_s),
                               None if ratio is None else ratio <= NEAR_FLOOR)
            if fmt == "raw":
                ahead = med["scp"] / med["ours"] if med["ours"] else None
                self.report.target("1 copy raw", "ours >= %.0fx faster than scp (sparse disk)" % FAR_AHEAD,
                                   "%.1fx (%.2f s vs %.2f s)" % (ahead, med["ours"], med["scp"]),
                                   ahead >= FAR_AHEAD)

    def run_ext4_copies(self):
        for run_no in range(1, self.p["runs"] + 1):
            for fmt in EXT4_FORMATS:
                for tool in EXT4_TOOLS:
                    self.checked_copy(tool, fmt, self.sources[fmt], run_no)

    def ext4_tables(self):
        for fmt in EXT4_FORMATS:
            src = self.sources[fmt]
            med = {t: median([r["seconds"] for r in self.results if r["fmt"] == fmt and r["tool"] == t])
                   for t in EXT4_TOOLS}
            rows = []
            for tool in EXT4_TOOLS:
                rs = [r for r in self.results if r["fmt"] == fmt and r["tool"] == tool]
                rows.append((LABELS[tool], fmt_s(med[tool]),
                             fmt_bytes(median([r["ssh_sent"] for r in rs if r["ssh_sent"] is not None])),
                             fmt_bytes(median([r["dest_alloc"] for r in rs if r["dest_alloc"] is not None])),
                             fmt_ratio(med[tool] / med["floor"] if med["floor"] else None),
                             fmt_s(median([r["cpu"] for r in rs if r["cpu"] is not None])),
                             "-" if tool == "floor" else "identical"))
            self.report.table(
                "1. Copy hv1 -> hv2, a realistic disk: ext4 holding %s of this machine's /usr (%d files), %s "
                "(cold cache, median of %d)" % (fmt_bytes(src["files"][1]), src["files"][0],
                                                "raw" if fmt == "ext4-raw" else "qcow2", self.p["runs"]),
                ("copy", "seconds", "ssh bytes sent", "allocated on hv2", "x floor", "CPU s on hv1", "content"),
                rows,
                notes=["Source: file %s, %s allocated, %s in data extents. Cipher %s for every row. "
                       "ssh compression (zlib, resize_compress): %.2fx the time without it (%s)."
                       % (fmt_bytes(src["size"]), fmt_bytes(src["allocated"]), fmt_bytes(src["data"]), CIPHER,
                          med["ours-z"] / med["ours"] if med["ours"] else float("nan"),
                          "it pays here" if med["ours-z"] < med["ours"] else "it does not pay here")])
            ahead = min(med["scp"], med["rsync"]) / med["ours"] if med["ours"] else None
            self.report.target("1 copy %s" % fmt, "ours ahead of scp and rsync (realistic disk)",
                               "%.1fx the faster of them (%.2f s vs scp %.2f s, rsync %.2f s)"
                               % (ahead, med["ours"], med["scp"], med["rsync"]), ahead > 1.0)

    # -- benchmark 5 -------------------------------------------------------------------------

    def run_memory(self):
        """Peak RSS of the sender for the two data sizes (the first: the copy benchmark's raw disk)."""
        small, large = self.p["mem_sizes"]
        rows = []
        rss = {}
        ours_raw = [r for r in self.results if r["tool"] == "ours" and r["fmt"] == "raw"]
        if small == self.p["data"] and ours_raw:
            rss[small] = max(r["maxrss_kib"] for r in ours_raw)
            rows.append((fmt_bytes(small), "%d KiB" % rss[small], fmt_s(median([r["seconds"] for r in ours_raw])),
                         "the copy benchmark's raw disk (max of %d run(s))" % len(ours_raw)))
        for size in (small, large):
            if size in rss:
                continue
            src_in = "%s/%smem-%d.raw" % (IMAGES, PREFIX, size // MIB)
            path = host_path(SRC, src_in)
            make_disk(path, max(self.p["virtual"], 2 * size), size, seed="bench-mem")
            try:
                src = {"in": src_in, "digest": content_digest(path), "allocated": allocated(path),
                       "data": data_bytes(path)}
                row = self.checked_copy("ours", "raw", src, 0)
            finally:
                os.unlink(path)
            rss[size] = row["maxrss_kib"]
            rows.append((fmt_bytes(size), "%d KiB" % rss[size], fmt_s(row["seconds"]),
                         "sparse raw, %s virtual" % fmt_bytes(max(self.p["virtual"], 2 * size))))
        self.report.table("5. Peak memory of the sender (transfer.send in its own process, ru_maxrss)",
                          ("data allocated", "max RSS", "seconds", "disk"), rows,
                          notes=["RSS of the Python process running transfer.send (interpreter included); "
                                 "ssh and the receiver are other processes and are not counted."])
        diff = abs(rss[large] - rss[small]) / rss[small]
        self.report.target("5 memory", "max RSS at %s within 10%% of %s" % (fmt_bytes(large), fmt_bytes(small)),
                           "%+.1f%% (%d vs %d KiB)"
                           % (100.0 * (rss[large] - rss[small]) / rss[small], rss[large], rss[small]),
                           diff <= SAME_RSS)

    def cleanup(self):
        for src in self.sources.values():
            if os.path.exists(src["host"]):
                os.unlink(src["host"])
