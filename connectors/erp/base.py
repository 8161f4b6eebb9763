"""The adapter interface every ERP connector implements (see the package docstring)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from rcmflow.streams.postings import PostingDelta

__all__ = [
    "Posted",
    "AlreadyThere",
    "Rejected",
    "Outcome",
    "JournalLine",
    "JournalEntry",
    "ErpAdapter",
    "post_each",
    "entry_text",
    "approval_text",
]


class Posted(NamedTuple):
    """The ERP created (and posted) the journal entry now."""

    posting_id: str
    erp_ref: str
    kind: Literal["posted"] = "posted"


class AlreadyThere(NamedTuple):
    """The ERP already holds an entry with this posting id: done, not posted again."""

    posting_id: str
    erp_ref: str
    kind: Literal["already_there"] = "already_there"


class Rejected(NamedTuple):
    """The ERP refused the entry for good (validation, closed period, unmapped GL account).

    ``reason`` is the ERP's own text (or ours for a mapping gap); ``code`` a stable machine
    code (``erp_rejected``, ``unmapped_gl_account``, ...). The delta goes to rcm.postings.dlq,
    recorded as the core's ``Rejection`` (``runner.rejection``: stage "posting").
    """

    posting_id: str
    code: str
    reason: str
    kind: Literal["rejected"] = "rejected"


Outcome = Posted | AlreadyThere | Rejected


class JournalLine(NamedTuple):
    gl_account: str
    debit_cents: int
    credit_cents: int


class JournalEntry(NamedTuple):
    """One journal entry read back from the ERP, in rcmflow's terms (GL codes, cents)."""

    posting_id: str
    erp_ref: str
    effective_date: date
    entity: str | None
    lines: tuple[JournalLine, ...]
    posted: bool

    @property
    def total_cents(self) -> int:
        return sum(line.debit_cents for line in self.lines)


@runtime_checkable
class ErpAdapter(Protocol):
    """One ERP. Implementations live in ``rcmflow.connectors.erp.<name>``.

    Contract:
    - ``post_batch(deltas)`` returns exactly one outcome per delta, in order. It is
      idempotent by ``posting_id``: the ERP's own duplicate guard (unique key, externalId)
      makes a second call with the same delta return ``AlreadyThere``, never a second entry,
      even when the first call's answer was lost (crash, timeout).
    - A transient failure raises ``TransientError`` for the whole call (the connector retries
      the same deltas); a rejection of one delta is a ``Rejected`` outcome for that delta
      only, the others are still posted (an adapter whose ERP batches all-or-nothing splits
      the batch to find the culprit).
    - A broken setup raises ``AdapterConfigError``.
    - ``read_journal`` yields the entries the ERP holds with a posting id, for reconciliation.
    """

    name: str
    #: Most deltas one ``post_batch`` call takes (the connector never sends more).
    batch_max: int

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def post_batch(self, deltas: Sequence[PostingDelta]) -> list[Outcome]: ...

    def read_journal(
        self, *, day_from: date | None = None, day_to: date | None = None
    ) -> AsyncIterator[JournalEntry]: ...


async def post_each(adapter: _PostsOne, deltas: Sequence[PostingDelta]) -> list[Outcome]:
    """``post_batch`` for an adapter whose ERP takes one entry per call."""
    return [await adapter.post(delta) for delta in deltas]


class _PostsOne(Protocol):
    async def post(self, delta: PostingDelta) -> Outcome: ...


def approval_text(delta: PostingDelta) -> str | None:
    """Who let a refund's money leave, in one line for the ERP's memo / reference fields:
    ``refund RQ1 requested by ann; approved by bob (refund_approver) 2026-11-21T14:30:00Z;
    policy 2026-12-06.1 rule one_approver``. None for a delta that is not a refund."""
    approval = delta.approval
    if approval is None:
        return None
    approvers = ", ".join(f"{a.by} ({a.role}) {a.at.isoformat().replace('+00:00', 'Z')}"
                          for a in approval.approvers) or "the policy"
    return (f"refund {approval.request_id} requested by {approval.requested_by}; approved "
            f"by {approvers}; policy {approval.policy_version} rule {approval.rule}")


def entry_text(delta: PostingDelta, limit: int = 999) -> str:
    """The entry's description in every ERP: the event kind and posting id, and for a refund
    who approved it; cut to ``limit`` characters (the field's size in that ERP)."""
    text = f"rcmflow {delta.event_kind} {delta.posting_id}"
    approval = approval_text(delta)
    if approval is not None:
        text += f"; {approval}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
