"""Posting rules (ACCOUNTING.md): event + account state -> balanced bucket movements.

A movement is one side of a journal entry: a GL role (resolved through the chart of accounts),
the account-state bucket it moves, and a signed amount (positive = debit, negative = credit).
The account's ledger buckets move only through these movements, which is what makes the sum of
an account's posting deltas equal its balances. Every rule emits movements that sum to zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.events import (
    AccountStatusChanged,
    ChargePosted,
    ChargeReversed,
    ClaimAdjudicated,
    ClaimSubmitted,
    Event,
    ManualAdjustment,
    PatientPayment,
    ProviderAdjustment,
    Refund,
    RefundApproved,
    RefundRejected,
    SuspenseReclassified,
    WorkflowStep,
    WriteOff,
)
from rcmflow.streams.postings import PostingLine
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.state import (
    DEBIT_NORMAL_BUCKETS,
    LEDGER_BUCKETS,
    AccountHead,
    Item,
    ItemRef,
)

__all__ = ["Movement", "movements_for", "bucket_effects", "delta_amounts", "refund_credit",
           "refund_movements", "refund_exceeds"]

WRITE_OFF_ROLES = {
    "price_concession": "price_concession",
    "bad_debt": "bad_debt_expense",
    "charity": "charity",
    "small_balance": "admin_adjustment",
    "administrative": "admin_adjustment",
    "denial": "denial_writeoff",
}
#: How an unknown department names the revenue code it was looked up by (a suspense line's
#: dimension; a reclassification looks the code up again).
REVENUE_CODE_PREFIX = "revenue code "
#: Where an unmapped CAS amount is counted while its GL line sits in suspense.
SUSPENSE_BUCKET_BY_GROUP = {
    "CO": "contractual_adjustments",
    "PR": "patient_ar",
    "OA": "other_adjustments",
    "PI": "other_adjustments",
    "CR": "other_adjustments",
}


class Movement(NamedTuple):
    role: str
    bucket: str
    amount_cents: int  # positive = debit, negative = credit
    memo: str
    dimension: str | None = None  # department or payer class, for dimensioned roles
    #: Post to suspense regardless of the mapping (an unmapped CARC or PLB code).
    force_suspense: str | None = None
    #: This GL account, not the role's (a reclassification reverses the very suspense
    #: account the line went to).
    gl_account: str | None = None


def _ar(self_pay: bool) -> tuple[str, str]:
    return ("ar_self_pay", "patient_ar") if self_pay else ("ar_insurance", "insurance_ar")


def _pair(debit: tuple[str, str], credit: tuple[str, str], amount: int, memo: str,
          debit_dimension: str | None = None, credit_dimension: str | None = None,
          force_suspense: str | None = None) -> list[Movement]:
    """Dr ``debit`` / Cr ``credit`` for ``amount`` (a negative amount swaps the sides)."""
    if amount == 0:
        return []
    return [
        Movement(debit[0], debit[1], amount, memo, debit_dimension, force_suspense),
        Movement(credit[0], credit[1], -amount, memo, credit_dimension),
    ]


def movements_for(
    event: Event, state: AccountHead, chart: ChartOfAccounts,
    items: Callable[[ItemRef], Item | None],
) -> list[Movement] | Rejection:
    """The movements an event posts on an account in this state, or why it cannot post
    (``items``: the account's items, of which a reversal reads the charge it reverses).
    Refund requests and decisions post through the refund policy (``refunds.py``)."""
    if event.currency != chart.currency:
        return Rejection(
            stage="rules",
            reason_code="currency_unsupported",
            detail=f"currency {event.currency} is not the ledger currency {chart.currency}",
        )
    match event:
        case ChargePosted():
            return _charge(event, chart)
        case ChargeReversed():
            return _charge_reversal(event, items, chart)
        case ClaimSubmitted() | AccountStatusChanged() | WorkflowStep():
            return []
        case ClaimAdjudicated():
            return _adjudication(event, state, chart)
        case PatientPayment():
            return _patient_payment(event, state)
        case Refund() | RefundApproved() | RefundRejected():
            raise AssertionError("refunds post through refunds.refund_outcome")
        case WriteOff():
            return _write_off(event, state, chart)
        case ManualAdjustment():
            ar = _ar(event.ar == "patient")
            return _pair(("admin_adjustment", "write_offs"), ar, event.amount_cents, "manual")
        case ProviderAdjustment():
            return _provider_adjustment(event, chart)
        case SuspenseReclassified():
            return _reclassification(event, chart)
    raise AssertionError(f"no posting rule for {type(event).__name__}")


def _reclassification(event: SuspenseReclassified,
                      chart: ChartOfAccounts) -> list[Movement] | Rejection:
    """The suspense line's amount to the GL account the chart maps now, out of suspense: the
    same bucket on both sides, so the account's balances do not move. Refused while the chart
    still lacks the mapping (the item stays to work; a replay after the fix tries again)."""
    if event.bucket not in LEDGER_BUCKETS:
        return Rejection(stage="rules", reason_code="invalid_event",
                         detail=f"bucket {event.bucket!r} is not a ledger bucket")
    entity = event.dimensions.entity
    dimension = event.dimension
    if dimension is not None and dimension.startswith(REVENUE_CODE_PREFIX):
        # The charge's department was unknown: looked up again by its revenue code.
        dimension = chart.department_for(dimension[len(REVENUE_CODE_PREFIX):]) or dimension
    target = chart.gl_account(entity, event.role, dimension)
    if target.missing is not None:
        return Rejection(
            stage="rules", reason_code="still_unmapped",
            detail=f"the chart (version {chart.version}) still has no GL account for "
            f"{target.missing} (entity {entity}): the amount stays in suspense")
    memo = f"reclass {event.posting_id}"
    return [Movement(event.role, event.bucket, event.amount_cents, memo, dimension),
            Movement("suspense", event.bucket, -event.amount_cents, memo,
                     gl_account=event.suspense_account)]


def _department(event: Event, chart: ChartOfAccounts) -> str:
    """The department a charge's revenue posts to; unknown ones name what was looked up."""
    dims = event.dimensions
    department = dims.department or chart.department_for(dims.revenue_code)
    if department is not None:
        return department
    return f"{REVENUE_CODE_PREFIX}{dims.revenue_code}" if dims.revenue_code else "no department"


def _charge(event: ChargePosted, chart: ChartOfAccounts) -> list[Movement]:
    return _pair(_ar(event.self_pay), ("gross_revenue", "gross_charges"), event.amount_cents,
                 "charge", credit_dimension=_department(event, chart))


def _charge_reversal(
    event: ChargeReversed, items: Callable[[ItemRef], Item | None], chart: ChartOfAccounts
) -> list[Movement] | Rejection:
    self_pay = event.self_pay
    if event.reverses_event_id is not None:
        original = items(("charge", event.reverses_event_id))
        if original is None:
            return Rejection(
                stage="rules",
                reason_code="unknown_charge",
                detail=f"reverses charge {event.reverses_event_id!r}, not posted on this account",
            )
        left = original["amount_cents"] - original["reversed_cents"]  # type: ignore[typeddict-item]
        if event.amount_cents > left:
            return Rejection(
                stage="rules",
                reason_code="reversal_exceeds_charge",
                detail=f"reverses {event.amount_cents} cents of a charge with {left} cents left",
            )
        self_pay = original["self_pay"]  # type: ignore[typeddict-item]
    return _pair(("gross_revenue", "gross_charges"), _ar(self_pay), event.amount_cents,
                 "charge_reversal", debit_dimension=_department(event, chart))


def _adjudication(
    event: ClaimAdjudicated, state: AccountHead, chart: ChartOfAccounts
) -> list[Movement]:
    payer_class = event.dimensions.payer_class
    ar_ins = _ar(False)
    moves = _pair(("cash_clearing", "payer_paid"), ar_ins, event.paid_cents, "payer_payment")
    for adj in event.all_adjustments():
        treatment = chart.carc_treatment(adj.group, adj.reason)
        memo = adj.carc
        if treatment == "contractual":
            moves += _pair(("contractual", "contractual_adjustments"), ar_ins, adj.amount_cents,
                           memo, debit_dimension=payer_class)
        elif treatment == "patient_reclass":
            moves += _pair(_ar(True), ar_ins, adj.amount_cents, memo)
        elif treatment == "other_adjustment":
            moves += _pair(("other_adjustment", "other_adjustments"), ar_ins, adj.amount_cents,
                           memo)
        elif treatment == "suspense":
            bucket = SUSPENSE_BUCKET_BY_GROUP[adj.group]
            moves += _pair(("suspense", bucket), ar_ins, adj.amount_cents, memo,
                           force_suspense=f"carc_rules[{memo}]")
        # denial_hold and no_entry: tracked on the claim, no ledger entry.
    return moves


def _patient_payment(event: PatientPayment, state: AccountHead) -> list[Movement]:
    cash_role = "cash_clearing" if event.channel == "lockbox" else "cash"
    applied = min(event.amount_cents, max(state.balances.patient_ar, 0))
    moves = [Movement(cash_role, "patient_paid", event.amount_cents, "patient_payment")]
    if applied:
        moves.append(Movement("ar_self_pay", "patient_ar", -applied, "patient_payment"))
    if event.amount_cents - applied:
        # Overpayment or no open balance: a credit balance (liability) until applied or refunded.
        moves.append(Movement("unapplied_cash", "unapplied_credit",
                              -(event.amount_cents - applied), "unapplied_cash"))
    return moves


def refund_credit(state: AccountHead, to: str) -> int:
    """The credit balance a refund to the patient or the payer may take back."""
    b = state.balances
    if to == "payer":
        return max(-b.insurance_ar, 0)
    return b.unapplied_credit + max(-b.patient_ar, 0)


def refund_movements(amount: int, to: str, state: AccountHead) -> list[Movement]:
    """An approved refund's movements. Past the credit balance (only where the refund policy
    let an approver allow it) the rest is owed again: the AR it came from grows."""
    if to == "payer":
        return _pair(_ar(False), ("payer_overpayments", "refunds"), amount, "refund_payer")
    from_unapplied = min(amount, state.balances.unapplied_credit)
    moves = [Movement("refunds_payable_patient", "refunds", -amount, "refund_patient")]
    if from_unapplied:
        moves.append(Movement("unapplied_cash", "unapplied_credit", from_unapplied,
                              "refund_patient"))
    if amount - from_unapplied:
        moves.append(Movement("ar_self_pay", "patient_ar", amount - from_unapplied,
                              "refund_patient"))
    return moves


def refund_exceeds(amount: int, credit: int, to: str, why: str = "") -> Rejection:
    return Rejection(
        stage="rules",
        reason_code="refund_exceeds_credit",
        detail=f"refund of {amount} cents to the {to} exceeds the {credit} cents credit balance"
        + (f": {why}" if why else ""),
    )


def _write_off(
    event: WriteOff, state: AccountHead, chart: ChartOfAccounts
) -> list[Movement] | Rejection:
    threshold = chart.thresholds.small_balance_cents
    if event.reason == "small_balance" and event.amount_cents >= threshold:
        return Rejection(
            stage="rules",
            reason_code="small_balance_over_threshold",
            detail=f"small-balance write-off of {event.amount_cents} cents is not under the "
            f"{threshold} cents threshold",
        )
    role, bucket = _ar(event.ar == "patient")
    open_cents = getattr(state.balances, bucket)
    if event.amount_cents > open_cents:
        return Rejection(
            stage="rules",
            reason_code="write_off_exceeds_balance",
            detail=f"write-off of {event.amount_cents} cents exceeds the open {bucket} of "
            f"{open_cents} cents",
        )
    return _pair((WRITE_OFF_ROLES[event.reason], "write_offs"), (role, bucket),
                 event.amount_cents, f"write_off_{event.reason}")


def _provider_adjustment(event: ProviderAdjustment, chart: ChartOfAccounts) -> list[Movement]:
    # 835 sign: a positive PLB amount reduces the payment (money back to the payer).
    memo = f"PLB-{event.reason_code}"
    treatment = chart.plb_treatment(event.reason_code)
    cash = ("cash_clearing", "payer_paid")
    if treatment == "interest":
        return _pair(cash, ("interest_income", "interest_income"), -event.amount_cents, memo)
    if treatment == "payer_overpayment":
        return _pair(cash, ("payer_overpayments", "payer_overpayments"), -event.amount_cents, memo)
    if treatment == "suspense":
        return [
            Movement("cash_clearing", "payer_paid", -event.amount_cents, memo),
            Movement("suspense", "other_adjustments", event.amount_cents, memo,
                     force_suspense=f"plb_rules[{event.reason_code}]"),
        ] if event.amount_cents else []
    return []  # pair_with_WO: an authorised return paired with a WO nets to zero.


def bucket_effects(amounts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """How much each state bucket grows, from (bucket, signed debit-positive amount) pairs.

    Debit-normal buckets grow with debits, the others with credits. The core moves account
    state with it; reconciliation sums emitted posting lines with it.
    """
    effects: dict[str, int] = {}
    for bucket, amount in amounts:
        sign = 1 if bucket in DEBIT_NORMAL_BUCKETS else -1
        effects[bucket] = effects.get(bucket, 0) + sign * amount
    return effects


def delta_amounts(lines: Iterable[PostingLine]) -> Iterator[tuple[str, int]]:
    """(bucket, signed amount) of posting lines, for ``bucket_effects``."""
    return ((line.bucket, line.debit_cents - line.credit_cents) for line in lines)
