"""HL7 v2 message -> canonical events, or the reasons it cannot be one (pure).

DFT^P03 / DFT^P11 and BAR (with FT1): one charge event per FT1. FT1-6 (transaction type)
picks charge or credit through a configurable table (sites use CD or CR for credits); a
negative amount or quantity on a charge type is a reversal too. Amount: FT1-11 (extended),
else FT1-12 (unit) x FT1-10 (quantity); `100&USD` is read as its first sub-component.
Account: PID-18, else PV1-19 (configurable order); encounter: PV1-19. ADT and BAR events
listed in the status table (A01/A04 admit/register -> open, A03 -> discharged, ...) become an
account status change; an ADT A01 or A04 is also a ``workflow_step`` registration_complete
(the account's lifecycle, streams/lifecycle.py), after the status change. A message is
accepted or refused whole: one bad FT1 refuses it all.

``source_totals`` reads an accepted message's money again, straight from its FT1 fields (not
from the events), for `rcmflow reconcile` (connectors/inbound/totals.py): measure
``charges``, charge types positive, credit types and negative amounts or quantities negative.

An event's date (FT1-4, else EVN-2, else MSH-7) outside the configured window
(streams/date_window.py) refuses the message: AE, date_out_of_range, at the field it came from.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

from rcmflow.connectors.inbound.exceptions import ValueProblem
from rcmflow.connectors.inbound.totals import SourceTotals
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, DateWindow
from rcmflow.streams.events import EVENT_ADAPTER, Event, ValidationError
from rcmflow.streams.exceptions import MoneyError
from rcmflow.streams.money import parse_cents
from rcmflow.streams.rejections import Problem

from .problems import Rejected, refused
from .reader import Hl7Message, Segment
from .values import parse_quantity, parse_timestamp

__all__ = [
    "MappingConfig",
    "FT1_TYPES_DEFAULT",
    "STATUS_BY_TRIGGER_DEFAULT",
    "SUPPORTED_TYPES",
    "source_key",
    "map_message",
    "source_totals",
]

FtKind = Literal["charge", "credit"]
AccountField = Literal["PID-18", "PV1-19"]
#: HL7 table 0017 charge/credit codes, plus the site-specific CR seen in real feeds.
FT1_TYPES_DEFAULT: dict[str, FtKind] = {"CG": "charge", "CD": "credit", "CR": "credit"}
STATUS_BY_TRIGGER_DEFAULT: dict[str, str] = {
    "A01": "open", "A04": "open", "A03": "discharged", "P01": "open", "P06": "closed",
}
SUPPORTED_TYPES = ("DFT", "BAR", "ADT")
#: ADT triggers that complete a registration (admit, register an outpatient): they add a
#: ``workflow_step`` registration_complete, event id ``<base>:registration``.
REGISTRATION_TRIGGERS = frozenset({"A01", "A04"})
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
#: FT1-7.3 coding systems whose code is a procedure code (CPT-4, HCPCS).
_PROCEDURE_SYSTEMS = {"C4", "CPT", "CPT4", "HCPCS", "HCPC"}
_CODE_CHARS_MAX = 40
_EVENT_ID_PREFIX_MAX = 180


@dataclass(frozen=True)
class MappingConfig:
    ft1_types: Mapping[str, FtKind] = field(default_factory=lambda: dict(FT1_TYPES_DEFAULT))
    account_fields: tuple[AccountField, ...] = ("PID-18", "PV1-19")
    status_by_trigger: Mapping[str, str] = field(
        default_factory=lambda: dict(STATUS_BY_TRIGGER_DEFAULT))
    default_tz: tzinfo = UTC
    entity: str = "01"
    #: More FT1s than this: the message is refused whole (its raw record must stay bounded).
    ft1_max: int = 1000
    #: Event dates outside it refuse the message (RCMFLOW_DATE_EARLIEST / _FUTURE_DAYS).
    date_window: DateWindow = DateWindow()


def source_key(msg: Hl7Message) -> str:
    """MSH-3|MSH-4|MSH-10: the replay key (MSH-10 alone is reused across senders)."""
    return f"{msg.msh.field(3)}|{msg.msh.field(4)}|{msg.control_id}"


def _event_id_base(msg: Hl7Message) -> str:
    base = "hl7:" + source_key(msg)
    if len(base) <= _EVENT_ID_PREFIX_MAX:
        return base
    return "hl7:" + hashlib.sha256(base.encode()).hexdigest()[:40]


def _ft1_event_id(base: str, ft1: Segment) -> str:
    """The event an FT1 becomes; its source amount carries the same id (source_totals)."""
    return f"{base}:ft1-{ft1.index}"


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, reason_code: str, place: str, detail: str) -> None:
        self.problems.append(Problem(reason_code=reason_code, place=place, detail=detail))


def map_message(msg: Hl7Message, config: MappingConfig) -> list[Event] | Rejected:
    """The canonical events of one message, in order, or why there are none."""
    kind, trigger = msg.message_type
    if kind not in SUPPORTED_TYPES:
        return refused("AR", "validate", [Problem(
            reason_code="unsupported_message_type", place="MSH^1^9",
            detail=f"message type {kind or '(empty)'}^{trigger} is not taken here "
            f"(supported: {', '.join(SUPPORTED_TYPES)})")])
    ft1_count = len(msg.all("FT1"))
    if ft1_count > config.ft1_max:
        return refused("AE", "validate", [Problem(
            reason_code="too_many_ft1", place="FT1",
            detail=f"{ft1_count} FT1 segments; at most {config.ft1_max} per message "
            "(RCMFLOW_HL7_FT1_MAX): split the charges over several messages")])
    problems = _Collector()
    base = _event_id_base(msg)
    account = _account(msg, config, problems)
    ft1s = msg.all("FT1")
    status = config.status_by_trigger.get(trigger) if kind in ("ADT", "BAR") else None
    if account is None and (ft1s or status is not None) and not problems.problems:
        problems.add("no_account", "PID^1^18",
                     "no account number: " + " and ".join(config.account_fields) + " are empty")
    occurred, occurred_at = _message_time(msg, config, problems)
    pv1 = msg.first("PV1")
    encounter = _code(pv1, 19, problems) if pv1 else None
    docs: list[tuple[str, dict[str, Any]]] = []
    if status is not None:
        _check_date(occurred, occurred_at, config, problems)
        docs.append(("MSH^1^9", {"kind": "account_status_changed", "event_id": f"{base}:status",
                                 "status": status, "occurred_at": occurred,
                                 "dimensions": _dimensions(config, encounter=encounter)}))
    if kind == "ADT" and trigger in REGISTRATION_TRIGGERS and account is not None:
        _check_date(occurred, occurred_at, config, problems)
        docs.append(("MSH^1^9", {"kind": "workflow_step", "event_id": f"{base}:registration",
                                 "step": "registration_complete", "occurred_at": occurred,
                                 "note": f"ADT^{trigger}",
                                 "dimensions": _dimensions(config, encounter=encounter)}))
    if kind == "DFT" and not ft1s:
        problems.add("no_ft1", "FT1",
                     f"a DFT^{trigger} message without FT1 segments carries no charge")
    for ft1 in ft1s:
        doc = _financial(ft1, config, problems, (occurred, occurred_at), encounter, base)
        if doc is not None:
            docs.append((f"FT1^{ft1.index}", doc))
    if problems.problems:
        return refused("AE", "validate", problems.problems)
    events: list[Event] = []
    for location, doc in docs:
        full = {"schema_version": 1, "account": account, "source": "hl7",
                "correlation_id": msg.control_id, **doc}
        try:
            events.append(EVENT_ADAPTER.validate_python(full))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"][1:])
            problems.add("invalid_event", location,
                         f"{doc['event_id']}: {where}: {first['msg']}")
    if problems.problems:
        return refused("AE", "validate", problems.problems)
    return events


def _account(msg: Hl7Message, config: MappingConfig, problems: _Collector) -> str | None:
    for name in config.account_fields:
        seg_name, _, number = name.partition("-")
        seg = msg.first(seg_name)
        value = seg.part(int(number)) if seg else ""
        if not value:
            continue
        if not _ACCOUNT.match(value):
            problems.add("invalid_account", f"{seg_name}^1^{number}",
                         f"{name} account number is not 1-64 letters, digits, '.', '_', '-'")
            return None
        return value
    return None


def _check_date(when: datetime, where: str, config: MappingConfig,
                problems: _Collector) -> None:
    """``where``: the field the date came from ('FT1^2^4')."""
    seg, index, number = where.split("^")
    label = f"{seg}-{number}" + (f" (FT1 #{index})" if seg == "FT1" else "")
    text = config.date_window.problem(when, label)
    if text is not None and not any(p.place == where and p.reason_code == DATE_OUT_OF_RANGE
                                    for p in problems.problems):
        problems.add(DATE_OUT_OF_RANGE, where, text)


def _message_time(msg: Hl7Message, config: MappingConfig,
                  problems: _Collector) -> tuple[datetime, str]:
    """EVN-2 (recorded date/time), else MSH-7, and where it was read ('EVN^1^2'); a value
    that is there must be valid."""
    evn = msg.first("EVN")
    for seg, number, where in ((evn, 2, "EVN^1^2"), (msg.msh, 7, "MSH^1^7")):
        text = seg.part(number) if seg else ""
        if not text:
            continue
        try:
            return parse_timestamp(text, config.default_tz, where.replace("^1^", "-")), where
        except ValueProblem as exc:
            problems.add("invalid_timestamp", where, str(exc))
            return datetime.now(UTC), where
    problems.add("no_timestamp", "MSH^1^7",
                 "no message date/time: EVN-2 and MSH-7 are empty")
    return datetime.now(UTC), "MSH^1^7"


def _code(seg: Segment, number: int, problems: _Collector, component: int = 1) -> str | None:
    value = seg.part(number, component)
    if not value:
        return None
    if len(value) > _CODE_CHARS_MAX:
        problems.add("value_too_long", f"{seg.name}^{seg.index}^{number}",
                     f"{seg.name}-{number} is longer than {_CODE_CHARS_MAX} characters")
        return None
    return value


def _dimensions(config: MappingConfig, **dims: str | None) -> dict[str, str]:
    return {"entity": config.entity, **{k: v for k, v in dims.items() if v}}


def _financial(ft1: Segment, config: MappingConfig, problems: _Collector,
               occurred: tuple[datetime, str], encounter: str | None,
               base: str) -> dict[str, Any] | None:
    """``occurred``: the message's time and where it was read, for an FT1 without FT1-4."""
    at = f"FT1^{ft1.index}^"
    before = len(problems.problems)
    type_code = ft1.part(6).upper()
    ft_kind = config.ft1_types.get(type_code)
    if ft_kind is None:
        known = ", ".join(sorted(config.ft1_types))
        problems.add("unmapped_transaction_type", at + "6",
                     f"FT1-6 transaction type {type_code or '(empty)'!r} is not mapped "
                     f"(mapped: {known}; see RCMFLOW_HL7_FT1_TYPES)")
    quantity = amount = 0
    currency = "USD"
    try:
        quantity = parse_quantity(ft1.part(10), "FT1-10 quantity")
        extended, unit = ft1.part(11), ft1.part(12)
        if extended:
            amount = parse_cents(extended, "FT1-11 extended amount")
            currency = ft1.part(11, 1, 2).upper() or currency
        elif unit:
            amount = parse_cents(unit, "FT1-12 unit amount") * abs(quantity)
            currency = ft1.part(12, 1, 2).upper() or currency
        else:
            problems.add("no_amount", at + "11",
                         "FT1-11 (extended amount) and FT1-12 (unit amount) are both empty")
    except (ValueProblem, MoneyError) as exc:
        problems.add("invalid_amount", at + ("10" if "FT1-10" in str(exc)
                     else "11" if "FT1-11" in str(exc) else "12"), str(exc))
    if not _CURRENCY.match(currency):
        problems.add("invalid_currency", at + "11",
                     f"currency {currency[:10]!r} is not an ISO 4217 code")
    if quantity == 0 and not any(p.place == at + "10" for p in problems.problems[before:]):
        problems.add("invalid_quantity", at + "10", "FT1-10 quantity is 0")
    if amount == 0 and len(problems.problems) == before:
        problems.add("invalid_amount", at + "11", "the FT1 amount is 0")
    when, when_at = occurred
    posted = ft1.part(4)
    if posted:
        try:
            when = parse_timestamp(posted, config.default_tz, "FT1-4 transaction date")
            when_at = at + "4"
        except ValueProblem as exc:
            problems.add("invalid_timestamp", at + "4", str(exc))
            when_at = ""  # refused already: no second word about its date
    if when_at:
        _check_date(when, when_at, config, problems)
    procedure = _code(ft1, 25, problems)
    if procedure is None and ft1.part(7, 3).upper() in _PROCEDURE_SYSTEMS:
        procedure = _code(ft1, 7, problems)
    dims = _dimensions(config, encounter=encounter, department=_code(ft1, 13, problems),
                       revenue_code=_code(ft1, 41, problems), procedure_code=procedure)
    if len(problems.problems) > before or ft_kind is None:
        return None
    reversal = ft_kind == "credit" or amount < 0 or quantity < 0
    doc: dict[str, Any] = {
        "event_id": _ft1_event_id(base, ft1),
        "occurred_at": when,
        "currency": currency,
        "amount_cents": abs(amount),
        "dimensions": dims,
    }
    if reversal:
        doc["kind"] = "charge_reversed"
    else:
        doc |= {"kind": "charge_posted", "quantity": abs(quantity)}
    return doc


def source_totals(msg: Hl7Message, config: MappingConfig, events: list[Event]) -> SourceTotals:
    """What an accepted message says in money, per FT1: FT1-11 (else FT1-12 x FT1-10), signed
    by FT1-6, on the FT1-4 day (else EVN-2 / MSH-7), for the PID-18 / PV1-19 account, each
    attributed to the event the FT1 became."""
    totals = SourceTotals(event_ids=[(e.account, e.event_id) for e in events])
    account = _account(msg, config, _Collector())
    if account is None:
        return totals  # no FT1 and no status: nothing moves
    message_day = _message_time(msg, config, _Collector())[0].date()
    base = _event_id_base(msg)
    for ft1 in msg.all("FT1"):
        quantity = parse_quantity(ft1.part(10))
        if ft1.part(11):
            amount = parse_cents(ft1.part(11))
        else:
            amount = parse_cents(ft1.part(12)) * abs(quantity)
        credit = config.ft1_types.get(ft1.part(6).upper()) == "credit"
        signed = -abs(amount) if credit or amount < 0 or quantity < 0 else abs(amount)
        posted = ft1.part(4)
        day = parse_timestamp(posted, config.default_tz).date() if posted else message_day
        totals.add(account, day, "charges", signed, _ft1_event_id(base, ft1))
    return totals
