"""Pages of a topic, newest first, read back from the log end: the operators' listings.

A listing of a million records must not read a million records to show fifty. A page reads,
per partition, only the newest records before a cursor (doubling the window back while it has
too few), and merges the partitions newest first. The cursor (``--after``) holds, per
partition, where the page stopped and where the log ended when the first page was read, so
records written since do not shift the pages: each record is on exactly one page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from rcmflow.ops.exceptions import BadCursor
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import READ_TIMEOUT_S, Record, log_ends, topic_partitions

__all__ = ["Cursor", "PageOf", "read_page", "picked_between"]

_T = TypeVar("_T")

#: The widest window read back at once per partition (records, kept or not).
WINDOW_MAX = 50_000


@dataclass(frozen=True)
class Cursor:
    """Per partition: (read back to this offset, the log's end when paging began)."""

    positions: dict[int, tuple[int, int]]

    def encode(self) -> str:
        return ",".join(f"{p}:{at}:{end}" for p, (at, end) in sorted(self.positions.items()))

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            positions = {}
            for part in text.split(","):
                p, at, end = (int(x) for x in part.split(":"))
                if not 0 <= at <= end or p < 0:
                    raise ValueError(part)
                positions[p] = (at, end)
        except ValueError as exc:
            raise BadCursor(f"--after {text[:80]!r} is not a cursor a listing printed "
                            "(partition:offset:end,...)") from exc
        return cls(positions)


@dataclass
class PageOf:
    records: list[Record]
    #: Where the next page starts (None: this was the last).
    next: Cursor | None
    #: Offsets between the cursor and the log start over all partitions: at least the
    #: records still to page through (compaction and transaction markers make it an upper
    #: bound, not a count).
    offsets_left: int


async def _consumer(kafka: KafkaConnection) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    return consumer


async def _read_ranges(consumer: AIOKafkaConsumer,
                       ranges: dict[TopicPartition, tuple[int, int]],
                       keep: Callable[[Record], bool], deadline: float
                       ) -> dict[TopicPartition, list[Record]]:
    """The records ``keep`` takes of [lo, hi) of each partition (fewer if its stable end is
    before hi), oldest first, all partitions in the same fetches (one round trip, not one per
    partition); only the kept ones are held."""
    consumer.assign(list(ranges))
    for tp, (lo, _) in ranges.items():
        consumer.seek(tp, lo)
    found: dict[TopicPartition, list[Record]] = {tp: [] for tp in ranges}
    reading = list(ranges)
    while True:
        for tp in list(reading):
            position = await consumer.position(tp)
            end = consumer.highwater(tp)
            stable = consumer.last_stable_offset(tp)
            if end is not None and stable:
                end = min(end, stable)
            if position >= ranges[tp][1] or (end is not None and position >= end):
                reading.remove(tp)
                consumer.pause(tp)  # no fetching past hi for a partition that is done
        if not reading:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {reading[0].topic} back did not finish in "
                               f"{READ_TIMEOUT_S}s")
        batch = await consumer.getmany(*reading, timeout_ms=200, max_records=10_000)
        for tp, messages in batch.items():
            hi = ranges[tp][1]
            records = (Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp,
                              tuple(m.headers or ())) for m in messages if m.offset < hi)
            found[tp].extend(r for r in records if keep(r))


async def read_page(
    kafka: KafkaConnection,
    topic: str,
    *,
    limit: int,
    after: Cursor | None,
    keep: Callable[[Record], bool] = lambda r: True,
    shown: Callable[[Record], bool] = lambda r: True,
) -> PageOf:
    """Up to ``limit`` records of ``topic`` that ``keep`` takes and ``shown`` shows, newest
    first (by timestamp, across partitions), before ``after`` (None: from the log ends).

    ``shown`` is asked in page order and may refuse a record (a repeat already shown): the
    record is then passed over, not shown on a later page either.
    """
    deadline = time.monotonic() + READ_TIMEOUT_S
    if after is None:
        partitions = await topic_partitions(kafka, topic)
        ends = (await log_ends(kafka, topic, partitions,
                               timeout_s=max(0.0, deadline - time.monotonic()))
                if partitions else {})
        positions = {p: (ends[p], ends[p]) for p in partitions}
    else:
        positions = dict(after.positions)
    consumer = await _consumer(kafka)
    # Per partition: the kept records read back, oldest first; whether the log start is
    # reached (nothing older to read).
    newest: dict[int, list[Record]] = {}
    at_start: dict[int, bool] = {}
    try:
        tps = [TopicPartition(topic, p) for p in positions]
        if tps:
            # The topic's metadata first: a consumer that tracks no topic yet asks for the
            # offsets, finds no leader and waits a retry backoff (100 ms on Apache Kafka).
            consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps) if tps else {}
        his = {tp: positions[tp.partition][0] for tp in tps}
        windows = {tp: max(limit, 1) for tp in tps}
        got: dict[TopicPartition, list[Record]] = {tp: [] for tp in tps}
        # Each partition reads back a window before where it stands, doubling it while it
        # has too few records; the partitions that still want records read together.
        while wanting := [tp for tp in tps
                          if len(got[tp]) < limit and his[tp] > begins.get(tp, 0)]:
            ranges = {tp: (max(begins.get(tp, 0), his[tp] - windows[tp]), his[tp])
                      for tp in wanting}
            read = await _read_ranges(consumer, ranges, keep, deadline)
            for tp, (lo, _) in ranges.items():
                got[tp] = read[tp] + got[tp]
                his[tp] = lo
                windows[tp] = min(windows[tp] * 2, WINDOW_MAX)
        for tp in tps:
            newest[tp.partition] = got[tp]
            at_start[tp.partition] = his[tp] <= begins.get(tp, 0)
    finally:
        await consumer.stop()
    chosen: list[Record] = []
    cursor = {p: at for p, (at, _) in positions.items()}
    while len(chosen) < limit:
        heads = [(recs[-1].timestamp_ms, recs[-1].offset, p) for p, recs in newest.items()
                 if recs]
        if not heads:
            break
        _, _, p = max(heads)
        record = newest[p].pop()
        cursor[p] = record.offset
        if shown(record):
            chosen.append(record)
        if not newest[p] and not at_start[p]:
            break  # that partition may hold newer records than the others' next ones
    for p, recs in newest.items():
        if not recs and at_start[p]:
            cursor[p] = 0  # nothing older: this partition is done
    left = sum(cursor.values())
    next_cursor = Cursor({p: (cursor[p], end) for p, (_, end) in positions.items()})
    return PageOf(chosen, next_cursor if left else None, left)


async def picked_between(kafka: KafkaConnection, topic: str, cursor: Cursor,
                         pick: Callable[[Record], _T | None]) -> set[_T]:
    """What ``pick`` finds in the records from the cursor to the end it noted (what earlier
    pages covered), e.g. the ids of the DLQ records or the account keys they showed; None:
    nothing. Only what is picked is held."""
    deadline = time.monotonic() + READ_TIMEOUT_S
    ranges = {TopicPartition(topic, p): (at, end)
              for p, (at, end) in sorted(cursor.positions.items()) if at < end}
    if not ranges:
        return set()
    consumer = await _consumer(kafka)
    found: set[_T] = set()

    def keep(record: Record) -> bool:
        value = pick(record)
        if value is not None:
            found.add(value)
        return False  # nothing held but what was picked

    try:
        await _read_ranges(consumer, ranges, keep, deadline)
    finally:
        await consumer.stop()
    return found
