"""An account's revenue-cycle workflow state: the states, the expected order, the transitions.

Pure, like the rest of the core (``core.apply`` calls ``advance``). A state comes either from
an event rcmflow has anyway (a claim submitted, an 835 denial or payment, a patient payment, a
refund, an ADT/BAR close, the zero-balance rule) or from a ``workflow_step`` event another
system sends (registration, eligibility, charge review, coding, appeal, patient statement).

Nothing is refused here: a transition the state machine does not expect (``EXPECTED``) is
applied and recorded with ``expected: false`` and the reason, because real feeds deliver out
of order (a payment before the claim's 837). A "transition" to the state the account is in
already is not recorded. docs/lifecycle.md draws the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, Literal, NamedTuple, TypeAlias

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
    WorkflowStep,
)
from rcmflow.streams.limits import ACCOUNT_ITEMS_MAX
from rcmflow.streams.state import (
    LIFECYCLE_SYSTEM,
    Balances,
    ItemRef,
    Lifecycle,
    TransitionRecord,
)

__all__ = [
    "STATES",
    "State",
    "EXPECTED",
    "SPANS",
    "TRANSITIONS_MAX",
    "LIFECYCLE_SYSTEM",
    "SECONDS_PER_DAY",
    "Transition",
    "steps_for",
    "is_refund_approved",
    "closes_at_zero_balance",
    "expectation",
    "advance",
    "transition_id",
]

State: TypeAlias = Literal[
    "registration_complete",
    "eligibility_verified",
    "charge_review_complete",
    "coding_approved",
    "claim_submitted",
    "denial_received",
    "appeal_initiated",
    "patient_statement_issued",
    "payment_posted",
    "refund_approved",
    "account_closed",
]
#: In the order of the usual flow (the metrics' and the docs' order).
STATES: Final[tuple[State, ...]] = (
    "registration_complete", "eligibility_verified", "charge_review_complete",
    "coding_approved", "claim_submitted", "denial_received", "appeal_initiated",
    "patient_statement_issued", "payment_posted", "refund_approved", "account_closed")

#: The state machine: from a state (None: an account with no state yet), the states it is
#: expected to move to. Optional steps may be skipped (many feeds never report charge review
#: or coding), so the edges skip them too; what is not here breaks the order and is flagged.
EXPECTED: Final[Mapping[str | None, frozenset[str]]] = {
    None: frozenset({"registration_complete", "eligibility_verified"}),
    "registration_complete": frozenset({
        "eligibility_verified", "charge_review_complete", "coding_approved",
        "claim_submitted", "patient_statement_issued", "account_closed"}),
    "eligibility_verified": frozenset({
        "registration_complete", "charge_review_complete", "coding_approved",
        "claim_submitted", "patient_statement_issued", "account_closed"}),
    "charge_review_complete": frozenset({"coding_approved", "claim_submitted"}),
    "coding_approved": frozenset({"charge_review_complete", "claim_submitted"}),
    "claim_submitted": frozenset({
        "denial_received", "payment_posted", "patient_statement_issued"}),
    "denial_received": frozenset({
        "appeal_initiated", "claim_submitted", "payment_posted", "patient_statement_issued",
        "account_closed"}),
    "appeal_initiated": frozenset({"payment_posted", "denial_received", "claim_submitted"}),
    "patient_statement_issued": frozenset({"payment_posted", "account_closed"}),
    "payment_posted": frozenset({
        "patient_statement_issued", "refund_approved", "account_closed", "denial_received",
        "claim_submitted"}),
    "refund_approved": frozenset({"payment_posted", "account_closed"}),
    "account_closed": frozenset({"registration_complete", "refund_approved"}),
}

#: The spans the metrics watch beside the time in each state (from the last entry into the
#: first state to the first entry into the second after it, whatever lay between):
#: name -> (from, to).
SPANS: Final[Mapping[str, tuple[State, State]]] = {
    "registration_to_claim": ("registration_complete", "claim_submitted"),
    "claim_to_payment": ("claim_submitted", "payment_posted"),
    "claim_to_denial": ("claim_submitted", "denial_received"),
    "denial_to_appeal": ("denial_received", "appeal_initiated"),
    "denial_to_payment": ("denial_received", "payment_posted"),
    "registration_to_close": ("registration_complete", "account_closed"),
}

#: Transition records one account keeps; past it the state still moves (the head) but no
#: record is written. Bounds storage only: a transition costs the same at any count.
TRANSITIONS_MAX: Final = ACCOUNT_ITEMS_MAX

#: Time in state is kept in seconds and shown (and measured) in days.
SECONDS_PER_DAY: Final = 86_400


class Transition(NamedTuple):
    """What the metrics need of one transition (no account in it)."""

    from_state: str | None
    state: str
    #: Seconds in ``from_state`` (None for a first state); negative when dated before its
    #: entry. Whole seconds: the state documents hold no float (the money checks walk them).
    seconds_in_from: int | None
    expected: bool
    #: ``SPANS`` that end here, with their seconds.
    spans: tuple[tuple[str, int], ...]


def is_refund_approved(event: Event, posted: bool) -> bool:
    """A refund that posts: a request the refund policy approved itself, or the approval that
    completed its rule (``refunds.py``); a request waiting or a first of two approvals is
    not."""
    return posted and isinstance(event, Refund | RefundApproved)


def steps_for(event: Event, posted: bool = False) -> list[tuple[State, str | None]]:
    """The states an event itself names, with a detail for the record (the zero-balance
    close is decided from the balances, by ``closes_at_zero_balance``)."""
    match event:
        case WorkflowStep():
            detail = "; ".join(x for x in (event.result and f"result {event.result}",
                                            event.note) if x) or None
            return [(event.step, detail)]
        case ClaimSubmitted():
            return [("claim_submitted", None)]
        case ClaimAdjudicated() if event.outcome == "denied":
            return [("denial_received", event.status_code and f"CLP02 {event.status_code}")]
        case ClaimAdjudicated() if event.outcome == "processed" and event.paid_cents > 0:
            return [("payment_posted", "payer")]
        case PatientPayment():
            return [("payment_posted", "patient")]
        case AccountStatusChanged() if event.status == "closed":
            return [("account_closed", f"{event.source} status closed")]
    if is_refund_approved(event, posted):
        return [("refund_approved", None)]
    return []


def closes_at_zero_balance(event: Event, balances: Balances, posted: bool) -> bool:
    """The zero-balance rule: an event that posted money other than a charge (a payment, an
    adjudication, a write-off, an adjustment, a refund) and left an account that has charges
    with nothing owed and no credit (``balance`` 0, ``unapplied_credit`` 0) closes it."""
    return (posted and not isinstance(event, ChargePosted | ChargeReversed)
            and balances.gross_charges > 0 and balances.balance == 0
            and balances.unapplied_credit == 0)


def expectation(from_state: str | None, state: str, seconds_in_from: int | None
                ) -> tuple[bool, str | None]:
    """Whether ``from_state -> state`` keeps the expected order, and if not, why."""
    reasons: list[str] = []
    allowed = EXPECTED.get(from_state, frozenset())
    if state not in allowed:
        after = "with no state yet" if from_state is None else f"after {from_state}"
        reasons.append(f"{state} is not expected {after} (expected: "
                       f"{', '.join(s for s in STATES if s in allowed) or 'nothing'})")
    if seconds_in_from is not None and seconds_in_from < 0:
        reasons.append(f"dated {-seconds_in_from / SECONDS_PER_DAY:.2f} days before "
                       f"{from_state} was entered")
    return not reasons, "; ".join(reasons) or None


def transition_id(version: int, n: int) -> str:
    """A transition record's id: the account version that made it and its place in that
    event (1, 2), so ids sort in the order transitions were applied."""
    return f"{version:012d}-{n}"


def _seconds(at: datetime, since: datetime) -> int:
    return int((at - since).total_seconds())


def _first_since(entered: Mapping[str, datetime], start: str, end: str) -> bool:
    """Whether entering ``end`` now is its first entry since ``start`` was last entered (a
    span is measured once: to the first payment after the claim, not to every later one)."""
    return start in entered and (end not in entered or entered[end] < entered[start])


def advance(before: Lifecycle | None, event: Event, version: int, balances: Balances,
            posted: bool, recorded: int
            ) -> tuple[Lifecycle | None, dict[ItemRef, TransitionRecord], tuple[Transition, ...]]:
    """The lifecycle after ``event`` (applied as account ``version``, leaving ``balances``;
    ``posted``: it made a delta), the transition records to write (``recorded``: how many
    the account holds), and the transitions for the metrics."""
    steps = steps_for(event, posted)
    closed_by_event = any(state == "account_closed" for state, _ in steps)
    if not closed_by_event and closes_at_zero_balance(event, balances, posted):
        steps.append(("account_closed", "zero_balance"))
    current = before
    records: dict[ItemRef, TransitionRecord] = {}
    made: list[Transition] = []
    at = event.occurred_at
    for state, detail in steps:
        from_state = current.state if current is not None else None
        if state == from_state:
            continue  # staying is not a transition
        seconds = _seconds(at, current.since) if current is not None else None
        expected, reason = expectation(from_state, state, seconds)
        entered = dict(current.entered) if current is not None else {}
        spans = tuple((name, _seconds(at, entered[start])) for name, (start, end) in SPANS.items()
                      if end == state and _first_since(entered, start, end))
        entered[state] = at
        # Built from values already validated (the event's, the head's): no second check.
        current = Lifecycle.model_construct(state=state, since=at, event_id=event.event_id,
                                            expected=expected, entered=entered)
        made.append(Transition(from_state, state, seconds, expected, spans))
        if recorded + len(records) < TRANSITIONS_MAX:
            claim_id = getattr(event, "claim_id", None) or event.dimensions.claim_id
            records[("transition", transition_id(version, len(made)))] = {
                "version": version, "from_state": from_state, "state": state, "at": at,
                "event_id": event.event_id, "event_kind": event.kind.value,
                "source": event.source, "claim_id": claim_id, "seconds_in_from": seconds,
                "expected": expected, "reason": reason, "detail": detail}
    return current, records, tuple(made)
