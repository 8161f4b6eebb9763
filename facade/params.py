"""The search parameter table and the parser that turns a query string into a store Query.

The routes, the OpenAPI document and the CapabilityStatement are all generated from
``RESOURCES``: a parameter added here is searchable, documented and advertised at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from rcmflow.facade.exceptions import SearchError

from .resources import ENTITY_SYSTEM, PAYER_SYSTEM
from .store import COUNTED_COLUMNS, ID_ORDER, Query, text_key

__all__ = [
    "SearchParam",
    "ResourceSpec",
    "RESOURCES",
    "RESULT_PARAMS",
    "Search",
    "parse_search",
]

ParamType = Literal["token", "date", "reference", "string"]
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
    #: Reference parameters to an Organization known only by identifier (no id): the
    #: identifier's system. Searched with ``:identifier`` only (``insurer:identifier=...``).
    identifier_system: str | None = None
    #: Modifiers (``name:modifier``) the parameter takes.
    modifiers: tuple[str, ...] = ()


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


def _string(resource: str, name: str, description: str) -> SearchParam:
    return SearchParam(name, "string", "text_key", description,
                       f"http://hl7.org/fhir/SearchParameter/{resource}-{name}",
                       modifiers=("exact", "contains"))


def _org(resource: str, name: str, column: str, system: str, description: str
         ) -> SearchParam:
    return SearchParam(name, "reference", column, description,
                       f"http://hl7.org/fhir/SearchParameter/{resource}-{name}", "Organization",
                       identifier_system=system, modifiers=("identifier",))


_CLAIM_USE = "http://hl7.org/fhir/claim-use"
_STRING = ("R4 string: starts with the value, ignoring case and accents; :exact the whole "
           "text as written, :contains anywhere (not indexed: a walk of the type)")
_PAYER = (f"only as {{}}:identifier={PAYER_SYSTEM}|CODE (the payer is known by its "
          "code, no Organization id)")
_ENTITY = (f"only as {{}}:identifier={ENTITY_SYSTEM}|CODE (the billing entity is "
           "known by its code, no Organization id)")


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
            _string("Account", "name", f"'Patient account NUMBER'. {_STRING}"),
            _org("Account", "owner", "entity", ENTITY_SYSTEM,
                 "The billing entity, " + _ENTITY.format("owner")),
        ), documentation="One per patient account; balances in the Account.balance extension"),
        ResourceSpec("Claim", (
            *_common("Claim"),
            _std("Claim", "patient", "reference", "patient", "Patient receiving the services",
                 "Patient"),
            _std("Claim", "created", "date", "created", "When the claim was submitted"),
            _fixed("Claim", "use", _CLAIM_USE, "claim", "Always claim"),
            _fixed("Claim", "priority", "http://terminology.hl7.org/CodeSystem/processpriority",
                   "normal", "Always normal"),
            _org("Claim", "insurer", "payer", PAYER_SYSTEM,
                 "The payer, " + _PAYER.format("insurer")),
            _org("Claim", "provider", "entity", ENTITY_SYSTEM,
                 "The billing entity, " + _ENTITY.format("provider")),
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
            _string("ClaimResponse", "disposition", "'Claim processed by the payer', 'Claim "
                    f"denied by the payer', 'Payer reversed an earlier payment'. {_STRING}"),
            _std("ClaimResponse", "payment-date", "date", "payment_date",
                 "The payment's date (a day, UTC): the payer's adjudication day"),
            _org("ClaimResponse", "insurer", "payer", PAYER_SYSTEM,
                 "The payer, " + _PAYER.format("insurer")),
        ), includes=("ClaimResponse:request",),
            documentation="One per 835 adjudication (payment, reversal or denial) of a claim"),
        ResourceSpec("PaymentReconciliation", (
            *_common("PaymentReconciliation"),
            _std("PaymentReconciliation", "created", "date", "created", "When it was paid"),
            _std("PaymentReconciliation", "outcome", "token", "outcome", "queued | complete | "
                 "error | partial (always complete)"),
            _string("PaymentReconciliation", "disposition", "'Payer payment applied to "
                    "account NUMBER', 'Patient payment (CHANNEL)', 'Refund to "
                    f"CHANNEL'. {_STRING}"),
            _org("PaymentReconciliation", "payment-issuer", "payer", PAYER_SYSTEM,
                 "The payer of a check/EFT, " + _PAYER.format("payment-issuer")),
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
                  "payment_date": "resources_payment_date_id", "text_key": "resources_text_id",
                  "status": "resources_status", "outcome": "resources_outcome"}
#: Columns searched by range (dates, string prefixes): the clauses "+" keeps off their index
#: when an equality narrows the search.
_RANGE_COLUMN = re.compile(r"\br\.(created|last_updated|payment_date|text_key)\b")


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
    start, end = _date_bounds(text)
    return _instant(start), _instant(end)


def _date_bounds(text: str) -> tuple[datetime, datetime]:
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
    return start, end


_DAY = timedelta(days=1)
#: Columns holding a whole day (a FHIR date) as the instant it starts, UTC.
_DAY_COLUMNS = ("payment_date",)


def _date_clause(column: str, value: str) -> tuple[str, tuple[str, ...]]:
    if value[:2] in ("sa", "eb", "ap"):
        raise SearchError(f"date prefix {value[:2]} is not supported", "not-supported")
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    start_at, end_at = _date_bounds(value[2:] if value[:2] in _PREFIXES else value)
    start, end = _instant(start_at), _instant(end_at)
    col = f"r.{column}"
    if column in _DAY_COLUMNS:
        # The target is a day [D, D+1d), held as D: R4 compares ranges. eq: the value's
        # range holds the whole day (a value finer than a day holds none); gt/ge: the day
        # reaches past the value's end/start; lt/le: it starts before the value's start/end.
        last = _instant(end_at - _DAY)  # the last day start whose day ends by ``end``
        before_start = _instant(start_at - _DAY)
        return {
            "eq": (f"({col} >= ? AND {col} <= ?)", (start, last)),
            "ne": (f"NOT ({col} >= ? AND {col} <= ?)", (start, last)),
            "gt": (f"{col} > ?", (last,)),
            "ge": (f"{col} > ?", (before_start,)),
            "lt": (f"{col} < ?", (start,)),
            "le": (f"{col} < ?", (end,)),
        }[prefix]
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


def _string_values(value: str) -> list[str]:
    """A string parameter's values: split at commas, FHIR's escapes (``\\,`` ``\\|``
    ``\\$`` ``\\\\``) undone."""
    values, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return values


def _after_prefix(prefix: str) -> str:
    """The least text above every text starting with ``prefix`` (code point order is
    SQLite's BINARY order of UTF-8)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        last += 0x800 if 0xD800 <= last <= 0xDFFF else 0  # no surrogates in UTF-8
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    raise SearchError("a string value that only holds U+10FFFF")


def _string_clause(param: SearchParam, value: str,
                   modifier: str) -> tuple[str, tuple[str, ...]]:
    """R4 string search over the normalised column (``store.text_key``: case and accents
    folded): starts-with by default, ``:exact`` the text as written (its key narrows),
    ``:contains`` anywhere."""
    ors: list[str] = []
    args: list[str] = []
    for raw in _string_values(value):
        key = text_key(raw)
        if not key:
            raise SearchError(f"{param.name}: empty value")
        if modifier == "exact":
            ors.append("(r.text_key = ? AND r.text = ?)")
            args += [key, raw]
        elif modifier == "contains":
            ors.append("instr(r.text_key, ?) > 0")
            args.append(key)
        else:
            ors.append("(r.text_key >= ? AND r.text_key < ?)")
            args += [key, _after_prefix(key)]
    return ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")", tuple(args)


def _organization_clause(param: SearchParam, value: str) -> tuple[str, tuple[str, ...]]:
    """``:identifier`` (token) on a reference to an Organization known only by identifier:
    ``system|code`` or ``code`` (its one system), ``system|`` any. Another system or
    ``|code`` (no system) matches none."""
    codes: list[str] = []
    any_code = False
    for v in value.split(","):
        if not v:
            raise SearchError(f"{param.name}: empty value")
        system, _, code = v.rpartition("|") if "|" in v else (param.identifier_system, "", v)
        if system != param.identifier_system:
            continue
        if code:
            codes.append(code)
        else:
            any_code = True
    if any_code:
        return f"r.{param.column} IS NOT NULL", ()
    if not codes:
        return "1 = 0", ()
    return f"r.{param.column} IN ({', '.join('?' * len(codes))})", tuple(codes)


def _clause(param: SearchParam, value: str, type_: str,
            modifier: str = "") -> tuple[str, tuple[str, ...]]:
    """SQL for one occurrence of a parameter (commas: any of the values)."""
    if param.type == "string":
        return _string_clause(param, value, modifier)
    if param.identifier_system is not None:
        return _organization_clause(param, value)
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
    counted: list[tuple[str, tuple[str, ...]] | None] = []  # each condition's (_counted)
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
        base, _, modifier = name.partition(":")
        param = spec.param(base)
        unusable = _unusable(param, modifier)
        if param is None or unusable:
            what = (f"unknown search parameter {name[:60]!r} for {spec.type}"
                    if param is None else f"{name[:60]}: {unusable}")
            if strict:
                raise SearchError(what, "not-supported")
            ignored.append(name[:60] if param is None else what)
            continue
        sql, sql_args = _clause(param, value, spec.type, modifier)
        if not (param.fixed is not None and sql == "1 = 1"):  # all match: no condition
            counted.append(_counted(param, value, sql, sql_args))
        # A range of the column's index (a date, a string prefix, several exact strings).
        ranged = param.type == "date" or (param.type == "string" and modifier != "contains"
                                          and (modifier != "exact" or " OR " in sql))
        if ranged:
            dated.append(len(where))
        where.append(sql)
        args.extend(sql_args)
        used.append((name, value))
        if ranged or (param.column in _BROAD_INDEXES and "," in value):
            range_index = range_index or _BROAD_INDEXES[param.column]
        elif not (sql.startswith("(EXISTS") or "IS NOT NULL" in sql or "instr(" in sql):
            # Every value but "system|" alone (and :contains) is keyed.
            keyed = True
            listed = listed or param.name == "identifier"
    if patient is not None:
        where.append("r.patient = ?")
        args.append(patient)
    if keyed:
        # An equality narrows it: a date is then a filter of its few rows ("+" keeps SQLite
        # from walking the date's index instead, a whole type's worth when the range is wide).
        for n in dated:
            where[n] = _RANGE_COLUMN.sub(r"+r.\1", where[n])
    # One condition the store counts, or none: its count is kept (``Query.counted``).
    one = (counted[0] if len(counted) == 1 else ("", ()) if not counted else None)
    # Nothing narrows by equality, and no range: the type's resources in id order.
    query = Query(spec.type, tuple(where), tuple(args),
                  None if keyed else range_index or ID_ORDER, listed,
                  one if patient is None else None)
    summary = summary_count or count == 0
    total_max = (None if summary or total == "accurate" else 0 if total == "none"
                 else TOTAL_EXACT_MAX)
    return Search(query, count, after, before, summary, include, total_max, used, ignored)


def _counted(param: SearchParam, value: str, sql: str,
             args: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """The ``Query.counted`` of one condition: codes of a counted column (a token, an
    Organization's identifier; none: any), or one identifier system alone (``system|``).
    None when the store does not count it (then the index counts it)."""
    if param.column in COUNTED_COLUMNS:
        if sql.startswith(f"r.{param.column} IN ("):
            return param.column, args
        if sql == f"r.{param.column} IS NOT NULL":
            return param.column, ()
        return None
    if param.name == "identifier":
        systems = {v.rpartition("|")[0] for v in value.split(",")}
        if len(systems) == 1 and all(v.endswith("|") for v in value.split(",")):
            return "identifier", (systems.pop(),)
    return None


def _unusable(param: SearchParam | None, modifier: str) -> str:
    """Why ``param`` with ``modifier`` cannot be searched ("" when it can)."""
    if param is None:
        return "unknown"
    if modifier and modifier not in param.modifiers:
        return f"modifier :{modifier[:30]} is not supported"
    if param.identifier_system is not None and modifier != "identifier":
        # R4 matches a reference by id; rcmflow knows this Organization by identifier only.
        return (f"only {param.name}:identifier={param.identifier_system}|<code> can be "
                f"searched (the {param.target} has no id here)")
    return ""


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise SearchError(f"{name} must be a whole number >= 0, not {value[:20]!r}")
    return int(value)
