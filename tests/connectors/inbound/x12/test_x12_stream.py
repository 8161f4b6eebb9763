"""Hypothesis: a file read as a stream (``X12File``: two passes, chunk by chunk) is answered
exactly as the same bytes in memory (``process_x12``), wherever the chunks are cut: the same
raw records, the same events, the same sets parked for the same reasons; and a set published
claim by claim says what the set read whole (``read_x12``, ``parse_835``) says."""

from __future__ import annotations

import json
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcmflow.connectors.inbound.totals import SourceTotals
from rcmflow.connectors.inbound.x12 import X12Limits, process_x12
from rcmflow.connectors.inbound.x12 import reader as x12_reader
from rcmflow.connectors.inbound.x12.ingest import X12File
from rcmflow.connectors.inbound.x12.remit import parse_835, remit_events, remit_totals
from rcmflow.streams.topics import DLQ, RAW_X12
from tests.connectors.inbound.x12.test_x12_properties import _samples

FAST = X12Limits(guide_validation=False)


def _comparable(records: list[tuple[str, bytes | None, bytes]]) -> list[Any]:
    """Records as compared: a DLQ record without its time of receipt and id."""
    out: list[Any] = []
    for topic, key, value in records:
        if topic == DLQ:
            doc = json.loads(value)
            out.append((topic, key, doc["reason_code"], doc["payload"],
                        sorted(p["reason_code"] for p in doc["context"]["problems"])))
        else:
            out.append((topic, key, value))
    return out


def _streamed(raw: bytes) -> tuple[X12File, list[tuple[str, bytes | None, bytes]]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.835"
        path.write_bytes(raw)
        x12 = X12File(path, FAST)
        records = [(r[0], r[1], r[2]) for r in x12.records()]
    return x12, records


@settings(max_examples=200, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # CHUNK_BYTES set each time
@given(data=st.data())
def test_a_streamed_file_is_answered_as_the_whole_file(data: st.DataObject,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    raw = bytearray(data.draw(st.sampled_from(_samples())))
    # a layout with whitespace before every terminator (re-joined as the file is read)
    raw = bytearray(bytes(raw).replace(b"~", data.draw(st.sampled_from(
        [b"~", b"\n~", b" \r\n~", b"~\r\n"]))))
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=max(len(raw) - 1, 0)))
        raw[at:at] = data.draw(st.sampled_from([b"~", b"*", b"\n", b" \n", b"-1.5", b"\xe9"]))
    monkeypatch.setattr(x12_reader, "CHUNK_BYTES", data.draw(st.integers(1, 300)))
    whole = process_x12(bytes(raw), origin="file:f", limits=FAST)
    x12, records = _streamed(bytes(raw))
    expected = list(whole.records(FAST))
    assert [s.parked for s in x12.outcome.sets] == [s.parked for s in whole.sets]
    assert [p.reason_code for p in x12.outcome.problems] == [p.reason_code for p in whole.problems]
    assert ([t for t, _, _ in records] == [t for t, _, _ in expected])
    assert _comparable(_same_origin(records)) == _comparable(_same_origin(expected))


def _same_origin(records: list[tuple[str, bytes | None, bytes]]
                 ) -> list[tuple[str, bytes | None, bytes]]:
    """Raw records name their origin (a temporary path here): compared without it."""
    out = []
    for topic, key, value in records:
        if topic != DLQ and value.startswith(b'{"origin"'):
            doc = json.loads(value)
            doc.pop("origin")
            value = json.dumps(doc, sort_keys=True).encode()
        out.append((topic, key, value))
    return out


amounts = st.lists(st.tuples(st.sampled_from(["A1", "A2", "provider:9"]),
                             st.sampled_from(["payer_paid", "adjusted", "patient_responsibility"]),
                             st.integers(-10**9, 10**9), st.integers(0, 30)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(found=amounts, bytes_max=st.integers(1, 2000))
def test_source_totals_split_into_parts_say_the_same_and_stay_bounded(
        found: list[tuple[str, str, int, int]], bytes_max: int) -> None:
    """Each event's amounts whole in one part; together the parts are the totals; a part is
    over ``bytes_max`` only when one event alone is."""
    totals = SourceTotals()
    for account, measure, cents, event in found:
        event_id = None if event == 0 else f"E{event}"
        totals.add(account, date(2026, 3, 2), measure, cents, event_id)
        if event_id is not None and (account, event_id) not in totals.event_ids:
            totals.event_ids.append((account, event_id))
    parts = totals.split(bytes_max)
    assert [p for part in parts for p in part.event_ids] == totals.event_ids
    joined = SourceTotals([a for part in parts for a in part.amounts])
    assert joined.by_event() == totals.by_event()
    for n, part in enumerate(parts):
        size = len(orjson.dumps(part.to_json()))
        events = {(a.account, a.event_id) for a in part.amounts if a.event_id} | set(
            part.event_ids)
        assert size <= bytes_max + 200 or len(events) <= 1 or n == 0
        elsewhere = {(a.account, a.event_id) for p in parts if p is not part for a in p.amounts}
        assert not events & elsewhere


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_set_published_claim_by_claim_says_what_the_set_read_whole_says(
        data: st.DataObject) -> None:
    """The raw parts of a set (cut as it is read) join into its text, and an applied 835's
    events and source totals, made a claim at a time, are those of the remit read whole."""
    raw = bytearray(data.draw(st.sampled_from(_samples())))
    for _ in range(data.draw(st.integers(min_value=0, max_value=2))):
        at = data.draw(st.integers(min_value=0, max_value=max(len(raw) - 1, 0)))
        raw[at:at] = data.draw(st.sampled_from([b"~", b"*", b"-1.5", b"CLP*X*1*1*1~",
                                                b"PLB*1*20260101*WO:1*3~"]))
    outcome = process_x12(bytes(raw), origin="file:f", limits=FAST)
    whole = x12_reader.read_x12(bytes(raw), segments_max=FAST.segments_max)
    if outcome.rejected:
        return
    texts: list[str] = []
    stated: list[SourceTotals] = []  # what reconcile reads: the parts' totals together
    for topic, _, value in outcome.records(FAST):
        if topic == RAW_X12:
            doc = json.loads(value)
            if doc["part"] == 0:
                texts.append("")
                stated.append(SourceTotals())
            texts[-1] += doc["segments"]
            part = SourceTotals.from_json(doc.get("source_totals", {"amounts": [], "events": []}))
            stated[-1].amounts += part.amounts
            stated[-1].event_ids += part.event_ids
    assert len(texts) == len(whole.sets) == len(outcome.sets)
    for text, in_parts, tset, s in zip(texts, stated, whole.sets, outcome.sets, strict=True):
        assert text == tset.raw(whole.terminator)
        if tset.st01 == "835" and not s.parked:
            remit = parse_835(tset)
            assert [e.model_dump_json() for e in s.events] == [
                e.model_dump_json() for e in remit_events(remit, entity=FAST.entity)]
            totals = SourceTotals()
            remit_totals(remit, totals)
            assert s.totals.by_event() == totals.by_event()
            # the JSON leaves out sums of zero
            assert {k: c for k, c in totals.by_event().items() if c} == in_parts.by_event()
            assert s.totals.event_ids == in_parts.event_ids == [
                (e.account, e.event_id) for e in s.events]
