"""The pre-copy (module_utils/precopy.py): its pure rules, and docs/security.md rule R4 played as
attacks with real qemu-img on real files - a hostile source's deltas aimed at files of the
destination. Each attack asserts that what it aimed at is untouched."""

import fcntl
import hashlib
import os
import shutil
import subprocess

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import finish, precopy, state
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ResizeError, ValidationError

MIB = 1024 * 1024
SIZE = 16 * MIB

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
                                reason="needs qemu-img and qemu-io (qemu-utils)")


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def write(image, fmt, offset, pattern, length=MIB):
    sh("qemu-io", "-f", fmt, "-c", "write -P %d %d %d" % (pattern, offset, length), str(image))


def read_pattern(image, fmt, offset, pattern, length=MIB):
    """Whether `length` bytes at `offset` of the image are all `pattern`."""
    proc = subprocess.run(["qemu-io", "-f", fmt, "-r", "-c", "read -P %d %d %d" % (pattern, offset, length),
                           str(image)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return proc.returncode == 0 and b"Pattern verification failed" not in proc.stdout + proc.stderr


@pytest.fixture(params=["raw", "qcow2"])
def chain(tmp_path, request):
    """A source's disk (pattern 1 at 0 MiB), its delta1 (pattern 2 at 1 MiB) and delta2 (pattern 3 at
    2 MiB, over 1 MiB too), and the destination's copy of the disk as the receiver leaves it."""
    fmt = request.param
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    disk = src / ("vm." + fmt)
    sh("qemu-img", "create", "-q", "-f", fmt, str(disk), str(SIZE))
    write(disk, fmt, 0, 1)
    d1, d2 = precopy.delta_path(str(disk), 1), precopy.delta_path(str(disk), 2)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", fmt, d1)
    write(d1, "qcow2", MIB, 2)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", d1, "-F", "qcow2", d2)
    write(d2, "qcow2", 2 * MIB, 3)
    write(d2, "qcow2", MIB, 4, length=4096)
    # The destination: the same names in its own directory, copied byte for byte (as received).
    here = dst / disk.name
    shutil.copyfile(disk, here)
    for k, d in ((1, d1), (2, d2)):
        shutil.copyfile(d, precopy.delta_path(str(here), k))
    return fmt, disk, here


def commit(here, fmt, received=None, committed=None):
    received = received if received is not None else {precopy.delta_path(str(here), k) for k in (1, 2)}
    committed = [] if committed is None else committed
    return precopy.commit_received([(str(here), fmt)], received, committed, committed.append)


def test_the_destination_ends_with_the_source_chain_s_contents(chain):
    fmt, disk, here = chain
    committed = []
    done = commit(here, fmt, committed=committed)
    assert len(done) == 2 and committed == [precopy.delta_path(str(here), k) for k in (1, 2)]
    assert not any(os.path.exists(p) for p in committed)          # the deltas are gone
    top = precopy.delta_path(str(disk), 2)
    cmp = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", fmt, top, str(here)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert read_pattern(here, fmt, 0, 1) and read_pattern(here, fmt, 2 * MIB, 3)
    assert read_pattern(here, fmt, MIB, 4, length=4096) and read_pattern(here, fmt, MIB + 4096, 2, length=MIB - 4096)
    info = subprocess.run(["qemu-img", "info", "-f", fmt, "--output=json", str(here)], stdout=subprocess.PIPE,
                          check=True).stdout
    assert b"backing-filename" not in info


def test_a_finish_run_again_after_the_commit_does_nothing(chain):
    fmt, _disk, here = chain
    committed = []
    commit(here, fmt, committed=committed)
    before = sha(here)
    assert commit(here, fmt, committed=list(committed)) == []
    assert sha(here) == before


def test_a_delta_gone_without_being_committed_is_refused(chain):
    fmt, _disk, here = chain
    os.unlink(precopy.delta_path(str(here), 2))
    before = sha(here)
    with pytest.raises(ValidationError, match="is gone, and not committed"):
        commit(here, fmt)
    assert sha(here) != before  # delta1 went in; the record says so, delta2 is missing: revert
    # (what matters: nothing was defined; finish stops here)


def test_r4_a_missing_round_refuses_before_anything_is_committed(chain):
    fmt, _disk, here = chain
    before = sha(here)
    with pytest.raises(ValidationError, match=r"rule R4.*") as err:
        commit(here, fmt, received={precopy.delta_path(str(here), 2)})
    assert "rounds [2], not 1 to 1" in str(err.value)
    assert sha(here) == before


@pytest.mark.parametrize("how", ["path", "json"])
def test_r4_a_delta_naming_another_file_as_its_backing_never_writes_into_it(chain, tmp_path, how):
    """The attack: S sends a delta whose header names a file of D's - another VM's disk - as its
    backing file. `qemu-img commit` on it as sent would write the delta's data into that file."""
    fmt, _disk, here = chain
    victim = tmp_path / "other-vm.raw"
    sh("qemu-img", "create", "-q", "-f", "raw", str(victim), str(SIZE))
    write(victim, "raw", 0, 7, length=SIZE)
    before = sha(victim)
    d1 = precopy.delta_path(str(here), 1)
    os.unlink(d1)
    os.unlink(precopy.delta_path(str(here), 2))
    backing = str(victim) if how == "path" else 'json:{"driver": "file", "filename": "%s"}' % victim
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(victim), "-F", "raw", d1, str(SIZE))
    write(d1, "qcow2", 3 * MIB, 9)
    sh("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", backing, "-F", "raw", d1)  # what S writes there
    assert sha(victim) == before
    commit(here, fmt, received={d1})
    assert sha(victim) == before                   # never written (nor read into the VM's disk)
    assert read_pattern(here, fmt, 3 * MIB, 9)      # the delta went into the VM's own disk
    assert read_pattern(here, fmt, 0, 1)            # and nothing of the victim came with it


def test_r4_a_delta_with_an_external_data_file_is_refused(chain, tmp_path):
    fmt, _disk, here = chain
    victim = tmp_path / "secret"
    victim.write_bytes(b"S" * MIB)
    d1 = precopy.delta_path(str(here), 1)
    os.unlink(d1)
    os.unlink(precopy.delta_path(str(here), 2))
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=%s,data_file_raw=on" % victim, d1, str(SIZE))
    victim.write_bytes(b"S" * MIB)  # (creating the delta sized the file: the attack starts from here)
    before, disk_before = sha(victim), sha(here)
    with pytest.raises(ValidationError, match=r"external data file.*rule R4"):
        commit(here, fmt, received={d1})
    assert sha(victim) == before and sha(here) == disk_before and os.path.exists(d1)


def test_r4_a_received_disk_naming_a_data_file_is_refused_before_any_commit_opens_it(chain, tmp_path):
    """The attack: S sends a clean delta, and a disk whose own header names a file of D's as its
    external data file; committing into that disk would write into the file."""
    fmt, _disk, here = chain
    if fmt != "qcow2":
        pytest.skip("a raw disk has no header")
    victim = tmp_path / "other-vm.raw"
    os.unlink(here)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=%s,data_file_raw=on" % victim, str(here), str(SIZE))
    victim.write_bytes(b"V" * MIB)
    before = sha(victim)
    with pytest.raises(ValidationError, match=r"names a data file.*rule R4"):
        commit(here, fmt)
    assert sha(victim) == before


def test_finish_closes_the_receiver_first_and_waits_for_none(tmp_path):
    mid = "0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11"
    mdir = state.migration_dir(str(tmp_path), mid)
    os.makedirs(mdir)
    with open(os.path.join(mdir, "allowed.json"), "w") as fh:
        fh.write('{"/i/vm.raw.hvresize-delta1": {"max_size": 1}}')
    lock = os.open(os.path.join(mdir, "receive.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)   # a receiver session runs
    with pytest.raises(ValidationError, match="still running"):
        finish.close_receiver(str(tmp_path), mid, "vm", "hv2")
    assert os.path.exists(os.path.join(mdir, "allowed.json"))
    os.close(lock)
    finish.close_receiver(str(tmp_path), mid, "vm", "hv2")
    assert not os.path.exists(os.path.join(mdir, "allowed.json"))  # the receiver refuses every path now
    assert os.path.exists(os.path.join(mdir, finish.CLOSED_ALLOWED))  # revert still finds part files by it
    finish.reopen_receiver(str(tmp_path), mid)
    assert os.path.exists(os.path.join(mdir, "allowed.json"))


def test_r4_a_delta_of_another_size_is_refused(chain):
    fmt, _disk, here = chain
    before = sha(here)
    d1 = precopy.delta_path(str(here), 1)
    os.unlink(d1)
    os.unlink(precopy.delta_path(str(here), 2))
    sh("qemu-img", "create", "-q", "-f", "qcow2", d1, str(SIZE * 4))
    write(d1, "qcow2", SIZE * 3, 5)
    with pytest.raises(ValidationError, match=r"virtual size of %d bytes, not the disk's %d.*rule R4" % (SIZE * 4, SIZE)):
        commit(here, fmt, received={d1})
    assert sha(here) == before


def test_r4_a_delta_that_is_not_qcow2_is_refused(chain):
    fmt, _disk, here = chain
    before = sha(here)
    d1 = precopy.delta_path(str(here), 1)
    os.unlink(precopy.delta_path(str(here), 2))
    with open(d1, "wb") as fh:
        fh.write(b"\0" * MIB)
    with pytest.raises(ResizeError):
        commit(here, fmt, received={d1})
    assert sha(here) == before


def test_delta_names_are_bounded():
    assert precopy.delta_path("/i/vm.qcow2", 1) == "/i/vm.qcow2.hvresize-delta1"
    assert len(precopy.all_delta_paths("/i/vm.raw")) == precopy.MAX_ROUNDS
    for bad in (0, precopy.MAX_ROUNDS + 1, "1", True):
        with pytest.raises(ValidationError):
            precopy.delta_path("/i/vm.raw", bad)


@pytest.mark.parametrize("k, rounds, top, sent, threshold, again", [
    (1, 3, 500 * MIB, 2000 * MIB, 64 * MIB, True),     # converging: another round
    (3, 3, 500 * MIB, 2000 * MIB, 64 * MIB, False),    # no rounds left: cut over
    (1, 3, 10 * MIB, 2000 * MIB, 64 * MIB, False),     # small enough for after the power-off
    (2, 3, 300 * MIB, 200 * MIB, 64 * MIB, False),     # the guest writes faster than we copy
    (1, 1, 500 * MIB, 2000 * MIB, 64 * MIB, False),
])
def test_the_rounds_are_bounded_and_stop_when_they_do_not_converge(k, rounds, top, sent, threshold, again):
    assert precopy.next_round(k, rounds, top, sent, threshold) is again


def test_no_round_without_room_beside_the_disks(tmp_path):
    disk = str(tmp_path / "vm.raw")
    assert precopy.short_of_room([disk], room=0) is None
    assert precopy.short_of_room([disk, disk], room=1 << 60) == str(tmp_path)


def test_the_snapshot_takes_a_delta_of_the_moved_disks_only():
    xml = ("<domain><devices><disk type='file' device='disk'><source file='/i/a.raw'/><target dev='vda'/></disk>"
           "<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc'/><readonly/></disk>"
           "<disk type='file' device='disk'><source file='/i/b.qcow2'/><target dev='vdb'/></disk></devices></domain>")
    snap = precopy.snapshot_xml(xml, {"vda": "/i/a.raw.hvresize-delta1"})
    assert "<disk name=\"vda\" snapshot=\"external\"><driver type=\"qcow2\" /><source file=\"/i/a.raw.hvresize-delta1\" />" in snap
    assert "<disk name=\"hdc\" snapshot=\"no\" />" in snap and "<disk name=\"vdb\" snapshot=\"no\" />" in snap
    assert precopy.disk_source(xml, "vdb") == "/i/b.qcow2" and precopy.disk_source(xml, "vdz") is None


class FakeDom:
    def __init__(self, xml, active):
        self.xml, self.active = xml, active

    def isActive(self):
        return self.active

    def XMLDesc(self, flags):
        return self.xml

    def name(self):
        return "vm"


class FakeLibvirt:
    VIR_DOMAIN_XML_INACTIVE = 1


def disk_xml(path):
    return "<domain><devices><disk type='file' device='disk'><source file='%s'/><target dev='vda'/></disk>" \
           "</devices></domain>" % path


def test_the_source_s_undo_commits_only_its_own_deltas(tmp_path):
    base = str(tmp_path / "vm.raw")
    rec = {"precopy": {"original_xml": "<domain/>", "disks": [
        {"path": base, "target": "vda", "format": "raw", "deltas": [precopy.delta_path(base, 1)]}]}}
    open(precopy.delta_path(base, 1), "w").close()
    steps = precopy.undo_source_steps(FakeDom(disk_xml(precopy.delta_path(base, 1)), True), FakeLibvirt, rec)
    assert [s[0] for s in steps] == ["commit-live", "define", "delete"]
    steps = precopy.undo_source_steps(FakeDom(disk_xml(precopy.delta_path(base, 1)), False), FakeLibvirt, rec)
    assert [s[0] for s in steps] == ["commit", "define", "delete"]
    # Already committed and pivoted (a revert run again): only the leftovers go.
    steps = precopy.undo_source_steps(FakeDom(disk_xml(base), False), FakeLibvirt, rec)
    assert [s[0] for s in steps] == ["define", "delete"]
    # A disk that reads something else than our delta is never committed into the disk.
    with pytest.raises(ValidationError, match="not this migration's delta"):
        precopy.undo_source_steps(FakeDom(disk_xml("/elsewhere.qcow2"), False), FakeLibvirt, rec)
    assert precopy.undo_source_steps(FakeDom(disk_xml(base), False), FakeLibvirt,
                                     {"precopy": dict(rec["precopy"], undone=True)}) == []
