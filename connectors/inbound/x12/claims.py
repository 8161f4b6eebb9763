"""837P / 837I transaction set -> claim-submitted events.

pyx12 4.0.0 ships no maps for the current 837 guides (005010X222A2, 005010X223A3), so the
segments come from pyx12's reader with no guide validation; the envelope is checked by the
reader and the claim totals here: ``CLM02 = Σ SV102`` (837P) or ``Σ SV203`` (837I), in cents.
A claim that does not add up parks its set. ``batch_totals`` reads each claim's CLM02 for
`rcmflow reconcile` (measure ``billed``; a submitted claim posts nothing to the ledger).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal

from pydantic import ValidationError

from rcmflow.connectors.inbound.totals import SourceTotals
from rcmflow.streams.events import ClaimSubmitted, Dimensions, EventKind, ServiceLine
from rcmflow.streams.exceptions import MoneyError
from rcmflow.streams.money import cents_text as format_cents
from rcmflow.streams.money import parse_cents, parse_decimal

from .codes import payer_class_for
from .reader import Problem, Segment, TransactionSet, at_segment
from .remit import first_error

__all__ = ["SubmittedClaim", "Batch837", "parse_837", "claim_events", "batch_totals",
           "SOURCE_837"]

SOURCE_837 = "x12-837"


@dataclass(slots=True)
class SubmittedLine:
    line_id: str
    charge_cents: int
    units: int
    procedure_code: str | None
    revenue_code: str | None


@dataclass(slots=True)
class SubmittedClaim:
    number: int
    account: str
    total_cents: int
    payer: str | None
    filing_code: str
    lines: list[SubmittedLine] = field(default_factory=list)


@dataclass
class Batch837:
    st02: str
    reference: str = ""  # BHT03: the submitter's batch reference
    created: datetime | None = None
    claims: list[SubmittedClaim] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_837(tset: TransactionSet) -> Batch837:
    batch = Batch837(st02=tset.st02)
    payer: str | None = None
    filing = ""
    claim: SubmittedClaim | None = None
    line_id = ""
    for seg in tset.segments:
        sid = seg.id
        if sid == "BHT":
            batch.reference = seg.el(3)
            batch.created = _created(seg.el(4), seg.el(5))
        elif sid == "HL" and seg.el(3) == "22":  # a subscriber: payer and filing code follow
            payer, filing, claim = None, "", None
        elif sid == "SBR":
            filing = seg.el(9)
        elif sid == "NM1" and seg.el(1) == "PR" and claim is None:
            payer = (seg.el(9) or seg.el(3))[:40] or None
        elif sid == "CLM":
            claim = _clm(seg, len(batch.claims) + 1, payer, filing, batch)
            if claim is not None:
                batch.claims.append(claim)
        elif sid == "LX":
            line_id = seg.el(1)
        elif sid in ("SV1", "SV2") and claim is not None:
            line = _service_line(seg, line_id or str(len(claim.lines) + 1), batch)
            if line is not None:
                claim.lines.append(line)
    if batch.created is None:
        batch.problems.append(Problem(reason_code="x12_unreadable_segment",
                                      place=f"ST {tset.st02[:9]}",
                                      detail="BHT04 is not a creation date (CCYYMMDD)"))
    for claim in batch.claims:
        billed = sum(line.charge_cents for line in claim.lines)
        if claim.lines and billed != claim.total_cents:
            where = f"claim {claim.number} (CLM01 {claim.account})"
            batch.problems.append(Problem(
                reason_code="x12_claim_total", place=where,
                detail=f"{where}: CLM02 "
                f"{format_cents(claim.total_cents)} != sum of service line charges "
                f"{format_cents(billed)}"))
    return batch


def _created(day: str, hhmm: str) -> datetime | None:
    try:
        when = date(int(day[:4]), int(day[4:6]), int(day[6:8])) if len(day) == 8 else None
    except ValueError:
        return None
    if when is None:
        return None
    clock = time(int(hhmm[:2]), int(hhmm[2:4])) if (
        len(hhmm) >= 4 and hhmm[:4].isdigit() and int(hhmm[:2]) < 24 and int(hhmm[2:4]) < 60
    ) else time()
    return datetime.combine(when, clock, UTC)


def _money(seg: Segment, position: int, batch: Batch837) -> int | None:
    try:
        return parse_cents(seg.el(position))
    except MoneyError as exc:
        batch.problems.append(at_segment(
            seg, "x12_unreadable_segment", f"{seg.id}{position:02d} (segment {seg.number}): {exc}"))
        return None


def _clm(seg: Segment, number: int, payer: str | None, filing: str,
         batch: Batch837) -> SubmittedClaim | None:
    total = _money(seg, 2, batch)
    if not seg.el(1):
        batch.problems.append(at_segment(seg, "x12_unreadable_segment",
                                         f"CLM01 is missing (segment {seg.number})"))
        return None
    return None if total is None else SubmittedClaim(number, seg.el(1), total, payer, filing)


def _service_line(seg: Segment, line_id: str, batch: Batch837) -> SubmittedLine | None:
    if seg.id == "SV1":  # professional: SV101 composite, SV102 charge, SV104 units
        charge_at, units_at = 2, 4
        procedure, revenue = seg.el(1, 2) or None, None
    else:  # institutional: SV201 revenue code, SV202 composite, SV203 charge, SV205 units
        charge_at, units_at = 3, 5
        procedure, revenue = seg.el(2, 2) or None, seg.el(1) or None
    charge = _money(seg, charge_at, batch)
    if charge is None:
        return None
    return SubmittedLine(line_id[:40], charge, _units(seg.el(units_at), seg, batch),
                         procedure[:40] if procedure else None,
                         revenue[:40] if revenue else None)


def _units(text: str, seg: Segment, batch: Batch837) -> int:
    """Whole units as billed; the event model counts whole units, so others become 1."""
    try:
        units: Decimal | None = parse_decimal(text or "1")
    except MoneyError:  # NaN, an exponent, junk: counted as 1 (NaN >= 1 would raise)
        units = None
    if units is not None and units >= 1 and units == units.to_integral_value():
        return int(units)
    batch.warnings.append(f"{seg.id} (segment {seg.number}): units {text!r} counted as 1")
    return 1


def _claim_event_ids(batch: Batch837) -> list[str]:
    """The event id of each claim, in order: its event and its CLM02 amount (batch_totals)
    carry the same one. The same CLM01 twice in a batch is told apart by its occurrence."""
    seen: Counter[str] = Counter()
    ids: list[str] = []
    for claim in batch.claims:
        key = f"{SOURCE_837}:{batch.reference}:{claim.account}"
        seen[key] += 1
        ids.append(key if seen[key] == 1 else f"{key}:{seen[key]}")
    return ids


def claim_events(batch: Batch837, *, entity: str) -> Iterator[ClaimSubmitted]:
    """The claim-submitted events of a checked batch, made one at a time (a batch can hold
    100,000s); raises ``ValueError`` naming the claim."""
    assert batch.created is not None
    for claim, event_id in zip(batch.claims, _claim_event_ids(batch), strict=True):
        try:
            yield ClaimSubmitted(
                kind=EventKind.CLAIM_SUBMITTED,
                event_id=event_id,
                account=claim.account,
                occurred_at=batch.created,
                source=SOURCE_837,
                correlation_id=batch.reference or None,
                dimensions=Dimensions(entity=entity, payer=claim.payer,
                                      payer_class=payer_class_for(claim.filing_code),
                                      claim_id=claim.account[:40]),
                claim_id=claim.account[:40],
                total_charge_cents=claim.total_cents,
                lines=tuple(ServiceLine(line_id=ln.line_id, charge_cents=ln.charge_cents,
                                        units=ln.units, procedure_code=ln.procedure_code,
                                        revenue_code=ln.revenue_code) for ln in claim.lines),
            )
        except ValidationError as exc:
            raise ValueError(f"claim {claim.number} (CLM01 {claim.account}): "
                             f"{first_error(exc)}") from None


def batch_totals(batch: Batch837, totals: SourceTotals) -> None:
    """Add each claim's CLM02 on the batch's BHT04 day (the day its event carries),
    attributed to the claim's event."""
    assert batch.created is not None
    for claim, event_id in zip(batch.claims, _claim_event_ids(batch), strict=True):
        totals.add(claim.account, batch.created.date(), "billed", claim.total_cents, event_id)
