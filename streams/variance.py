"""Contract variance: what a payer allowed against what its fee schedule expects.

Pure, and apart from the posting rules: it reads a processed ``claim_adjudicated`` event and
the fee schedule, and says which lines were under- or overpaid beyond the tolerance. The
worker turns each variance into an rcm.dlq record (stage ``contract``, severity warning) beside
the event's delta; balances, items and deltas do not change (docs/variance.md).

Per 835 service line (the claim itself when the 835 has no line detail):

* allowed = the payer's AMT*B6 when the 835 states it (the payer's own figure: it holds even
  when a CO-253 sequestration cut the payment), else paid + the line's PR adjustments;
* expected = the schedule's rate at the line's date of service (DTM*472), else the claim's
  date (``occurred_at``, the payment date);
* difference = allowed - expected: below ``-tolerance`` an ``underpaid`` variance, above
  ``+tolerance`` an ``overpaid`` one, within it nothing.

Lines of a payer with no schedule in effect are *uncontracted*; lines a schedule in effect
does not price are *unpriced*: both are counted (metrics; unpriced also as one record per
claim, so finance can add the codes), neither is a variance. Denials and reversals are not
compared (a reversal takes back an earlier claim; a denial is worked as a denial).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from rcmflow.streams.events import AdjudicatedLine, ClaimAdjudicated
from rcmflow.streams.fee_schedule import FeeSchedule

__all__ = ["Variance", "Unpriced", "ContractCheck", "check_claim", "UNPRICED_CODES_SHOWN"]

Direction = Literal["underpaid", "overpaid"]
#: Unpriced lines named in one claim's record (the count says how many there were).
UNPRICED_CODES_SHOWN = 20


@dataclass(frozen=True)
class Variance:
    """One line paid other than the contract says, beyond the tolerance."""

    direction: Direction
    #: None: the claim compared as a whole (no service-line detail in the 835).
    line_id: str | None
    procedure_code: str | None
    revenue_code: str | None
    service_date: date
    units: int
    charge_cents: int
    expected_cents: int
    allowed_cents: int
    #: ``AMT*B6`` (the payer stated it) or ``paid+PR``.
    allowed_from: str
    paid_cents: int
    patient_responsibility_cents: int
    #: allowed - expected: negative when underpaid.
    difference_cents: int
    schedule: str
    schedule_version: str
    rate: str
    found_by: str

    def as_dict(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["service_date"] = self.service_date.isoformat()
        return doc


@dataclass(frozen=True)
class Unpriced:
    line_id: str | None
    procedure_code: str | None
    revenue_code: str | None


@dataclass
class ContractCheck:
    """What one claim's comparison found; counts are of lines (the claim counts as one line
    when it has none)."""

    payer: str | None
    variances: list[Variance] = field(default_factory=list)
    priced: int = 0
    unpriced: list[Unpriced] = field(default_factory=list)
    uncontracted: int = 0


def check_claim(event: ClaimAdjudicated, schedule: FeeSchedule, *,
                tolerance_cents: int) -> ContractCheck | None:
    """The comparison of one claim; None: not compared (not a processed claim, or no
    schedules at all)."""
    if event.outcome != "processed" or not schedule.schedules:
        return None
    dims = event.dimensions
    check = ContractCheck(payer=dims.payer)
    if event.lines:
        compared = [_Compared.of_line(line, event.occurred_at.date()) for line in event.lines]
    else:
        compared = [_Compared.of_claim(event)]
    for line in compared:
        schedules = schedule.in_effect(payer=dims.payer, payer_class=dims.payer_class,
                                       entity=dims.entity, day=line.service_date)
        if not schedules:
            check.uncontracted += 1
            continue
        price = schedule.price(schedules, procedure_code=line.procedure_code,
                               revenue_code=line.revenue_code, charge_cents=line.charge_cents,
                               units=line.units)
        if price is None:
            check.unpriced.append(Unpriced(line.line_id, line.procedure_code, line.revenue_code))
            continue
        check.priced += 1
        difference = line.allowed_cents - price.expected_cents
        if abs(difference) <= tolerance_cents:
            continue
        check.variances.append(Variance(
            direction="underpaid" if difference < 0 else "overpaid",
            line_id=line.line_id, procedure_code=line.procedure_code,
            revenue_code=line.revenue_code, service_date=line.service_date, units=line.units,
            charge_cents=line.charge_cents, expected_cents=price.expected_cents,
            allowed_cents=line.allowed_cents, allowed_from=line.allowed_from,
            paid_cents=line.paid_cents, patient_responsibility_cents=line.pr_cents,
            difference_cents=difference, schedule=price.schedule,
            schedule_version=schedule.version, rate=price.rate.describe(),
            found_by=price.found_by))
    return check


@dataclass(frozen=True)
class _Compared:
    line_id: str | None
    procedure_code: str | None
    revenue_code: str | None
    service_date: date
    units: int
    charge_cents: int
    paid_cents: int
    pr_cents: int
    allowed_cents: int
    allowed_from: str

    @classmethod
    def of_line(cls, line: AdjudicatedLine, claim_day: date) -> _Compared:
        pr = sum(a.amount_cents for a in line.adjustments if a.group == "PR")
        allowed, source = ((line.allowed_cents, "AMT*B6") if line.allowed_cents is not None
                           else (line.paid_cents + pr, "paid+PR"))
        # An 835 may pay 0 units (SVC05 0) on a line it still prices: count it as one.
        units = line.units if line.units else 1
        return cls(line.line_id, line.procedure_code, line.revenue_code,
                   line.service_date or claim_day, units, line.charge_cents, line.paid_cents,
                   pr, allowed, source)

    @classmethod
    def of_claim(cls, event: ClaimAdjudicated) -> _Compared:
        pr = sum(a.amount_cents for a in event.adjustments if a.group == "PR")
        dims = event.dimensions
        return cls(None, dims.procedure_code, dims.revenue_code, event.occurred_at.date(), 1,
                   event.charge_cents, event.paid_cents, pr, event.paid_cents + pr, "paid+PR")
