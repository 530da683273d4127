"""The benchmarks of issue #4, run by benchmarks/run against the local test bed."""

import os
import sys

# The collection as Ansible sees it (make collection): .build/collections/ansible_collections/hypervisor/resize
_COLLECTIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            ".build", "collections")
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)
