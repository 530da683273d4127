"""docs/security.md, played as attacks on the copy's two ends, with the real receiver script run as
sshd would run it, on real files. Each test is an attack; each asserts what the attack aimed at is
untouched."""

import inspect
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils._transfer import keys, local, markers, receiver, sender
from ansible_collections.hypervisor.resize.plugins.module_utils._transfer.wire import END, FRAME, frames
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import TransferError, ValidationError

MIB = 1024 * 1024


@pytest.fixture
def mig(tmp_path):
    mdir, dst, victim = tmp_path / "mig", tmp_path / "images", tmp_path / "victim"
    for d in (mdir, dst):
        d.mkdir()
    victim.write_text("precious")
    (mdir / "receive.py").write_text(inspect.getsource(receiver))
    return mdir, dst, victim


def allow(mdir, path, max_size=MIB):
    (mdir / "allowed.json").write_text(json.dumps({str(path): {"max_size": max_size}}))


def run(mdir, data):
    proc = subprocess.run([sys.executable, str(mdir / "receive.py"), str(mdir)], input=data,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, timeout=60)
    return proc.returncode, json.loads(proc.stdout.decode().splitlines()[-1])


def header(path, size):
    return (json.dumps({"v": 1, "path": str(path), "size": size}) + "\n").encode()


def stream(chunks):
    """Frames for [(offset, bytes)], then the correct end frame and digest."""
    import hashlib
    digest = hashlib.sha256()
    out = b""
    for offset, data in chunks:
        head = FRAME.pack(offset, len(data))
        digest.update(head + data)
        out += head + data
    tail = FRAME.pack(END, 0)
    digest.update(tail)
    return out + tail + digest.hexdigest().encode()


def test_R1_symlink_planted_at_the_part_path_is_never_followed(mig):
    mdir, dst, victim = mig
    target = dst / "vm.qcow2"
    allow(mdir, target)
    os.symlink(str(victim), str(target) + ".hvresize-part")
    rc, reply = run(mdir, header(target, 4096) + stream([(0, b"evil")]))
    assert rc == 3 and "in the way" in reply["error"]
    assert victim.read_text() == "precious"
    assert os.path.islink(str(target) + ".hvresize-part") and not os.path.lexists(target)


def test_R1_symlink_in_a_directory_component_is_never_followed(mig, tmp_path):
    mdir, dst, victim = mig
    os.symlink(str(tmp_path), str(dst / "link"))
    target = dst / "link" / "victim"
    allow(mdir, target)
    rc, reply = run(mdir, header(target, 4096) + stream([(0, b"evil")]))
    assert rc == 3 and "symbolic link" in reply["error"]
    assert victim.read_text() == "precious"


def test_R1_an_existing_file_is_never_replaced(mig):
    mdir, dst, victim = mig
    allow(mdir, victim)
    rc, reply = run(mdir, header(victim, 4096) + stream([(0, b"evil")]))
    assert rc == 3 and "already exists" in reply["error"]
    assert victim.read_text() == "precious"


def test_R1_only_listed_paths_are_written(mig):
    mdir, dst, victim = mig
    allow(mdir, dst / "vm.qcow2")
    rc, reply = run(mdir, header(dst / "other.qcow2", 4096) + stream([(0, b"evil")]))
    assert rc == 3 and "not part of this migration" in reply["error"]
    assert os.listdir(dst) == []


@pytest.mark.parametrize("attack,data,error", [
    ("header without end", b"{" + b" " * (70 * 1024), "header longer than"),
    ("header not an object", b"[1, 2]\n", "not a JSON object"),
    ("size beyond the allowed", None, "more than this migration allows"),
    ("frame beyond the size", stream([(4096, b"x" * 10)]), "outside the declared size"),
    ("frames out of order", stream([(2048, b"b" * 10), (0, b"a" * 10)]), "out of order"),
    ("overlapping frames", stream([(0, b"a" * 100), (50, b"b" * 10)]), "out of order"),
    ("empty frame", stream([(0, b"")]), "outside the declared size"),
])
def test_R2_the_receiver_bounds_what_it_reads(mig, attack, data, error):
    mdir, dst, _victim = mig
    target = dst / "vm.raw"
    allow(mdir, target, max_size=4096)
    if attack == "size beyond the allowed":
        payload = header(target, 1 << 40) + stream([(0, b"x")])
    elif attack.startswith("header"):
        payload = data
    else:
        payload = header(target, 4096) + data
    rc, reply = run(mdir, payload)
    assert rc == 3 and error in reply["error"], reply
    assert os.listdir(dst) == [], "nothing left behind"


def test_R2_a_huge_frame_length_is_refused_before_any_read(mig):
    mdir, dst, _victim = mig
    target = dst / "vm.raw"
    allow(mdir, target, max_size=1 << 40)
    rc, reply = run(mdir, header(target, 1 << 40) + FRAME.pack(0, 1 << 39))
    assert rc == 3 and "outside the declared size" in reply["error"]
    assert os.listdir(dst) == []


def test_the_source_believes_no_checksum_but_its_own(tmp_path):
    """A destination that replies ok with another digest is not believed."""
    src = tmp_path / "disk"
    src.write_bytes(b"data" * 1000)
    liar = [sys.executable, "-c", "import sys; sys.stdin.buffer.read(); "
            "print('{\"ok\": true, \"sha256\": \"%s\", \"bytes\": 4000}')" % ("0" * 64)]
    with pytest.raises(TransferError, match="destination reports"):
        sender.send(str(src), liar)


# --- T1-T3: what reaches the source's ssh command line ------------------------------------------

@pytest.mark.parametrize("user", ["-oProxyCommand=touch /tmp/pwned;#", "root@evil", "ro ot", "", "a" * 40,
                                  "root\n", None])
def test_T1_a_hostile_transfer_user_never_reaches_ssh(user):
    with pytest.raises(ValidationError, match="rule T1"):
        sender.ssh_argv("hv2", 22, "/k", "/kh", user=user)


@pytest.mark.parametrize("dest", ["-oProxyCommand=x", "hv2 -oX", "hv2;touch", "", "hv2\n", "a..b"])
def test_T3_a_hostile_destination_address_never_reaches_ssh(dest):
    with pytest.raises(ValidationError, match="rule T3"):
        sender.ssh_argv(dest, 22, "/k", "/kh")


def test_T3_ssh_reads_no_config_and_the_destination_follows_double_dash():
    argv = sender.ssh_argv("hv2", 2222, "/k", "/kh", user="root")
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    assert argv[-3:] == ["--", "hv2", "receive"]
    assert argv[argv.index("-l") + 1] == "root"
    # ssh itself agrees (ssh -G prints the configuration it would use, connecting nowhere).
    out = subprocess.run(["ssh", "-G"] + argv[1:-1], capture_output=True, text=True, check=True).stdout
    assert "\nuser root\n" in out and "\nhostname hv2\n" in out and "\nport 2222\n" in out
    assert "proxycommand" not in out.replace("proxycommand none", "")


@pytest.mark.parametrize("key", [
    "ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 BBBB",
    "ssh-ed25519 AAAA comment\nhv3 ssh-ed25519 CCCC",
    "@revoked ssh-ed25519 AAAA",
    'command="x" ssh-ed25519 AAAA',
    "ssh-ed25519 AA$A",
])
def test_T2_a_hostile_host_key_never_reaches_known_hosts(key):
    from ansible_collections.hypervisor.resize.plugins.module_utils import _policy
    with pytest.raises(ValidationError, match="rule T2"):
        _policy.known_hosts_line("hv2", 22, key)


def test_T2_known_hosts_holds_exactly_one_line():
    from ansible_collections.hypervisor.resize.plugins.module_utils import _policy
    assert _policy.known_hosts_line("hv2", 22, "ssh-ed25519 AAAA hv2-host-key\n") == "hv2 ssh-ed25519 AAAA\n"
    assert _policy.known_hosts_line("198.51.100.12", 2222, "ssh-ed25519 AAAA") == "[198.51.100.12]:2222 ssh-ed25519 AAAA\n"


# --- T4: the one-off key -------------------------------------------------------------------------

def test_T4_expired_keys_are_dropped_by_the_next_edit(tmp_path):
    ak = str(tmp_path / "ak")
    old = keys.authorized_line("ssh-ed25519 AAAA", "/m/old", "old", ["198.51.100.11"], 60, now=lambda: 0)
    new = keys.authorized_line("ssh-ed25519 BBBB", "/m/new", "new", ["198.51.100.11"], 60)
    with open(ak, "w") as fh:
        fh.write("ssh-ed25519 CCCC admin\n" + old + "\n")
    assert keys.edit_authorized_keys(ak, add=new)
    assert open(ak).read() == "ssh-ed25519 CCCC admin\n" + new + "\n"


def test_T4_source_addresses_are_resolved_here_and_checked():
    assert keys.source_addresses("198.51.100.11") == ["198.51.100.11"]

    def fake(*_args, **_kwargs):
        return [(2, 1, 6, "", ("198.51.100.11", 0))]

    assert keys.source_addresses("hv1", resolve=fake) == ["198.51.100.11"]
    with pytest.raises(ValidationError, match="rule T3"):
        keys.source_addresses('hv1",command="sh')


# --- S1: shared-storage markers ------------------------------------------------------------------

def test_S1_a_symlink_planted_as_marker_or_its_acknowledgement_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text(json.dumps({"migration": "m-1"}))
    disk = str(tmp_path / "vm.qcow2")
    os.symlink(str(victim), markers.marker_path(disk, "m-1"))
    assert markers.ack_marker(disk, "m-1", "hv1") is False, "a link is not a marker"
    assert json.loads(victim.read_text()) == {"migration": "m-1"}
    os.unlink(markers.marker_path(disk, "m-1"))
    markers.make_marker(str(tmp_path), "m-1", "hv2")
    os.symlink(str(victim), markers.marker_path(disk, "m-1") + ".tmp")
    with pytest.raises(TransferError, match="in the way"):
        markers.ack_marker(disk, "m-1", "hv1")
    assert json.loads(victim.read_text()) == {"migration": "m-1"}


def test_S1_a_backup_never_follows_a_planted_part_or_replaces_a_file(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    disk = tmp_path / "vm.raw"
    disk.write_bytes(b"x" * 8192)
    backup = str(disk) + local.BACKUP_SUFFIX
    os.symlink(str(victim), backup + ".hvresize-part")
    with pytest.raises(TransferError, match="in the way"):
        local.local_copy(str(disk), backup)
    assert victim.read_text() == "precious"


def test_frames_are_what_the_receiver_accepts(tmp_path, mig):
    """The honest path still works after all of the above: a real sparse disk, byte-identical."""
    mdir, dst, _victim = mig
    src = tmp_path / "disk"
    with open(src, "wb") as fh:
        fh.truncate(8 * MIB)
        fh.seek(3 * MIB)
        fh.write(os.urandom(MIB))
    target = dst / "disk"
    allow(mdir, target, max_size=8 * MIB)
    rc, reply = run(mdir, header(target, 8 * MIB) + b"".join(frames(str(src), 8 * MIB)))
    assert rc == 0 and reply["ok"]
    assert open(target, "rb").read() == open(src, "rb").read()
