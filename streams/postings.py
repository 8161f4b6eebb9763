"""Posting deltas: balanced journal entries, one per applied event that moves money.

A delta's id is derived from the event (account + event id), the mapping version and the
rule version only, so a delta re-sent after a crash is byte-identical and an ERP drops it by id.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RULE_VERSION", "PostingLine", "PostingDelta", "UnmappedLine", "posting_id",
           "RefundApprovalRef", "RefundApprover"]

#: Bump when the posting rules change what they emit; part of every posting id.
RULE_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PostingLine(_Frozen):
    gl_account: str
    debit_cents: int = Field(ge=0)
    credit_cents: int = Field(ge=0)
    bucket: str = Field(description="The account-state bucket this line moves.")
    memo: str = Field(description="The rule that produced the line: charge, CO-45, PLB-L6, ...")
    entity: str
    department: str | None = None
    payer_class: str | None = None
    suspense: bool = Field(False, description="Posted to suspense because a key is unmapped.")


class UnmappedLine(_Frozen):
    """An exception record: a line went to suspense because the mapping lacks a key."""

    posting_id: str
    event_id: str
    account: str
    missing: str
    gl_account: str
    amount_cents: int
    coa_version: str
    #: The rule's GL role, its dimension and the bucket the line moved: what a later
    #: reclassification looks the GL account up by (``SuspenseReclassified``). None: a line
    #: forced to suspense because the code itself is unmapped (a CARC or PLB code: its
    #: treatment, not only its account, is unknown), or one an older rcmflow wrote.
    role: str | None = None
    dimension: str | None = None
    bucket: str | None = None


class RefundApprover(_Frozen):
    by: str
    role: str
    at: datetime


class RefundApprovalRef(_Frozen):
    """Who let a refund's money leave: on every refund's delta, written by each ERP adapter
    where that ERP keeps references (docs: refunds)."""

    request_id: str
    requested_by: str = Field(description="A login, or 'source:<source>' for a feed's row.")
    approvers: tuple[RefundApprover, ...] = Field(
        description="Empty: approved by the policy's automatic rule.")
    policy_version: str
    rule: str


class PostingDelta(_Frozen):
    posting_id: str
    account: str
    entity: str
    effective_date: date
    currency: str
    lines: tuple[PostingLine, ...] = Field(min_length=2)
    event_id: str
    event_kind: str
    correlation_id: str | None
    account_version: int = Field(description="The account's version after this delta.")
    reverses_posting_id: str | None = None
    coa_version: str
    rule_version: int = RULE_VERSION
    #: Only on a refund's delta (absent from others, which keep their bytes).
    approval: RefundApprovalRef | None = None

    @model_validator(mode="after")
    def _balanced(self) -> PostingDelta:
        debits = credits = 0
        for line in self.lines:
            if (line.debit_cents == 0) == (line.credit_cents == 0):
                raise ValueError("a posting line is either a debit or a credit, and not zero")
            debits += line.debit_cents
            credits += line.credit_cents
        if debits != credits:
            raise ValueError(f"unbalanced posting: debits {debits} != credits {credits}")
        return self

    @property
    def total_cents(self) -> int:
        return sum(line.debit_cents for line in self.lines)


def posting_id(account: str, event_id: str, coa_version: str) -> str:
    """Deterministic id: the same event under the same mapping and rules, the same id."""
    material = f"{account}\x00{event_id}\x00{coa_version}\x00{RULE_VERSION}".encode()
    return "pst_" + hashlib.sha256(material).hexdigest()[:32]
