"""The pure domain core: ``apply(state, event) -> Applied | Rejection``.

No Faust, no Kafka: plain functions over immutable values, so every rule and invariant is
tested exhaustively without a broker. The agent in ``worker.py`` is a thin shell around them.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from .chart import ChartOfAccounts
from .events import (
    AccountStatusChanged,
    ChargePosted,
    ChargeReversed,
    ClaimAdjudicated,
    ClaimSubmitted,
    Event,
    PatientPayment,
    Refund,
)
from .postings import RULE_VERSION, UnmappedLine, posting_id
from .rejections import Rejection
from .rules import Movement, bucket_effects, movements_for
from .state import (
    AccountState,
    Adjudication,
    Balances,
    ChargeRecord,
    ClaimState,
    PaymentRecord,
)

__all__ = ["Applied", "apply", "new_account", "ACCOUNT_ITEMS_MAX"]

#: Records (charges, claims, payments) one account may hold; past it events are refused.
ACCOUNT_ITEMS_MAX = 10_000


class Applied(NamedTuple):
    state: AccountState
    #: The posting delta as sent (``PostingDelta`` JSON), or None when nothing moved.
    delta: bytes | None
    unmapped: tuple[UnmappedLine, ...]


def new_account(account: str) -> AccountState:
    return AccountState(account=account)


def apply(
    state: AccountState,
    event: Event,
    chart: ChartOfAccounts,
    *,
    items_max: int = ACCOUNT_ITEMS_MAX,
) -> Applied | Rejection:
    """Apply one new event (dedup is decided before) to an account's state."""
    assert state.account == event.account, "event applied to another account's state"
    adds_item = isinstance(event, (ChargePosted, ClaimSubmitted, PatientPayment, Refund))
    if adds_item and state.item_count() >= items_max:
        return Rejection(
            stage="rules",
            reason_code="account_items_max",
            detail=f"the account already holds {items_max} charges, claims and payments",
        )
    movements = movements_for(event, state, chart)
    if isinstance(movements, Rejection):
        return movements
    version = state.version + 1
    delta, unmapped = _delta(event, movements, version, chart)
    updates = _record(state, event)
    balances = updates.get("balances", state.balances)
    assert isinstance(balances, Balances)
    updates |= {
        "version": version,
        "entity": state.entity or event.dimensions.entity,
        "last_event_id": event.event_id,
        "last_event_at": event.occurred_at,
        "balances": balances.moved(bucket_effects((m.bucket, m.amount_cents) for m in movements)),
    }
    return Applied(state.model_copy(update=updates), delta, unmapped)


def _delta(
    event: Event, movements: list[Movement], version: int, chart: ChartOfAccounts
) -> tuple[bytes | None, tuple[UnmappedLine, ...]]:
    """The posting delta as it is sent: JSON of a ``PostingDelta``, written directly.

    Built as plain dicts (a delta is made for every money event); its shape is the
    ``PostingDelta`` model's, which the tests hold it to. Balance is asserted here.
    """
    if not movements:
        return None, ()
    pid = posting_id(event.account, event.event_id, chart.version)
    dims = event.dimensions
    entity = dims.entity
    lines: list[dict[str, object]] = []
    unmapped: list[UnmappedLine] = []
    debits = credits = 0
    for move in movements:
        missing: str | None
        if move.force_suspense is not None:
            gl, missing = chart.gl_account(entity, "suspense").account, move.force_suspense
        else:
            gl, missing = chart.gl_account(entity, move.role, move.dimension)
        debit, credit = max(move.amount_cents, 0), max(-move.amount_cents, 0)
        assert (debit == 0) != (credit == 0), f"a zero or two-sided line from {move}"
        debits += debit
        credits += credit
        lines.append({
            "gl_account": gl,
            "debit_cents": debit,
            "credit_cents": credit,
            "bucket": move.bucket,
            "memo": move.memo,
            "entity": entity,
            "department": move.dimension if move.role == "gross_revenue" and not missing else None,
            "payer_class": dims.payer_class,
            "suspense": missing is not None,
        })
        if missing is not None:
            unmapped.append(UnmappedLine(
                posting_id=pid, event_id=event.event_id, account=event.account, missing=missing,
                gl_account=gl, amount_cents=move.amount_cents, coa_version=chart.version))
    assert debits == credits, f"unbalanced posting for {event.event_id}: {debits} != {credits}"
    reverses = None
    if isinstance(event, ChargeReversed) and event.reverses_event_id is not None:
        reverses = posting_id(event.account, event.reverses_event_id, chart.version)
    delta = {
        "posting_id": pid,
        "account": event.account,
        "entity": entity,
        "effective_date": event.occurred_at.date(),
        "currency": event.currency,
        "lines": lines,
        "event_id": event.event_id,
        "event_kind": event.kind.value,
        "correlation_id": event.correlation_id,
        "account_version": version,
        "reverses_posting_id": reverses,
        "coa_version": chart.version,
        "rule_version": RULE_VERSION,
    }
    return orjson.dumps(delta), tuple(unmapped)


def _record(state: AccountState, event: Event) -> dict[str, object]:
    """Updates that keep the account's records (charges, claims, payments, status) current."""
    match event:
        case ChargePosted():
            dims = event.dimensions
            charge: ChargeRecord = {
                "event_id": event.event_id,
                "amount_cents": event.amount_cents,
                "quantity": event.quantity,
                "self_pay": event.self_pay,
                "department": dims.department,
                "revenue_code": dims.revenue_code,
                "procedure_code": dims.procedure_code,
                "encounter": dims.encounter,
                "occurred_at": event.occurred_at,
                "reversed_cents": 0,
            }
            return {"charges": state.charges + (charge,)}
        case ChargeReversed() if event.reverses_event_id is not None:
            charges = tuple(
                {**c, "reversed_cents": c["reversed_cents"] + event.amount_cents}
                if c["event_id"] == event.reverses_event_id
                else c
                for c in state.charges
            )
            return {"charges": charges}
        case ClaimSubmitted():
            claim = state.claims.get(event.claim_id) or _new_claim(event.claim_id)
            claim = {
                **claim,
                "payer": event.dimensions.payer,
                "payer_class": event.dimensions.payer_class,
                "total_charge_cents": event.total_charge_cents,
                "lines": [line.model_dump() for line in event.lines],  # type: ignore[misc]
                "submitted_at": event.occurred_at,
            }
            return {"claims": {**state.claims, event.claim_id: claim}}
        case ClaimAdjudicated():
            return _record_adjudication(state, event)
        case PatientPayment() | Refund():
            payment: PaymentRecord = {
                "event_id": event.event_id,
                "kind": event.kind.value,  # type: ignore[typeddict-item]
                "amount_cents": event.amount_cents,
                "channel": event.channel if isinstance(event, PatientPayment) else event.to,
                "reference": event.reference,
                "occurred_at": event.occurred_at,
                "correlation_id": event.correlation_id,
            }
            return {"payments": state.payments + (payment,)}
        case AccountStatusChanged():
            return {"status": event.status}
    return {}


def _new_claim(claim_id: str, **known: object) -> ClaimState:
    claim: ClaimState = {
        "claim_id": claim_id, "status": "submitted", "payer": None, "payer_class": None,
        "total_charge_cents": 0, "lines": [], "submitted_at": None, "adjudications": [],
    }
    return {**claim, **known}  # type: ignore[typeddict-item]


def _record_adjudication(state: AccountState, event: ClaimAdjudicated) -> dict[str, object]:
    claim = state.claims.get(event.claim_id) or _new_claim(
        event.claim_id,
        payer=event.dimensions.payer,
        payer_class=event.dimensions.payer_class,
        total_charge_cents=event.charge_cents,
    )
    was_denied = claim["status"] == "denied"
    adjustments = event.all_adjustments()
    adjudication: Adjudication = {
        "event_id": event.event_id,
        "outcome": event.outcome,
        "payer": event.dimensions.payer,
        "payer_claim_control_number": event.payer_claim_control_number,
        "charge_cents": event.charge_cents,
        "paid_cents": event.paid_cents,
        "patient_responsibility_cents": event.patient_responsibility_cents,
        "adjustments": [{"group": a.group, "reason": a.reason, "amount_cents": a.amount_cents}
                        for a in adjustments],
        "occurred_at": event.occurred_at,
        "correlation_id": event.correlation_id,
    }
    status = {"processed": "adjudicated", "denied": "denied", "reversal": "reversed"}[event.outcome]
    claim = {**claim, "status": status,  # type: ignore[typeddict-item]
             "adjudications": [*claim["adjudications"], adjudication]}
    denied = 0
    if event.outcome == "denied":
        denied = event.charge_cents
    elif event.outcome == "reversal" and was_denied:
        denied = event.charge_cents  # negated by the reversal
    patient_share = sum(a.amount_cents for a in adjustments if a.group == "PR")
    balances = state.balances.model_copy(
        update={
            "denied": state.balances.denied + denied,
            "patient_responsibility": state.balances.patient_responsibility + patient_share,
        }
    )
    return {"claims": {**state.claims, event.claim_id: claim}, "balances": balances}
