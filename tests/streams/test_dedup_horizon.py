"""The dedup horizon: storage bounded by the horizon, and still no replay posts twice.

Simulated days: each message's timestamp is its day at noon (UTC); events are dated that day
unless a test says otherwise. Pure: the processor over ``MemoryTables``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rcmflow.streams.chart import load_chart
from rcmflow.streams.dedup import HORIZON_PREFIX, PURGED_BEFORE_KEY, day_of
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import PURGE_RECORDS_MAX, Message, Processor
from rcmflow.streams.topics import EVENTS
from tests.factories import charge

CHART = load_chart()
START = date(2026, 1, 1)
HORIZON = 30


def noon(day: int) -> datetime:
    return datetime.combine(START + timedelta(days=day), datetime.min.time(), UTC) \
        + timedelta(hours=12)


class Days:
    """A worker's tables fed one simulated day at a time."""

    def __init__(self, horizon: int = HORIZON) -> None:
        self.tables = MemoryTables()
        self.now = noon(0)
        self.processor = Processor(CHART, dedup_horizon_days=horizon,
                                   clock=lambda: self.now.timestamp())
        self.offset = 0
        self.postings: list[dict[str, Any]] = []
        self.dlq: list[dict[str, Any]] = []
        self.replays = 0

    def feed(self, day: int, docs: list[dict[str, Any]]) -> None:
        self.now = noon(day)
        stamp = int(self.now.timestamp() * 1000)
        messages = [Message(EVENTS, 0, self.offset + i, d["account"].encode(),
                            json.dumps(d).encode(), stamp) for i, d in enumerate(docs)]
        self.offset += len(messages)
        result = self.processor.process(messages, self.tables)
        self.tables.write(result)
        self.postings += [json.loads(v) for _, _, v in result.postings]
        self.dlq += [json.loads(v) for _, _, v in result.dlq]
        self.replays += result.counts.replays

    def dedup_records(self) -> int:
        """Dedup records held (not their index keys or the reserved keys)."""
        return sum(1 for _, key in self.tables.dedup if not key.startswith(b"\x00"))

    def index_keys(self) -> int:
        return sum(1 for _, key in self.tables.dedup if key.startswith(HORIZON_PREFIX))


def charges(day: int, n: int, **fields: Any) -> list[dict[str, Any]]:
    return [charge(100, f"A{i % 7}", event_id=f"D{day}-{i}",
                   occurred_at=noon(day).isoformat(), **fields) for i in range(n)]


def test_dedup_storage_is_bounded_by_the_horizon_not_by_all_time() -> None:
    days = Days()
    held = []
    for day in range(4 * HORIZON):
        days.feed(day, charges(day, 20))
        held.append(days.dedup_records())
    assert days.index_keys() == days.dedup_records()
    # Grows for a horizon, then flat: the days older than the horizon are deleted.
    assert held[HORIZON - 1] == 20 * HORIZON
    assert max(held) <= 20 * (HORIZON + 1)
    assert held[-1] == held[2 * HORIZON]
    assert len(days.postings) == 20 * 4 * HORIZON and not days.dlq


def test_a_replay_within_the_horizon_is_dropped_and_one_older_is_refused_never_posted() -> None:
    days = Days()
    first = charges(0, 3)
    days.feed(0, first)
    days.feed(HORIZON - 1, first)  # a re-send within the horizon: dropped in silence
    assert days.replays == 3 and len(days.postings) == 3
    for day in range(HORIZON, 2 * HORIZON):  # time passes; day 0's records are deleted
        days.feed(day, charges(day, 2))
    assert days.tables.load_purge_mark(0) >= (START + timedelta(days=1)).toordinal()
    posted = len(days.postings)
    days.feed(2 * HORIZON, first)  # the same file, two horizons later
    assert len(days.postings) == posted, "an old replay posted again"
    refused = days.dlq[-3:]
    assert [r["reason_code"] for r in refused] == ["beyond_dedup_horizon"] * 3
    assert "RCMFLOW_DEDUP_HORIZON_DAYS=30" in refused[0]["reason"]
    # And its refusal is remembered like any outcome: the next re-send is a quiet replay.
    days.feed(2 * HORIZON + 1, first)
    assert days.replays == 6 and len(days.dlq) == 3


def test_history_of_any_age_is_taken_until_something_was_deleted() -> None:
    days = Days()
    # A fresh system loads ten years of history (a backfill, or the samples' old dates).
    days.feed(0, charges(-3650, 5) + charges(-400, 5))
    assert len(days.postings) == 10 and not days.dlq
    assert days.tables.load_purge_mark(0) == 0
    # Filed under the day they were applied, not their date: kept a whole horizon.
    days.feed(HORIZON - 1, charges(-3650, 5))
    assert days.replays == 5 and not days.dlq


def test_the_purge_is_bounded_per_batch_and_catches_up() -> None:
    days = Days(horizon=1)
    days.feed(0, charges(0, PURGE_RECORDS_MAX + 500))
    days.feed(5, charges(5, 1))
    assert days.dedup_records() == 500 + 1  # the first batch deleted PURGE_RECORDS_MAX
    days.feed(6, charges(6, 1))
    assert days.dedup_records() == 1 + 1
    assert (0, PURGED_BEFORE_KEY) in days.tables.dedup


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6 * HORIZON), st.integers(0, 40)), min_size=1,
                max_size=40))
def test_no_event_ever_posts_twice_whatever_the_replay_times(
        sends: list[tuple[int, int]]) -> None:
    """Random days on which one of 40 events (dated the day it was first sent) is sent,
    again and again: each posts once; every later send is dropped or refused."""
    days = Days()
    dated: dict[int, int] = {}
    for day, n in sorted(sends):
        first_day = dated.setdefault(n, day)
        days.feed(day, [charge(100, "A1", event_id=f"E{n}",
                               occurred_at=noon(first_day).isoformat())])
    ids = [p["event_id"] for p in days.postings]
    assert sorted(ids) == sorted({f"E{n}" for n in dated})
    assert {r["reason_code"] for r in days.dlq} <= {"beyond_dedup_horizon"}
    assert len(days.postings) + len(days.dlq) + days.replays == len(sends)


def test_a_day_is_the_utc_day_whatever_the_machine_s_time_zone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers in different time zones must file an event under the same day (the purge
    deletes by day)."""
    moment = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 21:00 the day before in New York
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert day_of(moment) == date(2026, 11, 20).toordinal()
    finally:
        monkeypatch.undo()
        time.tzset()
