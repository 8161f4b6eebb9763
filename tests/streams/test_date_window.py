"""Plausible dates: the window check itself (a property test) and the worker's net for events
sent straight to rcm.events (`rcmflow ingest events`): out of the window -> rcm.dlq.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rcmflow.streams.chart import load_chart
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, FUTURE_DAYS_MAX, DateWindow
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS
from tests.factories import charge

EARLIEST = date(1990, 1, 1)


@given(st.dates(), st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1)),
       st.integers(0, FUTURE_DAYS_MAX),
       st.dates(min_value=date(1950, 1, 1), max_value=date(2100, 1, 1)))
def test_the_window_holds_exactly_earliest_to_today_plus_future_days(
    day: date, earliest: date, future_days: int, today: date
) -> None:
    window = DateWindow(earliest, future_days)
    latest = today + timedelta(days=future_days)
    problem = window.problem(day, "BPR16", today=today)
    assert (problem is None) == (earliest <= day <= latest)
    if problem is not None:
        assert problem.startswith(f"BPR16 {day.isoformat()} is ")
        assert earliest.isoformat() in problem and latest.isoformat() in problem
        assert "RCMFLOW_DATE_EARLIEST" in problem and "RCMFLOW_DATE_FUTURE_DAYS" in problem


@given(st.datetimes(timezones=st.just(timezone(timedelta(hours=-14))))
       | st.datetimes(timezones=st.just(timezone(timedelta(hours=14)))))
def test_a_moment_is_judged_by_the_date_its_source_wrote(moment: datetime) -> None:
    """2026-03-01T23:30-05:00 is March 1st at the source (not March 2nd in UTC)."""
    window = DateWindow(moment.date(), 0)
    assert window.problem(moment, "x", today=moment.date()) is None


def test_the_boundaries() -> None:
    window = DateWindow(EARLIEST, 366)
    today = date(2026, 12, 5)
    judged = {d: window.problem(d, "date", today=today) is None for d in (
        date(1, 1, 1), date(1989, 12, 31), EARLIEST, today, date(2027, 12, 6),
        date(2027, 12, 7), date(9999, 12, 31))}
    assert judged == {date(1, 1, 1): False, date(1989, 12, 31): False, EARLIEST: True,
                      today: True, date(2027, 12, 6): True, date(2027, 12, 7): False,
                      date(9999, 12, 31): False}


def _noon(day: date) -> int:
    return int(datetime.combine(day, time(12), UTC).timestamp() * 1000)


def test_the_worker_sends_an_out_of_window_event_to_the_dlq_and_posts_nothing() -> None:
    """Judged against the day of the record's timestamp (not the wall clock), so a batch read
    again after a crash, even days later, is judged the same way."""
    arrived = date(2026, 12, 5)
    docs = [charge(100, "D1", event_id=f"E-{when}", occurred_at=when)
            for when in ("0001-01-01T00:00:00+00:00", "9999-12-31T00:00:00+00:00",
                         "1989-12-31T23:59:59+00:00", "1990-01-01T00:00:00+00:00",
                         "2027-12-06T23:00:00-05:00", "2027-12-07T00:00:00+00:00")]
    processor = Processor(load_chart(), date_window=DateWindow(EARLIEST, 366),
                          clock=lambda: _noon(arrived + timedelta(days=900)) / 1000)
    tables = MemoryTables()

    def feed(offset: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        messages = [Message(EVENTS, 0, offset + i, b"D1", json.dumps(d).encode(),
                            _noon(arrived)) for i, d in enumerate(docs)]
        result = processor.process(messages, tables)
        tables.write(result)
        return ([json.loads(v) for _, _, v in result.postings],
                 [json.loads(v) for _, _, v in result.dlq], result.counts.replays)

    postings, dlq, _ = feed(0)
    assert [p["event_id"] for p in postings] == [
        "E-1990-01-01T00:00:00+00:00", "E-2027-12-06T23:00:00-05:00"]
    assert [(r["reason_code"], r["stage"]) for r in dlq] == [(DATE_OUT_OF_RANGE, "validate")] * 4
    assert dlq[0]["reason"] == (
        "occurred_at 0001-01-01 is before the earliest accepted date: dates from 1990-01-01 "
        "to 2027-12-06 are taken (RCMFLOW_DATE_EARLIEST=1990-01-01, today + "
        "RCMFLOW_DATE_FUTURE_DAYS=366)")
    assert "occurred_at 2027-12-07 is after the latest" in dlq[3]["reason"]
    # The refusal is remembered like any outcome: the same events again are quiet replays.
    postings, dlq, replays = feed(len(docs))
    assert (postings, dlq, replays) == ([], [], len(docs))
