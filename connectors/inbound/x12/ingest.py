"""An X12 file -> what to publish: events of good sets, DLQ records of parked ones.

``process_x12`` is pure (bytes in, records out) so every sample is tested without a broker;
``X12File`` reads a file as a stream for `rcmflow ingest x12` and `watch`. Per transaction
set (by ST01):

* 835: structure (reader) -> remittance -> balancing -> ClaimAdjudicated / ProviderAdjustment;
* 837: structure (reader) -> claims -> CLM02 = Σ lines -> ClaimSubmitted.

A set with any problem is parked whole: one rcm.dlq record with every failing check and its
numbers, and none of its events. Every set, applied or parked, also gets records on
rcm.raw.x12 with its segments and its warnings (the implementation-guide messages); an
applied set's records also say what it states in money, read from its segments, and which
events it made (``source_totals``, connectors/inbound/totals.py), for `rcmflow reconcile`.

Bounds: a set can hold 100,000s of claims, so its raw record is cut into parts
(``set_records``), each under ``RAW_RECORD_BYTES_MAX`` whatever the set's size: part 0 is
keyed ``<ISA13>:<GS06>:<ST02>``, part n ``<ISA13>:<GS06>:<ST02>:<n>``; each part says
``part`` and ``parts``, the set's status, a slice of its segments (concatenated in part order
they are the set's text) and the source totals of a slice of its claims (each claim's amounts
with its event id, whole in one part). Warnings are on part 0 (the first
``WARNINGS_KEPT_MAX``, and ``warnings_total``).

Memory: ``X12File`` reads the file twice, one set at a time: a check pass keeps a short
summary per set (counts, the first problems), then, since an envelope problem found at GE or
IEA parks the sets before it, a publish pass reads each set again and yields its records.
Peak memory is one set's, not the file's.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeAlias

import orjson

from rcmflow.connectors.inbound.files import Record
from rcmflow.connectors.inbound.totals import SourceTotals
from rcmflow.connectors.inbound.x12.claims import batch_totals, claim_events, parse_837
from rcmflow.connectors.inbound.x12.guide import guide_warnings
from rcmflow.connectors.inbound.x12.reader import (
    ChunkReader,
    Problem,
    TransactionSet,
    X12Document,
    X12Source,
)
from rcmflow.connectors.inbound.x12.remit import (
    account_problem,
    balance_problems,
    parse_835,
    remit_events,
    remit_totals,
)
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, DateWindow
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.events import ClaimAdjudicated, ClaimSubmitted, ProviderAdjustment
from rcmflow.streams.topics import DLQ, EVENTS, RAW_X12

__all__ = ["X12Limits", "SetOutcome", "FileOutcome", "X12File", "process_x12", "set_records",
           "Record", "RAW_RECORD_BYTES_MAX"]

X12Event: TypeAlias = ClaimAdjudicated | ProviderAdjustment | ClaimSubmitted
#: Problems whose failing identity is money rather than structure (DLQ stage "validate").
_MONEY_CODES = {"x12_claim_unbalanced", "x12_transaction_unbalanced", "x12_claim_total"}
_REASON_CHARS_MAX = 4000
#: Problems listed per DLQ record / console report (a set can fail once per claim).
_PROBLEMS_KEPT_MAX = 100
#: Warnings kept per set (a set can warn once per claim): on part 0 and in the DLQ record.
WARNINGS_KEPT_MAX = 50
_WARNING_CHARS_MAX = 300
#: Largest rcm.raw.x12 record: under Kafka's default max.message.bytes (1 MiB), so a topic
#: created by someone else still takes it. Segments and totals get ~370 KB each per part.
RAW_RECORD_BYTES_MAX = 900 * 1024
_PART_SEGMENTS_BYTES = 370_000
_PART_TOTALS_BYTES = 370_000


@dataclass(frozen=True)
class X12Limits:
    segments_max: int = 1_000_000
    guide_validation: bool = True
    dlq_payload_bytes_max: int = 512 * 1024
    entity: str = "01"
    date_window: DateWindow = DateWindow()  # a set dated outside it is parked
    #: Files larger than this are not guide-validated (pyx12's time and memory).
    guide_bytes_max: int = 2 * 1024 * 1024


@dataclass
class SetOutcome:
    st01: str
    st02: str
    isa13: str
    gs06: str
    first_segment: int
    trace: str  # 835 TRN02 or 837 BHT03
    raw: str
    events: list[X12Event] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    claims: int = 0
    provider_adjustments: int = 0
    totals: SourceTotals = field(default_factory=SourceTotals)
    #: How many events / problems / warnings there were (the lists may keep the first only).
    event_count: int = 0
    problems_total: int = 0
    warnings_total: int = 0
    #: Makes the events again when they are not kept in ``events`` (a set of 100,000s).
    remake_events: Callable[[], Iterable[X12Event]] | None = None

    @property
    def parked(self) -> bool:
        return bool(self.problems)

    def reason(self) -> str:
        text = "; ".join(f"{p.code}: {p.detail}" for p in self.problems)
        return text if len(text) <= _REASON_CHARS_MAX else text[:_REASON_CHARS_MAX] + " ..."

    def summary(self) -> SetOutcome:
        """What the report needs once the set is published: counts and the first problems."""
        return SetOutcome(self.st01, self.st02, self.isa13, self.gs06, self.first_segment,
                          self.trace, "", problems=self.problems[:_PROBLEMS_KEPT_MAX],
                          warnings=self.warnings, claims=self.claims,
                          provider_adjustments=self.provider_adjustments,
                          event_count=self.event_count,
                          problems_total=max(self.problems_total, len(self.problems)),
                          warnings_total=self.warnings_total)


@dataclass
class FileOutcome:
    origin: str  # "file:<path>"
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sets: list[SetOutcome] = field(default_factory=list)
    payload: bytes = b""

    @property
    def rejected(self) -> bool:
        return bool(self.problems)

    @property
    def parked(self) -> list[SetOutcome]:
        return [s for s in self.sets if s.parked]

    @property
    def events(self) -> list[X12Event]:
        return [e for s in self.sets if not s.parked for e in s.events]

    @property
    def event_count(self) -> int:
        return sum(s.event_count for s in self.sets if not s.parked)

    def ok(self) -> bool:
        return not self.problems and not self.parked

    def reason_text(self) -> str:
        """What an operator reads in ``<file>.reason``: every failure with its numbers."""
        lines = [f"{p.code}: {p.detail}" for p in self.problems]
        for s in self.sets:
            status = "PARKED" if s.parked else f"applied ({s.event_count} events)"
            lines.append(f"ST {s.st02} ({s.st01}, trace {s.trace or '-'}): {status}")
            lines.extend(f"  {p.code}: {p.detail}" for p in s.problems)
            if s.problems_total > len(s.problems):
                lines.append(f"  ... {s.problems_total - len(s.problems)} more problems")
        return "\n".join(lines) + "\n"

    def records(self, limits: X12Limits) -> Iterator[Record]:
        received = datetime.now(UTC)
        if self.problems:
            yield file_dlq(self.origin, self.problems, self.payload, self.warnings, limits,
                           received)
            return
        for s in self.sets:
            yield from set_records(self.origin, s, self.warnings, limits, received)


def file_dlq(origin: str, problems: list[Problem], payload: bytes, warnings: list[str],
             limits: X12Limits, received: datetime) -> Record:
    """The one DLQ record of a file refused whole."""
    return DLQ, None, _dlq(origin, 0, None, problems, len(problems), payload, limits,
                           received, {"warnings": warnings[:WARNINGS_KEPT_MAX]})


def set_records(origin: str, s: SetOutcome, file_warnings: list[str], limits: X12Limits,
                received: datetime) -> Iterator[Record]:
    """A set's rcm.raw.x12 parts, then its events (applied) or its DLQ record (parked)."""
    base = f"{s.isa13}:{s.gs06}:{s.st02}"
    texts = _text_parts(s.raw, min(_PART_SEGMENTS_BYTES, limits.dlq_payload_bytes_max))
    totals = [] if s.parked else s.totals.split(_PART_TOTALS_BYTES)
    parts = max(len(texts), len(totals), 1)
    warnings = [w[:_WARNING_CHARS_MAX] for w in (file_warnings + s.warnings)[:WARNINGS_KEPT_MAX]]
    for n in range(parts):
        doc: dict[str, Any] = {
            "origin": origin, "st01": s.st01, "st02": s.st02, "isa13": s.isa13,
            "gs06": s.gs06, "trace": s.trace, "status": "parked" if s.parked else "applied",
            "events": 0 if s.parked else s.event_count, "part": n, "parts": parts}
        if not s.parked:
            doc["source_totals"] = (totals[n] if n < len(totals) else SourceTotals()).to_json()
        if n == 0:
            doc["warnings"] = warnings
            doc["warnings_total"] = len(file_warnings) + max(s.warnings_total, len(s.warnings))
        doc["segments"] = texts[n] if n < len(texts) else ""
        doc["segments_truncated"] = False
        yield RAW_X12, (base if n == 0 else f"{base}:{n}").encode(), orjson.dumps(doc)
    if s.parked:
        yield DLQ, base.encode(), _dlq(
            origin, s.first_segment, s.st02, s.problems, max(s.problems_total, len(s.problems)),
            s.raw.encode(), limits, received, {
                "transaction_set": s.st02, "st01": s.st01, "isa13": s.isa13, "gs06": s.gs06,
                "trace": s.trace, "warnings": warnings,
                "warnings_total": max(s.warnings_total, len(s.warnings))})
        return
    for event in s.remake_events() if s.remake_events is not None else s.events:
        yield EVENTS, event.account.encode(), event.model_dump_json().encode()


def _text_parts(raw: str, bytes_max: int) -> list[str]:
    """``raw`` in pieces whose JSON string is at most ``bytes_max`` bytes, cut after a
    segment where one ends in reach (a JSON string can be 6x its characters)."""
    parts: list[str] = []
    start, window = 0, bytes_max
    while start < len(raw):
        end = min(len(raw), start + window)
        if end < len(raw):
            newline = raw.rfind("\n", start, end)
            if newline > start:
                end = newline + 1
        piece = raw[start:end]
        if len(orjson.dumps(piece)) > bytes_max:
            window = max(1, window // 2)
            continue
        parts.append(piece)
        start, window = end, bytes_max
    return parts


def _dlq(origin: str, offset: int, st02: str | None, problems: list[Problem], total: int,
         payload: bytes, limits: X12Limits, received: datetime, context: dict[str, Any]) -> bytes:
    cut = len(payload) > limits.dlq_payload_bytes_max
    where = f"ST {st02}" if st02 is not None else "file"
    record = dlq_record(
        stage="validate" if problems[0].code in _MONEY_CODES else "decode",
        reason_code=problems[0].code,
        reason=f"{origin.removeprefix('file:')} {where}: "
        + "; ".join(p.detail for p in problems[:_PROBLEMS_KEPT_MAX])[:_REASON_CHARS_MAX],
        origin=Origin(topic=origin, partition=0, offset=offset, key=st02),
        payload=payload[:limits.dlq_payload_bytes_max],
        received_at=received,
        context={**context, "problems_total": total,
                 "problems": [{"code": p.code, "detail": p.detail[:_REASON_CHARS_MAX]}
                              for p in problems[:_PROBLEMS_KEPT_MAX]],
                 "payload_truncated": cut},
        discriminator=st02 or "",
    )
    return record.model_dump_json().encode()


def _guide(source: X12Source, size: int, sets: list[SetOutcome], limits: X12Limits,
           warnings: list[str]) -> dict[str, list[str]]:
    """Guide messages per ST02 when the file is small enough (else a warning says so)."""
    if not limits.guide_validation or not any(s.st01 == "835" for s in sets):
        return {}
    if size > limits.guide_bytes_max:
        warnings.append(f"implementation-guide validation skipped: the file is {size} bytes, "
                        f"over RCMFLOW_X12_GUIDE_BYTES_MAX ({limits.guide_bytes_max})")
        return {}
    prepared = source.prepared(X12Document())
    if prepared is None:
        return {}
    guide, note = guide_warnings(ChunkReader(prepared[0]))
    if note:
        warnings.append(note)
    return guide


def process_x12(data: bytes, *, origin: str, limits: X12Limits) -> FileOutcome:
    """Read, check and map one X12 file held in memory; never raises on bad input."""
    outcome = FileOutcome(origin=origin, payload=data)
    source = X12Source(lambda: io.BytesIO(data))
    doc = X12Document()
    tsets = list(source.sets(doc, segments_max=limits.segments_max))
    outcome.problems.extend(doc.file_problems)
    outcome.warnings.extend(doc.file_warnings)
    if doc.file_problems:
        return outcome
    if not tsets:
        outcome.problems.append(_NO_SETS)
        return outcome
    kinds = [SetOutcome(t.st01, t.st02, "", "", 0, "", "") for t in tsets]
    guide = _guide(source, len(data), kinds, limits, outcome.warnings)
    for tset in tsets:
        outcome.sets.append(_process_set(tset, doc.terminator, guide.get(tset.st02, []),
                                         limits))
    return outcome


_NO_SETS = Problem("x12_no_transaction_sets", "the interchange holds no ST..SE transaction set")


class X12File:
    """One X12 file read, checked and published as a stream (a ``FileIngest``).

    ``outcome`` holds what the report needs (a summary per set) once ``records()`` is
    exhausted; ``on_progress`` is called as the file is read (both passes)."""

    def __init__(self, path: Path, limits: X12Limits) -> None:
        self.path, self.limits = path, limits
        self.outcome = FileOutcome(origin=f"file:{path}")
        self.on_progress: Callable[[], None] | None = None
        self._source: X12Source | None = None
        self._not_counted = 0  # bytes read by the guide pass

    @property
    def bytes_read(self) -> int:
        """Bytes of the file read, both passes counted as one read of the file."""
        if self._source is None:
            return 0
        return (self._source.bytes_read - self._not_counted) // 2

    def ok(self) -> bool:
        return self.outcome.ok()

    def _read(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    def _check(self, source: X12Source, doc: X12Document) -> Iterator[TransactionSet]:
        """Pass 1: each set checked and summed up in ``outcome.sets``, then let go."""
        for tset in source.sets(doc, segments_max=self.limits.segments_max):
            self.outcome.sets.append(_process_set(tset, doc.terminator, [], self.limits,
                                                  keep=False).summary())
            tset.lines = []
            yield tset

    def records(self) -> Iterator[Record]:
        limits, outcome = self.limits, self.outcome
        received = datetime.now(UTC)
        source = self._source = X12Source(lambda: self.path.open("rb"), on_read=self._read)
        # Pass 1: check every set, keep a summary of each.
        doc = X12Document()
        envelopes = [(s.interchange, s.group) for s in self._check(source, doc)]
        outcome.problems.extend(doc.file_problems)
        outcome.warnings.extend(doc.file_warnings)
        if not doc.file_problems and not outcome.sets:
            outcome.problems.append(_NO_SETS)
        if outcome.problems:
            outcome.sets.clear()
            yield file_dlq(outcome.origin, outcome.problems,
                           source.head(limits.dlq_payload_bytes_max), outcome.warnings,
                           limits, received)
            return
        for s, (interchange, group) in zip(outcome.sets, envelopes, strict=True):
            _add_envelope_problems(s, interchange.problems + group.problems)
        before = source.bytes_read
        guide = _guide(source, self.path.stat().st_size, outcome.sets, limits,
                       outcome.warnings)
        self._not_counted = source.bytes_read - before
        for s in outcome.sets:
            s.warnings = s.warnings + guide.get(s.st02, [])[:WARNINGS_KEPT_MAX]
            s.warnings_total += len(guide.get(s.st02, []))
        # Pass 2: each set again, published as it is read.
        doc = X12Document()
        for n, tset in enumerate(source.sets(doc, segments_max=limits.segments_max)):
            if n >= len(outcome.sets):
                break  # the file grew since the check: what was not checked is not sent
            s = outcome.sets[n]
            if s.parked:
                full = SetOutcome(s.st01, s.st02, s.isa13, s.gs06, s.first_segment, s.trace,
                                  tset.raw(doc.terminator), problems=s.problems,
                                  warnings=s.warnings, problems_total=s.problems_total,
                                  warnings_total=s.warnings_total)
            else:
                full = _process_set(tset, doc.terminator, guide.get(tset.st02, []), limits,
                                    keep_events=False)
                # The report says what was published (the file may have changed since).
                outcome.sets[n] = full.summary()
            tset.lines = []
            yield from set_records(outcome.origin, full, outcome.warnings, limits, received)
            del full


def _add_envelope_problems(s: SetOutcome, envelope: list[Problem]) -> None:
    """Problems of a set's interchange or group found at its GE / IEA, after the set was
    read: first, as when the file is read whole (where its events were then not made, so
    no event problem either)."""
    later = [p for p in envelope if p not in s.problems]
    if not later:
        return
    own = [p for p in s.problems if p not in envelope]
    unmade = [p for p in own if p.code == "x12_invalid_event"]
    s.problems_total += len(later) - len(unmade)
    s.problems = (envelope + [p for p in own if p not in unmade])[:_PROBLEMS_KEPT_MAX]


def _process_set(tset: TransactionSet, terminator: str, guide: list[str],
                 limits: X12Limits, *, keep: bool = True,
                 keep_events: bool = True) -> SetOutcome:
    """Check and map one set; ``keep=False`` (a check pass): no text, events or totals kept;
    ``keep_events=False``: the events are made again as they are published."""
    out = SetOutcome(tset.st01, tset.st02, tset.isa13, tset.gs06,
                     tset.first_segment if tset.lines else 0, "",
                     tset.raw(terminator) if keep else "", problems=list(tset.problems),
                     warnings=tset.warnings + guide)
    _map_set(tset, out, limits, keep, keep and keep_events)
    out.problems_total = len(out.problems)
    out.warnings_total = len(out.warnings)
    del out.warnings[WARNINGS_KEPT_MAX:]
    return out


def _map_set(tset: TransactionSet, out: SetOutcome, limits: X12Limits, keep: bool,
             keep_events: bool) -> None:
    if tset.st01 == "835":
        remit = parse_835(tset)
        out.trace, out.claims, out.provider_adjustments = (remit.trn02, len(remit.claims),
                                                           len(remit.plbs))
        out.problems += remit.problems + balance_problems(remit)
        out.warnings += remit.warnings
        out.problems += [p for p in (account_problem(c.account, f"claim {c.number} CLP01")
                                     for c in remit.claims) if p]
        out.problems += [p for p in (account_problem(f"provider:{b.provider}", "PLB01")
                                     for b in remit.plbs) if p]
        out.problems += _date_problems(remit.paid_on, "835 payment date (BPR16, else DTM*405, "
                                       "else GS04)", limits.date_window)
        if not out.problems:
            _events(out, lambda: remit_events(remit, entity=limits.entity), keep_events)
            if not out.problems and keep:
                remit_totals(remit, out.totals)
    elif tset.st01 == "837":
        batch = parse_837(tset)
        out.trace, out.claims = batch.reference, len(batch.claims)
        out.problems += batch.problems
        out.warnings += batch.warnings
        out.warnings.append("837: no implementation-guide validation (pyx12 4.0.0 has no "
                            f"map for {tset.version or 'this version'})")
        out.problems += [p for p in (account_problem(c.account, f"claim {c.number} CLM01")
                                     for c in batch.claims) if p]
        out.problems += _date_problems(batch.created, "837 creation date (BHT04)",
                                       limits.date_window)
        if not out.problems:
            _events(out, lambda: claim_events(batch, entity=limits.entity), keep_events)
            if not out.problems and keep:
                batch_totals(batch, out.totals)
    else:
        out.problems.append(Problem(
            "x12_unsupported_set",
            f"ST01 {tset.st01[:6]!r} is not handled (835 remittances and 837 claims are)"))


def _date_problems(when: date | None, field: str, window: DateWindow) -> list[Problem]:
    text = window.problem(when, field) if when is not None else None
    return [Problem(DATE_OUT_OF_RANGE, text)] if text else []


def _events(out: SetOutcome, make: Callable[[], Iterable[X12Event]], keep: bool) -> None:
    """Make (so check) every event; keep them, or only their ids and a way to remake them."""
    ids: list[tuple[str, str]] = []
    try:
        for event in make():
            ids.append((event.account, event.event_id))
            if keep:
                out.events.append(event)
    except ValueError as exc:
        out.events.clear()
        out.problems.append(Problem("x12_invalid_event", str(exc)))
        return
    out.event_count = len(ids)
    out.totals.event_ids = ids
    if not keep:
        out.remake_events = make
