"""The fee schedule: what each payer (or payer class) is expected to allow, by code and date.

Data, not code (``fee_schedule.yaml``, versioned like the chart of accounts and the refund
policy; docs: variance.md). Each schedule names a payer or a payer class, optionally an entity,
the dates it is in effect, and rates by CPT/HCPCS code, by revenue code and a default: an
amount in cents per unit, or a percent of the line's charge (a ``Decimal`` written as text,
never a float). The contract-variance check (``variance.py``) prices 835 lines with it.

Precedence, for a line of payer P (payer class C) at entity E on day D: of the schedules in
effect on D, a payer's own before its payer class's, an entity's own before the default one
(no entity); the first of them with a rate for the line's procedure code, else its revenue
code, else its ``default``, prices it. Two schedules for the same payer (or class) and entity
may not be in effect on the same day: the file is refused, it would be ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from rcmflow.streams.data_files import load_data_file
from rcmflow.streams.exceptions import FeeScheduleError
from rcmflow.streams.money import AMOUNT_CENTS_MAX

__all__ = ["Rate", "Schedule", "FeeSchedule", "Price", "load_fee_schedule",
           "DEFAULT_FEE_SCHEDULE", "SCHEDULE_BYTES_MAX", "SCHEDULES_MAX", "RATES_MAX"]

DEFAULT_FEE_SCHEDULE = "fee_schedule.yaml"
#: A real contract file is a few MB at most (tens of thousands of codes); bounded so a wrong
#: file is refused instead of filling the worker's memory.
SCHEDULE_BYTES_MAX = 20_000_000
SCHEDULES_MAX = 2_000
RATES_MAX = 50_000

Code = Annotated[str, Field(min_length=1, max_length=40)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Rate(_Frozen):
    """An amount per unit of service, or a percent of the line's charge (exactly one)."""

    amount_cents: Annotated[StrictInt, Field(ge=0, le=AMOUNT_CENTS_MAX)] | None = None
    #: Text or a whole number ("62.5", 80): a YAML float (62.5 unquoted) is refused, it is
    #: not exact.
    percent_of_charge: Decimal | None = None

    @field_validator("percent_of_charge", mode="before")
    @classmethod
    def _exact(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError("write a percent as text (\"62.5\") or a whole number, never a "
                             "float: it must be exact")
        try:
            percent = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"{str(value)[:40]!r} is not a number") from exc
        if not percent.is_finite() or not 0 <= percent <= 1000:
            raise ValueError("a percent of charge is between 0 and 1000")
        return percent

    @model_validator(mode="after")
    def _one_basis(self) -> Rate:
        if (self.amount_cents is None) == (self.percent_of_charge is None):
            raise ValueError("a rate is amount_cents or percent_of_charge, exactly one")
        return self

    def expected_cents(self, *, charge_cents: int, units: int) -> int:
        """The allowed amount this rate expects: amount x units, or charge x percent rounded
        half up to the cent."""
        if self.amount_cents is not None:
            return self.amount_cents * units
        assert self.percent_of_charge is not None
        exact = Decimal(charge_cents) * self.percent_of_charge / 100
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))

    def describe(self) -> str:
        if self.amount_cents is not None:
            return f"{self.amount_cents} cents per unit"
        return f"{self.percent_of_charge}% of charge"


class Schedule(_Frozen):
    name: StrictStr = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.\-]+$")
    payer: Code | None = Field(None, description="The payer as the 835 identifies it (N1*PR "
                               "N104, else REF*2U, else TRN03): the events' payer dimension.")
    payer_class: Code | None = Field(None, description="MEDICARE, MEDICAID, COMMERCIAL, ...")
    entity: Code | None = Field(None, description="Only this entity; unset: every entity.")
    effective_from: date
    effective_to: date | None = Field(None, description="Last day in effect (inclusive).")
    procedures: dict[Code, Rate] = Field(default_factory=dict, description="CPT/HCPCS codes.")
    revenue_codes: dict[Code, Rate] = Field(default_factory=dict)
    default: Rate | None = Field(None, description="Any other code, and claims without lines.")

    @model_validator(mode="after")
    def _well_formed(self) -> Schedule:
        if (self.payer is None) == (self.payer_class is None):
            raise ValueError(f"schedule {self.name!r}: name a payer or a payer_class, one")
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError(f"schedule {self.name!r}: effective_to before effective_from")
        if len(self.procedures) + len(self.revenue_codes) > RATES_MAX:
            raise ValueError(f"schedule {self.name!r}: more than {RATES_MAX} rates")
        return self

    def in_effect(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None
                                               or day <= self.effective_to)

    def rate_for(self, procedure_code: str | None,
                 revenue_code: str | None) -> tuple[Rate, str] | None:
        """The rate and what it was found by (``procedure 99213``, ``revenue 0450``,
        ``default``)."""
        if procedure_code is not None and procedure_code in self.procedures:
            return self.procedures[procedure_code], f"procedure {procedure_code}"
        if revenue_code is not None and revenue_code in self.revenue_codes:
            return self.revenue_codes[revenue_code], f"revenue {revenue_code}"
        if self.default is not None:
            return self.default, "default"
        return None


@dataclass(frozen=True)
class Price:
    """What the schedule expects for one line."""

    expected_cents: int
    schedule: str
    rate: Rate
    found_by: str


class FeeSchedule(_Frozen):
    version: StrictStr = Field(min_length=1, max_length=40)
    schedules: tuple[Schedule, ...] = Field((), max_length=SCHEDULES_MAX)

    @model_validator(mode="after")
    def _unambiguous(self) -> FeeSchedule:
        names = [s.name for s in self.schedules]
        if len(set(names)) != len(names):
            raise ValueError("schedule names must be unique")
        by_scope: dict[tuple[str | None, str | None, str | None], list[Schedule]] = {}
        for s in self.schedules:
            by_scope.setdefault((s.payer, s.payer_class, s.entity), []).append(s)
        for group in by_scope.values():
            group = sorted(group, key=lambda s: s.effective_from)
            for earlier, later in zip(group, group[1:], strict=False):
                if earlier.effective_to is None or earlier.effective_to >= later.effective_from:
                    raise ValueError(f"schedules {earlier.name!r} and {later.name!r} are for "
                                     "the same payer and entity and overlap in dates")
        return self

    @cached_property
    def _by_payer(self) -> dict[tuple[str, str], tuple[Schedule, ...]]:
        """("payer", name) or ("class", name) -> its schedules: a line looks at two lists."""
        index: dict[tuple[str, str], list[Schedule]] = {}
        for s in self.schedules:
            key = ("payer", s.payer) if s.payer is not None else ("class", s.payer_class or "")
            index.setdefault(key, []).append(s)
        return {k: tuple(v) for k, v in index.items()}

    def in_effect(self, *, payer: str | None, payer_class: str | None, entity: str,
                  day: date) -> list[Schedule]:
        """The schedules that apply, in precedence order (module docstring); empty: the
        payer has no contract on file for that day (the line is not contracted)."""
        found: list[Schedule] = []
        for kind, name in (("payer", payer), ("class", payer_class)):
            if name is None:
                continue
            candidates = [s for s in self._by_payer.get((kind, name), ())
                          if s.in_effect(day) and s.entity in (entity, None)]
            found.extend(sorted(candidates, key=lambda s: s.entity is None))
        return found

    def price(self, schedules: list[Schedule], *, procedure_code: str | None,
              revenue_code: str | None, charge_cents: int, units: int) -> Price | None:
        """The first rate of ``schedules`` (from ``in_effect``) for the line; None: unpriced."""
        for s in schedules:
            hit = s.rate_for(procedure_code, revenue_code)
            if hit is not None:
                rate, found_by = hit
                return Price(rate.expected_cents(charge_cents=charge_cents, units=units),
                             s.name, rate, found_by)
        return None



def load_fee_schedule(path: Path | None = None) -> FeeSchedule:
    """Load and check a fee schedule file; ``None`` loads the one shipped with rcmflow."""
    return load_data_file(FeeSchedule, path, shipped=DEFAULT_FEE_SCHEDULE, what="fee schedule",
                          error=FeeScheduleError, bytes_max=SCHEDULE_BYTES_MAX)
