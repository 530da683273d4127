# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt connection, domain look-up, states and bounded waits. Private to hypervisor.resize.

The URI is the user's; it is used as given, never second-guessed.
"""

from __future__ import annotations

import socket
import time

try:
    import libvirt
    HAS_LIBVIRT = True
    LIBVIRT_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised by the import sanity test
    libvirt = None
    HAS_LIBVIRT = False
    LIBVIRT_IMPORT_ERROR = exc

from . import record as record_mod
from .domain import RECORD_NS, RECORD_PREFIX
from .errors import LibvirtError, WaitTimeout

STATE_NAMES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused",
    4: "shutdown", 5: "shutoff", 6: "crashed", 7: "pmsuspended",
}


def hostname():
    return socket.gethostname()


def libvirt_error(exc, msg, domain=None, hint=None):
    code = exc.get_error_code() if hasattr(exc, "get_error_code") else None
    return LibvirtError("%s: %s" % (msg, exc), domain=domain, host=hostname(), hint=hint,
                        details={"libvirt_error_code": code})


class Connection:
    """A libvirt connection usable as a context manager."""

    def __init__(self, uri):
        self.uri = uri
        self.conn = None

    def __enter__(self):
        try:
            self.conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "cannot connect to libvirt at %s" % self.uri,
                                hint="check that libvirtd runs on this host and that uri is right")
        return self

    def __exit__(self, *exc_info):
        if self.conn is not None:
            try:
                self.conn.close()
            except libvirt.libvirtError:
                pass
        return False

    def find(self, name):
        """The domain called `name`, or None."""
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise libvirt_error(exc, "cannot look up domain %s" % name, domain=name)

    def find_uuid(self, uuid_):
        try:
            return self.conn.lookupByUUIDString(uuid_)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise libvirt_error(exc, "cannot look up domain uuid %s" % uuid_)


def state_of(dom):
    return STATE_NAMES.get(dom.state()[0], "nostate")


def inactive_xml(dom):
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)


def get_record(dom):
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, RECORD_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise libvirt_error(exc, "cannot read the migration record", domain=dom.name())
    return record_mod.from_xml(xml)


def set_record(dom, rec):
    """Write the record into the persistent definition (and the live one when running)."""
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    try:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, record_mod.to_xml(rec), RECORD_PREFIX, RECORD_NS, flags)
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, "cannot write the migration record", domain=dom.name())


def wait_until(predicate, timeout, interval=1.0, what="condition", clock=time.monotonic, sleep=time.sleep,
               on_tick=None):
    """Poll `predicate` until true or `timeout` seconds pass; WaitTimeout carries the last value."""
    start = clock()
    last = None
    while True:
        last = predicate()
        if last:
            return clock() - start
        elapsed = clock() - start
        if elapsed >= timeout:
            raise WaitTimeout("timed out after %ds waiting for %s" % (timeout, what),
                              details={"waited_seconds": round(elapsed, 1)})
        if on_tick is not None:
            on_tick(elapsed)
        sleep(interval)


def power_off(dom, timeout=60, retry_interval=10, poll_interval=0.2, clock=time.monotonic, sleep=time.sleep):
    """Nova's policy: ACPI shutdown, poll (every 0.2 s: Nova polls every second, which adds up to a
    second of downtime), resend every retry_interval, hard stop at timeout.

    Returns {"method": "none"|"graceful"|"hard", "seconds": float}.
    """
    if not dom.isActive():
        return {"method": "none", "seconds": 0.0}
    start = clock()
    last_sent = [None]

    def send(elapsed):
        if last_sent[0] is None or elapsed - last_sent[0] >= retry_interval - 1e-6:
            try:
                dom.shutdown()
            except libvirt.libvirtError as exc:
                if dom.isActive():
                    raise libvirt_error(exc, "ACPI shutdown request failed", domain=dom.name())
            last_sent[0] = elapsed

    send(0.0)
    try:
        wait_until(lambda: not dom.isActive(), timeout, poll_interval, "the guest to shut down",
                   clock=clock, sleep=sleep, on_tick=send)
        return {"method": "graceful", "seconds": round(clock() - start, 2)}
    except WaitTimeout:
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():
                raise libvirt_error(exc, "hard stop failed after %ds of graceful shutdown" % timeout,
                                    domain=dom.name())
        return {"method": "hard", "seconds": round(clock() - start, 2)}
