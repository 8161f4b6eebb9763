"""The pure domain core: ``apply(head, event, items) -> Applied | Rejection``.

No Faust, no Kafka: plain functions over immutable values, so every rule and invariant is
tested exhaustively without a broker. The agent in ``worker.py`` is a thin shell around them.

An event reads the account's head and, through ``items``, only the items it names (the charge
a reversal reverses, the claim an 835 answers): its cost does not grow with the account.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import orjson

from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.denials import denial_changes, denial_refs
from rcmflow.streams.events import (
    AccountStatusChanged,
    ChargePosted,
    ChargeReversed,
    ClaimAdjudicated,
    ClaimSubmitted,
    Event,
    PatientPayment,
    Refund,
    RefundApproved,
    RefundRejected,
    WorkflowStep,
    WriteOff,
)
from rcmflow.streams.lifecycle import Transition, advance
from rcmflow.streams.limits import ACCOUNT_ITEMS_MAX
from rcmflow.streams.postings import RULE_VERSION, UnmappedLine, posting_id
from rcmflow.streams.refund_policy import RefundPolicy, load_refund_policy
from rcmflow.streams.refunds import refund_item_changes, refund_outcome, refund_refs
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.rules import Movement, bucket_effects, movements_for
from rcmflow.streams.state import (
    AccountHead,
    AdjudicationRecord,
    Balances,
    ChargeRecord,
    ClaimRecord,
    Item,
    ItemRef,
    PaymentRecord,
    PendingRefunds,
)

REFUND_EVENTS = (Refund, RefundApproved, RefundRejected)

__all__ = ["Applied", "ItemLookup", "apply", "item_changes", "touched_items", "new_account"]

#: An account's item by (kind, id), or None: the state before the event being applied.
ItemLookup = Callable[[ItemRef], Item | None]


class Applied(NamedTuple):
    head: AccountHead
    #: The items the event created or changed, as they are now.
    items: dict[ItemRef, Item]
    #: The posting delta as sent (``PostingDelta`` JSON), or None when nothing moved.
    delta: bytes | None
    unmapped: tuple[UnmappedLine, ...]
    #: The lifecycle transitions it made (``lifecycle.py``), for the metrics; their records
    #: are in ``items`` (kind ``transition``).
    transitions: tuple[Transition, ...] = ()


def new_account(account: str) -> AccountHead:
    return AccountHead(account=account)


def apply(
    head: AccountHead,
    event: Event,
    chart: ChartOfAccounts,
    items: ItemLookup,
    *,
    items_max: int = ACCOUNT_ITEMS_MAX,
    policy: RefundPolicy | None = None,
) -> Applied | Rejection:
    """Apply one new event (dedup is decided before) to an account's head and items.
    ``policy``: the refund approval policy (None: the one shipped with rcmflow)."""
    assert head.account == event.account, "event applied to another account's state"
    policy = policy or load_refund_policy()
    version = head.version + 1
    approval: dict[str, object] | None = None
    pending = (0, 0)
    if isinstance(event, REFUND_EVENTS):
        if event.currency != chart.currency:
            return _currency_unsupported(event.currency, chart.currency)
        refund = refund_outcome(event, head, items, policy, version)
        if isinstance(refund, Rejection):
            return refund
        movements, changes, pending, approval = refund
    else:
        found = movements_for(event, head, chart, items)
        if isinstance(found, Rejection):
            return found
        movements, changes = found, item_changes(event, version, items, policy=policy)
    # An item named by this event's own id is new (dedup used the id up); others may exist.
    created = [ref for ref in changes if ref[1] == event.event_id or items(ref) is None]
    # Denial items are not held against the bound: at most one per claim and claim line,
    # and a denial must never refuse the 835 that posts it.
    bounded = [ref for ref in created if ref[0] != "denial"]
    if bounded and head.item_count() + len(bounded) > items_max:
        return Rejection(
            stage="rules",
            reason_code="account_items_max",
            detail=f"the account already holds {head.item_count()} charges, claims, "
            f"adjudications, payments and refund requests (at most {items_max})",
        )
    delta, unmapped = _delta(event, movements, version, chart, approval)
    counts = head.items
    for kind, _ in created:
        counts = counts.plus(kind)
    balances = head.balances.moved(bucket_effects((m.bucket, m.amount_cents) for m in movements))
    if isinstance(event, ClaimAdjudicated):
        balances = _track_adjudication(balances, event, items(("claim", event.claim_id)))
    updates: dict[str, object] = {
        "version": version,
        "entity": head.entity or event.dimensions.entity,
        "last_event_id": event.event_id,
        "last_event_at": event.occurred_at,
        "balances": balances,
        "items": counts,
    }
    if pending != (0, 0):
        was = head.refunds_pending
        updates["refunds_pending"] = PendingRefunds(count=was.count + pending[0],
                                                    cents=was.cents + pending[1])
    if isinstance(event, AccountStatusChanged):
        updates["status"] = event.status
    # The workflow state: its records depend on the head (the state left), unlike the items
    # ``item_changes`` makes; the worker writes them before the head (``write_order.py``).
    lifecycle, transitions, made = advance(head.lifecycle, event, version, balances,
                                           delta is not None, counts.transition)
    if made:
        updates["lifecycle"] = lifecycle
        updates["items"] = counts.plus("transition", len(transitions))
    changed: dict[ItemRef, Item] = {**changes, **transitions}
    return Applied(head.model_copy(update=updates), changed, delta, unmapped, made)


def _currency_unsupported(currency: str, ledger: str) -> Rejection:
    return Rejection(stage="rules", reason_code="currency_unsupported",
                     detail=f"currency {currency} is not the ledger currency {ledger}")


def _delta(
    event: Event, movements: list[Movement], version: int, chart: ChartOfAccounts,
    approval: dict[str, object] | None = None,
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
        if move.gl_account is not None:
            gl, missing = move.gl_account, None
        elif move.force_suspense is not None:
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
            forced = move.force_suspense is not None
            unmapped.append(UnmappedLine(
                posting_id=pid, event_id=event.event_id, account=event.account, missing=missing,
                gl_account=gl, amount_cents=move.amount_cents, coa_version=chart.version,
                role=None if forced else move.role, dimension=None if forced else move.dimension,
                bucket=None if forced else move.bucket))
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
    if approval is not None:
        delta["approval"] = approval  # only on refunds: other deltas keep their bytes
    return orjson.dumps(delta), tuple(unmapped)


def touched_items(event: Event) -> tuple[ItemRef, ...]:
    """The items an event creates or changes (it reads no others but these)."""
    match event:
        case ChargePosted():
            return (("charge", event.event_id),)
        case ChargeReversed() if event.reverses_event_id is not None:
            return (("charge", event.reverses_event_id),)
        case ClaimSubmitted():
            return (("claim", event.claim_id),)
        case ClaimAdjudicated():
            return (("claim", event.claim_id), ("adjudication", event.event_id),
                    *denial_refs(event))
        case PatientPayment():
            return (("payment", event.event_id),)
        case Refund() | RefundApproved() | RefundRejected():
            return refund_refs(event)
        case WorkflowStep() | WriteOff():
            return denial_refs(event)
    return ()


def item_changes(event: Event, version: int, items: ItemLookup, *,
                 policy: RefundPolicy | None = None, posted: bool = False
                 ) -> dict[ItemRef, Item]:
    """The items ``event`` (applied as account ``version``) creates or changes, from their
    state before it. Depends on the event and those items only, never on the head: a
    redelivered event whose head is durable re-derives its lost item writes with it. A
    refund event also needs the policy and whether it posted (its dedup record says)."""
    match event:
        case ChargePosted():
            dims = event.dimensions
            charge: ChargeRecord = {
                "version": version,
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
            return {("charge", event.event_id): charge}
        case ChargeReversed() if event.reverses_event_id is not None:
            ref: ItemRef = ("charge", event.reverses_event_id)
            original = items(ref)
            assert original is not None, "a reversal of an unknown charge was applied"
            reversed_: ChargeRecord = {  # type: ignore[typeddict-item]
                **original, "version": version,
                "reversed_cents": original["reversed_cents"] + event.amount_cents}  # type: ignore[typeddict-item]
            return {ref: reversed_}
        case ClaimSubmitted():
            ref = ("claim", event.claim_id)
            claim = _claim(items(ref), event.claim_id)
            claim = {
                **claim,
                "version": version,
                "payer": event.dimensions.payer,
                "payer_class": event.dimensions.payer_class,
                "total_charge_cents": event.total_charge_cents,
                "lines": [line.model_dump() for line in event.lines],  # type: ignore[misc]
                "submitted_at": event.occurred_at,
            }
            return {ref: claim}
        case ClaimAdjudicated():
            return {**_adjudication_items(event, version, items),
                    **denial_changes(event, version, items)}
        case WorkflowStep() | WriteOff():
            return denial_changes(event, version, items)
        case Refund() | RefundApproved() | RefundRejected():
            return refund_item_changes(event, version, items, policy or load_refund_policy(),
                                       posted=posted)
        case PatientPayment():
            payment: PaymentRecord = {
                "version": version,
                "event_id": event.event_id,
                "kind": "patient_payment",
                "amount_cents": event.amount_cents,
                "channel": event.channel,
                "reference": event.reference,
                "occurred_at": event.occurred_at,
                "correlation_id": event.correlation_id,
            }
            return {("payment", event.event_id): payment}
    return {}


def _claim(found: Item | None, claim_id: str, **known: object) -> ClaimRecord:
    if found is not None:
        return found  # type: ignore[return-value]
    claim: ClaimRecord = {
        "version": 0, "claim_id": claim_id, "status": "submitted", "payer": None,
        "payer_class": None, "total_charge_cents": 0, "lines": [], "submitted_at": None,
        "first_adjudicated_at": None,
    }
    return {**claim, **known}  # type: ignore[typeddict-item]


_CLAIM_STATUS: dict[str, Literal["adjudicated", "denied", "reversed"]] = {
    "processed": "adjudicated", "denied": "denied", "reversal": "reversed"}


def _adjudication_items(event: ClaimAdjudicated, version: int,
                        items: ItemLookup) -> dict[ItemRef, Item]:
    claim_ref: ItemRef = ("claim", event.claim_id)
    claim = _claim(items(claim_ref), event.claim_id, payer=event.dimensions.payer,
                   payer_class=event.dimensions.payer_class,
                   total_charge_cents=event.charge_cents)
    adjudication: AdjudicationRecord = {
        "version": version,
        "claim_id": event.claim_id,
        "event_id": event.event_id,
        "outcome": event.outcome,
        "payer": event.dimensions.payer,
        "payer_claim_control_number": event.payer_claim_control_number,
        "charge_cents": event.charge_cents,
        "paid_cents": event.paid_cents,
        "patient_responsibility_cents": event.patient_responsibility_cents,
        "adjustments": [{"group": a.group, "reason": a.reason, "amount_cents": a.amount_cents}
                        for a in event.all_adjustments()],
        "occurred_at": event.occurred_at,
        "correlation_id": event.correlation_id,
    }
    claim = {**claim, "version": version,
             "status": _CLAIM_STATUS[event.outcome],
             "first_adjudicated_at": claim["first_adjudicated_at"] or event.occurred_at}
    return {claim_ref: claim, ("adjudication", event.event_id): adjudication}


def _track_adjudication(balances: Balances, event: ClaimAdjudicated,
                        claim: Item | None) -> Balances:
    """The tracking buckets (no ledger entry): denied charges, patient responsibility."""
    was_denied = claim is not None and claim.get("status") == "denied"
    denied = 0
    if event.outcome == "denied":
        denied = event.charge_cents
    elif event.outcome == "reversal" and was_denied:
        denied = event.charge_cents  # negated by the reversal
    patient_share = sum(a.amount_cents for a in event.all_adjustments() if a.group == "PR")
    return balances.model_copy(update={
        "denied": balances.denied + denied,
        "patient_responsibility": balances.patient_responsibility + patient_share,
    })
