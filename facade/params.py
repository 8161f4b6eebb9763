"""The search parameter table and the parser that turns a query string into a store Query.

The routes, the OpenAPI document and the CapabilityStatement are all generated from
``RESOURCES``: a parameter added here is searchable, documented and advertised at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from .store import ID_ORDER, Query

__all__ = [
    "SearchParam",
    "ResourceSpec",
    "RESOURCES",
    "RESULT_PARAMS",
    "Search",
    "SearchError",
    "parse_search",
]

ParamType = Literal["token", "date", "reference"]
#: Value length past which a parameter is refused: ids and codes are short.
VALUE_CHARS_MAX = 256
#: Distinct parameters (with repeats) one search may carry.
PARAMS_MAX = 32


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: ParamType
    #: Column of ``resources r`` it filters (identifier uses the identifiers table).
    column: str
    description: str
    definition: str
    #: Reference parameters: the resource type the id names.
    target: str | None = None
    #: Tokens every resource of the type carries with one value (``(system, code)``): a
    #: search matches all of them or none, no column needed.
    fixed: tuple[str, str] | None = None


@dataclass(frozen=True)
class ResourceSpec:
    type: str
    params: tuple[SearchParam, ...]
    includes: tuple[str, ...] = ()
    documentation: str = ""

    def param(self, name: str) -> SearchParam | None:
        return next((p for p in self.params if p.name == name), None)


def _std(resource: str, name: str, type_: ParamType, column: str, description: str,
         target: str | None = None) -> SearchParam:
    return SearchParam(name, type_, column, description,
                       f"http://hl7.org/fhir/SearchParameter/{resource}-{name}", target)


def _fixed(resource: str, name: str, system: str, code: str, description: str
           ) -> SearchParam:
    return SearchParam(name, "token", "", description,
                       f"http://hl7.org/fhir/SearchParameter/{resource}-{name}",
                       fixed=(system, code))


_CLAIM_USE = "http://hl7.org/fhir/claim-use"


def _common(resource: str) -> tuple[SearchParam, ...]:
    return (
        SearchParam("_id", "token", "id", "Logical id, comma-separated for any of several",
                    "http://hl7.org/fhir/SearchParameter/Resource-id"),
        SearchParam("_lastUpdated", "date", "last_updated",
                    "When the account the resource comes from last changed (event time)",
                    "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"),
        _std(resource, "identifier", "token", "identifier",
             "Business identifier: system|value, |value is not used, value alone matches "
             "any system"),
        _std(resource, "status", "token", "status", "Resource status code"),
    )


RESOURCES: dict[str, ResourceSpec] = {
    spec.type: spec
    for spec in (
        ResourceSpec("Account", (
            *_common("Account"),
            _std("Account", "patient", "reference", "patient", "The patient the account is for",
                 "Patient"),
            _std("Account", "subject", "reference", "patient", "The account's subject: its "
                 "patient (Patient/pat.A1001)", "Patient"),
            _fixed("Account", "type", "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                   "PBILLACCT", "Always PBILLACCT (patient billing account)"),
        ), documentation="One per patient account; balances in the Account.balance extension"),
        ResourceSpec("Claim", (
            *_common("Claim"),
            _std("Claim", "patient", "reference", "patient", "Patient receiving the services",
                 "Patient"),
            _std("Claim", "created", "date", "created", "When the claim was submitted"),
            _fixed("Claim", "use", _CLAIM_USE, "claim", "Always claim"),
            _fixed("Claim", "priority", "http://terminology.hl7.org/CodeSystem/processpriority",
                   "normal", "Always normal"),
        ), documentation="One per claim of an account; items from its service lines"),
        ResourceSpec("ClaimResponse", (
            *_common("ClaimResponse"),
            _std("ClaimResponse", "patient", "reference", "patient", "The subject of care",
                 "Patient"),
            _std("ClaimResponse", "created", "date", "created", "When the payer adjudicated"),
            _std("ClaimResponse", "request", "reference", "request", "The claim answered",
                 "Claim"),
            _std("ClaimResponse", "outcome", "token", "outcome", "queued | complete | error | "
                 "partial"),
            _fixed("ClaimResponse", "use", _CLAIM_USE, "claim", "Always claim"),
        ), includes=("ClaimResponse:request",),
            documentation="One per 835 adjudication (payment, reversal or denial) of a claim"),
        ResourceSpec("PaymentReconciliation", (
            *_common("PaymentReconciliation"),
            _std("PaymentReconciliation", "created", "date", "created", "When it was paid"),
            _std("PaymentReconciliation", "outcome", "token", "outcome", "queued | complete | "
                 "error | partial (always complete)"),
        ), documentation="Per payer check/EFT (835 TRN) and account, and per patient payment "
            "or refund (negative amount); a patient sees only their own"),
    )
}

#: Parameters that shape the result rather than filter it.
RESULT_PARAMS = ("_count", "_after", "_before", "_summary", "_include", "_format", "_total")
#: Bundle.total is exact up to this many matches; past it, it is left out unless the search
#: asks for ``_total=accurate`` (counting a million index entries takes ~0.3 s; FHIR lets a
#: server leave a total out, HAPI does the same). ``_summary=count`` is always exact.
TOTAL_EXACT_MAX = 10_000
#: Columns whose index gives few matches or many, by value (``Query.range_index``): a date
#: range, and several values of a code that has few (status, outcome).
_BROAD_INDEXES = {"created": "resources_created_id", "last_updated": "resources_updated_id",
                  "status": "resources_status", "outcome": "resources_outcome"}


class SearchError(ValueError):
    """A parameter value the server cannot use: 400 with an OperationOutcome."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Search:
    query: Query
    count: int
    #: Keyset cursor (the ``next``/``previous`` links): matches with ids after / before it.
    after: str | None
    before: str | None
    summary_count: bool
    include_request: bool
    #: Count matches up to this many (None: all; 0: none): ``_total``, TOTAL_EXACT_MAX.
    total_max: int | None
    #: The parameters used, in canonical form: what ``self``/``next`` links carry.
    used: list[tuple[str, str]] = field(default_factory=list)
    #: Parameters ignored (lenient handling): reported in an OperationOutcome entry.
    ignored: list[str] = field(default_factory=list)


_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d{1,9})?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?")
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def date_range(text: str) -> tuple[str, str]:
    """[start, end) of a FHIR date/dateTime at its precision, as UTC store instants.

    A value without an offset is read as UTC (the server's zone)."""
    m = _DATE.fullmatch(text)
    if m is None:
        raise SearchError(f"not a FHIR date or dateTime: {text[:40]!r}")
    try:
        y, mo, d = int(m["y"]), int(m["m"] or 1), int(m["d"] or 1)
        hour, minute, second = int(m["H"] or 0), int(m["M"] or 0), int(m["S"] or 0)
        micro = int((m["f"] or ".0")[1:7].ljust(6, "0"))
        tz = UTC
        if m["tz"] and m["tz"] != "Z":
            sign = 1 if m["tz"][0] == "+" else -1
            tz_h, tz_m = int(m["tz"][1:3]), int(m["tz"][4:6])
            tz = timezone(sign * timedelta(hours=tz_h, minutes=tz_m))
        start = datetime(y, mo, d, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise SearchError(f"not a valid date: {text[:40]!r}") from exc
    if m["H"] is not None and m["tz"] is None:
        raise SearchError(f"a dateTime with a time needs a time zone: {text[:40]!r}")
    if m["S"] is not None:
        end = start + timedelta(seconds=1) if m["f"] is None else start + timedelta(
            microseconds=1)
    elif m["M"] is not None:
        end = start + timedelta(minutes=1)
    elif m["d"] is not None:
        end = start + timedelta(days=1)
    elif m["m"] is not None:
        end = start.replace(year=y + mo // 12, month=mo % 12 + 1)
    else:
        end = start.replace(year=y + 1)
    return _instant(start), _instant(end)


def _date_clause(column: str, value: str) -> tuple[str, tuple[str, ...]]:
    if value[:2] in ("sa", "eb", "ap"):
        raise SearchError(f"date prefix {value[:2]} is not supported", "not-supported")
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    start, end = date_range(value[2:] if value[:2] in _PREFIXES else value)
    col = f"r.{column}"
    return {
        "eq": (f"({col} >= ? AND {col} < ?)", (start, end)),
        "ne": (f"NOT ({col} >= ? AND {col} < ?)", (start, end)),
        "gt": (f"{col} >= ?", (end,)),
        "ge": (f"{col} >= ?", (start,)),
        "lt": (f"{col} < ?", (start,)),
        "le": (f"{col} < ?", (end,)),
    }[prefix]


def _reference_id(param: SearchParam, value: str) -> str:
    """``Patient/x``, a full URL ending so, or ``x`` alone -> ``x``."""
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2:
        if parts[-2] != param.target:
            raise SearchError(f"{param.name} refers to {param.target}, not {parts[-2][:40]!r}")
        return parts[-1]
    return value


def _clause(param: SearchParam, value: str, type_: str) -> tuple[str, tuple[str, ...]]:
    """SQL for one occurrence of a parameter (commas: any of the values)."""
    if param.type == "date":
        if "," in value:
            raise SearchError(f"{param.name}: one date per occurrence, repeat it to combine")
        return _date_clause(param.column, value)
    values = value.split(",")
    if any(v == "" for v in values):
        raise SearchError(f"{param.name}: empty value")
    if param.fixed is not None:
        # Every resource carries the one code: all match or none (a system, when given,
        # must be the code's own).
        fixed_system, fixed_code = param.fixed
        hit = any(v.rpartition("|")[2] == fixed_code
                  and ("|" not in v or v.rpartition("|")[0] in ("", fixed_system))
                  for v in values)
        return ("1 = 1" if hit else "1 = 0"), ()
    if param.name == "identifier":
        return _identifier_clause(values, type_)
    if param.type == "reference":
        ids = [_reference_id(param, v) for v in values]
    else:
        ids = [v.rpartition("|")[2] for v in values]  # token: the code, any system
    marks = ", ".join("?" * len(ids))
    return f"r.{param.column} IN ({marks})", tuple(ids)


def _identifier_clause(values: list[str], type_: str) -> tuple[str, tuple[str, ...]]:
    """The ids a value (or system|value) names come from the identifiers table's key
    (type, value, system, id): a lookup, then a row per id. ``system|`` alone (every
    resource with such an identifier) is a walk of the type in id order."""
    ids: list[str] = []
    id_args: list[str] = []
    systems: list[str] = []
    for v in values:
        system, _, code = v.rpartition("|") if "|" in v else ("", "", v)
        if not code:
            systems.append(system)
            continue
        sql = "SELECT i.id FROM identifiers i WHERE i.type = ? AND i.value = ?"
        id_args += [type_, code]
        if "|" in v:
            sql += " AND i.system = ?"
            id_args.append(system)
        ids.append(sql)
    ors: list[str] = []
    if ids:
        ors.append(f"r.id IN ({' UNION '.join(ids)})")
    ors += ["EXISTS (SELECT 1 FROM identifiers i WHERE i.type = r.type AND i.id = r.id "
            "AND i.system = ?)"] * len(systems)
    return "(" + " OR ".join(ors) + ")", (*id_args, *systems)


def parse_search(
    spec: ResourceSpec,
    items: list[tuple[str, str]],
    *,
    strict: bool,
    count_default: int,
    count_max: int,
    patient: str | None,
) -> Search:
    """A search from query items; ``patient`` narrows it to one patient's resources."""
    if len(items) > PARAMS_MAX:
        raise SearchError(f"more than {PARAMS_MAX} search parameters", "too-costly")
    where: list[str] = []
    args: list[str] = []
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    count, summary_count, include = count_default, False, False
    after: str | None = None
    before: str | None = None
    total: str | None = None
    #: An index narrows the search by equality (then it orders the page too), else the
    #: index of a date range (or of several codes) may: the store picks (``Query.range_index``).
    keyed = patient is not None
    range_index: str | None = None
    listed = False
    dated: list[int] = []  # the date clauses' places in ``where``
    for name, value in items:
        if len(value) > VALUE_CHARS_MAX:
            raise SearchError(f"{name}: value longer than {VALUE_CHARS_MAX} characters")
        if name == "_count":
            count = min(_non_negative(name, value), count_max)
            continue
        if name in ("_after", "_before"):
            if not _ID.fullmatch(value):
                raise SearchError(f"{name} takes a resource id")
            after, before = (value, None) if name == "_after" else (None, value)
            continue
        if name == "_format":
            continue  # negotiated by the app before the search
        if name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise SearchError("_total takes none, estimate or accurate")
            total = value
            used.append((name, value))
            continue
        if name == "_summary":
            if value not in ("count", "false"):
                raise SearchError(f"_summary={value[:20]} is not supported (count, false)",
                                  "not-supported")
            summary_count = summary_count or value == "count"
            used.append((name, value))
            continue
        if name == "_include":
            if value in spec.includes or value in (f"{i}:Claim" for i in spec.includes):
                include = True
                used.append((name, value))
            elif strict:
                raise SearchError(f"_include={value[:60]} is not supported here",
                                  "not-supported")
            else:
                ignored.append(f"_include={value[:60]}")
            continue
        param = spec.param(name)
        if param is None:
            if strict:
                raise SearchError(f"unknown search parameter {name[:60]!r} for {spec.type}",
                                  "not-supported")
            ignored.append(name[:60])
            continue
        sql, sql_args = _clause(param, value, spec.type)
        if param.type == "date":
            dated.append(len(where))
        where.append(sql)
        args.extend(sql_args)
        used.append((name, value))
        if param.type == "date" or (param.column in _BROAD_INDEXES and "," in value):
            range_index = range_index or _BROAD_INDEXES[param.column]
        elif not sql.startswith("(EXISTS"):  # every value but "system|" alone is keyed
            keyed = True
            listed = listed or param.name == "identifier"
    if patient is not None:
        where.append("r.patient = ?")
        args.append(patient)
    if keyed:
        # An equality narrows it: a date is then a filter of its few rows ("+" keeps SQLite
        # from walking the date's index instead, a whole type's worth when the range is wide).
        for n in dated:
            where[n] = re.sub(r"\br\.(created|last_updated)\b", r"+r.\1", where[n])
    # Nothing narrows by equality, and no range: the type's resources in id order.
    query = Query(spec.type, tuple(where), tuple(args),
                  None if keyed else range_index or ID_ORDER, listed)
    summary = summary_count or count == 0
    total_max = (None if summary or total == "accurate" else 0 if total == "none"
                 else TOTAL_EXACT_MAX)
    return Search(query, count, after, before, summary, include, total_max, used, ignored)


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise SearchError(f"{name} must be a whole number >= 0, not {value[:20]!r}")
    return int(value)
