"""An X12 file -> what to publish: events of good sets, DLQ records of parked ones.

``X12File`` reads a file as a stream for `rcmflow ingest x12` and `watch`; ``process_x12``
answers the same for bytes held in memory (the same code, keeping the events and totals for
its callers). Per transaction set (by ST01):

* 835: structure (reader) -> remittance -> balancing -> ClaimAdjudicated / ProviderAdjustment;
* 837: structure (reader) -> claims -> CLM02 = Σ lines -> ClaimSubmitted.

A set with any problem is parked whole: one rcm.dlq record with every failing check and its
numbers, and none of its events. Every set, applied or parked, also gets records on
rcm.raw.x12 with its segments and its warnings (the implementation-guide messages); an
applied set's records also say what it states in money, read from its segments, and which
events it made (``source_totals``, connectors/inbound/totals.py), for `rcmflow reconcile`.

Bounds: a set can hold 100,000s of claims, so its raw record is cut into parts (parts.py)
as it is read, each under ``RAW_RECORD_BYTES_MAX`` whatever the set's size: part 0 is keyed
``<ISA13>:<GS06>:<ST02>``, part n ``<ISA13>:<GS06>:<ST02>:<n>``; each part says ``part`` and
``parts``, the set's status, a window of its segments (concatenated in part order they are
the set's text) and the source totals of the claims completed in that window (each claim's
amounts with its event id, whole in one part). Warnings are on part 0 (the first
``WARNINGS_KEPT_MAX``, and ``warnings_total``).

Memory is bounded by the work, not by the file or the set: ``X12File`` reads the file twice,
segment by segment. The check pass maps and checks each 835 claim as it completes, keeping
per set only what a check needs (running sums for BPR02 = Σ CLP04 - Σ PLB, counts, the first
problems and warnings, 8 bytes per claim to find repeated claim keys, the number of parts);
since a set with a problem is parked whole and an envelope problem found at GE or IEA parks
the sets before it, only then does the publish pass read the file again and publish each set
claim by claim (its raw parts as their windows fill, its events as they are made). 837 sets
are still checked whole (their claims and lines, not their text, are held per set).
"""

from __future__ import annotations

import io
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import orjson

from rcmflow.connectors.inbound.exceptions import X12ChangedError
from rcmflow.connectors.inbound.files import Record
from rcmflow.connectors.inbound.totals import SourceTotals
from rcmflow.runtime.settings import default_of
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, DateWindow
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.events import ClaimAdjudicated, ClaimSubmitted, ProviderAdjustment
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import DLQ, EVENTS, RAW_X12

from .claims import Batch837, claim_events, parse_837
from .guide import guide_warnings
from .parts import Kept, Part, PartWindow, id_bytes_bound, unit_cost
from .reader import ChunkReader, Problem, Segment, TransactionSet, X12Document, X12Source
from .remit import (
    NO_PAYMENT_DATE,
    Claim,
    Plb,
    RemitHeader,
    RemitReader,
    account_problem,
    claim_amounts,
    claim_event,
    claim_event_id,
    claim_key,
    claim_problem,
    claim_warnings,
    plb_event,
    plb_event_id,
    plb_key,
    transaction_problem,
)

__all__ = ["X12Limits", "SetOutcome", "FileOutcome", "X12File", "process_x12", "Record",
           "RAW_RECORD_BYTES_MAX",]

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
#: An event id is at most 200 characters: only a key this close to it can make a repeated
#: claim's id (``:<n>`` added) invalid where its first one is valid.
_ID_CHARS_MAX = 200 - 11
_PAID_ON = "835 payment date (BPR16, else DTM*405, else GS04)"


@dataclass(frozen=True)
class X12Limits:
    """The bounds of one X12 file; the defaults are the settings' (``files.limits_from``)."""

    segments_max: int = default_of("x12_segments_max")
    guide_validation: bool = default_of("x12_guide_validation")
    dlq_payload_bytes_max: int = default_of("dlq_payload_bytes_max")
    entity: str = "01"
    date_window: DateWindow = DateWindow()  # a set dated outside it is parked
    #: Files larger than this are not guide-validated (pyx12's time and memory).
    guide_bytes_max: int = default_of("x12_guide_bytes_max")


@dataclass
class SetOutcome:
    st01: str
    st02: str
    isa13: str
    gs06: str
    first_segment: int
    trace: str  # 835 TRN02 or 837 BHT03
    #: Kept by ``process_x12`` only (a stream publishes them as they are made).
    events: list[X12Event] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    claims: int = 0
    provider_adjustments: int = 0
    totals: SourceTotals = field(default_factory=SourceTotals)
    #: How many events / problems / warnings there were (the lists keep the first only).
    event_count: int = 0
    problems_total: int = 0
    warnings_total: int = 0
    # What the check pass leaves for the publish pass:
    header: RemitHeader | None = None  # an 835's, as read whole
    repeated_keys: frozenset[int] = frozenset()  # hashes of claim / PLB keys seen twice
    parts_applied: int = 1
    parts_parked: int = 1
    #: An 835 header segment came after claims were checked with the header before it.
    recheck: bool = False
    reader_warnings: list[str] = field(default_factory=list)
    reader_warnings_total: int = 0
    map_warnings: list[str] = field(default_factory=list)
    map_warnings_total: int = 0

    @property
    def parked(self) -> bool:
        return bool(self.problems)

    def reason(self) -> str:
        text = "; ".join(f"{p.reason_code}: {p.detail}" for p in self.problems)
        return text if len(text) <= _REASON_CHARS_MAX else text[:_REASON_CHARS_MAX] + " ..."

    def with_guide(self, guide: list[str]) -> None:
        """The set's warnings in the order an operator reads them: the reader's, the guide's
        and the mapping's (a parked set: the guide's after the first of the others)."""
        if self.parked:
            self.warnings = (self.reader_warnings + self.map_warnings)[:WARNINGS_KEPT_MAX] + (
                guide[:WARNINGS_KEPT_MAX])
        else:
            self.warnings = (self.reader_warnings + guide
                             + self.map_warnings)[:WARNINGS_KEPT_MAX]
        self.warnings_total = self.reader_warnings_total + len(guide) + self.map_warnings_total


@dataclass
class FileOutcome:
    origin: str  # "file:<path>"
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sets: list[SetOutcome] = field(default_factory=list)
    payload: bytes = b""
    #: ``process_x12``'s records, made as it read the bytes.
    kept_records: list[Record] = field(default_factory=list)

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
        lines = [f"{p.reason_code}: {p.detail}" for p in self.problems]
        for s in self.sets:
            status = "PARKED" if s.parked else f"applied ({s.event_count} events)"
            lines.append(f"ST {s.st02} ({s.st01}, trace {s.trace or '-'}): {status}")
            lines.extend(f"  {p.reason_code}: {p.detail}" for p in s.problems)
            if s.problems_total > len(s.problems):
                lines.append(f"  ... {s.problems_total - len(s.problems)} more problems")
        return "\n".join(lines) + "\n"

    def records(self, limits: X12Limits) -> Iterator[Record]:
        """``process_x12``'s records (``limits`` as it was given)."""
        del limits
        return iter(self.kept_records)


def file_dlq(origin: str, problems: list[Problem], payload: bytes, size: int,
             warnings: list[str], limits: X12Limits, received: datetime) -> Record:
    """The one DLQ record of a file refused whole (``payload``: the start of its ``size``
    bytes)."""
    return DLQ, None, _dlq(origin, 0, None, problems, len(problems), payload, size, limits,
                           received, {"warnings": warnings[:WARNINGS_KEPT_MAX]})


def _first(groups: Iterable[tuple[Iterable[Problem], int]]) -> tuple[list[Problem], int]:
    """Lists kept in part (the first of each, and how many each had), joined: the first
    ``_PROBLEMS_KEPT_MAX`` of the whole and its length."""
    kept: list[Problem] = []
    total = 0
    for problems, count in groups:
        for p in problems:
            if len(kept) >= _PROBLEMS_KEPT_MAX:
                break
            kept.append(p)
        total += count
    return kept, total


def _repeated(hashes: array[int]) -> frozenset[int]:
    ordered = sorted(hashes)
    return frozenset(a for a, b in zip(ordered, ordered[1:], strict=False) if a == b)


def _date_problems(when: date | None, field: str, window: DateWindow,
                   st02: str) -> list[Problem]:
    text = window.problem(when, field) if when is not None else None
    return [Problem(reason_code=DATE_OUT_OF_RANGE, detail=text,
                    place=f"ST {st02[:9]}")] if text else []


class _SetRun:
    """One transaction set fed its segments as they are read: checked (``plan`` None: the
    summary and what the publish pass needs, nothing published) or published as ``plan``
    says (its raw parts as their windows fill, its events as they are made, its DLQ record).

    An 835 is mapped claim by claim (``RemitReader``); other sets keep their lines and are
    mapped whole at their end (837s: their claims need the whole batch)."""

    def __init__(self, tset: TransactionSet, terminator: str, limits: X12Limits, *,
                 plan: SetOutcome | None = None, header: RemitHeader | None = None,
                 keep: bool = False, origin: str = "", file_warnings: list[str] | None = None,
                 received: datetime | None = None) -> None:
        self.tset, self.terminator, self.limits, self.plan = tset, terminator, limits, plan
        self.keep, self.origin = keep, origin
        self.file_warnings, self.received = file_warnings or [], received or datetime.now(UTC)
        self.out = SetOutcome(tset.st01, tset.st02, tset.isa13, tset.gs06, 0, "")
        self.parked = plan is not None and plan.parked
        self.lines = 0
        self.records: list[Record] = []
        text_max = min(_PART_SEGMENTS_BYTES, limits.dlq_payload_bytes_max)
        if plan is None:  # counted both ways: whether it parks is known at its end
            self.windows = [PartWindow(text_max, _PART_TOTALS_BYTES, dry=True),
                            PartWindow(text_max, None, dry=True)]
        else:
            self.windows = [PartWindow(text_max, None if self.parked else _PART_TOTALS_BYTES)]
        self.parts_made = 0
        self.payload = bytearray()  # a parked set's DLQ payload: the start of its text
        self.payload_of = 0  # the bytes of a parked set's whole text
        self.streamed = tset.st01 == "835" and not self.parked
        self.whole = not self.streamed and not self.parked
        # 835, read claim by claim
        self.reader = RemitReader(tset.st02, tset.group_date)
        self.header = plan.header if plan is not None else header
        self.used_header: RemitHeader | None = header
        self.header_moved = False
        self.parse_problems, self.unbalanced = Kept[Problem](100), Kept[Problem](100)
        self.accounts, self.plb_accounts = Kept[Problem](100), Kept[Problem](100)
        self.parse_warnings, self.claim_warnings = Kept[str](50), Kept[str](50)
        self.paid = self.plb_cents = 0
        self.hashes: array[int] = array("q")
        self.long_keys: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self.invalid_claim: Problem | None = None
        self.invalid_plb: Problem | None = None

    # -- as it is read ----------------------------------------------------------------------

    def line(self, line: str) -> list[Record]:
        """One segment as written (``TransactionSet.lines``); the records it completed."""
        tset = self.tset
        if not self.lines:
            self.out.first_segment = tset.first_segment
        number = tset.first_segment + self.lines
        self.lines += 1
        if self.streamed:
            seg = Segment(number, tuple(line.split(tset.element_sep)), tset.component_sep)
            for item in self.reader.feed(seg):
                self._item(item)
            self._drain()
        elif self.whole:
            tset.lines.append(line)
        piece = line + self.terminator + "\n"
        if self.parked:
            text = piece.encode()
            self.payload_of += len(text)
            if len(self.payload) <= self.limits.dlq_payload_bytes_max:
                self.payload += text
        for window in self.windows:
            self._parts(window.add_text(piece))
        return self._take()

    def _take(self) -> list[Record]:
        records, self.records = self.records, []
        return records

    def _drain(self) -> None:
        remit = self.reader.remit
        for p in remit.problems:
            self.parse_problems.add(p)
        for w in remit.warnings:
            self.parse_warnings.add(w)
        remit.problems.clear()
        remit.warnings.clear()

    def _item(self, item: Claim | Plb) -> None:
        header = self.header or self.reader.header()
        if isinstance(item, Claim):
            key, account = claim_key(item), item.account
            amounts = claim_amounts(item)
        else:
            key, account = plb_key(item), f"provider:{item.provider}"
            amounts = [("provider_adjustments", item.amount_cents)]
        cost = unit_cost(account, id_bytes_bound(f"{header.base_id}:{key}"), amounts)
        if self.plan is None:
            self._check(item, key, account, header)
            self._parts(self.windows[0].add_unit(account, "", date.min, amounts, cost))
            return
        occurrence = 1
        if hash(key) in self.plan.repeated_keys:
            self.seen[key] += 1
            occurrence = self.seen[key]
        assert header.paid_on is not None
        try:
            if isinstance(item, Claim):
                event: X12Event = claim_event(item, header, claim_event_id(
                    header, key, occurrence), self.limits.entity)
            else:
                event = plb_event(item, header, plb_event_id(header, key, occurrence),
                                  self.limits.entity)
        except ValueError as exc:
            raise X12ChangedError(_changed(self.tset, exc)) from None
        self._parts(self.windows[0].add_unit(account, event.event_id, header.paid_on, amounts,
                                             cost))
        self._event(event, amounts)

    def _event(self, event: X12Event, amounts: list[tuple[str, int]]) -> None:
        self.records.append((EVENTS, event.account.encode(), event.model_dump_json().encode()))
        if self.keep:
            self.out.events.append(event)
            self.out.totals.event_ids.append((event.account, event.event_id))
            day = event.occurred_at.date()
            for measure, cents in amounts:
                self.out.totals.add(event.account, day, measure, cents, event.event_id)

    def _check(self, item: Claim | Plb, key: str, account: str, header: RemitHeader) -> None:
        self.hashes.append(hash(key))
        if self.used_header is None:
            self.used_header = header
        elif header != self.used_header:
            self.header_moved = True
        if isinstance(item, Claim):
            if (problem := claim_problem(item)) is not None:
                self.unbalanced.add(problem)
            for warning in claim_warnings(item):
                self.claim_warnings.add(warning)
            if (problem := account_problem(account, f"claim {item.number} CLP01")) is not None:
                self.accounts.add(problem)
            self.paid += item.paid_cents
        else:
            if (problem := account_problem(account, "PLB01")) is not None:
                self.plb_accounts.add(problem)
            self.plb_cents += item.amount_cents
        if header.paid_on is None:
            return  # the set's problem is its missing date (at its end)
        try:
            if isinstance(item, Claim) and self.invalid_claim is None:
                occurrence = 1
                if len(f"{header.base_id}:{key}") > _ID_CHARS_MAX:
                    self.long_keys[key] += 1
                    occurrence = self.long_keys[key]
                claim_event(item, header, claim_event_id(header, key, occurrence),
                            self.limits.entity)
            elif isinstance(item, Plb) and self.invalid_plb is None:
                plb_event(item, header, plb_event_id(header, key, 1), self.limits.entity)
        except ValueError as exc:
            if isinstance(item, Claim):
                self.invalid_claim = Problem(
                    reason_code="x12_invalid_event", detail=str(exc),
                    place=f"claim {item.number} (CLP01 {item.account})")
            else:
                self.invalid_plb = Problem(reason_code="x12_invalid_event", detail=str(exc),
                                           place="PLB")

    def _parts(self, parts: list[Part]) -> None:
        if self.plan is None:
            return
        for part in parts:
            self.records.append(self._part_record(part))

    def _part_record(self, part: Part) -> Record:
        plan, n = self.plan, self.parts_made
        assert plan is not None
        self.parts_made += 1
        base = f"{plan.isa13}:{plan.gs06}:{plan.st02}"
        doc: dict[str, Any] = {
            "origin": self.origin, "st01": plan.st01, "st02": plan.st02, "isa13": plan.isa13,
            "gs06": plan.gs06, "trace": plan.trace,
            "status": "parked" if self.parked else "applied",
            "events": 0 if self.parked else plan.event_count, "part": n,
            "parts": plan.parts_parked if self.parked else plan.parts_applied}
        if not self.parked:
            doc["source_totals"] = (part.totals or SourceTotals()).to_json()
        if n == 0:
            doc["warnings"] = self._warnings()
            doc["warnings_total"] = len(self.file_warnings) + max(plan.warnings_total,
                                                                  len(plan.warnings))
        doc["segments"] = part.text
        doc["segments_truncated"] = False
        # orjson's buffer for a large document is ~10x its length (4 MB for a 370 KB part):
        # copied, the record held until the broker acknowledges it is only its length.
        value = bytes(memoryview(orjson.dumps(doc)))
        return RAW_X12, (base if n == 0 else f"{base}:{n}").encode(), value

    def _warnings(self) -> list[str]:
        assert self.plan is not None
        return [w[:_WARNING_CHARS_MAX]
                for w in (self.file_warnings + self.plan.warnings)[:WARNINGS_KEPT_MAX]]

    # -- at its end -------------------------------------------------------------------------

    def end(self) -> list[Record]:
        """The set is complete: the check's summary in ``out``, or its last records."""
        if self.streamed:
            for item in self.reader.finish():
                self._item(item)
            self._drain()
        if self.plan is None:
            self._checked()
            return []
        if self.whole:
            self._publish_whole()
        for window in self.windows:
            self._parts(window.end())
        plan = self.plan
        if self.parked:
            self.records.append((DLQ, f"{plan.isa13}:{plan.gs06}:{plan.st02}".encode(), _dlq(
                self.origin, plan.first_segment, plan.st02, plan.problems,
                max(plan.problems_total, len(plan.problems)), bytes(self.payload),
                self.payload_of, self.limits,
                self.received, {
                    "transaction_set": plan.st02, "st01": plan.st01, "isa13": plan.isa13,
                    "gs06": plan.gs06, "trace": plan.trace, "warnings": self._warnings(),
                    "warnings_total": max(plan.warnings_total, len(plan.warnings))})))
        return self._take()

    def _checked(self) -> None:
        out, tset = self.out, self.tset
        envelope = (tset.problems, tset.problems_total)
        if self.streamed:
            header = self.reader.header()
            if self.used_header is not None and self.used_header != header:
                self.header_moved = True
            remit = self.reader.remit
            balance = transaction_problem(remit.bpr02_cents, self.paid, self.plb_cents,
                                          st02=tset.st02)
            dates = _date_problems(header.paid_on, _PAID_ON, self.limits.date_window,
                                   tset.st02)
            out.problems, out.problems_total = _first([
                envelope, (self.parse_problems.items, self.parse_problems.total),
                (self.unbalanced.items, self.unbalanced.total),
                ([balance] if balance else [], 1 if balance else 0),
                (self.accounts.items, self.accounts.total),
                (self.plb_accounts.items, self.plb_accounts.total), (dates, len(dates))])
            if not out.problems_total:
                made = (Problem(reason_code="x12_invalid_event", detail=NO_PAYMENT_DATE,
                                place=f"ST {tset.st02[:9]}")
                        if header.paid_on is None else self.invalid_claim or self.invalid_plb)
                if made is not None:
                    out.problems, out.problems_total = [made], 1
            out.trace, out.claims = remit.trn02, self.reader.claims
            out.provider_adjustments = self.reader.plbs
            out.event_count = 0 if out.problems else self.reader.claims + self.reader.plbs
            out.header, out.recheck = header, self.header_moved
            out.repeated_keys = _repeated(self.hashes)
            warnings = self.parse_warnings.items + self.claim_warnings.items
            out.map_warnings = warnings[:WARNINGS_KEPT_MAX]
            out.map_warnings_total = self.parse_warnings.total + self.claim_warnings.total
        else:
            self._check_whole(envelope)
        out.reader_warnings = list(tset.warnings)
        out.reader_warnings_total = max(tset.warnings_total, len(tset.warnings))
        out.warnings = (out.reader_warnings + out.map_warnings)[:WARNINGS_KEPT_MAX]
        out.warnings_total = out.reader_warnings_total + out.map_warnings_total
        for window in self.windows:
            window.end()
        out.parts_applied, out.parts_parked = (w.closed for w in self.windows)

    # -- sets mapped whole (837, others) ------------------------------------------------------

    def _check_whole(self, envelope: tuple[list[Problem], int]) -> None:
        out, tset = self.out, self.tset
        problems: list[Problem] = []
        warnings: list[str] = []
        batch: Batch837 | None = None
        if tset.st01 == "837":
            batch = parse_837(tset)
            out.trace, out.claims = batch.reference, len(batch.claims)
            problems += batch.problems
            warnings += batch.warnings
            warnings.append("837: no implementation-guide validation (pyx12 4.0.0 has no "
                            f"map for {tset.version or 'this version'})")
            problems += [p for p in (account_problem(c.account, f"claim {c.number} CLM01")
                                     for c in batch.claims) if p]
            problems += _date_problems(batch.created, "837 creation date (BHT04)",
                                       self.limits.date_window, tset.st02)
        else:
            problems.append(Problem(
                reason_code="x12_unsupported_set", place=f"ST {tset.st02[:9]}",
                detail=f"ST01 {tset.st01[:6]!r} is not handled (835 remittances and 837 claims "
                "are)"))
        out.problems, out.problems_total = _first([envelope, (problems, len(problems))])
        if batch is not None and not out.problems_total:
            try:
                for event, amounts in _batch_events(batch, self.limits):
                    out.event_count += 1
                    self._whole_unit(event, amounts)
            except ValueError as exc:
                out.problems = [Problem(reason_code="x12_invalid_event", detail=str(exc),
                                        place=f"ST {tset.st02[:9]}")]
                out.problems_total = 1
                out.event_count = 0
        out.map_warnings = warnings[:WARNINGS_KEPT_MAX]
        out.map_warnings_total = len(warnings)
        tset.lines = []

    def _whole_unit(self, event: ClaimSubmitted, amounts: list[tuple[str, int]]) -> None:
        cost = unit_cost(event.account, id_bytes_bound(event.event_id), amounts)
        self._parts(self.windows[0].add_unit(event.account, event.event_id,
                                             event.occurred_at.date(), amounts, cost))

    def _publish_whole(self) -> None:
        if self.tset.st01 != "837":
            return
        batch = parse_837(self.tset)
        self.tset.lines = []
        try:
            for event, amounts in _batch_events(batch, self.limits):
                self._whole_unit(event, amounts)
                self._event(event, amounts)
        except (ValueError, AssertionError) as exc:
            raise X12ChangedError(_changed(self.tset, exc)) from None


def _changed(tset: TransactionSet, exc: Exception) -> str:
    return (f"ST {tset.st02[:9]} changed since it was checked (the file changed while it was "
            f"being ingested): {exc}")


def _batch_events(batch: Batch837,
                  limits: X12Limits) -> Iterator[tuple[ClaimSubmitted, list[tuple[str, int]]]]:
    """An 837's events, each with what its claim states (CLM02, billed)."""
    for event in claim_events(batch, entity=limits.entity):
        yield event, [("billed", event.total_charge_cents)]


def _rejection(origin: str, st02: str | None, problems: list[Problem]) -> Rejection:
    """A parked set (or a file refused whole) as the core's rejection: the first
    ``_PROBLEMS_KEPT_MAX`` problems with their places, each detail cut to
    ``_REASON_CHARS_MAX``; the first one's code; stage "validate" when money fails to add up."""
    kept = tuple(p if len(p.detail) <= _REASON_CHARS_MAX
                 else p.model_copy(update={"detail": p.detail[:_REASON_CHARS_MAX]})
                 for p in problems[:_PROBLEMS_KEPT_MAX])
    where = f"ST {st02}" if st02 is not None else "file"
    return Rejection(
        stage="validate" if kept[0].reason_code in _MONEY_CODES else "decode",
        reason_code=kept[0].reason_code,
        detail=(f"{origin.removeprefix('file:')} {where}: "
                + "; ".join(p.detail for p in kept))[:_REASON_CHARS_MAX],
        problems=kept)


def _dlq(origin: str, offset: int, st02: str | None, problems: list[Problem], total: int,
         payload: bytes, size: int, limits: X12Limits, received: datetime,
         context: dict[str, Any]) -> bytes:
    """The DLQ record of a parked set or a refused file: ``problems`` kept in part (``total``
    says how many there were), ``payload`` the start of an input of ``size`` bytes."""
    record = dlq_record(
        _rejection(origin, st02, problems),
        origin=Origin(topic=origin, partition=0, offset=offset, key=st02),
        payload=payload, received_at=received,
        context={**context, "problems_total": total},
        discriminator=st02 or "", payload_bytes_max=limits.dlq_payload_bytes_max,
        input_bytes=size)
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


class _X12Stream:
    """One X12 file read, checked and published as a stream (see the module's docstring).

    ``outcome`` holds what the report needs (a summary per set) once ``records()`` is
    exhausted; ``on_progress`` is called as the file is read (every pass)."""

    def __init__(self, open_bytes: Callable[[], BinaryIO], size: int, origin: str,
                 limits: X12Limits, *, keep: bool = False) -> None:
        self._open, self.size, self.limits, self.keep = open_bytes, size, limits, keep
        self.outcome = FileOutcome(origin=origin)
        self.on_progress: Callable[[], None] | None = None
        self._source: X12Source | None = None
        self._not_counted = 0  # bytes read by the guide pass and a recheck

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

    def _check(self, source: X12Source, doc: X12Document,
               headers: list[RemitHeader | None] | None) -> list[TransactionSet]:
        """Pass 1: each set checked, its summary in ``outcome.sets``; the sets (no lines)."""
        self.outcome.sets = []
        tsets: list[TransactionSet] = []
        run: _SetRun | None = None
        for tset, line in source.stream(doc, segments_max=self.limits.segments_max):
            if run is None or run.tset is not tset:
                n = len(tsets)
                run = _SetRun(tset, doc.terminator, self.limits,
                              header=headers[n] if headers and n < len(headers) else None)
                tsets.append(tset)
            if line is None:
                run.end()
                self.outcome.sets.append(run.out)
                run = None
            else:
                run.line(line)
        return tsets

    def records(self) -> Iterator[Record]:
        limits, outcome = self.limits, self.outcome
        received = datetime.now(UTC)
        source = self._source = X12Source(self._open, on_read=self._read)
        # Pass 1: check every set, keep a summary of each.
        doc = X12Document()
        tsets = self._check(source, doc, None)
        if not doc.file_problems and any(s.recheck for s in outcome.sets):
            # An 835 header segment after its claims (out of the guide's order): the claims
            # are checked again with the header as read whole.
            before = source.bytes_read
            headers = [s.header for s in outcome.sets]
            doc = X12Document()
            tsets = self._check(source, doc, headers)
            self._not_counted += source.bytes_read - before
        outcome.problems.extend(doc.file_problems)
        outcome.warnings.extend(doc.file_warnings)
        if not doc.file_problems and not outcome.sets:
            outcome.problems.append(_NO_SETS)
        if outcome.problems:
            outcome.sets.clear()
            yield file_dlq(outcome.origin, outcome.problems,
                           source.head(limits.dlq_payload_bytes_max), self.size,
                           outcome.warnings, limits, received)
            return
        for s, tset in zip(outcome.sets, tsets, strict=True):
            _add_envelope_problems(s, tset.interchange.problems + tset.group.problems)
        before = source.bytes_read
        guide = _guide(source, self.size, outcome.sets, limits, outcome.warnings)
        self._not_counted += source.bytes_read - before
        for s in outcome.sets:
            s.with_guide(guide.get(s.st02, []))
        # Pass 2: each set again, published as it is read.
        doc = X12Document()
        run: _SetRun | None = None
        n = -1
        for tset, line in source.stream(doc, segments_max=limits.segments_max):
            if run is None or run.tset is not tset:
                n += 1
                if n >= len(outcome.sets):
                    break  # the file grew since the check: what was not checked is not sent
                run = _SetRun(tset, doc.terminator, limits, plan=outcome.sets[n], keep=self.keep,
                              origin=outcome.origin, file_warnings=outcome.warnings,
                              received=received)
            if line is None:
                yield from run.end()
                if self.keep:
                    outcome.sets[n].events = run.out.events
                    outcome.sets[n].totals = run.out.totals
                run = None
            else:
                yield from run.line(line)


class X12File(_X12Stream):
    """One X12 file read, checked and published as a stream (a ``FileIngest``)."""

    def __init__(self, path: Path, limits: X12Limits) -> None:
        super().__init__(lambda: path.open("rb"), path.stat().st_size, f"file:{path}", limits)
        self.path = path


def process_x12(data: bytes, *, origin: str, limits: X12Limits) -> FileOutcome:
    """Read, check and map one X12 file held in memory; never raises on bad input. Its
    records (``outcome.records``) are those ``X12File`` publishes for the same bytes; each
    applied set keeps its events and source totals."""
    x12 = _X12Stream(lambda: io.BytesIO(data), len(data), origin, limits, keep=True)
    records = list(x12.records())
    x12.outcome.kept_records = records
    x12.outcome.payload = data
    return x12.outcome


_NO_SETS = Problem(reason_code="x12_no_transaction_sets",
                   detail="the interchange holds no ST..SE transaction set")


def _add_envelope_problems(s: SetOutcome, envelope: list[Problem]) -> None:
    """Problems of a set's interchange or group found at its GE / IEA, after the set was
    read: first, as when the file is read whole (where its events were then not made, so
    no event problem either)."""
    later = [p for p in envelope if p not in s.problems]
    if not later:
        return
    own = [p for p in s.problems if p not in envelope]
    unmade = [p for p in own if p.reason_code == "x12_invalid_event"]
    s.problems_total += len(later) - len(unmade)
    s.problems = (envelope + [p for p in own if p not in unmade])[:_PROBLEMS_KEPT_MAX]


