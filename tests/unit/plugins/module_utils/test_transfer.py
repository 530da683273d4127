"""The copy's wire protocol end to end on this machine: the real sender into the real receiver
script (as sshd would run it), with real sparse files. Only ssh itself is left out."""

import hashlib
import inspect
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import _policy
from ansible_collections.hypervisor.resize.plugins.module_utils._transfer import (
    keys,
    local,
    markers,
    receiver,
    sender,
    wire,
)
from ansible_collections.hypervisor.resize.plugins.module_utils._transfer.progress import Progress, watch_job
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import TransferError, ValidationError

MIB = 1024 * 1024


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def setup(tmp_path):
    src_dir, dst_dir, mdir = tmp_path / "src", tmp_path / "dst", tmp_path / "mig"
    for d in (src_dir, dst_dir, mdir):
        d.mkdir()
    (mdir / "receive.py").write_text(inspect.getsource(receiver))  # what prep writes
    return src_dir, dst_dir, mdir


def sparse_disk(path, size=64 * MIB, chunks=None):
    chunks = chunks or ((0, b"boot"), (10 * MIB, os.urandom(MIB)), (50 * MIB, b"\x01" * 4096))
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off, data in chunks:
            fh.seek(off)
            fh.write(data)
    return path


def allow(mdir, *paths, max_size=64 * MIB):
    (mdir / "allowed.json").write_text(json.dumps({str(p): {"max_size": max_size} for p in paths}))


def receiver_argv(mdir):
    return [sys.executable, str(mdir / "receive.py"), str(mdir)]


def test_sparse_copy_is_identical_and_stays_sparse(setup):
    src_dir, dst_dir, mdir = setup
    src = sparse_disk(str(src_dir / "disk.raw"))
    dst = str(dst_dir / "disk.raw")
    allow(mdir, dst)
    seen = []
    reply = sender.send(src, receiver_argv(mdir), progress=seen.append, dest_path=dst)
    assert reply["size"] == 64 * MIB and reply["sha256"] == wire.stream_digest(src)
    assert reply["bytes"] == 4096 + MIB + 4096, "only allocated (block-granular), non-zero data is sent"
    assert reply["wire_bytes"] < MIB + 64 * 1024 and seen[-1] == reply["bytes"]
    assert sha256_of(dst) == sha256_of(src)
    assert os.stat(dst).st_size == 64 * MIB
    assert os.stat(dst).st_blocks * 512 < 4 * MIB, "holes stay holes on the destination"
    received = [json.loads(x) for x in (mdir / "received.jsonl").read_text().splitlines()]
    assert received == [{"path": dst, "sha256": reply["sha256"], "bytes": reply["bytes"]}]


def test_send_reports_bytes_and_refuses_paths_outside_the_migration(setup):
    src_dir, dst_dir, mdir = setup
    src = sparse_disk(str(src_dir / "disk.raw"))
    allow(mdir, "/elsewhere/disk.raw")
    with pytest.raises(TransferError, match="not part of this migration"):
        sender.send(src, receiver_argv(mdir))


def test_receiver_never_overwrites(setup):
    src_dir, dst_dir, mdir = setup
    src = sparse_disk(str(src_dir / "disk.raw"))
    allow(mdir, src)
    with pytest.raises(TransferError, match="already exists"):
        sender.send(src, receiver_argv(mdir))
    assert sha256_of(src)  # untouched, still readable


def test_corrupted_stream_is_rejected_and_leaves_nothing(setup):
    src_dir, dst_dir, mdir = setup
    src = sparse_disk(str(src_dir / "disk.raw"))
    target = str(dst_dir / "disk.raw")
    allow(mdir, target)
    stream = bytearray(b"".join(wire.frames(src, os.stat(src).st_size)))
    stream[100] ^= 0xFF  # flip a bit of data in flight
    header = (json.dumps({"v": 1, "path": target, "size": os.stat(src).st_size}) + "\n").encode()
    proc = subprocess.run(receiver_argv(mdir), input=header + bytes(stream), stdout=subprocess.PIPE, check=False)
    reply = json.loads(proc.stdout)
    assert proc.returncode == 3 and "checksum mismatch" in reply["error"]
    assert not os.path.exists(target) and not os.path.exists(target + ".hvresize-part")


def test_truncated_stream_is_rejected_and_leaves_nothing(setup):
    src_dir, dst_dir, mdir = setup
    src = sparse_disk(str(src_dir / "disk.raw"))
    target = str(dst_dir / "disk.raw")
    allow(mdir, target)
    stream = b"".join(wire.frames(src, os.stat(src).st_size))[:5000]
    header = (json.dumps({"v": 1, "path": target, "size": os.stat(src).st_size}) + "\n").encode()
    proc = subprocess.run(receiver_argv(mdir), input=header + stream, stdout=subprocess.PIPE, check=False)
    assert proc.returncode == 4 and not os.path.exists(target + ".hvresize-part")


def test_zero_blocks_inside_allocated_extents_are_not_sent(tmp_path):
    path = str(tmp_path / "d")
    with open(path, "wb") as fh:
        fh.write(b"\0" * (8 * MIB) + b"x")
    stream = b"".join(wire.frames(path, os.stat(path).st_size))
    assert len(stream) < 5 * MIB


def test_authorized_line_is_restricted_to_the_receiver_the_source_and_a_time(tmp_path):
    line = keys.authorized_line("ssh-ed25519 AAAAC3Nza comment", "/var/lib/x/migrations/abc", "abc",
                                ["198.51.100.11"], 3600, now=lambda: 0)
    assert line.startswith('restrict,from="198.51.100.11",expiry-time="19700101010000Z",'
                           'command="/usr/bin/python3 /var/lib/x/migrations/abc/receive.py /var/lib/x/migrations/abc" ')
    assert line.endswith(" ssh-ed25519 AAAAC3Nza hvresize-migration:abc")
    ak = str(tmp_path / "ak")
    with open(ak, "w") as fh:
        fh.write("ssh-ed25519 AAAAother admin@x\n")
    assert keys.edit_authorized_keys(ak, add=line)
    assert not keys.edit_authorized_keys(ak, add=line)
    assert keys.has_key(ak, "abc")
    assert keys.edit_authorized_keys(ak, remove_id="abc")
    with open(ak) as fh:
        assert fh.read() == "ssh-ed25519 AAAAother admin@x\n"
    assert os.stat(ak).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("bad", ["", "not a key", "ssh-ed25519", 'ssh-ed25519 AA"AA', "command=x ssh-ed25519 AAAA"])
def test_bad_public_keys_are_refused(bad):
    with pytest.raises(ValidationError):
        _policy.check_public_key(bad)


def test_local_backup_copy_is_identical_sparse_and_keeps_mode(tmp_path):
    src = sparse_disk(str(tmp_path / "disk.qcow2"))
    os.chmod(src, 0o640)
    dst = src + local.BACKUP_SUFFIX
    out = local.local_copy(src, dst)
    assert sha256_of(dst) == sha256_of(src)
    assert out["sha256"] == wire.stream_digest(src) == wire.stream_digest(dst)
    assert os.stat(dst).st_size == 64 * MIB and os.stat(dst).st_blocks * 512 < 4 * MIB
    assert os.stat(dst).st_mode & 0o777 == 0o640
    assert not os.path.exists(dst + ".hvresize-part")
    with pytest.raises(TransferError):  # never overwrites an existing backup
        local.local_copy(src, dst)
    assert sha256_of(dst) == sha256_of(src)


def test_preflight_reports_present_paths_and_free_space(setup):
    src_dir, dst_dir, mdir = setup
    there, free = str(dst_dir / "there.qcow2"), str(dst_dir / "free.qcow2")
    open(there, "w").close()
    allow(mdir, there, free)
    reply = sender.preflight(receiver_argv(mdir), [there, free])
    assert reply["present"] == [there]
    assert reply["free_bytes"][str(dst_dir)] > 0
    with pytest.raises(TransferError, match="not part of this migration"):
        sender.preflight(receiver_argv(mdir), [str(dst_dir / "other.qcow2")])
    assert os.listdir(dst_dir) == ["there.qcow2"], "a check writes nothing"
    os.symlink("/nonexistent", free + ".hvresize-part")
    assert sender.preflight(receiver_argv(mdir), [free])["parts"] == [free + ".hvresize-part"]


def test_preflight_fails_clearly_when_the_receiver_cannot_run(tmp_path):
    with pytest.raises(TransferError, match="refused the copy check"):
        sender.preflight([sys.executable, "-c", "import sys; sys.stderr.write('Host key verification failed.'); "
                          "sys.exit(255)"], ["/nonexistent/x"])


def test_throttle_keeps_the_average_rate():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    t = sender.Throttle(10 * MIB, clock=lambda: now[0], sleep=sleep)
    for _chunk in range(20):
        t(MIB)          # 20 MiB sent instantly would be 2 s at 10 MiB/s
    assert abs(now[0] - 2.0) < 1e-9
    unlimited = sender.Throttle(0, clock=lambda: 0.0, sleep=sleep)
    assert unlimited(10 * MIB) == 0.0


def test_progress_file_reports_bytes_percent_rate_eta_and_is_removed(tmp_path):
    now = [100.0]
    path = str(tmp_path / "progress" / "m.json")
    p = Progress(path, [{"allocation": 60 * MIB}, {"allocation": 40 * MIB}], every=1.0,
                 clock=lambda: now[0], wall=lambda: 1.0)
    p.set_phase("shutting down")
    now[0] += 5.0            # the shutdown does not count in the rate
    p.set_phase("copying")
    p.next_disk("/a")
    now[0] += 2.0
    p.update(50 * MIB)
    state = json.load(open(path))
    assert (state["bytes_done"], state["bytes_total"], state["percent"]) == (50 * MIB, 100 * MIB, 50.0)
    assert state["rate_bytes_per_s"] == 25 * MIB and state["eta_seconds"] == 2.0
    assert (state["disk"], state["disk_index"], state["disks"]) == ("/a", 1, 2)
    now[0] += 0.5
    p.update(55 * MIB)       # throttled: not rewritten within a second
    assert json.load(open(path))["bytes_done"] == 50 * MIB
    p.next_disk("/b")
    assert json.load(open(path))["bytes_done"] == 55 * MIB
    p.close()
    assert not os.path.exists(path)


def test_shared_storage_marker_is_acknowledged_only_for_its_migration(tmp_path):
    disk = str(tmp_path / "vm.qcow2")
    assert not markers.ack_marker(disk, "m-1", "hv1"), "no marker: not shared"
    made = markers.make_marker(str(tmp_path), "m-1", "hv2")
    assert made == markers.marker_path(disk, "m-1")
    assert not markers.ack_marker(disk, "m-2", "hv1"), "another migration's marker proves nothing"
    assert markers.ack_marker(disk, "m-1", "hv1")
    assert markers.read_marker(made) == {"migration": "m-1", "made_by": "hv2", "seen_by": "hv1"}
    with pytest.raises(FileExistsError):
        markers.make_marker(str(tmp_path), "m-1", "hv2")


def test_preflight_may_name_disks_already_there_but_never_write_them(setup):
    src_dir, dst_dir, mdir = setup
    there = str(dst_dir / "there.qcow2")
    with open(there, "w") as fh:
        fh.write("precious")
    allow(mdir)          # prep: present paths are not writable
    (mdir / "paths.json").write_text(json.dumps([there]))       # but the check may ask about them
    assert sender.preflight(receiver_argv(mdir), [there])["present"] == [there]
    src = sparse_disk(str(src_dir / "disk.raw"))
    with pytest.raises(TransferError, match="not part of this migration"):
        sender.send(src, receiver_argv(mdir), dest_path=there)
    assert open(there).read() == "precious"


def test_watch_job_returns_the_result_once_the_job_ended_and_cleans_up(tmp_path):
    job = tmp_path / "123.456"
    job.write_text(json.dumps({"started": 1, "finished": 0, "ansible_job_id": "123.456"}))
    assert watch_job(str(job), 0) is None and job.exists(), "still running: nothing yet"
    job.write_text(json.dumps({"changed": True, "failed": True, "msg": "copy failed"}))
    assert watch_job(str(job), 0) == {"changed": True, "failed": True, "msg": "copy failed"}
    assert not job.exists()
    with pytest.raises(TransferError, match="could not find the copy job"):
        watch_job(str(job), 0)
