"""Shared plumbing of the benchmarks: the test bed, host paths, the report, temporary ssh trust.

Everything the benchmarks create is named bench-* and removed afterwards (and swept at the start
of the next run, should a run have been killed).
"""

from __future__ import annotations

import glob
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

import yaml

from ansible_collections.hypervisor.resize.plugins.module_utils import _policy
from ansible_collections.hypervisor.resize.plugins.module_utils import state as product_state
from ansible_collections.hypervisor.resize.plugins.module_utils._transfer import keys as product_keys
from ansible_collections.hypervisor.resize.plugins.module_utils._transfer import markers, receiver, sender

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BED = os.path.join(REPO, "tests", "testbed", "bed")
VENV_BIN = os.path.join(REPO, ".venv", "bin")
HELPERS = os.path.join(REPO, "benchmarks", "helpers")
CALLBACKS = os.path.join(REPO, "benchmarks", "callback")

GIB = 1024 ** 3
MIB = 1024 ** 2
HOSTS = ("hv1", "hv2", "hv3")
IMAGES = "/var/lib/libvirt/images"
STATE_DIR = "/var/lib/libvirt/hvresize"
HOST_PYTHON = "/usr/bin/python3"
PREFIX = "bench-"
KEY_TAG = "bench-hvresize-"
URI = "qemu:///system"

# In-host path prefix -> directory of the host's tree on this machine (tests/testbed/README.md).
HOST_TREE = (("/var/lib/libvirt", "var-lib-libvirt"), ("/var/log/libvirt", "var-log-libvirt"),
             ("/etc/ssh", "etc-ssh"), ("/root", "root-home"), ("/tmp", "tmp"), ("/var/tmp", "var-tmp"))


class BenchError(Exception):
    """A benchmark could not run (reported, and the run exits non-zero)."""


class WrongResult(Exception):
    """A copy is not identical, or a host is overbooked: the run fails."""


def role_default(name):
    with open(os.path.join(REPO, "roles", "resize", "defaults", "main.yml")) as fh:
        return yaml.safe_load(fh)[name]


CIPHER = role_default("resize_ssh_cipher")


# ------------------------------------------------------------------------------------------------
# the bed


# Every child we start gets its own session (process group); on an interrupt, stop_children() ends
# exactly those groups (bed exec -> nsenter -> helper -> rsync/ssh, ansible-playbook and its forks).
_CHILDREN = set()


def spawn(argv, **kw):
    proc = subprocess.Popen(argv, start_new_session=True, **kw)
    _CHILDREN.add(proc)
    return proc


def reap(proc):
    _CHILDREN.discard(proc)


def stop_children(procs=None):
    procs = list(_CHILDREN if procs is None else procs)
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reap(proc)


def run(argv, check=True, timeout=600, **kw):
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_children([proc])
        raise
    except BaseException:
        stop_children()
        raise
    reap(proc)
    proc = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise BenchError("%s exited %d: %s" % (" ".join(shlex.quote(a) for a in argv[:6]), proc.returncode,
                                               (proc.stderr or proc.stdout).strip()[-2000:]))
    return proc


def bed(*args, check=True, timeout=600):
    return run([BED, *args], check=check, timeout=timeout)


def hexec(host, argv, check=True, timeout=600):
    """Run argv inside a host (nsenter, no ssh)."""
    return bed("exec", host, *argv, check=check, timeout=timeout)


# Where a host finds the helpers and the product's code: a copy inside its own tree. The checkout
# itself may sit where no host sees it (under /tmp or /root, which each host has its own of).
HOST_CODE = "/var/lib/libvirt/hvr-bench-code"
_SYNCED = set()


def host_helper_path(host, name):
    """Copy the helpers and the product's plugins into the host (once per run); the in-host path."""
    if host not in _SYNCED:
        root = host_path(host, HOST_CODE)
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(HELPERS, os.path.join(root, "benchmarks", "helpers"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(os.path.join(REPO, "plugins"),
                        os.path.join(root, ".build", "collections", "ansible_collections", "hypervisor", "resize",
                                     "plugins"), ignore=shutil.ignore_patterns("__pycache__"))
        _SYNCED.add(host)
    return "%s/benchmarks/helpers/%s" % (HOST_CODE, name)


def helper(host, name, *args, timeout=1800):
    """Run benchmarks/helpers/NAME inside a host; returns its last stdout line as JSON."""
    proc = hexec(host, [HOST_PYTHON, host_helper_path(host, name), *[str(a) for a in args]], check=False,
                 timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 and lines and json.loads(lines[-1]).get("error"):
        raise BenchError("helper %s on %s: %s" % (name, host, json.loads(lines[-1])["error"]))
    if proc.returncode != 0 or not lines:
        raise BenchError("helper %s on %s exited %d: %s" % (name, host, proc.returncode,
                                                            (proc.stderr + proc.stdout).strip()[-2000:]))
    return json.loads(lines[-1])


_INFO = {}


def bed_info():
    if not _INFO:
        out = bed("info").stdout
        _INFO.update(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return _INFO


def host_path(host, path):
    """Where an in-host path lives on this machine (the host's bind-mounted tree)."""
    for prefix, sub in HOST_TREE:
        if path == prefix or path.startswith(prefix + "/"):
            return os.path.join(bed_info()["state"], "hosts", host, sub) + path[len(prefix):]
    raise ValueError("%s is not inside a per-host directory" % path)


def ensure_bed_up():
    bed("up", timeout=900)
    subnet = bed_info()["subnet"]
    if subnet.startswith("192.0.2."):
        raise BenchError("the bed is on 192.0.2.0/24, this machine's real network; refusing to run")


def rx_bytes(host, dev="eth0"):
    """Bytes received by a host's interface (inside its network namespace)."""
    out = run(["ip", "-n", "hvr-" + host, "-j", "-s", "link", "show", dev]).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["bytes"])


def drop_caches():
    """Cold page cache (the whole machine's): flush dirty pages, then drop clean ones."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


def allocated(path):
    return os.stat(path).st_blocks * 512


def edit_authorized_keys(host, add=(), remove_tag=None):
    """Add lines to / remove our lines from root's authorized_keys inside a host, under the lock
    every edit of that file takes (the product's keys_lock), so that a migration adding or revoking
    its key at the same moment is never lost."""
    path = host_path(host, "/root/.ssh/authorized_keys")
    with product_keys.keys_lock(path):
        lines = []
        if os.path.exists(path):
            with open(path) as fh:
                lines = fh.read().splitlines()
        new = [ln for ln in lines if not (remove_tag and ln.split() and ln.split()[-1].startswith(remove_tag))]
        new += [ln for ln in add if ln not in new]
        if new == lines:
            return
        tmp = path + ".bench-tmp"
        with open(tmp, "w") as fh:
            fh.write("\n".join(new) + ("\n" if new else ""))
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)


def domains(host):
    """{name: state} of every domain on a host."""
    out = hexec(host, ["virsh", "-q", "-c", URI, "list", "--all"]).stdout
    doms = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 3:
            doms[parts[1]] = parts[2].strip()
    return doms


def sweep_leftovers():
    """Remove whatever an earlier (killed) benchmark run left: guests, files, keys, claims."""
    names = set()
    for h in HOSTS:
        names.update(n for n in domains(h) if n.startswith(PREFIX))
    for name in sorted(names):
        bed("rm-guest", name)
    for h in HOSTS:
        for pattern in (IMAGES + "/" + PREFIX + "*", "/tmp/" + PREFIX + "*"):
            for path in glob.glob(host_path(h, pattern)):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        for log in glob.glob(host_path(h, "/var/log/libvirt/qemu/" + PREFIX + "*")):
            os.unlink(log)
        drop_product_state(h, lambda rec: str(rec.get("instance", "")).startswith(PREFIX))
        edit_authorized_keys(h, remove_tag=KEY_TAG)
        drop_async_results(h)


def drop_async_results(host):
    """Results of the role's async copy jobs for our VMs that an interrupted play did not collect."""
    for path in glob.glob(host_path(host, "/root/.ansible_async/*")):
        try:
            with open(path) as fh:
                job = json.load(fh)
        except (OSError, ValueError):
            continue
        args = (job.get("invocation") or {}).get("module_args") or {}
        if str(args.get("instance", "")).startswith(PREFIX):
            os.unlink(path)


def drop_product_state(host, which):
    """Remove the product's claim directories (and transfer keys) of our own bench-* migrations,
    with the product's own code and under its locks (state.locked, keys_lock)."""
    state_dir = host_path(host, STATE_DIR)
    with product_state.locked(state_dir):
        gone = [rec.get("id") for rec in product_state.records(state_dir) if which(rec)]
        for mid in gone:
            product_state.remove(state_dir, mid)
    for mid in gone:
        product_keys.edit_authorized_keys(host_path(host, "/root/.ssh/authorized_keys"), remove_id=mid)
        marker = host_path(host, markers.marker_path(IMAGES + "/x", mid))
        if os.path.exists(marker):
            os.unlink(marker)
    return gone


# ------------------------------------------------------------------------------------------------
# temporary trust hv1 -> hv2 for the copy benchmarks


class Trust:
    """Two one-off keys on the source host, authorized on the destination for the copy benchmarks.

    recv: forced to the product's receiver (as virt_resize_prep authorizes a migration key);
    plain: a normal root login, for rsync, scp and the floor. The destination's host key is pinned.
    """

    def __init__(self, run_id, src="hv1", dst="hv2"):
        self.run_id, self.src, self.dst = run_id, src, dst
        self.tag = KEY_TAG + run_id
        self.dir_in = "/tmp/%s%s" % (PREFIX, run_id)
        self.mdir_in = "%s/%smig-%s" % (IMAGES, PREFIX, run_id)
        self.allowed = {}
        self.lines = []

    def __enter__(self):
        kdir = host_path(self.src, self.dir_in)
        os.makedirs(kdir, mode=0o700)
        try:
            lines = []
            for kind in ("recv", "plain"):
                key = os.path.join(kdir, kind)
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "%s-%s" % (self.tag, kind), "-f", key])
                with open(key + ".pub") as fh:
                    pub = _policy.check_public_key(fh.read())
                lines.append((kind, pub))
            with open(host_path(self.dst, "/etc/ssh/ssh_host_ed25519_key.pub")) as fh:
                host_key = _policy.check_public_key(fh.read())
            with open(os.path.join(kdir, "known_hosts"), "w") as fh:
                fh.write("%s %s\n" % (self.dst, host_key))
            mdir = host_path(self.dst, self.mdir_in)
            os.makedirs(mdir, mode=0o700)
            with open(os.path.join(mdir, "receive.py"), "w") as fh:
                fh.write(inspect.getsource(receiver))
            os.chmod(os.path.join(mdir, "receive.py"), 0o700)
            self._write_allowed()
            recv = dict(lines)["recv"]
            # The product's own line (restrict, forced receiver), tagged as ours instead of a migration's.
            src_addr = "%s.%d" % (bed_info()["subnet"].rsplit(".", 1)[0], 11 + int(self.src[2:]) - 1)
            forced = product_keys.authorized_line(recv, self.mdir_in, self.run_id, [src_addr], 6 * 3600)
            forced = forced[: forced.rindex(" ")] + " %s-recv" % self.tag
            self.lines = [forced, "%s %s-plain" % (dict(lines)["plain"], self.tag)]
            self.ensure()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        edit_authorized_keys(self.dst, remove_tag=self.tag)
        shutil.rmtree(host_path(self.src, self.dir_in), ignore_errors=True)
        shutil.rmtree(host_path(self.dst, self.mdir_in), ignore_errors=True)
        return False

    def ensure(self):
        """(Re)authorize our keys: `bed up` (e.g. a test session starting) rewrites authorized_keys."""
        edit_authorized_keys(self.dst, add=self.lines)

    def _write_allowed(self):
        with open(os.path.join(host_path(self.dst, self.mdir_in), "allowed.json"), "w") as fh:
            json.dump(self.allowed, fh)

    def allow(self, path_in_dst):
        if path_in_dst not in self.allowed:
            self.allowed[path_in_dst] = {"max_size": 1 << 44}  # the benchmark's own disks
            self._write_allowed()

    def key(self, kind):
        return "%s/%s" % (self.dir_in, kind)

    @property
    def known_hosts(self):
        return self.dir_in + "/known_hosts"

    def ssh_options(self, kind="plain"):
        """The product's ssh options (sender.ssh_argv), without destination and command."""
        argv = sender.ssh_argv(self.dst, 22, self.key(kind), self.known_hosts, cipher=CIPHER)
        return argv[1:argv.index("--")]

    def ssh_log(self, label):
        return "%s/ssh-%s.log" % (self.dir_in, label)


# ------------------------------------------------------------------------------------------------
# ansible-playbook with the timeline callback


def ansible_env(timeline=None):
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + ":" + env.get("PATH", "")
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    if timeline:
        env["ANSIBLE_CALLBACK_PLUGINS"] = CALLBACKS
        env["ANSIBLE_CALLBACKS_ENABLED"] = "bench_timeline"
        env["BENCH_TIMELINE"] = timeline
    return env


def playbook_argv(name, inventory=None, **extra):
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory or bed_info()["inventory"],
            os.path.join(REPO, "playbooks", name)]
    for key, value in extra.items():
        argv += ["-e", json.dumps({key: value})]
    return argv


def start_playbook(name, timeline, inventory=None, **extra):
    """Start ansible-playbook in the background; returns (Popen, start wall time)."""
    t0 = time.time()
    proc = spawn(playbook_argv(name, inventory, **extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                 env=ansible_env(timeline), cwd=REPO)
    return proc, t0


def finish_playbook(proc, t0, timeline, timeout=900):
    out = proc.communicate(timeout=timeout)[0]
    t1 = time.time()
    reap(proc)
    events = read_jsonl(timeline)
    failed = [e for e in events if e["ev"] in ("failed", "unreachable")]
    return {"rc": proc.returncode, "start": t0, "end": t1, "seconds": t1 - t0, "stdout": out, "timeline": events,
            "failed_msg": (failed[-1].get("result") or {}).get("msg") if failed else None}


def playbook(name, timeline, inventory=None, **extra):
    proc, t0 = start_playbook(name, timeline, inventory, **extra)
    return finish_playbook(proc, t0, timeline)


def read_jsonl(path):
    out = []
    if path and os.path.exists(path):
        with open(path) as fh:
            out = [json.loads(line) for line in fh if line.strip()]
    return out


def failure_summary(res):
    """Why a playbook failed: its last failed task's message (the role's 'Fail, naming the step')."""
    if res.get("failed_msg"):
        return " ".join(str(res["failed_msg"]).split())
    stdout = res["stdout"]
    m = re.search(r'Resize of \S+ failed at "([^"]+)":\s*(.*?)(?:\\n|"\n|\n\n)', stdout, re.S)
    if m:
        return ("%s: %s" % (m.group(1), m.group(2))).replace("\\n", " ")[:400]
    m = re.search(r"fatal: .*?\"msg\": \"(.*?)\"", stdout, re.S)
    return (m.group(1) if m else stdout.strip()[-400:])[:400]


# ------------------------------------------------------------------------------------------------
# the report


def median(values):
    return statistics.median(values) if values else None


def fmt_s(x, digits=2):
    return "-" if x is None else "%.*f" % (digits, x)


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(n) >= size:
            return "%.2f %s" % (n / size, unit)
    return "%d B" % n


def fmt_ratio(x):
    return "-" if x is None else "%.2fx" % x


class Report:
    """Tables and targets, printed as Markdown as they come, summarised at the end."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.sections = []
        self.targets = []
        self.errors = []

    def emit(self, text=""):
        self.out.write(text + "\n")
        self.out.flush()
        self.sections.append(text)

    def table(self, title, headers, rows, notes=()):
        self.emit("### " + title)
        self.emit("")
        cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        numeric = [all(_numeric(r[i]) for r in cells[1:]) and i > 0 for i in range(len(headers))]

        def line(r):
            return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                     for c, w, num in zip(r, widths, numeric)) + " |"
        self.emit(line(cells[0]))
        self.emit("|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                                 for w, num in zip(widths, numeric)) + "|")
        for r in cells[1:]:
            self.emit(line(r))
        self.emit("")
        for n in notes:
            self.emit(n)
        if notes:
            self.emit("")

    def target(self, bench, goal, measured, met):
        """met: True, False, or None (could not be measured)."""
        self.targets.append((bench, goal, measured, met))

    def error(self, bench, message):
        self.errors.append((bench, message))
        self.emit("**%s: ERROR** %s" % (bench, message))
        self.emit("")

    def summary(self):
        rows = [(b, g, m, {True: "met", False: "MISSED", None: "not measured"}[ok]) for b, g, m, ok in self.targets]
        rows += [(b, "ran to the end", msg[:160], "ERROR") for b, msg in self.errors]
        self.table("Summary of targets", ("benchmark", "target", "measured", "result"), rows)
        met = sum(1 for t in self.targets if t[3] is True)
        self.emit("targets met: %d of %d; errors: %d" % (met, len(self.targets), len(self.errors)))


def _numeric(text):
    return bool(re.match(r"^-?[0-9][0-9.,]*( ?(s|x|GiB|MiB|KiB|B|%|KiB\b))?$", text)) or text == "-"
