"""Account state: a small head (balances, version, status) and the account's items.

The head is what every event reads and moves; items (charges, claims, adjudications,
payments) are records of their own, read and written only by the events that name them, so
an event costs the same on an account with ten items or ten thousand. Values are immutable:
``apply`` builds new ones and the table stores them. Buckets are integer
cents named exactly as ARCHITECTURE.md names them. The ledger buckets move only through
posting lines (see ``rules.py``), so the sum of an account's posting deltas equals them; the
tracking buckets (``denied``, ``patient_responsibility``) are statistics with no ledger entry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, computed_field
from typing_extensions import TypedDict

__all__ = [
    "LEDGER_BUCKETS",
    "DEBIT_NORMAL_BUCKETS",
    "Balances",
    "ChargeRecord",
    "AdjustmentRecord",
    "ServiceLineRecord",
    "AdjudicationRecord",
    "ClaimRecord",
    "PaymentRecord",
    "RefundRecord",
    "RefundApproval",
    "TransitionRecord",
    "DenialRecord",
    "DenialStep",
    "Lifecycle",
    "LIFECYCLE_SYSTEM",
    "Item",
    "ItemKind",
    "ItemRef",
    "ITEM_KINDS",
    "ItemCounts",
    "AccountHead",
    "PendingRefunds",
    "head_json",
    "item_json",
]

#: Buckets that grow with a debit (assets, contra-revenue, money received).
DEBIT_NORMAL_BUCKETS = frozenset(
    {
        "insurance_ar",
        "patient_ar",
        "payer_paid",
        "patient_paid",
        "contractual_adjustments",
        "other_adjustments",
        "write_offs",
    }
)
#: Buckets that grow with a credit (revenue, liabilities, money paid out).
CREDIT_NORMAL_BUCKETS = frozenset(
    {"gross_charges", "refunds", "unapplied_credit", "interest_income", "payer_overpayments"}
)
#: Every bucket a posting line can move. ``interest_income`` and ``payer_overpayments`` are
#: only ever non-zero on provider keys (835 PLB).
LEDGER_BUCKETS = DEBIT_NORMAL_BUCKETS | CREDIT_NORMAL_BUCKETS


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Balances(_Frozen):
    # ``balance`` is derived: it is shown in every snapshot and ignored when one is read back.
    model_config = ConfigDict(frozen=True, extra="ignore")

    gross_charges: int = 0
    payer_paid: int = 0
    contractual_adjustments: int = 0
    patient_responsibility: int = 0
    other_adjustments: int = 0
    denied: int = 0
    patient_paid: int = 0
    refunds: int = 0
    write_offs: int = 0
    insurance_ar: int = 0
    patient_ar: int = 0
    unapplied_credit: int = 0
    interest_income: int = 0
    payer_overpayments: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def balance(self) -> int:
        return self.insurance_ar + self.patient_ar - self.unapplied_credit

    def moved(self, effects: dict[str, int]) -> Balances:
        """These balances with signed bucket effects added."""
        if not effects:
            return self
        assert effects.keys() <= LEDGER_BUCKETS, f"unknown buckets {effects.keys()}"
        return self.model_copy(
            update={name: getattr(self, name) + cents for name, cents in effects.items()}
        )


# Records are plain dicts (typed): JSON-ready, light in memory, serialised without a Python
# call per record. Treat them as immutable: a changed record is a new dict.


class AdjustmentRecord(TypedDict):
    group: str
    reason: str
    amount_cents: int


class ChargeRecord(TypedDict):
    #: Every item carries the account version of its last change (``version``).
    version: int
    event_id: str
    amount_cents: int
    quantity: int
    self_pay: bool
    department: str | None
    revenue_code: str | None
    procedure_code: str | None
    encounter: str | None
    occurred_at: datetime
    reversed_cents: int


class ServiceLineRecord(TypedDict):
    line_id: str
    charge_cents: int
    units: int
    procedure_code: str | None
    revenue_code: str | None


class AdjudicationRecord(TypedDict):
    """One payer answer to a claim (835 CLP): an item of its own, a claim may have many."""

    version: int
    claim_id: str
    event_id: str
    outcome: str
    payer: str | None
    payer_claim_control_number: str | None
    charge_cents: int
    paid_cents: int
    patient_responsibility_cents: int
    adjustments: list[AdjustmentRecord]
    occurred_at: datetime
    correlation_id: str | None


class PaymentRecord(TypedDict):
    version: int
    event_id: str
    kind: Literal["patient_payment", "refund"]
    amount_cents: int
    channel: str | None
    reference: str | None
    occurred_at: datetime
    correlation_id: str | None


class RefundApproval(TypedDict):
    """One decision on a refund request: who, in which role, when, by which event."""

    by: str
    role: str
    at: datetime
    event_id: str
    note: str | None


class RefundRecord(TypedDict):
    """A refund request (item id: the request's event id) and its approvals, under the rule
    of the refund policy it was filed with (kept here: a later policy never changes it)."""

    version: int
    event_id: str
    state: Literal["pending", "posted", "rejected"]
    amount_cents: int
    to: str
    reference: str | None
    requested_by: str | None
    source: str
    reason: str | None
    entity: str
    requested_at: datetime
    correlation_id: str | None
    policy_version: str
    rule: str
    #: Approvals the rule asks for (0: approved by the policy) and the roles they may act in.
    approvals_needed: int
    roles: list[str]
    #: Roles whose approval lets it post past the credit balance (the policy's, when filed).
    over_credit_roles: list[str]
    approvals: list[RefundApproval]
    #: The decision that ended it: the last approval (posted) or the rejection.
    decided_at: datetime | None
    rejected: RefundApproval | None
    rejection_reason: str | None
    #: The event whose posting delta paid it out (the request itself, or the approval that
    #: completed its rule), once posted.
    posted_event_id: str | None


class ClaimRecord(TypedDict):
    """A claim as an item: its header and lines; its adjudications are items of their own."""

    version: int
    claim_id: str
    status: Literal["submitted", "adjudicated", "denied", "reversed"]
    payer: str | None
    payer_class: str | None
    total_charge_cents: int
    lines: list[ServiceLineRecord]
    submitted_at: datetime | None
    #: When the payer first answered (a claim known only from its 835 has no submission).
    first_adjudicated_at: datetime | None


class TransitionRecord(TypedDict):
    """One lifecycle transition (``lifecycle.py``): an item of its own, named by the account
    version that made it and its place in that event (``<version:012d>-<n>``), so the
    records sort in the order they were applied."""

    version: int
    #: The state left (None: the account's first state) and the state entered.
    from_state: str | None
    state: str
    #: When it happened at the source (the event's ``occurred_at``).
    at: datetime
    event_id: str
    event_kind: str
    source: str
    claim_id: str | None
    #: Seconds spent in ``from_state`` (``at`` minus when it was entered; negative when the
    #: event is dated before that: it arrived out of order). None for a first state.
    seconds_in_from: int | None
    #: False when the state machine does not expect ``from_state -> state``; ``reason`` says
    #: why. Applied and recorded all the same.
    expected: bool
    reason: str | None
    #: ``workflow_step`` details: an eligibility result, a note; ``zero_balance`` for a close
    #: by the zero-balance rule.
    detail: str | None


class DenialStep(TypedDict):
    """One event that moved a denial item: what it made of it, when, by which event."""

    state: str
    at: datetime
    event_id: str
    event_kind: str


class DenialRecord(TypedDict):
    """A denied claim or service line (``denials.py``), item id: the claim id, or
    ``<claim id>/<line id>`` for a line denied while its claim was paid. One per claim or
    line, whatever the payer's later answers: they move it (``state``)."""

    version: int
    denial_id: str
    claim_id: str
    line_id: str | None
    #: open, appealed: worked; overturned, upheld, resolved, written_off: done.
    state: str
    payer: str | None
    payer_class: str | None
    entity: str
    procedure_code: str | None
    #: What the payer denied: the claim's (or line's) charge less what it paid, in cents.
    amount_cents: int
    #: The denial's CARCs ("CO-16") and RARCs ("N14"), from its latest denial.
    carcs: list[str]
    rarcs: list[str]
    denied_at: datetime
    #: The adjudication (event id) that last denied it.
    adjudication_event_id: str
    appealed_at: datetime | None
    resolved_at: datetime | None
    #: What a later 835 paid on it (overturned or resolved), and what was written off.
    paid_cents: int
    written_off_cents: int
    #: The events that moved it, oldest first (the last ``DENIAL_STEPS_KEPT``).
    steps: list[DenialStep]


#: Item kinds, as they appear in item keys (``layout.py``).
ItemKind = Literal["charge", "claim", "adjudication", "payment", "refund", "transition",
                   "denial"]
ITEM_KINDS: tuple[ItemKind, ...] = ("charge", "claim", "adjudication", "payment", "refund",
                                    "transition", "denial")
Item = (ChargeRecord | ClaimRecord | AdjudicationRecord | PaymentRecord | RefundRecord
        | TransitionRecord | DenialRecord)
#: (kind, id): an item's name within its account.
ItemRef = tuple[ItemKind, str]


class ItemCounts(_Frozen):
    charge: int = 0
    claim: int = 0
    adjudication: int = 0
    payment: int = 0
    refund: int = 0
    #: Lifecycle transitions made (``TransitionRecord``); 0 in heads written before them.
    #: Not in ``total``: they are bounded on their own (``lifecycle.TRANSITIONS_MAX``), so a
    #: long history never refuses the money events that make it.
    transition: int = 0
    #: Denied claims and lines (``DenialRecord``); 0 in heads written before them. Not in
    #: ``total`` either: at most one per claim and per claim line, so bounded by the claims,
    #: and a denial never refuses the 835 that makes it.
    denial: int = 0

    def total(self) -> int:
        return self.charge + self.claim + self.adjudication + self.payment + self.refund

    def plus(self, kind: ItemKind, n: int = 1) -> ItemCounts:
        # model_construct: the counts are ints this class made (a copy through pydantic's
        # __copy__ costs several times more, on every event that creates an item).
        return ItemCounts.model_construct(**{**self.__dict__, kind: getattr(self, kind) + n})


class PendingRefunds(_Frozen):
    """Refund requests waiting for approval: beside the buckets, in no ledger bucket (a
    request moves no money until it posts)."""

    count: int = 0
    cents: int = 0
#: The lifecycle states' code system (``lifecycle.STATES``), wherever they are codes: the FHIR
#: Account's lifecycle extension, and the FHIR Task codes ingest takes as workflow steps.
LIFECYCLE_SYSTEM = "urn:rcmflow:lifecycle-state"


class Lifecycle(_Frozen):
    """The account's workflow state (``lifecycle.py``): where it is, since when, and when it
    last entered each state (the spans the metrics watch). Small: one entry per state."""

    state: str
    since: datetime
    event_id: str
    #: Whether the transition into ``state`` was one the state machine expects.
    expected: bool = True
    #: State -> when the account last entered it (at most one entry per state).
    entered: dict[str, datetime] = Field(default_factory=dict)


class AccountHead(_Frozen):
    """What every event of an account reads and moves: small, whatever the account's age.

    The account's charges, claims, adjudications and payments are items kept apart, one
    record each (``layout.py``): an event reads and writes only the items it names.
    """

    #: The record layout of rcm.accounts (``layout.py``): 2 = a head and one record per item.
    #: Snapshots written before it (the whole account in one record) have no such field.
    layout: Literal[2] = 2
    account: str
    entity: str | None = None
    status: str = "open"
    version: int = Field(0, description="Grows by one with every applied event.")
    last_event_id: str | None = None
    last_event_at: datetime | None = None
    balances: Balances = Balances()
    items: ItemCounts = ItemCounts()
    refunds_pending: PendingRefunds = PendingRefunds()
    #: The workflow state; None until the first transition (and in heads written before it).
    lifecycle: Lifecycle | None = None

    def item_count(self) -> int:
        """Items held for this account: bounded by ``Settings.account_items_max``."""
        return self.items.total()


def _plain(value: Any) -> Any:
    if isinstance(value, Balances):
        return {**value.__dict__, "balance": value.balance}
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"cannot serialise {type(value).__name__}")


def head_json(head: AccountHead) -> bytes:
    """The head's record value on rcm.accounts.

    The same document ``head.model_dump_json()`` gives, written by orjson in half the time:
    one is written for every account a batch touches.
    """
    return orjson.dumps(head, default=_plain, option=orjson.OPT_UTC_Z)


def item_json(item: Item) -> bytes:
    """An item's record value on rcm.accounts."""
    return orjson.dumps(item, option=orjson.OPT_UTC_Z)
