# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One-off transfer keys in root's authorized_keys on the destination, and host keys. Private.

A key line (docs/security.md T4):
  restrict,from="<source addresses>",expiry-time="<UTC>Z",command="python3 <mdir>/receive.py <mdir>"
      KEY hvresize-migration:<id>
restrict: no pty, no forwarding, no agent, no X11, no user rc; command: the key runs nothing but this
migration's receiver; from: only the source's migration address may use it; expiry-time: sshd
refuses it by itself after the copy timeout and a margin, so a controller killed mid-copy leaves a
dead line, which the next edit of the file (any later migration to this host) removes.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import os
import re
import shlex
import socket
import time

from .. import _policy
from ..errors import ValidationError

KEY_TAG = "hvresize-migration:"
EXPIRY_RE = re.compile(r'expiry-time="(\d{14})Z"')


def read_host_key(path):
    """This host's own ssh host public key (T2: validated like any other key)."""
    try:
        with open(path) as fh:
            return _policy.check_public_key(fh.read(), "ssh host key")
    except (OSError, ValidationError) as exc:
        raise ValidationError("cannot read this host's ssh host public key at %s: %s" % (path, exc),
                              hint="set ssh_host_key to the .pub file of the key sshd uses")


def source_addresses(address, resolve=socket.getaddrinfo):
    """T4: the IP addresses the source connects from, for from=; a host name is resolved here, on
    the destination (its own resolver decides whom it lets in)."""
    address = _policy.check_address(address, "source_address")
    try:
        return [str(_policy.ipaddress.ip_address(address))]
    except ValueError:
        pass
    try:
        found = sorted(set(info[4][0] for info in resolve(address, None, 0, socket.SOCK_STREAM)))
    except OSError as exc:
        raise ValidationError("cannot resolve the source's migration address %s on this host: %s" % (address, exc),
                              hint="set hypervisor_migration_address of the source to an address this host "
                                   "can resolve, or to its IP address")
    return [_policy.check_address(a, "resolved source address") for a in found]


def expiry_stamp(seconds, now=time.time):
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(now() + seconds))


def authorized_line(public_key, migration_dir, migration_id, from_addresses, expires_in,
                    python="/usr/bin/python3", now=time.time):
    command = "%s %s %s" % (python, shlex.quote(os.path.join(migration_dir, "receive.py")),
                            shlex.quote(migration_dir))
    if '"' in command or "\n" in command:
        raise ValidationError("the migration directory %s cannot be used in a forced command" % migration_dir)
    sources = ",".join(_policy.check_address(a, "source address") for a in from_addresses)
    return 'restrict,from="%s",expiry-time="%sZ",command="%s" %s %s%s' % (
        sources, expiry_stamp(expires_in, now), command, _policy.check_public_key(public_key), KEY_TAG,
        migration_id)


def expired(line, now=time.time):
    m = EXPIRY_RE.search(line)
    return bool(m) and calendar.timegm(time.strptime(m.group(1), "%Y%m%d%H%M%S")) < now()


@contextlib.contextmanager
def keys_lock(path):
    """The lock every edit of this authorized_keys file takes (flock on a file beside it)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".hvresize-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def edit_authorized_keys(path, add=None, remove_id=None, now=time.time):
    """Add a line and/or remove the lines of one migration, and drop our expired lines; returns
    True when the file changed. Under a lock: migrations to one host add and revoke concurrently."""
    with keys_lock(path):
        lines = []
        if os.path.exists(path):
            with open(path) as fh:
                lines = fh.read().splitlines()
        new = [ln for ln in lines if not (KEY_TAG in ln and (
            (remove_id and ln.endswith(" " + KEY_TAG + remove_id)) or expired(ln, now)))]
        if add and add not in new:
            new.append(add)
        if new == lines:
            return False
        tmp = path + ".hvresize-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(new) + ("\n" if new else ""))
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
        return True


def has_key(path, migration_id):
    if not os.path.exists(path):
        return False
    with open(path) as fh:
        return any(ln.rstrip().endswith(" " + KEY_TAG + migration_id) for ln in fh)
