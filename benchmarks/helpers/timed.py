"""Run one command (rsync, scp) and time it from spawn to exit. Runs inside the source host.
Prints one JSON line with the seconds, the exit code and the bytes ssh sent (from SSH_LOG if the
command logs there, else from the command's stderr).

usage: timed.py SSH_LOG -- CMD...
"""

import json
import os
import subprocess
import sys
import time

from hostcommon import cpu_seconds, log_tail, ssh_sent, ssh_sent_from_log


def main():
    log = sys.argv[1]
    argv = sys.argv[sys.argv.index("--") + 1:]
    t0 = time.monotonic()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    seconds = time.monotonic() - t0
    err = proc.stderr.decode("utf-8", "replace")
    sent = ssh_sent_from_log(log) if os.path.exists(log) else None
    print(json.dumps({"ok": proc.returncode == 0, "rc": proc.returncode, "seconds": seconds, "cpu": cpu_seconds(),
                      "ssh_sent": sent if sent is not None else ssh_sent(err),
                      "stderr": "\n".join(ln for ln in err.splitlines()
                                          if not ln.startswith(("Authenticated", "Transferred", "Bytes per",
                                                                "Connection", "Connecting", "Warning: Perm",
                                                                "Authentication succeeded")))[-1500:],
                      "error": None if proc.returncode == 0 else "exited %d: %s %s"
                      % (proc.returncode, err.strip()[-500:], log_tail(log))}))
    sys.exit(0 if proc.returncode == 0 else 1)


if __name__ == "__main__":
    main()
