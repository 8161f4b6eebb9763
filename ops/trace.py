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

The ERP outcome of a delta: every ERP connector group (``<app_id>-erp-<adapter>``) that has
committed past the delta's offset took it (the ERP posted it, or already had it: the
connector commits only then), unless that adapter's rcm.postings.dlq record says it refused
it; a group not past it has it pending. The connector records no time per accepted delta,
so the latency is measured from the unit's first source record to its last timestamped
record (the posting delta, or the ERP's refusal), and the report says so. Given an ERP
adapter, the trace also reads that ERP's journal back (as `rcmflow reconcile --erp` does) and
says of each delta whether the ERP holds it, under which reference.

What is shown: ids, accounts, amounts in cents, codes, topics, offsets and times. Payloads
(the HL7 message, X12 segments, a payment row, a FHIR resource, an event's or a DLQ record's
whole document) may hold PHI: only with ``payloads=True``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from rcmflow.ops.lag import group_committed, group_role, listed_groups
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record, iter_topic, log_ends, topic_partitions
from rcmflow.streams.topics import (
    DLQ,
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

__all__ = ["Step", "Trace", "trace", "parse_since", "Needles", "match_raw", "match_event",
           "match_posting", "match_dlq", "TOPICS", "DEFAULT_SINCE", "STEPS_MAX", "Advance"]

#: How far back a trace reads by default: the raw topics keep a week (streams/topics.py).
DEFAULT_SINCE = timedelta(days=7)
#: Records one trace collects at most (a large 835 is thousands of claims, each an event and
#: a delta); past it the trace stops collecting and says it was cut.
STEPS_MAX = 20_000
#: Ids followed at most (event ids, posting ids, raw keys).
IDS_MAX = 50_000
RAW_TOPICS = (RAW_HL7, RAW_X12, RAW_PAYMENTS, RAW_FHIR)
#: Every topic a trace reads (its READ ACLs; the ERP groups' offsets need DESCRIBE on them).
TOPICS = (*RAW_TOPICS, EVENTS, POSTINGS, DLQ, POSTINGS_DLQ)
#: Stages in the order the pipeline writes them: a trace lists them so, by time within each.
STAGES = ("raw", "event", "dlq", "posting", "posting_dlq", "erp")
#: Event-id prefixes whose last part is the payment file's own reference.
_REFERENCE_PREFIXES = ("payment:", "refund:", "write_off:")
#: The rcm.raw.hl7 record headers (connectors/inbound/totals.py; the same names, not imported:
#: the connectors and the event models are not a trace's to load).
HEADER_STATUS, HEADER_TOTALS = "rcm-status", "rcm-source-totals"
#: Context keys of a DLQ record never matched (an account names many units, not one).
_NOT_IDS = frozenset({"account", "kind", "source", "stage", "adapter", "entity"})

Advance = Callable[[int], None]
#: (label, records to read) -> a context manager yielding the ``advance(n)`` of a progress
#: display (``rcmflow.runtime.progress.progress`` bound to a console).
ProgressFactory = Callable[[str, int], AbstractContextManager[Advance]]


def parse_since(text: str, now: datetime | None = None) -> datetime | None:
    """``7d``, ``12h``, ``30m``, ``90s``, an ISO date or date-time (UTC unless it says), or
    ``all`` (None: the whole log). ValueError for anything else."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text.lower() == "all":
        return None
    found = re.fullmatch(r"(\d+)\s*([dhms])", text)
    if found:
        unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[found.group(2)]
        return now - timedelta(**{unit: int(found.group(1))})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: give 7d, 12h, 30m, an ISO date (2026-03-01) or "
                         "date-time, or all") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    """One record of the unit: where it is, when it was written, what it says (no PHI)."""

    stage: str
    topic: str
    partition: int | None
    offset: int | None
    timestamp_ms: int | None
    summary: dict[str, Any]
    payload: Any = None

    def sort_key(self) -> tuple[int, int, int, int]:
        """The pipeline's order, then time: a connector may write a unit's events a few
        milliseconds before its raw record (an X12 set's record is written once the set
        was read), and a unit is read from its source on."""
        at = self.timestamp_ms if self.timestamp_ms is not None else 2**62
        return (STAGES.index(self.stage), at, self.partition or 0, self.offset or 0)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "stage": self.stage, "topic": self.topic, "partition": self.partition,
            "offset": self.offset, "timestamp_ms": self.timestamp_ms,
            "timestamp": None if self.timestamp_ms is None else _iso(self.timestamp_ms),
            **self.summary}
        if self.payload is not None:
            doc["payload"] = self.payload
        return doc


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@dataclass
class Trace:
    query: str
    since: datetime | None
    steps: list[Step] = field(default_factory=list)
    #: Records read per topic (the cost of the trace).
    read: dict[str, int] = field(default_factory=dict)
    #: More than STEPS_MAX records matched: the trace stopped collecting.
    truncated: bool = False
    elapsed_s: float = 0.0

    @property
    def found(self) -> bool:
        return bool(self.steps)

    @property
    def first_ms(self) -> int | None:
        """The unit's first source record (its first record of any kind if none is kept)."""
        times = [s.timestamp_ms for s in self.steps if s.timestamp_ms is not None]
        raw = [s.timestamp_ms for s in self.steps
               if s.stage == "raw" and s.timestamp_ms is not None]
        return min(raw or times) if times else None

    @property
    def last_ms(self) -> int | None:
        times = [s.timestamp_ms for s in self.steps if s.timestamp_ms is not None]
        return max(times) if times else None

    @property
    def latency_ms(self) -> int | None:
        """First source record -> the last timestamped record of the unit."""
        first, last = self.first_ms, self.last_ms
        return None if first is None or last is None else last - first

    @property
    def latency_to(self) -> str | None:
        """The stage of the record the latency runs to."""
        last = self.last_ms
        stages = [s.stage for s in self.steps if s.timestamp_ms == last]
        return max(stages, key=STAGES.index) if stages else None

    def erp_outcomes(self) -> dict[str, int]:
        """Outcome -> count over the ERP steps (taken, rejected, pending)."""
        counts: dict[str, int] = {}
        for step in self.steps:
            if step.stage == "erp":
                counts[step.summary["outcome"]] = counts.get(step.summary["outcome"], 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query,
                "since": None if self.since is None else self.since.isoformat(),
                "found": self.found, "truncated": self.truncated,
                "first_source_at": None if self.first_ms is None else _iso(self.first_ms),
                "last_at": None if self.last_ms is None else _iso(self.last_ms),
                "latency_ms": self.latency_ms, "latency_to": self.latency_to,
                "erp_outcomes": self.erp_outcomes(), "records_read": self.read,
                "elapsed_s": round(self.elapsed_s, 3),
                "steps": [s.to_json() for s in self.steps]}


@dataclass
class Needles:
    """What belongs to the unit so far: the query and the ids followed from it."""

    query: str
    event_ids: set[str] = field(default_factory=set)
    posting_ids: set[str] = field(default_factory=set)
    raw_keys: set[str] = field(default_factory=set)
    #: (partition, offset) of the unit's events on rcm.events (the worker's DLQ origins).
    event_places: set[tuple[int, int]] = field(default_factory=set)

    #: More than IDS_MAX ids of one kind: the trace is cut (it says so).
    overflowed: bool = False

    def add(self, ids: set[str], new: Iterable[str]) -> None:
        for item in new:
            if len(ids) < IDS_MAX:
                ids.add(item)
            elif item not in ids:
                self.overflowed = True

    def names(self, value: str) -> bool:
        """Whether ``value`` is the query or one of the unit's ids (no set is built: a DLQ
        record is checked against a large 835's thousands of ids)."""
        return (value == self.query or value in self.event_ids or value in self.posting_ids
                or value in self.raw_keys)


def _json(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _header(record: Record, name: str) -> bytes | None:
    return next((value for key, value in record.headers if key == name), None)


def _totals_events(totals: Any) -> list[str]:
    if not isinstance(totals, dict):
        return []
    return [str(pair[1]) for pair in totals.get("events", [])
            if isinstance(pair, list | tuple) and len(pair) == 2]


def _totals_amounts(totals: Any) -> list[dict[str, Any]]:
    if not isinstance(totals, dict):
        return []
    return [{k: a.get(k) for k in ("account", "day", "measure", "cents")}
            for a in totals.get("amounts", []) if isinstance(a, dict)]


def match_raw(record: Record, needles: Needles, *, payloads: bool = False) -> Step | None:
    """The raw record's step if it belongs to the unit: by its own ids (MSH-10, the HL7
    source key, TRN02, the X12 set key, a payment's reference or batch; then its events, as
    its source totals list them, are the unit's) or because its source totals list one of
    the unit's event ids (it is the source of a traced event: its other events are not)."""
    key = (record.key or b"").decode("utf-8", "replace")
    q = needles.query
    summary: dict[str, Any] = {"key": key}
    payload: Any = None
    if record.topic == RAW_HL7:
        totals = _json(_header(record, HEADER_TOTALS))
        status = (_header(record, HEADER_STATUS) or b"").decode("utf-8", "replace")
        own = key == q or key.rsplit("|", 1)[-1] == q
        summary |= {"msh_10": key.rsplit("|", 1)[-1], "status": status or None}
        payload = (record.value or b"").decode("utf-8", "replace").replace("\r", "\n")
    else:
        doc = _json(record.value) or {}
        totals = doc.get("source_totals")
        fields = doc.get("fields") if isinstance(doc.get("fields"), dict) else {}
        assert isinstance(fields, dict)
        summary["status"] = doc.get("status")
        if record.topic == RAW_X12:
            base = key.rsplit(":", 1)[0] if doc.get("part") else key
            own = q in (doc.get("trace"), key, base)
            summary |= {k: doc.get(k) for k in ("st01", "st02", "trace", "part", "parts")}
            payload = doc.get("segments")
        elif record.topic == RAW_PAYMENTS:
            own = (key == q or (key.startswith(_REFERENCE_PREFIXES) and key.endswith(":" + q))
                   or q in (fields.get("reference"), fields.get("batch")))
            summary |= {"row": doc.get("row"), "reference": fields.get("reference"),
                        "batch": fields.get("batch") or None}
            payload = fields
        else:
            own = key == q
            summary["location"] = doc.get("location")
            payload = doc.get("resource")
    events = _totals_events(totals)
    if not own and not (needles.event_ids.intersection(events) or q in events):
        return None
    if own:  # the unit is this source record: all its events are the unit's
        needles.add(needles.event_ids, events)
    needles.add(needles.raw_keys, [key])
    summary |= {"events": len(events), "amounts": _totals_amounts(totals)}
    return Step("raw", record.topic, record.partition, record.offset, record.timestamp_ms,
                summary, payload if payloads else None)


#: Dimensions shown of an event (codes and ids; the encounter number is left out).
_DIMENSIONS = ("entity", "department", "payer", "payer_class", "claim_id", "revenue_code",
               "procedure_code")


def match_event(record: Record, needles: Needles, *, payloads: bool = False) -> Step | None:
    """The event's step if it is one of the unit's (its id followed, or named by the query:
    its event id, its correlation id — MSH-10, TRN02, a payment batch — or a payment's
    reference); its id and place are added to ``needles``."""
    doc = _json(record.value)
    if doc is None:
        return None
    event_id, q = str(doc.get("event_id", "")), needles.query
    if not (event_id in needles.event_ids or event_id == q or doc.get("correlation_id") == q
            or (event_id.startswith(_REFERENCE_PREFIXES) and event_id.endswith(":" + q))):
        return None
    needles.add(needles.event_ids, [event_id])
    needles.event_places.add((record.partition, record.offset))
    dims = doc.get("dimensions") if isinstance(doc.get("dimensions"), dict) else {}
    assert isinstance(dims, dict)
    summary: dict[str, Any] = {
        "event_id": event_id, "account": doc.get("account"), "kind": doc.get("kind"),
        "source": doc.get("source"), "correlation_id": doc.get("correlation_id"),
        "occurred_at": doc.get("occurred_at"),
        **{k: v for k, v in doc.items() if k.endswith("_cents")},
        **{k: dims[k] for k in _DIMENSIONS if dims.get(k) is not None}}
    for name in ("outcome", "claim_id", "status_code"):
        if doc.get(name) is not None:
            summary[name] = doc[name]
    return Step("event", EVENTS, record.partition, record.offset, record.timestamp_ms,
                summary, doc if payloads else None)


def match_posting(record: Record, needles: Needles, *, payloads: bool = False) -> Step | None:
    """The delta's step if it is of one of the unit's events, or has the queried posting id;
    its posting id (and, for a posting id query, its event id) is added to ``needles``."""
    doc = _json(record.value)
    if doc is None:
        return None
    posting_id, event_id = str(doc.get("posting_id", "")), str(doc.get("event_id", ""))
    if not (event_id in needles.event_ids or posting_id == needles.query):
        return None
    needles.add(needles.posting_ids, [posting_id])
    needles.add(needles.event_ids, [event_id])
    lines = doc.get("lines") if isinstance(doc.get("lines"), list) else []
    assert isinstance(lines, list)
    summary = {k: doc.get(k) for k in ("posting_id", "account", "event_id", "event_kind",
                                       "account_version", "effective_date",
                                       "reverses_posting_id")}
    summary["amount_cents"] = sum(int(line.get("debit_cents", 0)) for line in lines)
    summary["lines"] = [{"gl_account": line.get("gl_account"),
                         "debit_cents": line.get("debit_cents"),
                         "credit_cents": line.get("credit_cents"),
                         **({"suspense": True} if line.get("suspense") else {})}
                        for line in lines]
    return Step("posting", POSTINGS, record.partition, record.offset, record.timestamp_ms,
                summary, doc if payloads else None)


def match_dlq(record: Record, needles: Needles, *, payloads: bool = False) -> Step | None:
    """A DLQ record of the unit: its id is the query, its context names one of the unit's
    ids (event id, posting id, MSH-10, correlation id, ...), its origin key is one of the
    unit's raw keys, or its origin is one of the unit's events on rcm.events."""
    doc = _json(record.value)
    if doc is None:
        return None
    context = doc.get("context") if isinstance(doc.get("context"), dict) else {}
    origin = doc.get("origin") if isinstance(doc.get("origin"), dict) else {}
    assert isinstance(context, dict) and isinstance(origin, dict)
    named = any(needles.names(str(v)) for k, v in context.items()
                if k not in _NOT_IDS and isinstance(v, str | int) and not isinstance(v, bool))
    at_event = (origin.get("topic") == EVENTS
                and (origin.get("partition"), origin.get("offset")) in needles.event_places)
    if not (doc.get("dlq_id") == needles.query or named or at_event
            or (origin.get("key") in needles.raw_keys and origin.get("topic") != EVENTS)):
        return None
    stage = "posting_dlq" if record.topic == POSTINGS_DLQ else "dlq"
    summary = {"dlq_id": doc.get("dlq_id"), "stage_of_failure": doc.get("stage"),
               "reason_code": doc.get("reason_code"), "severity": doc.get("severity"),
               "reason": doc.get("reason"),
               "origin": {k: origin.get(k) for k in ("topic", "partition", "offset")},
               **{k: context[k] for k in ("account", "event_id", "posting_id", "msh_10",
                                          "adapter", "amount_cents") if k in context}}
    return Step(stage, record.topic, record.partition, record.offset, record.timestamp_ms,
                summary, doc if payloads else None)


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
    """One ERP step per (ERP connector group, delta of the unit): taken, rejected or
    pending, from the group's committed offsets and rcm.postings.dlq."""
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
