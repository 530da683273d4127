"""The floor: exactly the allocated bytes of a file (its SEEK_DATA extents, sent with sendfile, no
framing, no checks) piped into an ssh command. Runs inside the source host. Prints one JSON line.

usage: floor.py SRC SSH_LOG -- SSH_ARGV...
"""

import json
import os
import subprocess
import sys
import time

from hostcommon import cpu_seconds, data_extents, log_tail, ssh_sent_from_log, with_ssh_log


def main():
    src, log = sys.argv[1], sys.argv[2]
    argv = with_ssh_log(sys.argv[sys.argv.index("--") + 1:], log)
    fd = os.open(src, os.O_RDONLY)
    size = os.fstat(fd).st_size
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
    out = proc.stdin.fileno()
    sent = 0
    try:
        for start, length in data_extents(fd, size):
            pos, end = start, start + length
            while pos < end:
                n = os.sendfile(out, fd, pos, min(end - pos, 1 << 30))
                if n <= 0:
                    break
                pos += n
                sent += n
    except BrokenPipeError:
        pass  # ssh ended early: its exit code and log say why
    try:
        proc.stdin.close()
    except BrokenPipeError:
        pass
    rc = proc.wait()
    seconds = time.monotonic() - t0
    os.close(fd)
    print(json.dumps({"ok": rc == 0, "rc": rc, "seconds": seconds, "bytes": sent,
                      "ssh_sent": ssh_sent_from_log(log), "cpu": cpu_seconds(),
                      "error": None if rc == 0 else "ssh exited %d: %s" % (rc, log_tail(log))}))
    sys.exit(0 if rc == 0 else 1)


if __name__ == "__main__":
    main()
