# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration record and its state machine. Private to hypervisor.resize. Pure: no I/O.

The record lives in the domain's <metadata> under RECORD_NS (see docs/architecture.md), and as JSON
in the destination's migration directory before the destination has a domain.
"""

from __future__ import annotations

import datetime
import json
import uuid

from .domain import RECORD_NS, RECORD_PREFIX, parse_xml
from .errors import ValidationError

try:
    from lxml import etree
except ImportError:  # pragma: no cover
    etree = None

# Nova's migration statuses, and the moves between them: (from, to, the operation that makes the
# move). docs/architecture.md ("The state machine") shows this table; a unit test holds both equal.
MOVES = (
    (None, "pre-migrating", "prep (claim on D); power-off (S's record, before it writes it)"),
    ("pre-migrating", "migrating", "power-off and copy (S); finish (D)"),
    ("migrating", "post-migrating", "power-off and copy, copy verified (S); finish (D)"),
    ("post-migrating", "finished", "finish (D)"),
    ("finished", "confirming", "confirm, step begin (D)"),
    ("confirming", "confirmed", "confirm, step end (D)"),
    ("pre-migrating", "error", "a failed step"),
    ("migrating", "error", "a failed step; rollback (S)"),
    ("post-migrating", "error", "rollback (S)"),
    ("finished", "error", "rollback (D)"),
    ("confirming", "error", "a failed confirm"),
    ("reverting", "error", "a failed revert"),
    ("pre-migrating", "reverting", "revert"),
    ("migrating", "reverting", "revert"),
    ("post-migrating", "reverting", "revert (S)"),
    ("finished", "reverting", "revert"),
    ("error", "reverting", "revert (S)"),
    ("reverting", "reverted", "revert (S)"),
    ("error", "reverted", "revert (S)"),
)
TRANSITIONS = {}
for _from, _to, _op in MOVES:
    TRANSITIONS.setdefault(_from, ())
    TRANSITIONS[_from] += (_to,)
for _status in ("confirmed", "reverted"):
    TRANSITIONS.setdefault(_status, ())
# Where a run that stopped (killed, a host gone) leaves a record, and what ends it. A record in
# `error` with rolled_back is closed on S; the destination's claim, if it is left, is recover.yml's.
RECOVERS = {
    "pre-migrating": "recover.yml (rollback)",
    "migrating": "recover.yml (rollback)",
    "post-migrating": "recover.yml (rollback, or resume: finish on D); once D is finished: confirm.yml or revert.yml",
    "finished": "confirm.yml or revert.yml",
    "confirming": "recover.yml (resume: completes the confirm) or confirm.yml",
    "error": "recover.yml (rollback)",
    "reverting": "revert.yml or recover.yml (rollback)",
    "confirmed": "nothing: closed",
    "reverted": "nothing: closed",
}
OPEN_STATUSES = ("pre-migrating", "migrating", "post-migrating", "finished", "confirming", "reverting", "error")


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_record(instance, uuid_, source, dest, old_flavor, new_flavor, clock=now, migration_id=None,
               note=None, batch=None):
    rec = {
        "id": migration_id or str(uuid.uuid4()),
        "instance": instance,
        "uuid": uuid_,
        "status": None,
        "source": source,
        "dest": dest,
        "old_flavor": old_flavor,
        "new_flavor": new_flavor,
        "old_power_state": None,
        "disks": [],
        "created": clock(),
        "history": [],
    }
    if batch:
        # The batch (a drain) this move belongs to: the drain's way back finds its VMs by it.
        rec["batch"] = batch
    return transition(rec, "pre-migrating", note or "claim made on %s" % dest, clock=clock)


def transition(rec, status, note="", clock=now):
    """Move the record to `status`, refusing moves the state machine does not allow."""
    if status not in TRANSITIONS.get(rec.get("status"), ()) and status != rec.get("status"):
        raise ValidationError("migration %s cannot go from %s to %s"
                              % (rec.get("id"), rec.get("status") or "nothing", status))
    rec = dict(rec)
    rec["history"] = list(rec.get("history", [])) + [{"at": clock(), "status": status, "note": note}]
    rec["status"] = status
    rec["updated"] = clock()
    return rec


def is_open(rec):
    """Open records hold the VM: another resize is refused until confirm or revert.

    A record in `error` whose rollback completed (rolled_back) is closed: the VM is back as it was.
    """
    return bool(rec) and rec.get("status") in OPEN_STATUSES and not rec.get("rolled_back")


def to_xml(rec):
    """The <migration> element holding the record (JSON inside, so nothing is lost).

    Without a namespace declaration: virDomainSetMetadata puts it under RECORD_NS itself (and fails
    when the element declares the prefix again).
    """
    el = etree.Element("migration")
    el.set("id", rec["id"])
    el.set("status", rec["status"] or "")
    el.text = json.dumps(rec, sort_keys=True)
    return etree.tostring(el, encoding="unicode")


def embed(domain_xml, rec):
    """The domain XML with the record inside its <metadata>, so the domain carries it from birth."""
    root = parse_xml(domain_xml)
    meta = root.find("metadata")
    if meta is None:
        meta = etree.SubElement(root, "metadata")
    for old in [el for el in meta if isinstance(el.tag, str) and el.tag.startswith("{%s}" % RECORD_NS)]:
        meta.remove(old)  # any element of ours, whatever its name: libvirt keeps only the first (X2)
    el = etree.SubElement(meta, "{%s}migration" % RECORD_NS, nsmap={RECORD_PREFIX: RECORD_NS})
    el.set("id", rec["id"])
    el.set("status", rec["status"] or "")
    el.text = json.dumps(rec, sort_keys=True)
    return etree.tostring(root, encoding="unicode")


def without_record(domain_xml):
    """The domain XML without any record of ours in its <metadata> (what a record keeps as the
    original definition: records never nest)."""
    root = parse_xml(domain_xml)
    meta = root.find("metadata")
    if meta is None:
        return domain_xml
    for old in [el for el in meta if isinstance(el.tag, str) and el.tag.startswith("{%s}" % RECORD_NS)]:
        meta.remove(old)
    if not len(meta):
        root.remove(meta)
    return etree.tostring(root, encoding="unicode")


def from_xml(xml):
    """Parse what virDomainGetMetadata returns for RECORD_NS; None for no record."""
    if not xml:
        return None
    el = parse_xml(xml)
    if not el.text:
        return None
    return json.loads(el.text)
