"""Trace one unit of work by an id: every record it left on the topics, in order, with times.

A unit is what one source id names: an HL7 message (MSH-10), an 835 transaction set (TRN02),
a payment file's batch or one payment's reference, one canonical event (its event id) or one
posting delta (its posting id). The ids derive from one another (docs/events.md), and the
chain is followed in the order the pipeline writes:

    raw record (rcm.raw.*) --its source totals list its event ids--> events (rcm.events)
      --event id--> posting deltas (rcm.postings) --posting id--> ERP outcomes
    and, beside them, rcm.dlq records naming any of those ids, and rcm.postings.dlq records
    of the unit's deltas (an ERP refused them).

A posting id is first looked up on rcm.postings (its event id), then the chain is followed
from that event. Each topic is read once, from the first record at or after ``since``
(ListOffsets by time; records older than ``since`` are skipped as well), to its current end.

The ERP outcome of a delta: each ERP connector writes what it did with each delta, and
when, to rcm.erp.outcomes (posted, already there, rejected), so the latency runs from the
unit's first source record to the ERP's outcome. For a connector that wrote none (an earlier
version, or still at work), the group's committed offsets say it: a group past the delta's
offset took it, unless that adapter's rcm.postings.dlq record says it refused it; a group
not past it has it pending. Given an ERP
adapter, the trace also reads that ERP's journal back (as `rcmflow reconcile --erp` does) and
says of each delta whether the ERP holds it, under which reference.

What is shown: ids, accounts, amounts in cents, codes, topics, offsets and times. Payloads
(the HL7 message, X12 segments, a payment row, a FHIR resource, an event's or a DLQ record's
whole document) may hold PHI: only with ``payloads=True``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from rcmflow.ops.durations import moment
from rcmflow.ops.lag import group_committed, group_role, listed_groups
from rcmflow.ops.unit import (
    Needles,
    Step,
    Trace,
    match_dlq,
    match_event,
    match_outcome,
    match_posting,
    match_raw,
)
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record, iter_topic, log_ends, topic_partitions
from rcmflow.streams.topics import (
    DLQ,
    ERP_OUTCOMES,
    EVENTS,
    POSTINGS,
    POSTINGS_DLQ,
    RAW_FHIR,
    RAW_HL7,
    RAW_PAYMENTS,
    RAW_X12,
)

if TYPE_CHECKING:
    from rcmflow.connectors.erp.base import ErpAdapter

__all__ = ["trace", "parse_since", "TOPICS", "DEFAULT_SINCE", "STEPS_MAX", "Advance",
           "ProgressFactory", "Step", "Trace"]

#: How far back a trace reads by default: the raw topics keep a week (streams/topics.py).
DEFAULT_SINCE = timedelta(days=7)
#: Records one trace collects at most (a large 835 is thousands of claims, each an event and
#: a delta); past it the trace stops collecting and says it was cut.
STEPS_MAX = 20_000
RAW_TOPICS = (RAW_HL7, RAW_X12, RAW_PAYMENTS, RAW_FHIR)
#: Every topic a trace reads (its READ ACLs; the ERP groups' offsets need DESCRIBE on them).
TOPICS = (*RAW_TOPICS, EVENTS, POSTINGS, DLQ, POSTINGS_DLQ, ERP_OUTCOMES)

Advance = Callable[[int], None]
#: (label, records to read) -> a context manager yielding the ``advance(n)`` of a progress
#: display (``rcmflow.runtime.progress.progress`` bound to a console).
ProgressFactory = Callable[[str, int], AbstractContextManager[Advance]]



def parse_since(text: str, now: datetime | None = None) -> datetime | None:
    """``all`` (None: the whole log), or what `dlq list --since` takes (``durations.moment``:
    7d, 12h, 30m, 1w, an ISO date or date-time). BadMoment (a ValueError) for anything else."""
    if text.strip().lower() == "all":
        return None
    return moment(text, now or datetime.now(UTC))


Matcher = Callable[[Record, Needles], Step | None]


async def _bounds(kafka: KafkaConnection, topic: str, since: datetime | None
                  ) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``, (first offset to read, log end): from the first record at
    or after ``since`` (ListOffsets by time: a broker may answer with an earlier offset,
    never a later one, and older records are skipped as read), or from the beginning."""
    partitions = await topic_partitions(kafka, topic)
    if not partitions:
        return {}
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        begin = await consumer.beginning_offsets(tps)
        found = ({} if since is None else await consumer.offsets_for_times(
            {tp: int(since.timestamp() * 1000) for tp in tps}))
    finally:
        await consumer.stop()
    ends = await log_ends(kafka, topic, partitions)
    bounds: dict[int, tuple[int, int]] = {}
    for tp in tps:
        end, first = ends[tp.partition], begin.get(tp, 0)
        if since is not None:
            hit = found.get(tp)
            # No record at or after `since` (Kafka: None; Tansu: timestamp -1): nothing to
            # read there.
            none = hit is None or hit.offset < 0 or hit.timestamp < 0
            first = max(first, end if none or hit is None else hit.offset)
        bounds[tp.partition] = (first, end)
    return bounds


async def _scan(kafka: KafkaConnection, topic: str, since: datetime | None, match: Matcher,
                needles: Needles, found: Trace, progress: ProgressFactory | None) -> None:
    """Read ``topic`` from ``since`` to its end, keeping the steps ``match`` finds."""
    bounds = await _bounds(kafka, topic, since)
    start = {p: first for p, (first, end) in bounds.items() if first < end}
    if not start:
        return  # no such topic, or nothing at or after `since`
    since_ms = None if since is None else int(since.timestamp() * 1000)
    total = sum(end - first for first, end in bounds.values() if first < end)
    read = 0
    shown = (progress(f"trace: reading {topic}", total) if progress is not None
             else nullcontext(lambda n: None))
    with shown as advance:
        def count(n: int) -> None:
            nonlocal read
            read += n
            advance(n)

        try:
            async for batch in iter_topic(kafka, topic, start=start, on_read=count):
                for record in batch:
                    if since_ms is not None and record.timestamp_ms < since_ms:
                        continue
                    if len(found.steps) >= STEPS_MAX:
                        found.truncated = True
                        return
                    step = match(record, needles)
                    if step is not None:
                        found.steps.append(step)
        finally:
            found.read[topic] = found.read.get(topic, 0) + read


async def _erp_steps(kafka: KafkaConnection, app_id: str, found: Trace) -> None:
    """One ERP step per (ERP connector group, delta of the unit) without an outcome record
    (rcm.erp.outcomes: a connector of an earlier version, or one still at work): taken,
    rejected or pending, from the group's committed offsets and rcm.postings.dlq."""
    recorded = {(str(s.summary.get("adapter")), str(s.summary.get("posting_id")))
                for s in found.steps if s.stage == "erp"}
    deltas = [s for s in found.steps if s.stage == "posting"]
    if not deltas:
        return
    groups = [g for g in await listed_groups(kafka)
              if group_role(app_id, g)[0].startswith("erp ")]
    refused = {(str(s.summary.get("adapter")), str(s.summary.get("posting_id"))): s
               for s in found.steps if s.stage == "posting_dlq"}
    partitions = sorted({s.partition for s in deltas if s.partition is not None})
    for group in groups:
        adapter = group_role(app_id, group)[0].split(" ", 1)[1]
        committed = await group_committed(kafka, group,
                                     [TopicPartition(POSTINGS, p) for p in partitions])
        for delta in deltas:
            at = committed.get(TopicPartition(POSTINGS, delta.partition or 0))
            posting_id = str(delta.summary["posting_id"])
            if (adapter, posting_id) in recorded:
                continue
            dlq = refused.get((adapter, posting_id))
            if dlq is not None:
                outcome, when = "rejected", dlq.timestamp_ms
            elif at is not None and delta.offset is not None and at > delta.offset:
                outcome, when = "taken", None  # posted, or the ERP had it already
            else:
                outcome, when = "pending", None
            found.steps.append(Step("erp", POSTINGS, delta.partition, delta.offset, when, {
                "adapter": adapter, "group": group, "posting_id": posting_id,
                "account": delta.summary.get("account"), "outcome": outcome,
                "committed_offset": at,
                **({"reason_code": dlq.summary.get("reason_code")} if dlq else {})}))


async def _journal(adapter: ErpAdapter, open_it: bool, found: Trace) -> None:
    """Whether the ERP's own journal holds each delta of the unit (``read_journal`` over the
    deltas' effective dates), on that adapter's ERP steps: ``in_erp`` and its ``erp_ref``."""
    deltas = [s for s in found.steps if s.stage == "posting"]
    if not deltas:
        return
    wanted = {str(s.summary["posting_id"]) for s in deltas}
    days = [date.fromisoformat(str(s.summary["effective_date"])) for s in deltas]
    held: dict[str, str] = {}
    if open_it:
        await adapter.open()
    try:
        async for entry in adapter.read_journal(day_from=min(days), day_to=max(days)):
            if entry.posting_id in wanted and entry.posted:
                held[entry.posting_id] = entry.erp_ref
    finally:
        if open_it:
            await adapter.close()
    shown = set()
    for step in found.steps:
        if step.stage == "erp" and step.summary["adapter"] == adapter.name:
            posting_id = str(step.summary["posting_id"])
            step.summary["in_erp"] = posting_id in held
            step.summary["erp_ref"] = held.get(posting_id)
            shown.add(posting_id)
    for delta in deltas:  # no connector group of this adapter: the journal alone says
        posting_id = str(delta.summary["posting_id"])
        if posting_id not in shown:
            found.steps.append(Step("erp", POSTINGS, delta.partition, delta.offset, None, {
                "adapter": adapter.name, "group": None, "posting_id": posting_id,
                "account": delta.summary.get("account"),
                "outcome": "taken" if posting_id in held else "pending",
                "committed_offset": None, "in_erp": posting_id in held,
                "erp_ref": held.get(posting_id)}))


async def trace(kafka: KafkaConnection, query: str, *, app_id: str,
                since: datetime | None = None, payloads: bool = False,
                progress: ProgressFactory | None = None,
                erp: ErpAdapter | None = None, open_erp: bool = True) -> Trace:
    """Every record that belongs to the unit ``query`` names, in order (see the module).
    ``progress(label, total)``: a context manager yielding an ``advance(n)`` callback
    (``rcmflow.runtime.progress.progress`` bound to a console), or None for quiet.
    ``erp``: also look the unit's deltas up in that ERP's journal (opened first unless
    ``open_erp`` is False: the csv journal is read without its writer's lock)."""
    query = query.strip()
    found = Trace(query, since)
    needles = Needles(query)
    started = time.monotonic()

    async def scan(topic: str, fn: Callable[..., Step | None]) -> None:
        await _scan(kafka, topic, since, lambda record, n: fn(record, n, payloads=payloads),
                    needles, found, progress)

    by_posting_id = query.startswith("pst_")
    if by_posting_id:  # a posting id: its delta first (its event id), then as for an event
        await scan(POSTINGS, match_posting)
    for topic in RAW_TOPICS:
        await scan(topic, match_raw)
    await scan(EVENTS, match_event)
    if not by_posting_id:
        await scan(POSTINGS, match_posting)
    for topic in (DLQ, POSTINGS_DLQ):
        await scan(topic, match_dlq)
    await scan(ERP_OUTCOMES, match_outcome)
    if found.steps:
        await _erp_steps(kafka, app_id, found)
    if erp is not None:
        await _journal(erp, open_erp, found)
    found.truncated = found.truncated or needles.overflowed
    found.steps = _unique(found.steps)
    found.steps.sort(key=Step.sort_key)
    found.elapsed_s = time.monotonic() - started
    return found


def _unique(steps: list[Step]) -> list[Step]:
    """One step per record (a record matched twice is kept once)."""
    seen: set[tuple[str, str, int | None, int | None, str]] = set()
    kept = []
    for step in steps:
        key = (step.stage, step.topic, step.partition, step.offset,
               str(step.summary.get("group", "")))
        if key not in seen:
            seen.add(key)
            kept.append(step)
    return kept

