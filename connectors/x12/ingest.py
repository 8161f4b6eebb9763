"""An X12 file -> what to publish: events of good sets, DLQ records of parked ones.

``process_x12`` is pure (bytes in, records out) so every sample is tested without a broker;
``ingest_x12_files`` publishes with acks=all. Per transaction set (by ST01):

* 835: structure (reader) -> remittance -> balancing -> ClaimAdjudicated / ProviderAdjustment;
* 837: structure (reader) -> claims -> CLM02 = Σ lines -> ClaimSubmitted.

A set with any problem is parked whole: one rcm.dlq record with every failing check and its
numbers, and none of its events. Every set, applied or parked, also gets a record on
rcm.raw.x12 with its segments and its warnings (the implementation-guide messages); an
applied set's record also says what it states in money, read from its segments, and which
events it made (``source_totals``, connectors/totals.py), for `rcmflow reconcile`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeAlias

import orjson

from rcmflow.connectors.files import Record
from rcmflow.connectors.totals import SourceTotals
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, DateWindow
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.events import ClaimAdjudicated, ClaimSubmitted, ProviderAdjustment
from rcmflow.streams.topics import DLQ, EVENTS, RAW_X12

from .claims import batch_totals, claim_events, parse_837
from .guide import guide_warnings
from .reader import Problem, TransactionSet, read_x12
from .remit import account_problem, balance_problems, parse_835, remit_events, remit_totals

__all__ = ["X12Limits", "SetOutcome", "FileOutcome", "process_x12", "Record"]

X12Event: TypeAlias = ClaimAdjudicated | ProviderAdjustment | ClaimSubmitted
#: Problems whose failing identity is money rather than structure (DLQ stage "validate").
_MONEY_CODES = {"x12_claim_unbalanced", "x12_transaction_unbalanced", "x12_claim_total"}
_REASON_CHARS_MAX = 4000
#: Problems listed per DLQ record / console report (a set can fail once per claim).
_PROBLEMS_KEPT_MAX = 100


@dataclass(frozen=True)
class X12Limits:
    segments_max: int = 1_000_000
    guide_validation: bool = True
    dlq_payload_bytes_max: int = 512 * 1024
    entity: str = "01"
    date_window: DateWindow = DateWindow()  # a set dated outside it is parked


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

    @property
    def parked(self) -> bool:
        return bool(self.problems)

    def reason(self) -> str:
        text = "; ".join(f"{p.code}: {p.detail}" for p in self.problems)
        return text if len(text) <= _REASON_CHARS_MAX else text[:_REASON_CHARS_MAX] + " ..."


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

    def ok(self) -> bool:
        return not self.problems and not self.parked

    def reason_text(self) -> str:
        """What an operator reads in ``<file>.reason``: every failure with its numbers."""
        lines = [f"{p.code}: {p.detail}" for p in self.problems]
        for s in self.sets:
            status = "PARKED" if s.parked else f"applied ({len(s.events)} events)"
            lines.append(f"ST {s.st02} ({s.st01}, trace {s.trace or '-'}): {status}")
            lines.extend(f"  {p.code}: {p.detail}" for p in s.problems)
        return "\n".join(lines) + "\n"

    def records(self, limits: X12Limits) -> Iterator[Record]:
        received = datetime.now(UTC)
        if self.problems:
            yield DLQ, None, _dlq(self.origin, 0, None, self.problems, self.payload, limits,
                                  received, {"warnings": self.warnings})
            return
        for s in self.sets:
            key = f"{s.isa13}:{s.gs06}:{s.st02}".encode()
            yield RAW_X12, key, orjson.dumps({
                "origin": self.origin, "st01": s.st01, "st02": s.st02, "isa13": s.isa13,
                "gs06": s.gs06, "trace": s.trace, "status": "parked" if s.parked else "applied",
                "events": 0 if s.parked else len(s.events),
                **({} if s.parked else {"source_totals": s.totals.to_json()}),
                "warnings": self.warnings + s.warnings,
                # Bounded like a DLQ payload: one record must stay under the broker's limit.
                "segments": s.raw[:limits.dlq_payload_bytes_max],
                "segments_truncated": len(s.raw) > limits.dlq_payload_bytes_max})
            if s.parked:
                yield DLQ, key, _dlq(self.origin, s.first_segment, s.st02, s.problems,
                                     s.raw.encode(), limits, received, {
                                         "transaction_set": s.st02, "st01": s.st01,
                                         "isa13": s.isa13, "gs06": s.gs06, "trace": s.trace,
                                         "warnings": s.warnings})
                continue
            for event in s.events:
                yield EVENTS, event.account.encode(), event.model_dump_json().encode()


def _dlq(origin: str, offset: int, st02: str | None, problems: list[Problem], payload: bytes,
         limits: X12Limits, received: datetime, context: dict[str, Any]) -> bytes:
    cut = len(payload) > limits.dlq_payload_bytes_max
    where = f"ST {st02}" if st02 is not None else "file"
    record = dlq_record(
        stage="validate" if problems[0].code in _MONEY_CODES else "decode",
        reason_code=problems[0].code,
        reason=f"{origin.removeprefix('file:')} {where}: "
        + "; ".join(p.detail for p in problems)[:_REASON_CHARS_MAX],
        origin=Origin(topic=origin, partition=0, offset=offset, key=st02),
        payload=payload[:limits.dlq_payload_bytes_max],
        received_at=received,
        context={**context, "problems_total": len(problems),
                 "problems": [{"code": p.code, "detail": p.detail}
                              for p in problems[:_PROBLEMS_KEPT_MAX]],
                 "payload_truncated": cut},
        discriminator=st02 or "",
    )
    return record.model_dump_json().encode()


def process_x12(data: bytes, *, origin: str, limits: X12Limits) -> FileOutcome:
    """Read, check and map one X12 file; never raises on bad input."""
    outcome = FileOutcome(origin=origin, payload=data)
    doc = read_x12(data, segments_max=limits.segments_max)
    outcome.problems.extend(doc.file_problems)
    outcome.warnings.extend(doc.file_warnings)
    if doc.file_problems:
        return outcome
    if not doc.sets:
        outcome.problems.append(Problem("x12_no_transaction_sets",
                                        "the interchange holds no ST..SE transaction set"))
        return outcome
    guide: dict[str, list[str]] = {}
    if limits.guide_validation and any(s.st01 == "835" for s in doc.sets):
        guide, note = guide_warnings(doc.text)
        if note:
            outcome.warnings.append(note)
    for tset in doc.sets:
        outcome.sets.append(_process_set(tset, doc.terminator, guide.get(tset.st02, []),
                                         limits))
    return outcome


def _process_set(tset: TransactionSet, terminator: str, guide: list[str],
                 limits: X12Limits) -> SetOutcome:
    out = SetOutcome(tset.st01, tset.st02, tset.isa13, tset.gs06,
                     tset.segments[0].number if tset.segments else 0, "",
                     tset.raw(terminator), problems=list(tset.problems),
                     warnings=tset.warnings + guide)
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
            _events(out, lambda: remit_events(remit, entity=limits.entity))
            if not out.problems:
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
            _events(out, lambda: claim_events(batch, entity=limits.entity))
            if not out.problems:
                batch_totals(batch, out.totals)
    else:
        out.problems.append(Problem(
            "x12_unsupported_set",
            f"ST01 {tset.st01[:6]!r} is not handled (835 remittances and 837 claims are)"))
    return out


def _date_problems(when: date | None, field: str, window: DateWindow) -> list[Problem]:
    text = window.problem(when, field) if when is not None else None
    return [Problem(DATE_OUT_OF_RANGE, text)] if text else []


def _events(out: SetOutcome, build: Any) -> None:
    try:
        out.events = list(build())
    except ValueError as exc:
        out.problems.append(Problem("x12_invalid_event", str(exc)))
        return
    out.totals.event_ids = [(e.account, e.event_id) for e in out.events]
