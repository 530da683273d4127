"""The product's own host facts (facts.gather, what virt_host_facts returns) plus the open claims,
read inside a test bed host without Ansible. Prints one JSON line.
"""

import json

# hostcommon puts the collection on sys.path
import hostcommon  # noqa: F401  pylint: disable=unused-import

from ansible_collections.hypervisor.resize.plugins.module_utils import facts, state

STATE_DIR = "/var/lib/libvirt/hvresize"


def main():
    out = facts.gather({"uri": "qemu:///system", "state_dir": STATE_DIR, "instances_path": "/var/lib/libvirt/images",
                        "instance": None})
    out["claims"] = [{"id": r.get("id"), "instance": r.get("instance"), "status": r.get("status"),
                      "claim": r.get("claim")} for r in state.open_claims(STATE_DIR)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
