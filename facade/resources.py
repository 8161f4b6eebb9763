"""FHIR R4 resources built from an account's rcm.accounts records (``streams/layout.py``).

Pure functions: record dicts in (the head, items), plain FHIR dicts out, one resource each:

==========================  ===========================================  ==================
resource                    built from                                   ``meta.versionId``
==========================  ===========================================  ==================
Account                     the head; coverage = its claims' payers      the head's version
Claim                       a claim item (the head's entity: provider)   the claim's
ClaimResponse               an adjudication item (+ its claim's payer    the adjudication's
                            when it names none)                          (or that claim's)
PaymentReconciliation       the account's adjudications of one payer     the newest of them
  ``trn.<account>.<trace>``   check / EFT (835 TRN)
PaymentReconciliation       a payment item (patient payment or refund)   the payment's
  ``pay.<account>.<event>``
==========================  ===========================================  ==================

``meta.lastUpdated``: the head's ``last_event_at`` for an Account; for the others the times
their items carry (an adjudication's or payment's ``occurred_at``, a claim's submission or
first answer): an item does not record when it last changed.

Money is built from integer cents as
``Decimal`` with two places and written as JSON numbers with both places (``fhir_json``): the
FHIR models pass floats through, so nothing here ever makes one. Every resource is validated
with the ``fhir.resources.R4B`` model of its type (``validate``) before the store keeps it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
from fhir.resources.R4B.account import Account
from fhir.resources.R4B.claim import Claim
from fhir.resources.R4B.claimresponse import ClaimResponse
from fhir.resources.R4B.paymentreconciliation import PaymentReconciliation
from pydantic import BaseModel

from rcmflow.streams.money import cents_decimal
from rcmflow.streams.state import LIFECYCLE_SYSTEM, ItemRef

__all__ = [
    "BALANCE_EXTENSION",
    "LIFECYCLE_EXTENSION",
    "LIFECYCLE_SYSTEM",
    "PROVIDER_PREFIX",
    "Built",
    "account_resource",
    "build_resources",
    "claim_resource",
    "claim_response_resource",
    "is_provider",
    "patient_payment_resource",
    "payer_payment_resource",
    "shows_claim",
    "trace_order",
    "fhir_id",
    "fhir_json",
    "money",
    "patient_id_for",
    "utc_instant",
    "validate",
]

#: HL7's cross-version extension carrying R5's Account.balance on an R4 Account.
BALANCE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"
#: rcmflow's extension with the account's lifecycle state (docs/lifecycle.md): sub-extensions
#: ``state`` (a Coding of LIFECYCLE_SYSTEM), ``since`` (dateTime) and ``expected`` (boolean:
#: false when the transition into it broke the expected order).
LIFECYCLE_EXTENSION = "urn:rcmflow:fhir:StructureDefinition:account-lifecycle-state"
AGGREGATE_SYSTEM = "http://hl7.org/fhir/account-aggregate"
TERM_SYSTEM = "http://hl7.org/fhir/account-balance-term"
ACCOUNT_SYSTEM = "urn:rcmflow:account"
CLAIM_SYSTEM = "urn:rcmflow:claim"
PAYER_SYSTEM = "urn:rcmflow:payer"
ENTITY_SYSTEM = "urn:rcmflow:entity"
EVENT_SYSTEM = "urn:rcmflow:event"
TRACE_SYSTEM = "urn:rcmflow:payment-trace"  # 835 TRN02: the payer's check / EFT number
PAYMENT_REF_SYSTEM = "urn:rcmflow:payment-reference"
PCN_SYSTEM = "urn:rcmflow:payer-claim-control-number"
CARC_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"
CAS_GROUP_SYSTEM = "https://x12.org/codes/claim-adjustment-group-codes"
ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
C4BB_ADJUDICATION_SYSTEM = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication"
CLAIM_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/claim-type"
PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/processpriority"
PAYMENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"
PAYMENT_DETAIL_SYSTEM = "http://terminology.hl7.org/CodeSystem/payment-type"
REVENUE_SYSTEM = "https://www.nubc.org/CodeSystem/RevenueCodes"
CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"
PROVIDER_PREFIX = "provider:"

_ID_OK = re.compile(r"[A-Za-z0-9\-]+")
_ID_MAX = 64
# FHIR strings may not hold control characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_MODELS: dict[str, type[BaseModel]] = {
    "Account": Account,
    "Claim": Claim,
    "ClaimResponse": ClaimResponse,
    "PaymentReconciliation": PaymentReconciliation,
}


class Built(NamedTuple):
    """One resource and the values the store indexes it by."""

    type: str
    id: str
    patient: str
    status: str
    created: str | None  # UTC instant, ISO 8601, sortable as text
    identifiers: tuple[str, ...]  # "system|value"
    request: str | None  # ClaimResponse.request: the Claim id
    outcome: str | None
    doc: dict[str, Any]


def fhir_id(*parts: str) -> str:
    """A stable FHIR id (``[A-Za-z0-9\\-.]{1,64}``) from source ids.

    Readable when it can be: the parts joined by ".", when each part is only letters, digits
    and "-" and the whole fits. Otherwise "h.." + a digest of the parts: a readable id never
    holds "..", so the two forms cannot collide.
    """
    assert parts and all(parts), "an id needs non-empty parts"
    joined = ".".join(parts)
    if len(joined) <= _ID_MAX and all(_ID_OK.fullmatch(p) for p in parts):
        return joined
    digest = hashlib.sha256(orjson.dumps(list(parts))).hexdigest()[:40]
    return f"h..{digest}"


def patient_id_for(snapshot: Mapping[str, Any]) -> str:
    """The FHIR Patient id an account belongs to.

    Account state carries no patient id yet: a snapshot's ``patient`` wins when it has one,
    else the id is derived from the account number (one patient per account). The one place
    to change when the EHR's patient id reaches the events.
    """
    patient = snapshot.get("patient")
    if isinstance(patient, str) and patient:
        return patient
    return fhir_id("pat", snapshot["account"])


def money(cents: int, currency: str = "USD") -> dict[str, Any]:
    """FHIR Money from integer cents: a Decimal with exactly two places."""
    return {"value": cents_decimal(cents), "currency": currency}


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Written as it is, a JSON number with its two places (orjson has no Decimal).
        return orjson.Fragment(f"{value:.2f}")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def fhir_json(doc: dict[str, Any]) -> bytes:
    """JSON bytes of a FHIR dict; Decimals are written as numbers with their two places."""
    return orjson.dumps(doc, default=_json_default)


def validate(doc: dict[str, Any]) -> None:
    """Raise ``pydantic.ValidationError`` unless ``doc`` is a valid R4 (R4B model) resource."""
    _MODELS[doc["resourceType"]].model_validate(doc)


# Cached: the same times recur across an account's resources and each rebuild of them.
@lru_cache(maxsize=8192)
def utc_instant(value: str | datetime | None) -> str | None:
    """An ISO 8601 time as a UTC instant with microseconds: the store compares these as text."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    # isoformat, not strftime: strftime writes the year 1 as "1", which is no FHIR instant.
    return moment.isoformat(timespec="microseconds") + "Z"


def _text(value: Any) -> str:
    return _CONTROL.sub("", str(value))


def _ref(kind: str, rid: str) -> dict[str, str]:
    return {"reference": f"{kind}/{rid}"}


def _org(system: str, value: str | None) -> dict[str, Any]:
    """A Reference to an organisation we know only by code (no Organization resource)."""
    if not value:
        return {"display": "unknown"}
    return {"identifier": {"system": system, "value": _text(value)}, "display": _text(value)}


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    # Source codes may be blank or padded (the event schema allows it); a FHIR code may not.
    code = " ".join(_text(code).split())
    if not code:
        return {"text": "not coded"}
    coding: dict[str, str] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _balance(cents: int, aggregate: str | None, label: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if aggregate is not None:
        parts.append({"url": "aggregate", "valueCodeableConcept": _concept(
            AGGREGATE_SYSTEM, aggregate, label)})
    parts.append({"url": "term", "valueCodeableConcept": _concept(TERM_SYSTEM, "current")})
    parts.append({"url": "estimate", "valueBoolean": False})
    parts.append({"url": "amount", "valueMoney": money(cents)})
    return {"url": BALANCE_EXTENSION, "extension": parts}


_ACCOUNT_STATUS = {"closed": "inactive"}


def _lifecycle(lifecycle: Mapping[str, Any]) -> dict[str, Any]:
    state = str(lifecycle["state"])
    return {"url": LIFECYCLE_EXTENSION, "extension": [
        {"url": "state", "valueCoding": {"system": LIFECYCLE_SYSTEM, "code": state,
                                         "display": state.replace("_", " ").capitalize()}},
        {"url": "since", "valueDateTime": utc_instant(lifecycle["since"])},
        {"url": "expected", "valueBoolean": bool(lifecycle.get("expected", True))},
    ]}


def _meta(version: int, updated: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"versionId": str(version)}
    if updated is not None:
        meta["lastUpdated"] = updated
    return meta


def is_provider(account: str) -> bool:
    """Provider keys (835 PLB money) belong to no patient: they make no resources."""
    return account.startswith(PROVIDER_PREFIX)


def build_resources(head: Mapping[str, Any],
                    items: Mapping[ItemRef, Mapping[str, Any]]) -> list[Built]:
    """Every resource one patient account shows, from its layout-2 head and all its items;
    none for provider keys.

    The store builds the same resources one at a time, from the records that changed: this
    is the whole-account form of it (tests compare the two; the bench samples it).
    """
    account = head["account"]
    if is_provider(account):
        return []
    of = {kind: {ref[1]: item for ref, item in items.items() if ref[0] == kind}
          for kind in ("claim", "adjudication", "payment")}
    claims = of["claim"]
    payers = sorted({str(c["payer"]) for c in claims.values() if c.get("payer")})
    built = [account_resource(head, payers)]
    built += [claim_resource(account, claim, head) for claim in claims.values()]
    by_trace: dict[str, list[Mapping[str, Any]]] = {}
    for adj in of["adjudication"].values():
        built.append(claim_response_resource(account, adj, claims.get(adj["claim_id"]), head))
        if adj.get("correlation_id"):
            by_trace.setdefault(adj["correlation_id"], []).append(adj)
    for trace, adjs in sorted(by_trace.items()):
        first = trace_order(adjs)[0]
        built.append(payer_payment_resource(account, trace, adjs, claims.get(first["claim_id"]),
                                            head))
    built += [patient_payment_resource(account, pay, head) for pay in of["payment"].values()]
    return built


def account_resource(head: Mapping[str, Any], payers: Sequence[str]) -> Built:
    """The Account: the head's balances; coverage = the distinct payers of its claims."""
    account = head["account"]
    rid = fhir_id(account)
    patient = patient_id_for(head)
    updated = utc_instant(head.get("last_event_at"))
    b = head["balances"]
    doc: dict[str, Any] = {
        "resourceType": "Account",
        "id": rid,
        "meta": _meta(int(head["version"]), updated),
        "extension": [
            _balance(b["insurance_ar"], "insurance", "Insurance"),
            _balance(b["patient_ar"], "patient", "Patient"),
            # No aggregate: the whole balance (insurance + patient - unapplied credit).
            _balance(b["balance"], None, "Total"),
            # The workflow state, once the account has one.
            *([_lifecycle(head["lifecycle"])] if head.get("lifecycle") else []),
        ],
        "identifier": [{"system": ACCOUNT_SYSTEM, "value": _text(account)}],
        "status": _ACCOUNT_STATUS.get(head["status"], "active"),
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                             "code": "PBILLACCT", "display": "patient billing account"}],
                 "text": _text(head["status"])},
        "name": f"Patient account {_text(account)}",
        "subject": [_ref("Patient", patient)],
    }
    if payers:
        doc["coverage"] = [{"coverage": _org(PAYER_SYSTEM, payer), "priority": n}
                           for n, payer in enumerate(payers, start=1)]
    if head.get("entity"):
        doc["owner"] = _org(ENTITY_SYSTEM, head["entity"])
    identifiers = (f"{ACCOUNT_SYSTEM}|{account}",)
    return Built("Account", rid, patient, doc["status"], updated, identifiers, None, None, doc)


def _patient(account: str, head: Mapping[str, Any] | None) -> str:
    return patient_id_for(head if head is not None else {"account": account})


def _claim_created(claim: Mapping[str, Any], head: Mapping[str, Any] | None) -> str:
    # A claim known only from its 835 has no submission: its first answer dates it.
    when = claim.get("submitted_at") or claim.get("first_adjudicated_at")
    created = utc_instant(when or (head or {}).get("last_event_at"))
    assert created is not None, "a claim with no time at all"
    return created


def _latest(*times: Any) -> str | None:
    instants = [t for t in map(utc_instant, times) if t is not None]
    return max(instants) if instants else None


def _updated(item: Mapping[str, Any], *own: Any) -> str | None:
    return _latest(*own)


def claim_resource(account: str, claim: Mapping[str, Any],
                   head: Mapping[str, Any] | None) -> Built:
    """A Claim from its claim item (and the head's entity, its provider)."""
    rid = fhir_id(account, claim["claim_id"])
    patient = _patient(account, head)
    created = _claim_created(claim, head)
    items = []
    for n, line in enumerate(claim["lines"], start=1):
        code = line.get("procedure_code") or line.get("revenue_code") or "unknown"
        system = CPT_SYSTEM if line.get("procedure_code") else REVENUE_SYSTEM
        item: dict[str, Any] = {
            "sequence": n,
            "productOrService": _concept(system, code),
            "quantity": {"value": line["units"]},
            "net": money(line["charge_cents"]),
        }
        if line.get("revenue_code"):
            item["revenue"] = _concept(REVENUE_SYSTEM, line["revenue_code"])
        items.append(item)
    updated = _updated(claim, claim.get("submitted_at"), claim.get("first_adjudicated_at"))
    doc: dict[str, Any] = {
        "resourceType": "Claim",
        "id": rid,
        "meta": _meta(int(claim["version"]), updated),
        "identifier": [{"system": CLAIM_SYSTEM, "value": _text(claim["claim_id"])}],
        "status": "active",
        "type": _concept(CLAIM_TYPE_SYSTEM, "institutional"),
        "use": "claim",
        "patient": _ref("Patient", patient),
        "created": created,
        "insurer": _org(PAYER_SYSTEM, claim.get("payer")),
        "provider": _org(ENTITY_SYSTEM, (head or {}).get("entity")),
        "priority": _concept(PRIORITY_SYSTEM, "normal"),
        "insurance": [{"sequence": 1, "focal": True,
                       "coverage": _org(PAYER_SYSTEM, claim.get("payer"))}],
        "total": money(claim["total_charge_cents"]),
    }
    if items:
        doc["item"] = items
    identifiers = (f"{CLAIM_SYSTEM}|{claim['claim_id']}",)
    return Built("Claim", rid, patient, "active", created, identifiers, None, None, doc)


_DISPOSITION = {
    "processed": "Claim processed by the payer",
    "denied": "Claim denied by the payer",
    "reversal": "Payer reversed an earlier payment",
}


def shows_claim(adj: Mapping[str, Any]) -> bool:
    """An adjudication naming no payer shows its claim's (so it changes with the claim)."""
    return not adj.get("payer")


def _version(adj: Mapping[str, Any], claim: Mapping[str, Any] | None) -> int:
    """An adjudication's version, or its claim's if later and shown."""
    version = int(adj["version"])
    if claim is not None and shows_claim(adj):
        version = max(version, int(claim["version"]))
    return version


def claim_response_resource(account: str, adj: Mapping[str, Any],
                            claim: Mapping[str, Any] | None,
                            head: Mapping[str, Any] | None) -> Built:
    """A ClaimResponse from one adjudication item (its claim gives a missing payer)."""
    rid = fhir_id(account, adj["event_id"])
    claim_rid = fhir_id(account, adj["claim_id"])
    patient = _patient(account, head)
    created = utc_instant(adj["occurred_at"])
    assert created is not None
    adjudications: list[dict[str, Any]] = [
        {"category": _concept(ADJUDICATION_SYSTEM, "submitted"),
         "amount": money(adj["charge_cents"])},
        {"category": _concept(ADJUDICATION_SYSTEM, "benefit"),
         "amount": money(adj["paid_cents"])},
    ]
    for a in adj["adjustments"]:
        adjudications.append({
            "category": _concept(CAS_GROUP_SYSTEM, a["group"]),
            "reason": _concept(CARC_SYSTEM, a["reason"]),
            "amount": money(a["amount_cents"]),
        })
    identifiers = [f"{EVENT_SYSTEM}|{adj['event_id']}"]
    doc: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": rid,
        "meta": _meta(_version(adj, claim), _updated(adj, adj["occurred_at"])),
        "identifier": [{"system": EVENT_SYSTEM, "value": _text(adj["event_id"])}],
        "status": "active",
        "type": _concept(CLAIM_TYPE_SYSTEM, "institutional"),
        "use": "claim",
        "patient": _ref("Patient", patient),
        "created": created,
        "insurer": _org(PAYER_SYSTEM, adj.get("payer") or (claim or {}).get("payer")),
        "request": _ref("Claim", claim_rid),
        # RemittanceOutcome: a denial and a reversal are completed adjudications too;
        # what happened is in ``disposition``.
        "outcome": "complete",
        "disposition": _DISPOSITION[adj["outcome"]],
        "adjudication": adjudications,
        "total": [
            {"category": _concept(ADJUDICATION_SYSTEM, "submitted"),
             "amount": money(adj["charge_cents"])},
            {"category": _concept(ADJUDICATION_SYSTEM, "benefit"),
             "amount": money(adj["paid_cents"])},
            {"category": _concept(C4BB_ADJUDICATION_SYSTEM, "memberliability",
                                  "Patient responsibility"),
             "amount": money(adj["patient_responsibility_cents"])},
        ],
        "payment": {
            "type": _concept(PAYMENT_TYPE_SYSTEM, "complete"),
            "date": created[:10],
            "amount": money(adj["paid_cents"]),
        },
    }
    if adj.get("payer_claim_control_number"):
        pcn = adj["payer_claim_control_number"]
        doc["identifier"].append({"system": PCN_SYSTEM, "value": _text(pcn)})
        identifiers.append(f"{PCN_SYSTEM}|{pcn}")
    if adj.get("correlation_id"):
        doc["payment"]["identifier"] = {"system": TRACE_SYSTEM,
                                        "value": _text(adj["correlation_id"])}
    return Built("ClaimResponse", rid, patient, "active", created, tuple(identifiers),
                 claim_rid, "complete", doc)


def trace_order(adjs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """A check's adjudications in the order they were applied: by version (one adjudication
    per event)."""
    return sorted(adjs, key=lambda a: (int(a["version"]), str(a["event_id"])))


def payer_payment_resource(account: str, trace: str, adjs: Iterable[Mapping[str, Any]],
                           first_claim: Mapping[str, Any] | None,
                           head: Mapping[str, Any] | None) -> Built:
    """One PaymentReconciliation per payer check / EFT (835 TRN) and account, from the
    account's adjudications carrying that trace (``first_claim``: the claim of the first of
    them, whose payer shows when that adjudication names none).

    A check pays claims of many patients; the part shown is the one applied to this account,
    so a patient never sees other patients' claims (search ``identifier`` by the trace number
    gives an operator every account's part of a check).
    """
    parts = trace_order(adjs)
    assert parts, "a payment trace with no adjudication"
    rid = fhir_id("trn", account, trace)
    patient = _patient(account, head)
    created = min(utc_instant(adj["occurred_at"]) or "" for adj in parts)
    details = [{
        "identifier": {"system": EVENT_SYSTEM, "value": _text(adj["event_id"])},
        "type": _concept(PAYMENT_DETAIL_SYSTEM, "payment"),
        "request": _ref("Claim", fhir_id(account, adj["claim_id"])),
        "response": _ref("ClaimResponse", fhir_id(account, adj["event_id"])),
        "date": utc_instant(adj["occurred_at"])[:10],  # type: ignore[index]
        "amount": money(adj["paid_cents"]),
    } for adj in parts]
    payer = parts[0].get("payer") or (first_claim or {}).get("payer")
    version = max(_version(parts[0], first_claim), *(int(a["version"]) for a in parts))
    doc: dict[str, Any] = {
        "resourceType": "PaymentReconciliation",
        "id": rid,
        "meta": _meta(version, _latest(*(_updated(adj, adj["occurred_at"]) for adj in parts))),
        "identifier": [{"system": TRACE_SYSTEM, "value": _text(trace)}],
        "status": "active",
        "created": created,
        "paymentIssuer": _org(PAYER_SYSTEM, payer),
        "outcome": "complete",
        "disposition": f"Payer payment applied to account {_text(account)}",
        "paymentDate": created[:10],
        "paymentAmount": money(sum(adj["paid_cents"] for adj in parts)),
        "paymentIdentifier": {"system": TRACE_SYSTEM, "value": _text(trace)},
        "detail": details,
    }
    return Built("PaymentReconciliation", rid, patient, "active", created,
                 (f"{TRACE_SYSTEM}|{trace}",), None, "complete", doc)


def patient_payment_resource(account: str, pay: Mapping[str, Any],
                             head: Mapping[str, Any] | None) -> Built:
    """One PaymentReconciliation per patient payment or refund (a refund's amount < 0)."""
    rid = fhir_id("pay", account, pay["event_id"])
    patient = _patient(account, head)
    created = utc_instant(pay["occurred_at"])
    assert created is not None
    refund = pay["kind"] == "refund"
    cents = -pay["amount_cents"] if refund else pay["amount_cents"]
    identifiers = [f"{EVENT_SYSTEM}|{pay['event_id']}"]
    doc: dict[str, Any] = {
        "resourceType": "PaymentReconciliation",
        "id": rid,
        "meta": _meta(int(pay["version"]), _updated(pay, pay["occurred_at"])),
        "identifier": [{"system": EVENT_SYSTEM, "value": _text(pay["event_id"])}],
        "status": "active",
        "created": created,
        "outcome": "complete",
        "disposition": (f"Refund to {_text(pay['channel'])}" if refund
                        else f"Patient payment ({_text(pay['channel'])})"),
        "paymentDate": created[:10],
        "paymentAmount": money(cents),
        "detail": [{
            "type": _concept(PAYMENT_DETAIL_SYSTEM, "payment"),
            "payee": {"display": f"Patient account {_text(account)}"},
            "date": created[:10],
            "amount": money(cents),
        }],
    }
    if pay.get("reference"):
        doc["paymentIdentifier"] = {"system": PAYMENT_REF_SYSTEM,
                                    "value": _text(pay["reference"])}
        identifiers.append(f"{PAYMENT_REF_SYSTEM}|{pay['reference']}")
    return Built("PaymentReconciliation", rid, patient, "active", created,
                 tuple(identifiers), None, "complete", doc)
