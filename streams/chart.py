"""The external chart-of-accounts mapping: GL account = lookup(entity, role, dimension).

The mapping is data (a versioned YAML file), not code. A lookup never fails: what is not
mapped resolves to the entity's suspense account together with the key that was missing, so
the posting still balances and finance sees an exception record.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rcmflow.streams.data_files import load_data_file
from rcmflow.streams.exceptions import ChartError

__all__ = [
    "CarcTreatment",
    "PlbTreatment",
    "ChartOfAccounts",
    "GlAccount",
    "load_chart",
    "DEFAULT_CHART",
]

CarcTreatment = Literal[
    "contractual", "patient_reclass", "denial_hold", "no_entry", "other_adjustment", "suspense"
]
PlbTreatment = Literal["interest", "payer_overpayment", "pair_with_WO", "suspense"]
DEFAULT_CHART = "chart_of_accounts.yaml"
_Treatment = TypeVar("_Treatment", bound=str)
#: Roles looked up with a dimension value (department, payer class).
DIMENSIONED_ROLES = frozenset({"gross_revenue", "contractual"})
#: Roles every chart must map in `defaults`: the posting rules use all of them.
REQUIRED_ROLES = frozenset(
    {
        "ar_insurance",
        "ar_self_pay",
        "cash",
        "cash_clearing",
        "unapplied_cash",
        "refunds_payable_patient",
        "payer_overpayments",
        "suspense",
        "denial_writeoff",
        "other_adjustment",
        "price_concession",
        "charity",
        "admin_adjustment",
        "interest_income",
        "bad_debt_expense",
    }
)
#: Longest chart file we read; a chart is a few KB, anything near this is a wrong file.
CHART_BYTES_MAX = 1_000_000

RoleMap = dict[str, str | dict[str, str]]


class GlAccount(NamedTuple):
    account: str
    #: The lookup key that was not mapped (the account is then the suspense account).
    missing: str | None = None


class Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    overrides: RoleMap = Field(default_factory=dict)


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    small_balance_cents: int = Field(500, ge=0)


class ChartOfAccounts(BaseModel):
    """A loaded mapping. Lookups are memoised: the chart is immutable once loaded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1, max_length=40)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    revenue_code_departments: dict[str, str] = Field(default_factory=dict)
    defaults: RoleMap
    entities: dict[str, Entity]
    carc_rules: dict[str, CarcTreatment]
    plb_rules: dict[str, PlbTreatment]
    thresholds: Thresholds = Thresholds()

    @model_validator(mode="after")
    def _complete(self) -> ChartOfAccounts:
        missing = sorted(REQUIRED_ROLES - self.defaults.keys())
        if missing:
            raise ValueError(f"defaults lack roles {missing}")
        for role in REQUIRED_ROLES:
            if not isinstance(self.defaults[role], str):
                raise ValueError(f"defaults.{role} must be one GL account, not a mapping")
        for role in DIMENSIONED_ROLES:
            if not isinstance(self.defaults.get(role, {}), dict):
                raise ValueError(f"defaults.{role} must map dimension values to GL accounts")
        return self

    def gl_account(self, entity: str, role: str, dimension: str | None = None) -> GlAccount:
        """The GL account for a role, or the suspense account and what was missing."""
        memo = _memo(self)
        key = ("gl", entity, role, dimension or "")
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._gl_account(entity, role, dimension)
        return cast(GlAccount, found)

    def _gl_account(self, entity: str, role: str, dimension: str | None) -> GlAccount:
        entry = self.entities.get(entity)
        if entry is None:
            return GlAccount(self._suspense(None), f"entity {entity!r}")
        for source in (entry.overrides, self.defaults):
            if role not in source:
                continue
            value = source[role]
            if isinstance(value, str):
                return GlAccount(value)
            if dimension is not None and dimension in value:
                return GlAccount(value[dimension])
        what = f"{role}[{dimension}]" if role in DIMENSIONED_ROLES else role
        return GlAccount(self._suspense(entry), what)

    def _suspense(self, entity: Entity | None) -> str:
        override = entity.overrides.get("suspense") if entity is not None else None
        account = override if isinstance(override, str) else self.defaults["suspense"]
        assert isinstance(account, str)
        return account

    def department_for(self, revenue_code: str | None) -> str | None:
        """Department of a UB-04 revenue code by its longest mapped prefix."""
        if not revenue_code:
            return None
        for length in range(len(revenue_code), 0, -1):
            department = self.revenue_code_departments.get(revenue_code[:length])
            if department is not None:
                return department
        return None

    def carc_treatment(self, group: str, reason: str) -> CarcTreatment:
        """How a CAS amount posts; the first matching rule wins, unmatched is suspense."""
        return self._first_match("carc", f"{group}-{reason}", self.carc_rules, "suspense")

    def plb_treatment(self, reason_code: str) -> PlbTreatment:
        return self._first_match("plb", reason_code, self.plb_rules, "suspense")

    def _first_match(self, kind: str, code: str, rules: Mapping[str, _Treatment],
                     unmatched: _Treatment) -> _Treatment:
        memo = _memo(self)
        key = (kind, code)
        found = memo.get(key)
        if found is None:
            found = next((treatment for pattern, treatment in rules.items()
                          if fnmatch.fnmatchcase(code, pattern)), unmatched)
            memo[key] = found
        # The memo holds Any; what is under (kind, code) was stored just above from `rules`
        # or `unmatched`, so it is a _Treatment (kinds never share a key).
        return cast(_Treatment, found)


#: Lookup results per loaded chart (pydantic private attributes are slow to reach). The chart
#: is kept alongside, so its id cannot be reused by another chart while the entry exists.
_MEMOS: dict[int, tuple[ChartOfAccounts, dict[tuple[str, ...], Any]]] = {}


def _memo(chart: ChartOfAccounts) -> dict[tuple[str, ...], Any]:
    entry = _MEMOS.get(id(chart))
    if entry is None:
        entry = _MEMOS[id(chart)] = (chart, {})
    return entry[1]


def load_chart(path: Path | None = None) -> ChartOfAccounts:
    """Load and check a mapping file; ``None`` loads the one shipped with rcmflow."""
    return load_data_file(ChartOfAccounts, path, shipped=DEFAULT_CHART, what="chart of accounts",
                          error=ChartError, bytes_max=CHART_BYTES_MAX)
