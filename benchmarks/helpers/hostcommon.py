"""Shared by the helpers that run inside a test bed host (with the host's /usr/bin/python3)."""

import os
import re
import resource
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))

TRANSFERRED = re.compile(r"Transferred: sent (\d+), received (\d+) bytes")


def ssh_sent(text):
    """Bytes the ssh client sent on its connection, from its LogLevel=VERBOSE log (last session)."""
    found = TRANSFERRED.findall(text or "")
    return int(found[-1][0]) if found else None


def ssh_sent_from_log(path):
    try:
        with open(path) as fh:
            return ssh_sent(fh.read())
    except OSError:
        return None


def log_tail(path, lines=6):
    """The last lines of an ssh log (why a connection failed)."""
    try:
        with open(path) as fh:
            return " | ".join(ln.strip() for ln in fh.read().splitlines()[-lines:])
    except OSError:
        return ""


def with_ssh_log(argv, log):
    """An ssh argv (argv[0] == 'ssh') that also logs its byte counts to `log`."""
    return [argv[0], "-E", log, "-o", "LogLevel=VERBOSE"] + list(argv[1:])


def data_extents(fd, size):
    """(offset, length) of the allocated data of an open file (SEEK_DATA / SEEK_HOLE)."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end - start
        offset = end


def cpu_seconds():
    """CPU (user + sys) of this process and its waited-for children (ssh, rsync, scp)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
