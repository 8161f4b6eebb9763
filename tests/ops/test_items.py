"""The work queue's rules without a broker: filters, states and their history, what a replay
re-sends and what it refuses, durations."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rcmflow.ops.durations import moment
from rcmflow.ops.exceptions import BadMoment, ReplayRefused
from rcmflow.ops.items import (
    HISTORY_MAX,
    Filters,
    ItemState,
    Replay,
    Step,
    add_step,
    is_done,
    item_view,
    replay_plan,
)
from rcmflow.streams.dedup import RETRY_HEADER, DedupEntry, Verdict, judge
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import DLQ, EVENTS, POSTINGS, POSTINGS_DLQ

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def record(*, stage: str = "rules", reason: str = "small_balance_over_threshold",
           origin_topic: str = EVENTS, key: str = "A1", payload: bytes = b'{"x": 1}',
           context: dict[str, Any] | None = None, bound: int | None = None,
           severity: str = "error") -> dict[str, Any]:
    doc = dlq_record(
        Rejection(stage=stage, reason_code=reason, detail="refused",  # type: ignore[arg-type]
                  severity=severity),  # type: ignore[arg-type]
        origin=Origin(topic=origin_topic, partition=1, offset=7, key=key), payload=payload,
        context={"account": key, "entity": "02", "source": "hl7", "event_id": "E1"}
        | (context or {}), payload_bytes_max=bound)
    return doc.model_dump(mode="json")


def step(state: str, **fields: Any) -> Step:
    return Step(state=state, at=NOW, by="ana", **fields)  # type: ignore[arg-type]


def replayed(outcome: str, new_dlq_id: str | None = None) -> Step:
    return step("replayed", replay=Replay(topic=EVENTS, partition=1, offset=9, group="rcmflow",
                                          watch={}, outcome=outcome,  # type: ignore[arg-type]
                                          new_dlq_id=new_dlq_id))


def test_filters_keep_what_each_option_names() -> None:
    doc = record()
    queued = NOW - timedelta(hours=3)
    keeps = {
        "stage": Filters(stage="rules"), "reason": Filters(reason="small_balance_over_threshold"),
        "source": Filters(source="HL7"), "entity": Filters(entity="02"),
        "account": Filters(account="A1"), "since": Filters(since=NOW - timedelta(hours=4)),
        "older-than": Filters(before=NOW - timedelta(hours=2)),
    }
    drops = {
        "stage": Filters(stage="decode"), "reason": Filters(reason="conflict"),
        "source": Filters(source="x12"), "entity": Filters(entity="01"),
        "account": Filters(account="A2"), "since": Filters(since=NOW - timedelta(hours=2)),
        "older-than": Filters(before=NOW - timedelta(hours=4)),
    }
    assert [n for n, f in keeps.items() if not f.matches(doc, queued, None)] == []
    assert [n for n, f in drops.items() if f.matches(doc, queued, None)] == []
    erp = record(origin_topic=POSTINGS, context={"adapter": "csv", "source": None})
    assert Filters(source="erp").matches(erp, queued, None)


def test_the_default_listing_shows_what_is_still_to_work() -> None:
    doc, queued = record(), NOW
    dlq_id = doc["dlq_id"]

    def state(*steps: Step) -> ItemState:
        current = None
        for s in steps:
            current = add_step(current, dlq_id, DLQ, s)
        assert current is not None
        return current

    todo = Filters()
    assert todo.matches(doc, queued, None), "no state record: open"
    assert todo.matches(doc, queued, state(step("assigned", assignee="bo")))
    assert todo.matches(doc, queued, state(replayed("pending")))
    assert todo.matches(doc, queued, state(replayed("failing", new_dlq_id=dlq_id))), \
        "refused again for the same reason: still this item's work"
    assert not todo.matches(doc, queued, state(replayed("failing", new_dlq_id="dlq_other"))), \
        "refused for another reason: that is a new item"
    assert not todo.matches(doc, queued, state(replayed("applied")))
    assert not todo.matches(doc, queued, state(replayed("replay")))
    assert not todo.matches(doc, queued, state(step("resolved", note="fixed at source")))
    assert Filters(state="resolved").matches(doc, queued, state(step("resolved")))
    assert Filters(state="open").matches(doc, queued, None)
    assert Filters(state="all").matches(doc, queued, state(step("resolved")))


def test_history_keeps_who_when_why_and_stays_bounded() -> None:
    current = None
    for n in range(HISTORY_MAX + 5):
        current = add_step(current, "dlq_1", DLQ, step("assigned", note=f"n{n}", assignee="bo"))
    assert current is not None and len(current.history) == HISTORY_MAX
    assert current.dropped == 5 and current.history[0].note == "n5"
    closed = add_step(current, "dlq_1", DLQ, step("resolved", note="posted by hand"))
    assert (closed.state, closed.history[-1].by, closed.history[-1].note) == (
        "resolved", "ana", "posted by hand")
    with pytest.raises(ReplayRefused, match="resolved by ana"):
        add_step(closed, "dlq_1", DLQ, step("assigned"))
    assert not is_done(add_step(closed, "dlq_1", DLQ, replayed("pending")))
    view = item_view(record(), DLQ, int((NOW - timedelta(days=2)).timestamp() * 1000), closed,
                     NOW, history=True)
    assert view["queue"]["age"] == "2d" and view["queue"]["state"] == "resolved"
    assert len(view["queue"]["history"]) == HISTORY_MAX
    assert view["queue"]["history_dropped"] == 6 and view["queue"]["note"] == "posted by hand"


def test_a_replay_resends_the_original_bytes_under_the_original_key() -> None:
    raw = b'{"kind": "write_off", "amount_cents": 600}'
    plan = replay_plan(record(payload=raw), DLQ, app_id="rcmflow")
    assert (plan.topic, plan.key, plan.value, plan.group) == (EVENTS, b"A1", raw, "rcmflow")
    assert plan.headers[0][0] == RETRY_HEADER
    binary = bytes(range(256))
    doc = record(payload=binary)
    assert doc["payload_encoding"] == "base64" and doc["payload"] == base64.b64encode(
        binary).decode()
    assert replay_plan(doc, DLQ, app_id="rcmflow").value == binary
    erp = record(origin_topic=POSTINGS, payload=b'{"posting_id": "p1"}',
                 context={"adapter": "csv"})
    plan = replay_plan(erp, POSTINGS_DLQ, app_id="rcmflow")
    assert (plan.topic, plan.key, plan.group, plan.headers) == (
        POSTINGS, b"A1", "rcmflow-erp-csv", ())


@pytest.mark.parametrize(("doc", "why"), [
    (record(payload=b"x" * 5000, bound=1024), "cut to 1024 characters of the 5000 bytes"),
    (record(origin_topic="hl7:main", stage="decode", reason="bad_segment"),
     "refused by the connector that read it"),
    (record(reason="unmapped_dimension", severity="warning"), "names no GL role"),
    (record(reason="ignored_segment", severity="warning"), "a warning"),
])
def test_what_cannot_be_replayed_is_refused_with_the_reason(doc: dict[str, Any],
                                                            why: str) -> None:
    with pytest.raises(ReplayRefused, match=why):
        replay_plan(doc, DLQ, app_id="rcmflow")


def test_only_an_operators_retry_judges_a_refused_event_again() -> None:
    refused = DedupEntry(digest="d", partition=0, offset=3, outcome="rejected", version=1,
                         horizon_day=1)
    applied = refused.model_copy(update={"outcome": "applied"})
    assert judge(refused, "d", 0, 9) is Verdict.REPLAY
    assert judge(refused, "d", 0, 9, retry=True) is Verdict.NEW
    assert judge(refused, "d", 0, 3, retry=True) is Verdict.REDELIVERY
    assert judge(applied, "d", 0, 9, retry=True) is Verdict.REPLAY, "applied: posts once"
    assert judge(refused, "other", 0, 9, retry=True) is Verdict.CONFLICT


def test_since_and_older_than_take_durations_and_iso_dates() -> None:
    assert moment("2h", NOW) == NOW - timedelta(hours=2)
    assert moment("3d", NOW) == NOW - timedelta(days=3)
    assert moment("2026-12-01", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    assert moment("2026-12-01T08:00:00+01:00", NOW) == datetime(2026, 12, 1, 7, tzinfo=UTC)
    with pytest.raises(BadMoment, match="neither a duration"):
        moment("yesterday", NOW)
