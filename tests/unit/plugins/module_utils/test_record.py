import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import record
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ValidationError


def clock():
    return "2026-11-25T10:00:00Z"


def new():
    return record.new_record("web01", "u-1", "hv1", "hv2", {"vcpus": 1}, {"vcpus": 2}, clock=clock)


def test_new_record_opens_pre_migrating_with_history():
    rec = new()
    assert rec["status"] == "pre-migrating" and record.is_open(rec)
    assert rec["history"] == [{"at": "2026-11-25T10:00:00Z", "status": "pre-migrating", "note": "claim made on hv2"}]


def test_happy_path_and_confirm_closes():
    rec = new()
    for status in ("migrating", "post-migrating", "finished", "confirming", "confirmed"):
        rec = record.transition(rec, status, clock=clock)
    assert not record.is_open(rec)
    assert [h["status"] for h in rec["history"]] == ["pre-migrating", "migrating", "post-migrating", "finished",
                                                     "confirming", "confirmed"]


@pytest.mark.parametrize("path", [["finished"], ["migrating", "confirmed"], ["migrating", "post-migrating", "confirmed"]])
def test_illegal_moves_are_refused(path):
    rec = new()
    with pytest.raises(ValidationError, match="cannot go from"):
        for status in path:
            rec = record.transition(rec, status, clock=clock)


def test_transition_does_not_mutate_the_input():
    rec = new()
    record.transition(rec, "migrating", clock=clock)
    assert rec["status"] == "pre-migrating" and len(rec["history"]) == 1


def test_embed_puts_the_record_in_the_domain_metadata_once():
    rec = new()
    xml = "<domain type='qemu'><name>web01</name><metadata><a:x xmlns:a='urn:a'/></metadata><devices/></domain>"
    once = record.embed(xml, rec)
    twice = record.embed(once, record.transition(rec, "migrating", clock=clock))
    assert twice.count("hypervisor-resize.dev/xmlns/migration/1") == 1 and "urn:a" in twice
    assert 'status="migrating"' in twice
    from lxml import etree
    el = etree.fromstring(twice.encode()).find("metadata/{https://hypervisor-resize.dev/xmlns/migration/1}migration")
    assert record.from_xml(etree.tostring(el))["status"] == "migrating"
    assert "<metadata>" in record.embed("<domain><name>b</name></domain>", rec)


def test_xml_round_trip():
    rec = record.transition(new(), "migrating", "powering off", clock=clock)
    xml = record.to_xml(rec)
    assert xml.startswith("<migration ") and "xmlns" not in xml and 'status="migrating"' in xml
    assert record.from_xml(xml) == rec
    # What libvirt hands back carries the namespace; it reads the same.
    stored = xml.replace("<migration ", '<hvr:migration xmlns:hvr="https://hypervisor-resize.dev/xmlns/migration/1" ', 1)
    stored = stored.replace("</migration>", "</hvr:migration>")
    assert record.from_xml(stored) == rec
    assert record.from_xml("") is None


def test_embed_leaves_no_other_element_of_our_namespace():
    """libvirt keeps the first element of a namespace: a planted one must never shadow our record (X2)."""
    fake = ('<domain><name>vm</name><metadata><hvr:record xmlns:hvr="%s">{"id": "fake", "same_host": true}'
            '</hvr:record></metadata></domain>' % record.RECORD_NS)
    out = record.embed(fake, new())
    assert "fake" not in out and "hvr:record" not in out
    assert out.count("<hvr:migration ") == 1


def _doc_tables():
    """The two tables of docs/architecture.md's "One operation per VM, and the state machine"."""
    import os
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "docs", "architecture.md")
    with open(doc) as fh:
        text = fh.read().split("## One operation per VM, and the state machine", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]
    moves = [tuple(r) for r in rows if len(r) == 3 and r[0] != "from"]
    recovers = dict(tuple(r) for r in rows if len(r) == 2 and r[0] != "status")
    return moves, recovers


def test_the_state_machine_in_the_docs_is_the_one_in_the_code():
    moves, recovers = _doc_tables()
    assert moves == [(f or "(none)", t, op) for f, t, op in record.MOVES]
    assert recovers == record.RECOVERS


def test_every_status_is_reachable_and_says_what_recovers_it():
    reachable, todo = set(), [None]
    while todo:
        status = todo.pop()
        for nxt in record.TRANSITIONS.get(status, ()):
            if nxt not in reachable:
                reachable.add(nxt)
                todo.append(nxt)
    statuses = set(s for s in record.TRANSITIONS if s)
    assert reachable == statuses, "every status can be reached from a new record"
    assert set(record.RECOVERS) == statuses, "and every one says what ends it"
    assert all(record.TRANSITIONS[s] == () for s in ("confirmed", "reverted")), "closed ones stay closed"
    for status in statuses - {"confirmed", "reverted"}:
        assert record.is_open({"status": status}), status
        assert "nothing" not in record.RECOVERS[status]


def test_the_original_definition_a_record_keeps_has_no_record_in_it():
    from ansible_collections.hypervisor.resize.plugins.module_utils.record import embed, from_xml, without_record
    xml = "<domain type='qemu'><name>web01</name><metadata><other xmlns='urn:x'/></metadata></domain>"
    rec = {"id": "m-1", "status": "finished", "original_xml": xml}
    once = embed(xml, rec)
    assert "hypervisor-resize.dev" in once
    stripped = without_record(once)
    assert "hypervisor-resize.dev" not in stripped and "urn:x" in stripped
    assert without_record(embed(embed(xml, rec), dict(rec, original_xml=once))).count("migration") == 0
    assert from_xml(None) is None
