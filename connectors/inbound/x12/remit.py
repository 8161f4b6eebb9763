"""835 transaction set -> remittance model -> balancing checks -> canonical events.

Balancing (ACCOUNTING.md, TR3 §1.10.2), all in integer cents:

* per claim: ``CLP03 - CLP04 = Σ CAS (claim level) + Σ CAS (service lines)``;
* per set:   ``BPR02 = Σ CLP04 - Σ PLB amounts``.

Either failing parks the set. Line-level (``SVC02 - SVC03 = Σ line CAS``), ``CLP05 = Σ PR``
and ``CLP03 = Σ SVC02`` are informational: real remits break them (the LinuxForHealth
tertiary sample has a mangled SVC), so they are warnings, and a line that does not balance
has its adjustments folded into the claim (the claim still balances; the line detail would
not validate).

``remit_totals`` reads an applied set's money from the parsed segments (CLP04, every CAS
amount by group, PLB), not from the events, for `rcmflow reconcile` (connectors/inbound/totals.py).

``RemitReader`` reads a set one segment at a time and hands over each claim once complete,
so a set of 100,000s of claims is checked with running totals (``claim_problem`` per claim,
``transaction_problem`` from Σ CLP04 and Σ PLB) and mapped a claim at a time (ingest.py);
``parse_835`` is the same reader keeping every claim (a set read whole).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import ValidationError

from rcmflow.connectors.inbound.totals import SourceTotals, cas_measure
from rcmflow.streams.events import (
    REMARK_CODES_MAX,
    AdjudicatedLine,
    Adjustment,
    ClaimAdjudicated,
    Dimensions,
    EventKind,
    ProviderAdjustment,
)
from rcmflow.streams.exceptions import MoneyError
from rcmflow.streams.money import cents_text as format_cents
from rcmflow.streams.money import parse_cents

from .codes import DENIAL_CARCS, payer_class_for
from .reader import Problem, Segment, TransactionSet, at_segment

__all__ = ["Remit", "RemitHeader", "RemitReader", "Claim", "Line", "Cas", "Plb", "parse_835",
           "balance_problems", "claim_problem", "transaction_problem", "claim_warnings",
           "remit_events", "remit_totals", "claim_event", "plb_event", "claim_key", "plb_key",
           "claim_event_id", "plb_event_id", "claim_amounts", "account_problem",
           "first_error", "SOURCE_835", "NO_PAYMENT_DATE"]

SOURCE_835 = "x12-835"
CAS_GROUPS = ("CO", "PR", "OA", "PI", "CR")
_ACCOUNT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:._-")


@dataclass(frozen=True, slots=True)
class Cas:
    group: str
    reason: str
    amount_cents: int


@dataclass(slots=True)
class Line:
    number: int
    line_id: str
    procedure_code: str | None
    revenue_code: str | None
    charge_cents: int
    paid_cents: int
    adjustments: list[Cas] = field(default_factory=list)
    #: SVC05 (whole units only), AMT*B6 and DTM*472 / 150: what the contract-variance check
    #: compares (``streams/variance.py``); None where the 835 does not say.
    units: int | None = None
    allowed_cents: int | None = None
    service_date: date | None = None
    remark_codes: list[str] = field(default_factory=list)  # LQ*HE

    def balances(self) -> bool:
        return self.charge_cents - self.paid_cents == sum(a.amount_cents for a in self.adjustments)


@dataclass(slots=True)
class Claim:
    number: int  # 1-based CLP position in the set
    account: str
    status: str
    charge_cents: int
    paid_cents: int
    patient_resp_cents: int | None
    filing_code: str
    payer_control: str
    adjustments: list[Cas] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    remark_codes: list[str] = field(default_factory=list)  # MOA03-07, MIA05/20-23

    def cas_total(self) -> int:
        return sum(a.amount_cents for a in self.adjustments) + sum(
            a.amount_cents for line in self.lines for a in line.adjustments)


@dataclass(frozen=True)
class Plb:
    provider: str
    fiscal_date: str
    code: str
    reference: str
    amount_cents: int


@dataclass
class Remit:
    st02: str
    bpr01: str = ""
    bpr02_cents: int = 0
    trn02: str = ""
    trn03: str = ""
    paid_on: date | None = None
    payer: str | None = None
    claims: list[Claim] = field(default_factory=list)
    plbs: list[Plb] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _cents(seg: Segment, position: int, remit: Remit, *, required: bool = True) -> int | None:
    text = seg.el(position)
    if not text:
        if required:
            remit.problems.append(at_segment(
                seg, "x12_unreadable_segment",
                f"{seg.id}{position:02d} is missing (segment {seg.number})"))
        return None
    try:
        return parse_cents(text)
    except MoneyError as exc:
        remit.problems.append(at_segment(
            seg, "x12_unreadable_segment", f"{seg.id}{position:02d} (segment {seg.number}): {exc}"))
        return None


def _date(text: str) -> date | None:
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _cas(seg: Segment, remit: Remit) -> list[Cas]:
    group = seg.el(1)
    if group not in CAS_GROUPS:
        remit.problems.append(at_segment(
            seg, "x12_unreadable_segment",
            f"CAS01 {group[:12]!r} is not a claim adjustment group code (segment {seg.number})"))
        return []
    found: list[Cas] = []
    for reason_at in range(2, 20, 3):  # CAS02/05/08/11/14/17 with amounts at +1
        reason = seg.el(reason_at)
        if not reason and not seg.el(reason_at + 1):
            continue
        amount = _cents(seg, reason_at + 1, remit)
        if not reason or len(reason) > 5:
            remit.problems.append(at_segment(
                seg, "x12_unreadable_segment",
                f"CAS{reason_at:02d} {reason[:12]!r} is not a reason code (segment {seg.number})"))
            continue
        if amount is not None:
            found.append(Cas(group, reason, amount))
    return found


@dataclass(frozen=True)
class RemitHeader:
    """What every event of a remit carries, read from its header (TRN, N1*PR / REF*2U, BPR16,
    DTM*405, GS04): final once the set is read whole."""

    trn02: str
    trn03: str
    payer: str | None
    paid_on: date | None

    @property
    def base_id(self) -> str:
        return f"{SOURCE_835}:{self.trn03}:{self.trn02}"


class RemitReader:
    """An 835 set read one segment at a time: ``feed`` hands over each claim once it is
    complete (at the next CLP, LX, PLB or SE) and each PLB amount as read, so a set of
    100,000s of claims is checked and mapped a claim at a time. ``remit`` keeps the header and
    the problems and warnings found (a caller may take them as they come); its ``claims`` and
    ``plbs`` stay empty."""

    def __init__(self, st02: str, group_date: str) -> None:
        self.remit = Remit(st02=st02)
        self.claims = 0  # claims read (the next claim's number is claims + 1)
        self.plbs = 0
        self._group_date = group_date
        self._claim: Claim | None = None
        self._line: Line | None = None
        self._dtm405: date | None = None
        self._n1 = self._n1_pr = self._ref_2u = ""

    def header(self) -> RemitHeader:
        """The header as read so far: what ``finish`` settles on if nothing else comes."""
        r = self.remit
        return RemitHeader(r.trn02, r.trn03, (self._n1_pr or self._ref_2u or r.trn03)[:40] or None,
                           r.paid_on or self._dtm405 or _date(self._group_date))

    def feed(self, seg: Segment) -> list[Claim | Plb]:
        """What ``seg`` completes: the claim before it, PLB amounts."""
        remit, sid = self.remit, seg.id
        done: list[Claim | Plb] = []
        if sid == "BPR":
            remit.bpr01 = seg.el(1)
            remit.bpr02_cents = _cents(seg, 2, remit) or 0
            remit.paid_on = _date(seg.el(16))
            if seg.el(16) and remit.paid_on is None:
                remit.warnings.append(f"BPR16 {seg.el(16)!r} is not a date")
        elif sid == "TRN" and not remit.trn02:
            remit.trn02, remit.trn03 = seg.el(2), seg.el(3)
        elif sid == "DTM" and seg.el(1) == "405" and self._claim is None:
            self._dtm405 = _date(seg.el(2))
        elif sid == "N1":
            self._n1 = seg.el(1)
            if self._n1 == "PR":
                self._n1_pr = seg.el(4)
        elif (sid == "REF" and self._n1 == "PR" and seg.el(1) == "2U"
              and self._claim is None):
            self._ref_2u = seg.el(2)
        elif sid == "CLP":
            done.extend(self._close())
            claim = _clp(seg, self.claims + 1, remit)
            self._claim = claim
            if claim is not None:
                self.claims += 1
        elif sid == "SVC" and self._claim is not None:
            line = _svc(seg, len(self._claim.lines) + 1, remit)
            self._line = line
            if line is not None:
                self._claim.lines.append(line)
        elif sid == "REF" and seg.el(1) == "6R" and self._line is not None:
            self._line.line_id = seg.el(2)[:40] or self._line.line_id
        elif sid == "AMT" and seg.el(1) == "B6" and self._line is not None:
            self._line.allowed_cents = _cents(seg, 2, remit, required=False)
        elif sid == "DTM" and seg.el(1) in ("472", "150") and self._line is not None:
            # 472: the date of service; 150: the start of a period (its end, 151, is ignored).
            if self._line.service_date is None or seg.el(1) == "472":
                self._line.service_date = _date(seg.el(2))
        elif sid == "CAS":
            if self._line is not None:
                self._line.adjustments.extend(_cas(seg, remit))
            elif self._claim is not None:
                self._claim.adjustments.extend(_cas(seg, remit))
            else:
                remit.problems.append(at_segment(
                    seg, "x12_unreadable_segment", f"CAS outside a claim (segment {seg.number})"))
        elif sid == "LQ" and seg.el(1) == "HE" and self._line is not None:
            _remark(self._line.remark_codes, seg.el(2))
        elif sid in REMARK_ELEMENTS and self._claim is not None and self._line is None:
            for at in REMARK_ELEMENTS[sid]:
                _remark(self._claim.remark_codes, seg.el(at))
        elif sid == "PLB":
            done.extend(self._close())
            plbs = _plb(seg, remit)
            self.plbs += len(plbs)
            done.extend(plbs)
        elif sid in ("LX", "SE"):
            done.extend(self._close())
        return done

    def _close(self) -> list[Claim]:
        claim, self._claim, self._line = self._claim, None, None
        return [claim] if claim is not None else []

    def finish(self) -> list[Claim]:
        """The last claim (a set cut short has no SE); the header settled."""
        done = self._close()
        header, remit = self.header(), self.remit
        remit.paid_on, remit.payer = header.paid_on, header.payer
        if not remit.trn02:
            remit.problems.append(Problem(reason_code="x12_no_trace", place=f"ST {remit.st02[:9]}",
                                          detail="no TRN02 check/EFT trace number"))
        return done


def parse_835(tset: TransactionSet) -> Remit:
    """The remittance in one 835 set read whole; unreadable parts are recorded as problems."""
    reader = RemitReader(tset.st02, tset.group_date)
    remit = reader.remit

    def keep(items: list[Claim | Plb]) -> None:
        for item in items:
            if isinstance(item, Claim):
                remit.claims.append(item)
            else:
                remit.plbs.append(item)

    for seg in tset.segments:
        keep(reader.feed(seg))
    keep(list(reader.finish()))
    return remit


#: The claim-level remark code elements: MOA03-07 (outpatient), MIA05 and MIA20-23
#: (inpatient). LQ*HE (a service line's remarks) is read apart.
REMARK_ELEMENTS = {"MOA": (3, 4, 5, 6, 7), "MIA": (5, 20, 21, 22, 23)}
#: A RARC as the canonical event takes it; anything else in a remark element is skipped.
_RARC = re.compile(r"^[A-Z0-9]{1,8}$")


def _remark(codes: list[str], code: str) -> None:
    """Keep ``code`` once, bounded like the event's field (``REMARK_CODES_MAX``)."""
    code = code.strip().upper()
    if _RARC.match(code) and code not in codes and len(codes) < REMARK_CODES_MAX:
        codes.append(code)


def _clp(seg: Segment, number: int, remit: Remit) -> Claim | None:
    account = seg.el(1)
    charge, paid = _cents(seg, 3, remit), _cents(seg, 4, remit)
    resp = _cents(seg, 5, remit, required=False)
    if not account:
        remit.problems.append(at_segment(seg, "x12_unreadable_segment",
                                         f"CLP01 is missing (segment {seg.number})"))
        return None
    if charge is None or paid is None:
        return None
    return Claim(number, account, seg.el(2), charge, paid, resp, seg.el(6), seg.el(7))


def _svc(seg: Segment, number: int, remit: Remit) -> Line | None:
    charge, paid = _cents(seg, 2, remit), _cents(seg, 3, remit)
    if charge is None or paid is None:
        return None
    qualifier, code = seg.el(1, 1), seg.el(1, 2)
    if not code and len(qualifier) > 2:
        code = qualifier  # a composite written with another separator: keep it whole
    procedure = revenue = None
    if qualifier in ("NU",) and code:
        revenue = code[:40]
    elif code:
        procedure = code[:40]
    revenue = revenue or (seg.el(4)[:40] or None)
    units_text = seg.el(5)
    units = int(units_text) if units_text.isdigit() and len(units_text) <= 6 else None
    return Line(number, str(number), procedure, revenue, charge, paid, units=units)


def _plb(seg: Segment, remit: Remit) -> list[Plb]:
    found = []
    for code_at in range(3, 15, 2):  # PLB03/05/.../13 composite, amount right after
        if not seg.el(code_at):
            continue
        amount = _cents(seg, code_at + 1, remit)
        code, reference = seg.el(code_at, 1), seg.el(code_at, 2)
        if not code or len(code) > 5:
            remit.problems.append(at_segment(
                seg, "x12_unreadable_segment",
                f"PLB{code_at:02d} {code[:12]!r} is not an adjustment reason code "
                f"(segment {seg.number})"))
            continue
        if amount is not None:
            found.append(Plb(seg.el(1), seg.el(2), code, reference[:80], amount))
    return found


def claim_problem(claim: Claim) -> Problem | None:
    """The claim's balancing identity, with its numbers when it fails."""
    cas = claim.cas_total()
    if claim.charge_cents - claim.paid_cents == cas:
        return None
    where = f"claim {claim.number} (CLP01 {claim.account})"
    return Problem(
        reason_code="x12_claim_unbalanced", place=where,
        detail=f"{where}: CLP03 "
        f"{format_cents(claim.charge_cents)} - CLP04 {format_cents(claim.paid_cents)} = "
        f"{format_cents(claim.charge_cents - claim.paid_cents)} but the CAS amounts add "
        f"up to {format_cents(cas)}")


def transaction_problem(bpr02_cents: int, paid_cents: int, plb_cents: int, *,
                        st02: str) -> Problem | None:
    """The set's identity from its running totals: BPR02 = Σ CLP04 - Σ PLB."""
    if bpr02_cents == paid_cents - plb_cents:
        return None
    return Problem(
        reason_code="x12_transaction_unbalanced", place=f"ST {st02[:9]}",
        detail=f"BPR02 {format_cents(bpr02_cents)} != sum of CLP04 {format_cents(paid_cents)} - "
        f"sum of PLB {format_cents(plb_cents)} = {format_cents(paid_cents - plb_cents)}")


def balance_problems(remit: Remit) -> list[Problem]:
    """The failing money identities, with the numbers; informational ones as warnings."""
    problems: list[Problem] = []
    for claim in remit.claims:
        if (problem := claim_problem(claim)) is not None:
            problems.append(problem)
        remit.warnings.extend(claim_warnings(claim))
    paid = sum(c.paid_cents for c in remit.claims)
    plb = sum(p.amount_cents for p in remit.plbs)
    if (problem := transaction_problem(remit.bpr02_cents, paid, plb,
                                       st02=remit.st02)) is not None:
        problems.append(problem)
    return problems


def claim_warnings(claim: Claim) -> list[str]:
    """The informational identities a claim breaks (line balance, CLP03, CLP05)."""
    warnings: list[str] = []
    where = f"claim {claim.number} (CLP01 {claim.account})"
    for line in claim.lines:
        if not line.balances():
            adjusted = sum(a.amount_cents for a in line.adjustments)
            warnings.append(
                f"{where} service line {line.number}: SVC02 {format_cents(line.charge_cents)} - "
                f"SVC03 {format_cents(line.paid_cents)} != line CAS {format_cents(adjusted)}; "
                "line detail folded into the claim")
    if claim.lines:
        billed = sum(line.charge_cents for line in claim.lines)
        if billed != claim.charge_cents:
            warnings.append(f"{where}: CLP03 {format_cents(claim.charge_cents)} != sum of "
                            f"SVC02 {format_cents(billed)}")
    pr = sum(a.amount_cents for a in claim.adjustments if a.group == "PR") + sum(
        a.amount_cents for ln in claim.lines for a in ln.adjustments if a.group == "PR")
    if claim.patient_resp_cents is not None and claim.patient_resp_cents != pr:
        warnings.append(f"{where}: CLP05 {format_cents(claim.patient_resp_cents)} != "
                        f"PR adjustments {format_cents(pr)}")
    return warnings


def account_problem(account: str, what: str) -> Problem | None:
    """A key the account table cannot take, named so an operator can fix it at the source."""
    if account and len(account) <= 64 and account[0].isalnum() and set(account) <= _ACCOUNT_CHARS:
        return None
    return Problem(reason_code="x12_invalid_account", place=what,
                   detail=f"{what} {account[:64]!r} is not a usable account number "
                   "(letters, digits and : . _ - only, at most 64)")


def remit_header(remit: Remit) -> RemitHeader:
    return RemitHeader(remit.trn02, remit.trn03, remit.payer, remit.paid_on)


def claim_key(claim: Claim) -> str:
    """What tells a remit's claims apart in their event ids (after ``base_id``)."""
    return f"{claim.account}:{claim.payer_control}:{claim.status}"


def plb_key(plb: Plb) -> str:
    return f"plb:{plb.provider}:{plb.fiscal_date}:{plb.code}:{plb.reference}"


def claim_event_id(header: RemitHeader, key: str, occurrence: int) -> str:
    """The same CLP01/CLP07/CLP02 twice in one remit is legal; the occurrence keeps ids apart."""
    event_id = f"{header.base_id}:{key}"
    return event_id if occurrence == 1 else f"{event_id}:{occurrence}"


def plb_event_id(header: RemitHeader, key: str, occurrence: int) -> str:
    return f"{header.base_id}:{key}:{occurrence}"[:200]


def _remit_event_ids(remit: Remit) -> tuple[list[str], list[str]]:
    """The event ids of a remit's claims and of its PLBs, in order: its events and its source
    amounts (remit_totals) carry the same ones."""
    header = remit_header(remit)
    seen: Counter[str] = Counter()
    claims: list[str] = []
    for claim in remit.claims:
        key = claim_key(claim)
        seen[key] += 1
        claims.append(claim_event_id(header, key, seen[key]))
    plbs: list[str] = []
    for plb in remit.plbs:
        key = plb_key(plb)
        seen[key] += 1
        plbs.append(plb_event_id(header, key, seen[key]))
    return claims, plbs


def remit_events(remit: Remit, *,
                 entity: str) -> Iterator[ClaimAdjudicated | ProviderAdjustment]:
    """The canonical events of a balanced remit, made one at a time; raises ``ValueError``
    naming what failed."""
    header = remit_header(remit)
    if header.paid_on is None:
        raise ValueError(NO_PAYMENT_DATE)
    claim_ids, plb_ids = _remit_event_ids(remit)
    for claim, event_id in zip(remit.claims, claim_ids, strict=True):
        yield claim_event(claim, header, event_id, entity)
    for plb, event_id in zip(remit.plbs, plb_ids, strict=True):
        yield plb_event(plb, header, event_id, entity)


NO_PAYMENT_DATE = "no payment date: BPR16, DTM*405 and GS04 are all missing"


def claim_event(claim: Claim, header: RemitHeader, event_id: str,
                entity: str) -> ClaimAdjudicated:
    """One claim's event (``header.paid_on`` set); raises ``ValueError`` naming the claim."""
    assert header.paid_on is not None
    occurred = datetime.combine(header.paid_on, datetime.min.time(), UTC)
    try:
        return _claim_event(claim, header, event_id, occurred, entity)
    except ValidationError as exc:
        raise ValueError(f"claim {claim.number} (CLP01 {claim.account}): "
                         f"{first_error(exc)}") from None


def plb_event(plb: Plb, header: RemitHeader, event_id: str, entity: str) -> ProviderAdjustment:
    assert header.paid_on is not None
    occurred = datetime.combine(header.paid_on, datetime.min.time(), UTC)
    try:
        return ProviderAdjustment(
            kind=EventKind.PROVIDER_ADJUSTMENT,
            event_id=event_id,
            account=f"provider:{plb.provider}",
            occurred_at=occurred,
            source=SOURCE_835,
            correlation_id=header.trn02,
            dimensions=Dimensions(entity=entity, payer=header.payer),
            reason_code=plb.code,
            amount_cents=plb.amount_cents,
            reference=plb.reference or None,
        )
    except ValidationError as exc:
        raise ValueError(f"PLB {plb.code}: {first_error(exc)}") from None


def claim_amounts(claim: Claim) -> list[tuple[str, int]]:
    """(measure, cents) a claim states: CLP04, then each CAS amount (claim, then lines)."""
    return [("payer_paid", claim.paid_cents)] + [
        (cas_measure(cas.group), cas.amount_cents)
        for cas in claim.adjustments + [a for line in claim.lines for a in line.adjustments]]


def remit_totals(remit: Remit, totals: SourceTotals) -> None:
    """Add a balanced remit's amounts as the 835 states them, on its payment date (the day
    its events carry): per claim CLP04 and each CAS amount (claim and service-line level) by
    group; per PLB its amount on the provider's key. Each is attributed to the event its
    claim or PLB became."""
    assert remit.paid_on is not None
    day = remit.paid_on
    claim_ids, plb_ids = _remit_event_ids(remit)
    for claim, event_id in zip(remit.claims, claim_ids, strict=True):
        for measure, cents in claim_amounts(claim):
            totals.add(claim.account, day, measure, cents, event_id)
    for plb, event_id in zip(remit.plbs, plb_ids, strict=True):
        totals.add(f"provider:{plb.provider}", day, "provider_adjustments", plb.amount_cents,
                   event_id)


def _claim_event(claim: Claim, remit: RemitHeader, event_id: str, occurred: datetime,
                 entity: str) -> ClaimAdjudicated:
    lines = claim.lines
    adjustments = list(claim.adjustments)
    remarks = list(claim.remark_codes)
    if not all(line.balances() for line in lines):
        adjustments += [a for line in lines for a in line.adjustments]
        for code in (c for line in lines for c in line.remark_codes):
            _remark(remarks, code)  # the lines are not kept: their remarks go to the claim
        lines = []
    outcome: Literal["processed", "denied", "reversal"]
    if claim.status == "22":
        outcome = "reversal"
    elif claim.status == "4" or (claim.paid_cents == 0 and any(
            (a.group, a.reason) in DENIAL_CARCS for a in claim.adjustments + [
                x for ln in claim.lines for x in ln.adjustments])):
        outcome = "denied"
    else:
        outcome = "processed"
    return ClaimAdjudicated(
        kind=EventKind.CLAIM_ADJUDICATED,
        event_id=event_id,
        account=claim.account,
        occurred_at=occurred,
        source=SOURCE_835,
        correlation_id=remit.trn02,
        dimensions=Dimensions(entity=entity, payer=remit.payer,
                              payer_class=payer_class_for(claim.filing_code),
                              claim_id=claim.account[:40]),
        claim_id=claim.account[:40],
        outcome=outcome,
        status_code=claim.status or None,
        payer_claim_control_number=claim.payer_control or None,
        charge_cents=claim.charge_cents,
        paid_cents=claim.paid_cents,
        patient_responsibility_cents=claim.patient_resp_cents or 0,
        adjustments=tuple(_adjustment(a) for a in adjustments),
        lines=tuple(
            AdjudicatedLine(line_id=line.line_id, charge_cents=line.charge_cents,
                            paid_cents=line.paid_cents, procedure_code=line.procedure_code,
                            adjustments=tuple(_adjustment(a) for a in line.adjustments),
                            revenue_code=line.revenue_code, units=line.units,
                            allowed_cents=line.allowed_cents, service_date=line.service_date,
                            remark_codes=tuple(line.remark_codes))
            for line in lines),
        remark_codes=tuple(remarks),
    )


def _adjustment(cas: Cas) -> Adjustment:
    return Adjustment(group=cas.group, reason=cas.reason,  # type: ignore[arg-type]
                      amount_cents=cas.amount_cents)


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]
