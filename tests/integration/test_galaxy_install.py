"""The collection as a user gets it: built with ansible-galaxy, installed into an empty collections
path, then used ad hoc against the test bed, with nothing of this checkout on the search path."""

import json
import os
import subprocess
import tarfile

from resize_lib import REPO, VENV_BIN, env


def test_built_collection_installs_and_runs_ad_hoc(bed, tmp_path):
    out = tmp_path / "dist"
    subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(out), REPO],
                   check=True, capture_output=True, text=True, cwd=REPO, env=env())
    (tarball,) = list(out.iterdir())
    names = tarfile.open(tarball).getnames()
    assert "plugins/modules/virt_resize_prep.py" in names and "roles/resize/tasks/main.yml" in names
    leaked = [n for n in names if n.startswith((".testbed", ".venv", ".build", "tests/testbed/generated"))
              or n.endswith((".qcow2", ".raw", ".vmlinuz", ".initrd"))]
    assert leaked == []

    cpath = tmp_path / "collections"
    e = env()
    e.pop("ANSIBLE_CONFIG", None)  # not this checkout's ansible.cfg (it points at .build/collections)
    e["ANSIBLE_COLLECTIONS_PATH"] = str(cpath)
    e["ANSIBLE_CALLBACK_RESULT_FORMAT"] = "json"
    subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", "-p", str(cpath), str(tarball)],
                   check=True, capture_output=True, text=True, cwd=str(tmp_path), env=e)
    assert (cpath / "ansible_collections" / "hypervisor" / "resize" / "MANIFEST.json").exists()

    facts = subprocess.run([os.path.join(VENV_BIN, "ansible"), "hypervisors", "-i", bed.inventory,
                            "-m", "hypervisor.resize.virt_host_facts"],
                           capture_output=True, text=True, cwd=str(tmp_path), env=e, timeout=120, check=False)
    assert facts.returncode == 0, facts.stdout + facts.stderr
    assert str(cpath) in subprocess.run([os.path.join(VENV_BIN, "ansible-doc"), "hypervisor.resize.virt_resize_prep"],
                                        capture_output=True, text=True, cwd=str(tmp_path), env=e,
                                        check=True).stdout
    results = [json.JSONDecoder().raw_decode(chunk)[0] for chunk in facts.stdout.split("=> ")[1:]]
    assert sorted(r["hypervisor"]["hostname"] for r in results) == ["hv1", "hv2", "hv3"]
    assert all(r["hypervisor"]["cpus"] >= 1 and r["hypervisor"]["libvirt_version"] for r in results)
