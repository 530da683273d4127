"""Many VMs in one run on the bed: a batch placed at once (and one VM failing alone), a drain of a
host and its way back (playbooks/batch.yml, playbooks/drain.yml)."""

import json
import os
import re
import shutil

from resize_lib import (
    GIB,
    HOSTS,
    domains,
    dominfo,
    host_facts,
    image,
    migrations_dir,
    playbook,
    playbook_with,
    record,
    sh,
    sha256,
    where,
)

IMG = "/var/lib/libvirt/images/%s.qcow2"
MIB = 1024


def plan_of(out):
    """{VM: (source, dest)} from the plan the batch printed."""
    return {m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r'"(\S+): (hv\d) -> (hv\d), ', out)}


def test_a_batch_is_placed_at_once_and_one_failing_vm_is_rolled_back_alone(bed, guest, tmp_path):
    # hv2 and hv3 each keep all but 700 MiB for themselves: two m1.small (256 MiB) and one VM of
    # 128 MiB fit on each, a third m1.small does not. Six VMs ask for 1,280 MiB of 1,400.
    inv = tmp_path / "inventory"
    shutil.copytree(os.path.dirname(bed.inventory), inv)
    (inv / "host_vars").mkdir()
    room = {}
    for h in ("hv2", "hv3"):
        f = host_facts(bed, h)
        free = f["memory_mb"] - f["allocated_memory_mb"] - f["claimed_memory_mb"]
        (inv / "host_vars" / ("%s.yml" % h)).write_text("hypervisor_reserved_host_memory_mb: %d\n" % (free - 700))
        room[h] = f["allocated_memory_mb"] + 700
    inventory = str(inv / "inventory.yml")
    small = [guest("it-b%d" % i, vcpus=1, memory_mb=128, disk_gb=1) for i in range(4)]
    moved = [guest("it-b4", vcpus=1, memory_mb=128, disk_gb=1),
             guest("it-b5", start=False, vcpus=1, memory_mb=128, disk_gb=1)]
    failing = small[2]
    requests = [{"instance": v, "flavor": "m1.small"} for v in small] + \
               [{"instance": v, "operation": "migrate"} for v in moved]

    check = playbook_with(bed, inventory, "resize.yml", "--check", resize_requests=requests)
    assert check.returncode == 0, check.stdout[-3000:]
    assert "check mode: nothing is moved" in check.stdout
    assert all(where(bed, v) == {"hv1": "running" if v != moved[1] else "shut off"} for v in small + moved)

    proc = playbook_with(bed, inventory, "resize.yml", resize_requests=requests, resize_parallel=3,
                         resize_parallel_per_host=2, resize_batch_test_fail={failing: "copy"})
    out = proc.stdout
    plan = plan_of(out)
    assert sorted(plan) == sorted(small + moved), out[-4000:]
    # The plan never overbooks a host: what it sends to each fits that host's room.
    sizes = dict([(v, 256) for v in small] + [(v, 128) for v in moved])
    for h in ("hv2", "hv3"):
        assert sum(sizes[v] for v, (_src, d) in plan.items() if d == h) <= 700, plan
    # At most 3 at once, 2 per destination: two waves of three.
    waves = re.search(r'"waves: ([^"]*)"', out).group(1).split(" | ")
    assert len(waves) == 2 and all(len(w.split(", ")) == 3 for w in waves), waves

    # Only the injected failure failed, and only that VM: no destination refused a VM (no second wave).
    assert proc.returncode != 0
    assert "1 VM(s) of the batch were not done: %s " % failing in out
    assert "cannot take" not in out and "RAM: needs" not in out
    for v in small + moved:
        dest = plan[v][1]
        if v == failing:
            # Rolled back alone: back on hv1 at its size, its disk as it was, nothing of it on the destination.
            assert where(bed, v) == {"hv1": "running"}
            assert dominfo(bed, "hv1", v)["vcpus"] == 1
            assert image(bed, "hv1", IMG % v)["virtual-size"] == GIB  # not grown: its original disk
            assert v not in domains(bed, dest)
            assert sh(bed, dest, "ls /var/lib/libvirt/images/ | grep '^%s\\.' || true" % v).strip() == ""
            continue
        state = "shut off" if v == moved[1] else "running"
        assert where(bed, v) == {"hv1": "shut off", dest: state}, v
        info = dominfo(bed, dest, v)
        assert (info["vcpus"], info["memory_kib"]) == ((2, 256 * MIB) if v in small else (1, 128 * MIB)), v
        assert record(bed, dest, v)["status"] == "finished"
    # Each destination holds the claims of the VMs that went there, and none of the failed one.
    for h in ("hv2", "hv3"):
        assert len(migrations_dir(bed, h)) == len([v for v, (_src, d) in plan.items() if d == h and v != failing])
        f = host_facts(bed, h, inventory)
        assert f["allocated_memory_mb"] + f["claimed_memory_mb"] <= room[h]
    # The closing table: a row per VM, with the result.
    table = re.search(r'"VM +from +to +before +after +downtime +result",(.*?)\]', out, re.S).group(1)
    rows = {json.loads(line.strip().rstrip(","))[:5].strip(): json.loads(line.strip().rstrip(","))
            for line in table.strip().splitlines()}
    assert len(rows) == 6 and all(r.endswith("done, waiting for confirm") for n, r in rows.items() if n != failing)
    assert "failed: Resize of %s failed at" % failing in rows[failing]


def test_a_drain_empties_the_host_keeping_power_states_and_the_way_back_returns_them(bed, guest):
    running = [guest("it-dr%d" % i, vcpus=1, memory_mb=128, disk_gb=1) for i in range(2)]
    off = [guest("it-dr%d" % i, start=False, vcpus=1, memory_mb=128, disk_gb=1) for i in range(2, 4)]
    sums = {v: sha256(bed, "hv1", IMG % v) for v in off}
    before = set(domains(bed, "hv1"))
    assert set(running + off) <= before

    proc = playbook(bed, "drain.yml", host="hv1", confirm="true")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "hv1 is in maintenance. Nothing is left on it." in proc.stdout
    # Every VM left hv1, at its size and in its power state; the originals are gone (confirmed).
    assert domains(bed, "hv1") == set()
    assert sh(bed, "hv1", "ls /var/lib/libvirt/images/ | grep '^it-dr' || true").strip() == ""
    went = {}
    for v in running + off:
        got = where(bed, v)
        assert len(got) == 1 and "hv1" not in got, got
        went[v] = next(iter(got))
        assert got[went[v]] == ("running" if v in running else "shut off")
        info = dominfo(bed, went[v], v)
        assert (info["vcpus"], info["memory_kib"]) == (1, 128 * MIB)
        assert record(bed, went[v], v)["status"] == "confirmed"
    for v in off:
        assert sha256(bed, went[v], IMG % v) == sums[v]
    # hv1 is in maintenance for every playbook: a single resize does not pick it.
    marker = host_facts(bed, "hv1")["maintenance"]
    assert marker["drain_id"] and marker["returning"] is False
    single = playbook(bed, "migrate.yml", "--check", instance=running[0], target_host="hv1")
    assert single.returncode != 0 and "target host hv1 cannot take VM %s: in maintenance since" % running[0] \
        in single.stdout.replace("\n", " ")

    # Rule C3 on the bed: hv3 claims hv1's drain for itself (a planted marker with the same id);
    # its way back finds no VM that its holders recorded as coming from hv3, and moves nothing.
    bed.ssh("hv3", "printf '%s' > /var/lib/libvirt/hvresize/maintenance.json" %
            json.dumps({"since": "x", "reason": "forged", "drain_id": marker["drain_id"]}))
    forged = playbook(bed, "drain.yml", host="hv3", undo="true")
    assert forged.returncode != 0 and "no VM to bring back to hv3" in forged.stdout
    for v in running + off:
        assert where(bed, v) == {went[v]: ("running" if v in running else "shut off")}
        if went[v] != "hv3":
            assert "%s on %s: its record does not say it came from hv3" % (v, went[v]) in forged.stdout
    bed.ssh("hv3", "rm -f /var/lib/libvirt/hvresize/maintenance.json")

    back = playbook(bed, "drain.yml", host="hv1", undo="true", confirm="true")
    assert back.returncode == 0, back.stdout[-4000:]
    for v in running + off:
        assert where(bed, v) == {"hv1": "running" if v in running else "shut off"}
    for v in off:
        assert sha256(bed, "hv1", IMG % v) == sums[v]
    assert host_facts(bed, "hv1")["maintenance"] is None
    for h in HOSTS:
        assert migrations_dir(bed, h) == set()


def test_a_batch_told_to_stop_on_failure_starts_no_later_wave(bed, guest):
    vms = [guest("it-st%d" % i, start=False, vcpus=1, memory_mb=128, disk_gb=1) for i in range(3)]
    proc = playbook(bed, "resize.yml", resize_requests=[{"instance": v, "flavor": "m1.small"} for v in vms],
                    resize_parallel=1, resize_batch_stop_on_failure="true", resize_batch_test_fail={vms[0]: "claim"})
    out = proc.stdout
    assert proc.returncode != 0
    assert "3 VM(s) of the batch were not done: %s" % ", ".join(vms) in out, out[-3000:]
    assert re.search(r'"%s .*failed: Resize of %s failed at' % (vms[0], vms[0]), out)
    for v in vms[1:]:
        assert re.search(r'"%s .*not started: the batch stopped after a failure"' % v, out)
    for v in vms:
        assert where(bed, v) == {"hv1": "shut off"} and dominfo(bed, "hv1", v)["vcpus"] == 1
    for h in HOSTS:
        assert migrations_dir(bed, h) == set()
