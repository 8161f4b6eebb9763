"""What belongs to a traced unit: the steps of a trace, and how each kind of record is
matched against the ids followed so far (``Needles``). Pure: records in, steps out; the
scanning is ``rcmflow.ops.trace``. See that module for the chain of ids."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from rcmflow.runtime.kafka_io import Record
from rcmflow.streams.topics import (
    ERP_OUTCOMES,
    EVENTS,
    POSTINGS,
    POSTINGS_DLQ,
    RAW_HL7,
    RAW_PAYMENTS,
    RAW_X12,
)

__all__ = ["Step", "Trace", "Needles", "match_raw", "match_event", "match_posting",
           "match_dlq", "STAGES", "IDS_MAX", "HEADER_STATUS", "HEADER_TOTALS"]

#: Ids followed at most (event ids, posting ids, raw keys).
IDS_MAX = 50_000
#: Stages in the order the pipeline writes them: a trace lists them so, by time within each.
STAGES = ("raw", "event", "dlq", "posting", "posting_dlq", "erp")
#: Event-id prefixes whose last part is the payment file's own reference.
_REFERENCE_PREFIXES = ("payment:", "refund:", "write_off:")
#: The rcm.raw.hl7 record headers (connectors/inbound/totals.py; the same names, not imported:
#: the connectors and the event models are not a trace's to load).
HEADER_STATUS, HEADER_TOTALS = "rcm-status", "rcm-source-totals"
#: Context keys of a DLQ record never matched (an account names many units, not one).
_NOT_IDS = frozenset({"account", "kind", "source", "stage", "adapter", "entity"})


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


def match_outcome(record: Record, needles: Needles, *, payloads: bool = False) -> Step | None:
    """An ERP connector's outcome of one of the unit's deltas (rcm.erp.outcomes): posted,
    already there or rejected, by which adapter, when."""
    doc = _json(record.value)
    if doc is None or str(doc.get("posting_id", "")) not in needles.posting_ids:
        return None
    summary = {k: doc.get(k) for k in ("adapter", "posting_id", "account", "outcome",
                                       "erp_ref")}
    return Step("erp", ERP_OUTCOMES, record.partition, record.offset, record.timestamp_ms,
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

