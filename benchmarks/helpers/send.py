"""Copy one disk with the product's real sender (sender.send) into the product's receiver on
the destination, through the product's ssh options (sender.ssh_argv). Runs inside the source
host. Prints one JSON line: the receiver's reply, seconds, ssh bytes sent, and the peak RSS of this
process (the sender; ssh is a child and is not counted).

usage: send.py SRC DEST_PATH DEST_HOST KEY KNOWN_HOSTS CIPHER SSH_LOG [compress]
"""

import json
import resource
import sys
import time

from hostcommon import cpu_seconds, log_tail, ssh_sent_from_log, with_ssh_log

from ansible_collections.hypervisor.resize.plugins.module_utils._transfer import sender
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ResizeError


def main():
    src, dest_path, dest_host, key, known, cipher, log = sys.argv[1:8]
    compress = sys.argv[8:9] == ["compress"]
    argv = with_ssh_log(sender.ssh_argv(dest_host, 22, key, known, cipher=cipher or None, compress=compress), log)
    t0 = time.monotonic()
    try:
        reply = sender.send(src, argv, dest_path=dest_path)
    except ResizeError as exc:
        print(json.dumps({"ok": False, "error": "%s (ssh: %s)" % (exc.msg, log_tail(log)), "details": exc.details}))
        sys.exit(1)
    seconds = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"ok": True, "seconds": seconds, "reply": reply, "ssh_sent": ssh_sent_from_log(log),
                      "maxrss_kib": usage.ru_maxrss, "cpu": cpu_seconds()}))


if __name__ == "__main__":
    main()
