"""One FHIR resource -> canonical events, or the reason it cannot be any.

Pure: a parsed resource (numbers as int/Decimal) in, ``Mapped`` or ``Refused`` out. Every
resource is first validated with its ``fhir.resources.R4B`` model (the facade's package);
money and keys are then read from the JSON itself, so nothing passes through a float.

=========================  =================================================================
ChargeItem                 status billable/billed -> ``charge_posted``; entered-in-error ->
                           ``charge_reversed`` of the same item; others: nothing (warning).
                           Amount ``priceOverride`` (the total), account ``account``
                           (else subject ``Patient/pat.<account>``).
PaymentReconciliation      a patient's payment: one event per ``detail``, amount > 0 ->
                           ``patient_payment``, < 0 -> ``refund`` (how the facade writes
                           them); account from ``detail.request``. From a payer
                           (``paymentIssuer`` an Organization): refused, see ``_payer``.
PaymentNotice              a notice about a PaymentReconciliation (``payment`` is 1..1):
                           validated and kept, no event (the money moves with the other).
Task                       status completed, ``code`` a step of ``urn:rcmflow:lifecycle-state``
                           (registration_complete, eligibility_verified,
                           charge_review_complete, coding_approved, appeal_initiated,
                           patient_statement_issued) -> ``workflow_step``; account ``for``,
                           else ``focus`` (Account/<number> or an identifier); when
                           ``executionPeriod.end``, else ``lastModified``, else ``authoredOn``.
                           Other statuses: nothing (warning).
CoverageEligibilityResponse  status active, outcome complete or partial ->
                           ``workflow_step`` eligibility_verified, result ``active`` when an
                           ``insurance`` is in force (``inforce``), else ``inactive``
                           (``unknown`` with no ``inforce``); account from ``patient``
                           (``Patient/pat.<account>``); when ``created``.
=========================  =================================================================

A refusal is the core ``Rejection`` (streams/rejections.py) with one ``Problem`` whose place
is the part of the resource refused (``detail[1]``; '' for all of it), and the account when it
was read (the DLQ record's context); the ingest places it in the file (``entry[3] detail[1]``).

``Mapped.origins`` says where in the resource each event's money is (the resource, or
``detail[n]``); ``source_amount`` reads it there again, from the JSON (not from the event),
for `rcmflow reconcile` (connectors/inbound/totals.py: ``charges``, ``payments``, ``refunds``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeAlias

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from rcmflow.connectors.inbound.exceptions import FhirValueError
from rcmflow.runtime.settings import default_of
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, DateWindow
from rcmflow.streams.events import (
    WORKFLOW_STEPS,
    ChargePosted,
    ChargeReversed,
    Dimensions,
    EventKind,
    PatientPayment,
    Refund,
    WorkflowStep,
    WorkflowStepName,
)
from rcmflow.streams.exceptions import MoneyError
from rcmflow.streams.money import cents_text, money_cents
from rcmflow.streams.rejections import Problem, Rejection, Severity
from rcmflow.streams.state import LIFECYCLE_SYSTEM

from .values import (
    account_from_reference,
    account_from_subject,
    code_text,
    event_key,
    identifier_key,
    instant,
    money_code,
)

__all__ = ["FhirEvent", "Mapped", "Refused", "refused", "MappingOptions", "map_resource",
           "resource_key", "SUPPORTED", "known_type", "source_amount"]

FhirEvent: TypeAlias = ChargePosted | ChargeReversed | PatientPayment | Refund | WorkflowStep

SUPPORTED = ("ChargeItem", "PaymentReconciliation", "PaymentNotice", "Task",
             "CoverageEligibilityResponse")
#: Where a workflow event's (no money) origin is: ``source_amount`` is not asked about it.
NO_MONEY = "-"
TASK_STATUS = ("draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
               "in-progress", "on-hold", "failed", "completed", "entered-in-error")
ELIGIBILITY_OUTCOMES = frozenset({"complete", "partial"})
NOTE_CHARS_MAX = 200
SOURCE = "fhir"
CHARGE_STATUSES = frozenset({"billable", "billed"})
#: R4 value sets, for quoting a code in a reason only when it is one (see ``code_text``).
CHARGE_ITEM_STATUS = ("planned", "billable", "not-billable", "aborted", "billed",
                      "entered-in-error", "unknown")
FM_STATUS = ("active", "cancelled", "draft", "entered-in-error")
RECONCILIATION_OUTCOME = ("queued", "complete", "error", "partial")
PAYMENT_TYPE = ("payment", "adjustment", "advance")
REVENUE_SYSTEMS = frozenset({"https://www.nubc.org/CodeSystem/RevenueCodes",
                             "http://www.nubc.org/CodeSystem/RevenueCodes",
                             "http://terminology.hl7.org/CodeSystem/nubc-UB92"})
PROCEDURE_SYSTEMS = frozenset({"http://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.12",
                               "urn:oid:2.16.840.1.113883.6.285",
                               "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"})
_CODE = re.compile(r"^[^\x00-\x1f]{1,40}$")
_ENCOUNTER_REF = re.compile(r"^(?:.*/)?Encounter/([A-Za-z0-9\-.]{1,40})$")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
#: Validation errors named in a reason; the rest are counted.
ERRORS_SHOWN_MAX = 3


@dataclass(frozen=True)
class MappingOptions:
    currencies: frozenset[str] = frozenset({"USD"})
    account_systems: tuple[str, ...] = tuple(default_of("fhir_account_systems"))
    date_window: DateWindow = DateWindow()  # a resource dated outside it is rejected


@dataclass(frozen=True)
class Refused:
    """A resource or a part of it refused, and the account it names when that was read."""

    rejection: Rejection
    account: str | None = None


def refused(code: str, detail: str, *, severity: Severity = "error",
            account: str | None = None, where: str = "") -> Refused:
    """``where``: the element within the resource (e.g. "detail[1]"); "" for the whole."""
    problem = Problem(reason_code=code, detail=detail, place=where)
    return Refused(Rejection.of("decode", [problem], severity), account)


@dataclass
class Mapped:
    events: list[FhirEvent] = field(default_factory=list)
    #: per event, where its money is in the resource: "" (the whole) or "detail[n]"
    origins: list[str] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)  # parts refused (detail lines)
    note: str | None = None  # accepted with nothing to apply, and why


def resource_key(doc: dict[str, Any], full_url: str | None) -> str | None:
    """The resource's idempotency key material: its first identifier with a value, else
    ``Type/id``, else the Bundle entry's fullUrl. Never its version: a new version of the same
    item is the same money (a replay) or a conflict, never a second charge."""
    kind = doc.get("resourceType")
    identifiers = doc.get("identifier")
    for ident in identifiers if isinstance(identifiers, list) else []:
        key = identifier_key(ident)
        if key:
            return event_key(str(kind), key)
    if isinstance(doc.get("id"), str) and doc["id"]:
        return event_key(str(kind), f"{kind}/{doc['id']}")
    if full_url:
        return event_key(str(kind), full_url)
    return None


def known_type(kind: Any) -> bool:
    """Is ``kind`` the name of an R4B model (safe to print and to keep in a DLQ context)?"""
    if not isinstance(kind, str) or not kind.isascii() or not kind.isalpha():
        return False
    try:
        get_fhir_model_class(kind)
    except ValueError:
        return False
    return True


def map_resource(doc: Any, *, full_url: str | None, options: MappingOptions) -> Mapped | Refused:
    """Validate one resource and map it; never raises for bad input."""
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        return refused("fhir_not_a_resource", "not a FHIR resource (a JSON object with a "
                       "resourceType)")
    kind = doc["resourceType"]
    if not known_type(kind):
        return refused("fhir_unknown_resource_type", "resourceType is not a FHIR R4 resource "
                       "type")
    model = get_fhir_model_class(kind)
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        return refused("fhir_invalid", f"{kind} is not valid R4: {_errors(exc)}")
    except (ValueError, TypeError, RecursionError) as exc:
        return refused("fhir_invalid", f"{kind} is not valid R4: {type(exc).__name__}")
    if kind not in SUPPORTED:
        return refused("fhir_unsupported_resource", f"{kind} is not taken by rcmflow (it "
                       f"takes {', '.join(SUPPORTED)}); nothing applied", severity="warning")
    key = resource_key(doc, full_url)
    if key is None:
        return refused("fhir_no_key", f"{kind} has no identifier, no id and no fullUrl: "
                       "nothing to recognise a re-send by")
    try:
        if kind == "ChargeItem":
            return _charge_item(doc, key, options)
        if kind == "PaymentReconciliation":
            return _reconciliation(doc, key, options)
        if kind == "Task":
            return _task(doc, key, options)
        if kind == "CoverageEligibilityResponse":
            return _eligibility(doc, key, options)
        return _notice(doc)
    except FhirValueError as exc:
        return refused(exc.code, f"{kind}: {exc}")
    except MoneyError as exc:
        return refused(money_code(exc), f"{kind}: {exc}")


def _errors(exc: ValidationError) -> str:
    errors = exc.errors()
    shown = []
    for err in errors[:ERRORS_SHOWN_MAX]:
        loc = list(err["loc"])
        if err["type"] == "extra_forbidden" and loc:  # the name came from the input
            loc[-1] = "(unknown element)"
        where = ".".join(str(p) for p in loc) or "resource"
        msg = err["msg"]
        if msg.startswith("Value error"):  # custom messages may quote the value: never print it
            msg = _QUOTED.sub("'...'", msg)
        shown.append(f"{where[:80]}: {msg[:120]}")
    more = f" (+{len(errors) - ERRORS_SHOWN_MAX} more)" if len(errors) > ERRORS_SHOWN_MAX else ""
    return "; ".join(shown) + more


def _charge_item(doc: dict[str, Any], key: str, options: MappingOptions) -> Mapped | Refused:
    status = doc.get("status")
    if status not in CHARGE_STATUSES and status != "entered-in-error":
        shown = code_text(status, CHARGE_ITEM_STATUS)
        return refused("fhir_not_billable", f"ChargeItem status {shown} is not billable, "
                       "billed or entered-in-error: nothing applied", severity="warning")
    account = _charge_account(doc, options)
    if isinstance(account, Refused):
        return account
    if "priceOverride" not in doc:
        return refused("fhir_no_price", "ChargeItem has no priceOverride: rcmflow does not "
                       "price from ChargeItemDefinition, the sender must give the total",
                       account=account)
    try:
        cents, currency = money_cents(doc["priceOverride"], where="priceOverride",
                                      currencies=options.currencies)
        if cents <= 0:
            raise FhirValueError(f"priceOverride.value {cents_text(cents)} is not more than 0 "
                                 "(a charge is reversed with status entered-in-error)",
                                 "fhir_invalid_amount")
        quantity = _quantity(doc.get("quantity"))
        occurred = _charge_time(doc)
        if implausible := options.date_window.problem(occurred, "the charge's date "
                                                      "(occurrence[DateTime|Period.start], "
                                                      "else enteredDate)"):
            raise FhirValueError(implausible, DATE_OUT_OF_RANGE)
    except FhirValueError as exc:
        return refused(exc.code, f"ChargeItem: {exc}", account=account)
    except MoneyError as exc:
        return refused(money_code(exc), f"ChargeItem: {exc}", account=account)
    try:
        dims = Dimensions(encounter=_encounter(doc.get("context")), **_codes(doc))
        common: dict[str, Any] = {"account": account, "occurred_at": occurred,
                                  "source": SOURCE, "currency": currency, "dimensions": dims,
                                  "amount_cents": cents}
        if status == "entered-in-error":
            event: FhirEvent = ChargeReversed(kind=EventKind.CHARGE_REVERSED,
                                              event_id=f"{key}:entered-in-error",
                                              reverses_event_id=key, **common)
        else:
            event = ChargePosted(kind=EventKind.CHARGE_POSTED, event_id=key,
                                 quantity=quantity, **common)
    except ValidationError as exc:
        return refused("fhir_invalid_value", f"ChargeItem: {_errors(exc)}", account=account)
    return Mapped(events=[event], origins=[""])


def _charge_account(doc: dict[str, Any], options: MappingOptions) -> str | Refused:
    refs = doc.get("account") or []
    try:
        found = {a for a in (account_from_reference(r, systems=options.account_systems)
                             for r in refs) if a}
        if not refs:
            subject = account_from_subject(doc.get("subject"))
            found = {subject} if subject else set()
    except FhirValueError as exc:
        return refused("fhir_no_account", f"ChargeItem: {exc}")
    if len(found) > 1:
        return refused("fhir_account_ambiguous", "ChargeItem names several accounts "
                       f"({', '.join(sorted(found))}): split it, one charge per account")
    if not found:
        where = "account" if refs else "account (absent) or subject"
        return refused("fhir_no_account", f"ChargeItem: {where} names no account rcmflow can "
                       "key: use Account/<number>, an identifier whose system is in "
                       "RCMFLOW_FHIR_ACCOUNT_SYSTEMS, or subject Patient/pat.<number>")
    return found.pop()


def _quantity(quantity: Any) -> int:
    if quantity is None or not isinstance(quantity, dict) or quantity.get("value") is None:
        return 1
    value = quantity["value"]
    whole = isinstance(value, int) or (isinstance(value, Decimal) and value.is_finite()
                                       and value == value.to_integral_value())
    if isinstance(value, bool) or not whole:
        raise FhirValueError("quantity.value is not a whole number (the charge's total is "
                             "priceOverride; send whole units)")
    if not 1 <= value <= 100_000:
        raise FhirValueError("quantity.value is not between 1 and 100000")
    return int(value)


def _charge_time(doc: dict[str, Any]) -> datetime:
    period = doc.get("occurrencePeriod") or {}
    for where, value in (("occurrenceDateTime", doc.get("occurrenceDateTime")),
                         ("occurrencePeriod.start", period.get("start")),
                         ("enteredDate", doc.get("enteredDate"))):
        if value is not None:
            return instant(value, where=where)
    raise FhirValueError("no occurrenceDateTime, occurrencePeriod.start or enteredDate: "
                         "when the charge happened is required")


def _encounter(ref: Any) -> str | None:
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        match = _ENCOUNTER_REF.match(ref["reference"])
        return match.group(1) if match else None
    return None


def _codes(doc: dict[str, Any]) -> dict[str, str]:
    """revenue_code / procedure_code from ChargeItem.code; department from
    performingOrganization.identifier (a department code, as in the R4 example)."""
    out: dict[str, str] = {}
    codings = (doc.get("code") or {}).get("coding") or []
    for coding in codings:
        code, system = coding.get("code"), coding.get("system")
        if not isinstance(code, str) or not _CODE.match(code):
            continue
        if system in REVENUE_SYSTEMS:
            out.setdefault("revenue_code", code)
        elif system in PROCEDURE_SYSTEMS:
            out.setdefault("procedure_code", code)
    org = doc.get("performingOrganization") or {}
    dept = (org.get("identifier") or {}).get("value") if isinstance(org, dict) else None
    if isinstance(dept, str) and _CODE.match(dept):
        out["department"] = dept
    return out


def _payer(doc: dict[str, Any]) -> bool:
    """Is this reconciliation a payer's? Its paymentIssuer is then an Organization.

    rcmflow takes payer money with its adjudication (X12 835 / ClaimResponse: what was paid,
    what is contractual, what the patient owes). A PaymentReconciliation carries the cash
    only: applying it as patient money would misstate patient AR, and applying it as payer
    money would leave the rest of the claim unadjudicated. So it is refused, with the reason.
    """
    issuer = doc.get("paymentIssuer")
    if not isinstance(issuer, dict):
        return False
    literal: str = issuer["reference"] if isinstance(issuer.get("reference"), str) else ""
    kind: str = issuer["type"] if isinstance(issuer.get("type"), str) else ""
    person = ("Patient", "RelatedPerson")
    return not (kind in person or any(literal.startswith(p + "/") or f"/{p}/" in literal
                                      for p in person))


def _reconciliation(doc: dict[str, Any], key: str, options: MappingOptions) -> Mapped | Refused:
    if doc.get("status") != "active":
        return refused("fhir_not_active", "PaymentReconciliation status "
                       f"{code_text(doc.get('status'), FM_STATUS)}"
                       " is not active: nothing applied (a payment entered in error needs a "
                       "refund or a manual adjustment)")
    if doc.get("outcome") in ("error", "queued"):
        shown = code_text(doc.get("outcome"), RECONCILIATION_OUTCOME)
        return refused("fhir_not_complete", f"PaymentReconciliation outcome {shown}: nothing "
                       "applied", severity="warning")
    if _payer(doc):
        return refused("fhir_payer_payment", "PaymentReconciliation from a payer "
                       "(paymentIssuer is an Organization): payer money is applied with its "
                       "adjudication (X12 835), not from the payment alone; nothing applied")
    details = doc.get("detail") or []
    if not details:
        return refused("fhir_no_detail", "PaymentReconciliation has no detail: each detail "
                       "line names the account it pays (detail.request Account/<number>)")
    total, currency = money_cents(doc.get("paymentAmount"), where="paymentAmount",
                                  currencies=options.currencies)
    amounts: list[int] = []
    for n, detail in enumerate(details):
        if "amount" not in detail:
            return refused("fhir_invalid_amount", f"PaymentReconciliation detail[{n}] has no "
                           "amount")
        amounts.append(money_cents(detail["amount"], where=f"detail[{n}].amount",
                                   currencies=options.currencies)[0])
    if sum(amounts) != total:
        return refused("fhir_unbalanced", "PaymentReconciliation paymentAmount "
                       f"{cents_text(total)} != sum of detail amounts "
                       f"{cents_text(sum(amounts))}: nothing applied")
    trace = (doc.get("paymentIdentifier") or {}).get("value")
    trace = trace[:80] if isinstance(trace, str) and trace else None
    mapped = Mapped()
    for n, (detail, cents) in enumerate(zip(details, amounts, strict=True)):
        event = _detail_event(doc, detail, n, cents, key, trace, currency, options)
        if isinstance(event, Refused):
            mapped.refused.append(event)
        else:
            mapped.events.append(event)
            mapped.origins.append(f"detail[{n}]")
    return mapped


def _detail_event(doc: dict[str, Any], detail: dict[str, Any], n: int, cents: int, key: str,
                  trace: str | None, currency: str,
                  options: MappingOptions) -> FhirEvent | Refused:
    where = f"detail[{n}]"
    codes = [c.get("code") for c in ((detail.get("type") or {}).get("coding") or [])]
    if codes and "payment" not in codes:
        return refused("fhir_detail_type", f"PaymentReconciliation {where}.type "
                       f"{code_text(codes[0], PAYMENT_TYPE)} is not payment: nothing applied",
                       where=where)
    try:
        account = account_from_reference(detail.get("request"), systems=options.account_systems)
    except FhirValueError as exc:
        return refused("fhir_no_account", f"PaymentReconciliation {where}: {exc}", where=where)
    if account is None:
        return refused("fhir_no_account", f"PaymentReconciliation {where}.request names no "
                       "account: use Account/<number> or an identifier whose system is in "
                       "RCMFLOW_FHIR_ACCOUNT_SYSTEMS", where=where)
    if cents == 0:
        return refused("fhir_invalid_amount", f"PaymentReconciliation {where}.amount is 0",
                       account=account, where=where)
    try:
        when = next(((w, v) for w, v in ((f"{where}.date", detail.get("date")),
                                          ("paymentDate", doc.get("paymentDate")),
                                          ("created", doc.get("created"))) if v is not None))
        occurred = instant(when[1], where=when[0])
    except (StopIteration, FhirValueError) as exc:
        return refused("fhir_invalid_value", f"PaymentReconciliation {where}: "
                       f"{exc if isinstance(exc, FhirValueError) else 'no date'}",
                       account=account, where=where)
    if implausible := options.date_window.problem(occurred, when[0]):
        return refused(DATE_OUT_OF_RANGE, f"PaymentReconciliation {where}: {implausible}",
                       account=account, where=where)
    ident = identifier_key(detail.get("identifier"))
    event_id = event_key("PaymentReconciliation.detail", ident) if ident else f"{key}:{where}"
    own_ref = (detail.get("identifier") or {}).get("value")
    reference = trace or (own_ref[:80] if isinstance(own_ref, str) and own_ref else None)
    common: dict[str, Any] = {"event_id": event_id, "account": account,
                              "occurred_at": occurred, "source": SOURCE,
                              "correlation_id": trace, "currency": currency,
                              "reference": reference, "amount_cents": abs(cents)}
    try:
        if cents > 0:
            return PatientPayment(kind=EventKind.PATIENT_PAYMENT, channel="portal", **common)
        return Refund(kind=EventKind.REFUND, to="patient", **common)
    except ValidationError as exc:
        return refused("fhir_invalid_value", f"PaymentReconciliation {where}: {_errors(exc)}",
                       account=account, where=where)


def source_amount(doc: dict[str, Any], origin: str,
                  options: MappingOptions) -> tuple[str, date, str, int]:
    """(account, day, measure, cents) an applied part of a resource states: a ChargeItem's
    ``priceOverride`` (negative when entered-in-error), or ``detail[n].amount`` of a
    PaymentReconciliation (> 0 a payment, < 0 a refund). Raises on a part that was never
    applicable (the mapping refused it), or one with no money (``NO_MONEY``)."""
    assert origin != NO_MONEY, "a workflow step states no amount"
    if not origin:
        charged = _charge_account(doc, options)
        assert isinstance(charged, str), charged
        cents = money_cents(doc["priceOverride"], where="priceOverride",
                            currencies=options.currencies)[0]
        signed = -cents if doc.get("status") == "entered-in-error" else cents
        return charged, _charge_time(doc).date(), "charges", signed
    n = int(origin.removeprefix("detail[").removesuffix("]"))
    detail = doc["detail"][n]
    cents = money_cents(detail["amount"], where=origin, currencies=options.currencies)[0]
    account = account_from_reference(detail.get("request"), systems=options.account_systems)
    assert account is not None
    when = next(v for v in (detail.get("date"), doc.get("paymentDate"), doc.get("created"))
                if v is not None)
    return (account, instant(when, where=origin).date(), "payments" if cents > 0 else "refunds",
            abs(cents))


def _notice(doc: dict[str, Any]) -> Mapped | Refused:
    if doc.get("status") != "active":
        shown = code_text(doc.get("status"), FM_STATUS)
        return refused("fhir_not_active", f"PaymentNotice status {shown} is not active: "
                       "nothing applied", severity="warning")
    return Mapped(note="PaymentNotice: a notice about the payment it references "
                  "(PaymentReconciliation); the money is applied from that one, nothing here")


def _workflow(kind: str, key: str, account: str, step: WorkflowStepName, when: tuple[str, Any],
              options: MappingOptions, **fields: Any) -> Mapped | Refused:
    """A ``workflow_step`` (no money) from a Task or a CoverageEligibilityResponse."""
    try:
        occurred = instant(when[1], where=when[0])
        if implausible := options.date_window.problem(occurred, when[0]):
            raise FhirValueError(implausible, DATE_OUT_OF_RANGE)
        event = WorkflowStep(kind=EventKind.WORKFLOW_STEP, event_id=key, account=account,
                             occurred_at=occurred, source=SOURCE, step=step, **fields)
    except FhirValueError as exc:
        return refused(exc.code, f"{kind}: {exc}", account=account)
    except ValidationError as exc:
        return refused("fhir_invalid_value", f"{kind}: {_errors(exc)}", account=account)
    return Mapped(events=[event], origins=[NO_MONEY])


def _task(doc: dict[str, Any], key: str, options: MappingOptions) -> Mapped | Refused:
    if doc.get("status") != "completed":
        return refused("fhir_task_not_completed", f"Task status "
                       f"{code_text(doc.get('status'), TASK_STATUS)} is not completed: a "
                       "workflow step counts once done; nothing applied", severity="warning")
    codings = (doc.get("code") or {}).get("coding") or []
    steps = [c.get("code") for c in codings if c.get("system") == LIFECYCLE_SYSTEM]
    step = next((s for s in WORKFLOW_STEPS if s in steps), None)
    if step is None:
        return refused("fhir_task_unknown_step", "Task.code has no coding of "
                       f"{LIFECYCLE_SYSTEM} naming a workflow step ({', '.join(WORKFLOW_STEPS)})"
                       "; nothing applied")
    try:
        account = (account_from_reference(doc.get("for"), systems=options.account_systems)
                   or account_from_reference(doc.get("focus"),
                                             systems=options.account_systems))
    except FhirValueError as exc:
        return refused("fhir_no_account", f"Task: {exc}")
    if account is None:
        return refused("fhir_no_account", "Task: for (else focus) names no account: use "
                       "Account/<number> or an identifier whose system is in "
                       "RCMFLOW_FHIR_ACCOUNT_SYSTEMS")
    period = doc.get("executionPeriod") or {}
    when = next(((w, v) for w, v in (("executionPeriod.end", period.get("end")),
                                      ("lastModified", doc.get("lastModified")),
                                      ("authoredOn", doc.get("authoredOn"))) if v is not None),
                ("executionPeriod.end, lastModified or authoredOn", None))
    description = doc.get("description")
    note = description[:NOTE_CHARS_MAX] if isinstance(description, str) and description else None
    return _workflow("Task", key, account, step, when, options, note=note)


def _eligibility(doc: dict[str, Any], key: str, options: MappingOptions) -> Mapped | Refused:
    if doc.get("status") != "active":
        return refused("fhir_not_active", "CoverageEligibilityResponse status "
                       f"{code_text(doc.get('status'), FM_STATUS)} is not active: nothing "
                       "applied", severity="warning")
    if doc.get("outcome") not in ELIGIBILITY_OUTCOMES:
        shown = code_text(doc.get("outcome"), RECONCILIATION_OUTCOME)
        return refused("fhir_not_complete", f"CoverageEligibilityResponse outcome {shown}: no "
                       "eligibility result yet; nothing applied", severity="warning")
    try:
        account = account_from_subject(doc.get("patient"))
    except FhirValueError as exc:
        return refused("fhir_no_account", f"CoverageEligibilityResponse: {exc}")
    if account is None:
        return refused("fhir_no_account", "CoverageEligibilityResponse: patient names no "
                       "account: use Patient/pat.<number> (the facade's patient ids)")
    inforce = [i.get("inforce") for i in doc.get("insurance") or [] if isinstance(i, dict)]
    result = ("active" if True in inforce else "inactive" if False in inforce else "unknown")
    return _workflow("CoverageEligibilityResponse", key, account, "eligibility_verified",
                     ("created", doc.get("created")), options, result=result)
