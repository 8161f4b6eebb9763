"""Canonical financial events: one model family for everything that moves money or status.

Every source format (HL7 DFT, X12 835, lockbox files, FHIR) is normalised into these models
before it reaches ``rcm.events``. Money is integer minor units (``*_cents``); a float in the
JSON is a validation error, never rounded. ``event_id`` is the idempotency key, unique per
account: the same key with the same content is a replay, with other content a conflict.
"""

from __future__ import annotations

import hashlib
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeAlias

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)

from .money import AMOUNT_CENTS_MAX

__all__ = [
    "SCHEMA_VERSION",
    "AMOUNT_CENTS_MAX",
    "EventKind",
    "Dimensions",
    "Adjustment",
    "ServiceLine",
    "AdjudicatedLine",
    "ChargePosted",
    "ChargeReversed",
    "ClaimSubmitted",
    "ClaimAdjudicated",
    "PatientPayment",
    "Refund",
    "RefundApproved",
    "RefundRejected",
    "WriteOff",
    "ManualAdjustment",
    "AccountStatusChanged",
    "ProviderAdjustment",
    "SuspenseReclassified",
    "WorkflowStep",
    "WorkflowStepName",
    "WORKFLOW_STEPS",
    "Event",
    "EVENT_ADAPTER",
    "event_digest",
    "events_json_schema",
    "ValidationError",
]

#: Final: its type is Literal[1], the one value ``schema_version`` accepts.
SCHEMA_VERSION: Final = 1

#: Bounds on repeated parts of one event (835 CAS segments, 837 service lines).
ADJUSTMENTS_MAX = 99
LINES_MAX = 999

Cents = Annotated[StrictInt, Field(ge=-AMOUNT_CENTS_MAX, le=AMOUNT_CENTS_MAX)]
PositiveCents = Annotated[StrictInt, Field(gt=0, le=AMOUNT_CENTS_MAX)]
NonNegativeCents = Annotated[StrictInt, Field(ge=0, le=AMOUNT_CENTS_MAX)]
Code = Annotated[str, Field(min_length=1, max_length=40)]
AccountKey = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9:._\-]*$")
]
EventId = Annotated[str, Field(min_length=1, max_length=200)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]

PROVIDER_PREFIX = "provider:"


class EventKind(StrEnum):
    CHARGE_POSTED = "charge_posted"
    CHARGE_REVERSED = "charge_reversed"
    CLAIM_SUBMITTED = "claim_submitted"
    CLAIM_ADJUDICATED = "claim_adjudicated"
    PATIENT_PAYMENT = "patient_payment"
    REFUND = "refund"
    REFUND_APPROVED = "refund_approved"
    REFUND_REJECTED = "refund_rejected"
    WRITE_OFF = "write_off"
    MANUAL_ADJUSTMENT = "manual_adjustment"
    ACCOUNT_STATUS_CHANGED = "account_status_changed"
    PROVIDER_ADJUSTMENT = "provider_adjustment"
    SUSPENSE_RECLASSIFIED = "suspense_reclassified"
    WORKFLOW_STEP = "workflow_step"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Dimensions(_Frozen):
    """Accounting dimensions: what the chart-of-accounts mapping looks GL accounts up by."""

    entity: Code = Field("01", description="Facility / legal entity (CoA `entities` key).")
    department: Code | None = Field(None, description="Department; else derived from revenue_code.")
    payer: Code | None = None
    payer_class: Code | None = Field(None, description="MEDICARE, MEDICAID, COMMERCIAL, ...")
    encounter: Code | None = Field(None, description="Visit / encounter number (PV1-19).")
    claim_id: Code | None = None
    revenue_code: Code | None = Field(None, description="UB-04 revenue code, e.g. 0450.")
    procedure_code: Code | None = Field(None, description="CPT/HCPCS code.")


class _EventBase(_Frozen):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: EventId = Field(description="Idempotency key, unique per account.")
    account: AccountKey = Field(description="Patient account number (PID-18, CLP01).")
    occurred_at: AwareDatetime = Field(description="When it happened at the source, with offset.")
    source: Code = Field(description="Where it came from: hl7, x12-835, lockbox, portal, ...")
    correlation_id: Annotated[str, Field(max_length=200)] | None = Field(
        None, description="Ties events of one source unit together (835 TRN02, HL7 MSH-10)."
    )
    currency: Currency = "USD"
    dimensions: Dimensions = Dimensions()

    @model_validator(mode="after")
    def _provider_keys_only_for_provider_events(self) -> _EventBase:
        is_provider_key = self.account.startswith(PROVIDER_PREFIX)
        is_provider_event = isinstance(self, ProviderAdjustment)
        if isinstance(self, SuspenseReclassified):
            return self  # moves a line of either kind of key from suspense
        if is_provider_key != is_provider_event:
            raise ValueError(
                "provider-level adjustments use a 'provider:<payee id>' account key, "
                "and only they do"
            )
        return self


class ChargePosted(_EventBase):
    kind: Literal[EventKind.CHARGE_POSTED]
    amount_cents: PositiveCents
    quantity: Annotated[StrictInt, Field(ge=1, le=100_000)] = 1
    self_pay: bool = Field(False, description="No coverage: the charge goes to self-pay AR.")


class ChargeReversed(_EventBase):
    kind: Literal[EventKind.CHARGE_REVERSED]
    amount_cents: PositiveCents
    reverses_event_id: EventId | None = Field(
        None, description="The charge this reverses; its AR bucket is used."
    )
    self_pay: bool = False


class ServiceLine(_Frozen):
    line_id: Code
    charge_cents: NonNegativeCents
    units: Annotated[StrictInt, Field(ge=1, le=100_000)] = 1
    procedure_code: Code | None = None
    revenue_code: Code | None = None


class ClaimSubmitted(_EventBase):
    kind: Literal[EventKind.CLAIM_SUBMITTED]
    claim_id: Code
    total_charge_cents: NonNegativeCents
    lines: Annotated[tuple[ServiceLine, ...], Field(max_length=LINES_MAX)] = ()

    @model_validator(mode="after")
    def _lines_add_up(self) -> ClaimSubmitted:
        if self.lines and sum(line.charge_cents for line in self.lines) != self.total_charge_cents:
            raise ValueError("total_charge_cents must equal the sum of the service lines' charges")
        return self


class Adjustment(_Frozen):
    """One CAS amount: group (CO, PR, OA, PI, CR) + CARC reason, signed as in the 835."""

    group: Literal["CO", "PR", "OA", "PI", "CR"]
    reason: Annotated[str, Field(min_length=1, max_length=5)]
    amount_cents: Cents

    @property
    def carc(self) -> str:
        return f"{self.group}-{self.reason}"


#: AdjudicatedLine fields added after its first release (for the contract-variance check,
#: ``streams/variance.py``): left out of the JSON when unset, so an event without them is
#: byte-identical to one made before they existed (its dedup digest does not change).
_LINE_FIELDS_OMITTED_WHEN_UNSET = ("revenue_code", "units", "allowed_cents", "service_date")


#: A remittance advice remark code (RARC: N14, MA02, M15, ...): 835 LQ*HE on a service line,
#: MOA / MIA remark elements on a claim.
Rarc = Annotated[str, Field(pattern=r"^[A-Z0-9]{1,8}$")]
#: Bound on the remark codes of one claim or line (an 835 line has at most 99 LQs).
REMARK_CODES_MAX = 99
RemarkCodes = Annotated[tuple[Rarc, ...], Field(max_length=REMARK_CODES_MAX)]


class _WithRemarks(_Frozen):
    """``remark_codes`` is optional and left out of the JSON when empty: an event without
    remarks serialises as it did before the field, so its content digest (``event_digest``,
    what dedup tells a replay from a conflict by) is unchanged."""

    @model_serializer(mode="wrap")
    def _without_empty_remarks(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and not data.get("remark_codes"):
            data.pop("remark_codes", None)
        return data


class AdjudicatedLine(_WithRemarks):
    line_id: Code
    charge_cents: Cents
    paid_cents: Cents
    procedure_code: Code | None = None
    adjustments: Annotated[tuple[Adjustment, ...], Field(max_length=ADJUSTMENTS_MAX)] = ()
    revenue_code: Code | None = Field(None, description="UB-04 revenue code (SVC01 NU, SVC04).")
    units: Annotated[StrictInt, Field(ge=0, le=100_000)] | None = Field(
        None, description="Units of service paid (SVC05); unset: 1.")
    allowed_cents: Cents | None = Field(
        None, description="The payer's allowed amount as it states it (835 AMT*B6).")
    service_date: date | None = Field(None, description="Date of service (DTM*472 / 150).")
    remark_codes: RemarkCodes = Field((), description="The line's RARCs (835 LQ*HE).")

    @model_serializer(mode="wrap")
    def _omit_unset_additions(self, handler: SerializerFunctionWrapHandler,
                              info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in _LINE_FIELDS_OMITTED_WHEN_UNSET:
                if data.get(name, 0) is None:
                    del data[name]
            if not data.get("remark_codes"):
                data.pop("remark_codes", None)
        return data


class ClaimAdjudicated(_WithRemarks, _EventBase):
    """One 835 CLP: what the payer paid and how the rest of the charge was adjusted.

    A reversal (CLP02 = 22) carries negated amounts; the posting rules then negate the
    original lines by themselves. ``charge - paid = sum(all adjustments)`` must hold.
    """

    kind: Literal[EventKind.CLAIM_ADJUDICATED]
    claim_id: Code
    outcome: Literal["processed", "denied", "reversal"]
    status_code: Code | None = Field(None, description="CLP02 as received.")
    payer_claim_control_number: Code | None = Field(None, description="CLP07.")
    charge_cents: Cents
    paid_cents: Cents
    patient_responsibility_cents: Cents = 0
    adjustments: Annotated[tuple[Adjustment, ...], Field(max_length=ADJUSTMENTS_MAX)] = ()
    lines: Annotated[tuple[AdjudicatedLine, ...], Field(max_length=LINES_MAX)] = ()
    remark_codes: RemarkCodes = Field(
        (), description="Claim-level RARCs (835 MOA03-07, MIA05/20-23); each line's are on "
        "the line. Absent from events made before rcmflow read them.")

    def all_adjustments(self) -> tuple[Adjustment, ...]:
        """Claim-level CAS amounts, then every service line's."""
        if not self.lines:
            return self.adjustments
        return self.adjustments + tuple(a for line in self.lines for a in line.adjustments)

    @model_validator(mode="after")
    def _balances(self) -> ClaimAdjudicated:
        adjusted = sum(a.amount_cents for a in self.all_adjustments())
        if self.charge_cents - self.paid_cents != adjusted:
            raise ValueError(
                f"claim does not balance: charge {self.charge_cents} - paid {self.paid_cents}"
                f" != adjustments {adjusted}"
            )
        for line in self.lines:
            line_adjusted = sum(a.amount_cents for a in line.adjustments)
            if line.charge_cents - line.paid_cents != line_adjusted:
                raise ValueError(f"service line {line.line_id} does not balance")
        return self


class PatientPayment(_EventBase):
    kind: Literal[EventKind.PATIENT_PAYMENT]
    amount_cents: PositiveCents
    channel: Literal["portal", "lockbox", "pos", "mail", "phone"] = "portal"
    reference: Annotated[str, Field(max_length=80)] | None = None


UserName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@:-]+$")]
RoleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class Refund(_EventBase):
    """A refund **request**: money leaves only once the refund policy approves it
    (``refund_policy.py``). Within the policy's automatic rule it posts at once, approved by
    the policy; otherwise it waits for ``refund_approved`` events (or a ``refund_rejected``).
    The event id is the request id the decisions name."""

    kind: Literal[EventKind.REFUND]
    amount_cents: PositiveCents
    to: Literal["patient", "payer"] = "patient"
    reference: Annotated[str, Field(max_length=80)] | None = None
    requested_by: UserName | None = Field(
        None, description="The user who asked (the operator tools' login); none: the source "
        "system (`source`), e.g. a payment file's row.")
    reason: Annotated[str, Field(max_length=200)] | None = None


class _RefundDecision(_EventBase):
    request_id: EventId = Field(description="The refund request's event id.")
    by: UserName = Field(description="Who decided: the login of the operator tools' token.")
    role: RoleName = Field(description="The role they decided in (one their token holds).")
    policy_version: Annotated[str, Field(max_length=40)] | None = Field(
        None, description="The policy version the decider's tool showed.")
    rule: Annotated[str, Field(max_length=60)] | None = Field(
        None, description="The request's rule the decider's tool showed (the worker decides "
        "by the rule kept on the request).")


class RefundApproved(_RefundDecision):
    """One approval of a pending refund request; the one that completes its rule posts it."""

    kind: Literal[EventKind.REFUND_APPROVED]
    note: Annotated[str, Field(max_length=500)] | None = None


class RefundRejected(_RefundDecision):
    """A pending refund request turned down: it will never post."""

    kind: Literal[EventKind.REFUND_REJECTED]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


WriteOffReason: TypeAlias = Literal[
    "price_concession", "bad_debt", "charity", "small_balance", "administrative", "denial"
]


class WriteOff(_EventBase):
    kind: Literal[EventKind.WRITE_OFF]
    amount_cents: PositiveCents
    reason: WriteOffReason
    from_ar: Literal["patient", "insurance"] | None = Field(
        None, description="Which AR is written down; default insurance for denials, else patient."
    )

    @property
    def ar(self) -> Literal["patient", "insurance"]:
        if self.from_ar is not None:
            return self.from_ar
        return "insurance" if self.reason == "denial" else "patient"


class ManualAdjustment(_EventBase):
    """An administrative adjustment; positive lowers the AR, negative raises it."""

    kind: Literal[EventKind.MANUAL_ADJUSTMENT]
    amount_cents: Cents
    ar: Literal["patient", "insurance"] = "patient"
    reason: Annotated[str, Field(max_length=200)] | None = None

    @model_validator(mode="after")
    def _non_zero(self) -> ManualAdjustment:
        if self.amount_cents == 0:
            raise ValueError("a manual adjustment of 0 cents moves nothing")
        return self


class AccountStatusChanged(_EventBase):
    kind: Literal[EventKind.ACCOUNT_STATUS_CHANGED]
    status: Literal["open", "discharged", "billed", "collections", "bad_debt", "closed"]


class ProviderAdjustment(_EventBase):
    """An 835 PLB amount: provider-level money that belongs to no patient account.

    Signed as in the 835: positive reduces the payment (a takeback), negative increases it.
    """

    kind: Literal[EventKind.PROVIDER_ADJUSTMENT]
    reason_code: Annotated[str, Field(min_length=1, max_length=5)]
    amount_cents: Cents
    reference: Annotated[str, Field(max_length=80)] | None = None


class SuspenseReclassified(_EventBase):
    """Moves an amount a delta posted to suspense (an unmapped dimension) to the GL account
    the chart now maps, once: made by `rcmflow dlq replay` / `resolve` from the
    ``unmapped_dimension`` record, its event id derived from that record's id. No bucket
    moves: both lines are in the bucket the suspense line moved."""

    kind: Literal[EventKind.SUSPENSE_RECLASSIFIED]
    #: The delta whose line went to suspense.
    posting_id: Code
    #: The rule's GL role and dimension (department, payer class) the line was looked up by.
    role: Code
    dimension: Code | None = None
    #: The account-state bucket the suspense line moved.
    bucket: Code
    #: The suspense line's amount, signed as the movement was (positive: it was a debit).
    amount_cents: Cents
    #: What the chart lacked then (``entity '07'``, ``gross_revenue[0999]``).
    missing: Annotated[str, Field(max_length=200)]
    #: The suspense GL account the line went to (reversed as it was, whatever the chart's
    #: suspense account is now).
    suspense_account: Code

    @model_validator(mode="after")
    def _non_zero(self) -> SuspenseReclassified:
        if self.amount_cents == 0:
            raise ValueError("a reclassification of 0 cents moves nothing")
        return self


#: The workflow steps other systems report (``workflow_step``); the lifecycle states rcmflow
#: derives from its own events are in ``lifecycle.py``.
WorkflowStepName: TypeAlias = Literal[
    "registration_complete",
    "eligibility_verified",
    "charge_review_complete",
    "coding_approved",
    "appeal_initiated",
    "patient_statement_issued",
]
WORKFLOW_STEPS: tuple[WorkflowStepName, ...] = (
    "registration_complete", "eligibility_verified", "charge_review_complete",
    "coding_approved", "appeal_initiated", "patient_statement_issued")


class WorkflowStep(_EventBase):
    """A revenue-cycle workflow step another system completed (registration, eligibility,
    charge review, coding, appeal, patient statement). Moves the account's lifecycle state
    (``lifecycle.py``); posts nothing."""

    kind: Literal[EventKind.WORKFLOW_STEP]
    step: WorkflowStepName
    claim_id: Code | None = Field(None, description="The claim an appeal or coding is about.")
    #: An eligibility result: ``active``, ``inactive``, ``error``, ... (a 271 EB01 or a FHIR
    #: CoverageEligibilityResponse's outcome / inforce).
    result: Code | None = Field(None, description="An eligibility check's result, e.g. active.")
    note: Annotated[str, Field(max_length=200)] | None = None


Event = Annotated[
    ChargePosted
    | ChargeReversed
    | ClaimSubmitted
    | ClaimAdjudicated
    | PatientPayment
    | Refund
    | RefundApproved
    | RefundRejected
    | WriteOff
    | ManualAdjustment
    | AccountStatusChanged
    | ProviderAdjustment
    | SuspenseReclassified
    | WorkflowStep,
    Field(discriminator="kind"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


#: 835 line details that describe and move no money: outside the dedup digest.
_DESCRIPTIVE_LINE_FIELDS = frozenset((*_LINE_FIELDS_OMITTED_WHEN_UNSET, "remark_codes"))


def event_digest(raw: bytes) -> str:
    """Content digest of a received event for replay detection: same key + same digest is a
    replay. Canonical JSON (sorted keys, no whitespace), so key order and formatting of a
    re-sent event do not matter; any difference in content does, except the 835 details
    that only describe (the lines' revenue code, units, AMT*B6, date of service, and the
    claim's and lines' RARCs): an 835 applied by an rcmflow that did not read them, sent
    again by one that does, is a replay, not a conflict. They move no money; the contract
    check and the denial item take them once, when the claim is first applied."""
    doc = orjson.loads(raw)
    if isinstance(doc, dict) and doc.get("kind") == EventKind.CLAIM_ADJUDICATED:
        doc.pop("remark_codes", None)
        lines = doc.get("lines")
        if isinstance(lines, list):
            doc["lines"] = [{k: v for k, v in line.items() if k not in _DESCRIPTIVE_LINE_FIELDS}
                            if isinstance(line, dict) else line for line in lines]
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def events_json_schema() -> dict[str, object]:
    """The published JSON Schema of a canonical event (``rcmflow schema events``)."""
    schema = EVENT_ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"rcmflow canonical event, schema version {SCHEMA_VERSION}"
    return schema
