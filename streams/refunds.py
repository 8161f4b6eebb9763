"""Refund requests and their approvals (pure): what a refund event does to an account.

A refund from any source is a **request** (``Refund``): filed under the refund policy's rule
for its entity and amount (``refund_policy.py``), kept as an item of the account
(``RefundRecord``, id: the request's event id) and counted beside the buckets
(``AccountHead.refunds_pending``). It moves money only when approved: at once where the rule
is automatic, else with the ``refund_approved`` event that completes its rule. Every refusal
is a ``Rejection`` with a reason an operator can act on; a refused event changes nothing.

Whether a request posted at once is all its record needs besides the event and the policy
(``refund_item_changes(..., posted=)``): a redelivered event re-derives its record from the
same facts, without the head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

from rcmflow.streams.events import Refund, RefundApproved, RefundRejected
from rcmflow.streams.refund_policy import RefundPolicy
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.rules import Movement, refund_credit, refund_exceeds, refund_movements
from rcmflow.streams.state import (
    AccountHead,
    Item,
    ItemRef,
    PaymentRecord,
    RefundApproval,
    RefundRecord,
)

__all__ = ["RefundEvent", "RefundOutcome", "refund_outcome", "refund_item_changes",
           "refund_refs", "approval_metadata"]

RefundEvent = Refund | RefundApproved | RefundRejected
ItemLookup = Callable[[ItemRef], Item | None]


class RefundOutcome(NamedTuple):
    #: Empty: nothing posts (a request waiting, a first of two approvals, a rejection).
    movements: list[Movement]
    items: dict[ItemRef, Item]
    #: How the account's pending requests change: (count, cents).
    pending: tuple[int, int]
    #: The approval metadata the posting delta carries, when it posts.
    approval: dict[str, Any] | None


def refund_refs(event: RefundEvent) -> tuple[ItemRef, ...]:
    """The items a refund event may create or change: the request, and the refund as a
    payment record once it posts (what the facade shows as a PaymentReconciliation)."""
    request = event.event_id if isinstance(event, Refund) else event.request_id
    return (("refund", request), ("payment", request))


def refund_outcome(event: RefundEvent, head: AccountHead, items: ItemLookup,
                   policy: RefundPolicy, version: int) -> RefundOutcome | Rejection:
    if isinstance(event, Refund):
        return _request(event, head, items, policy, version)
    request = _request_record(event, items)
    if isinstance(request, Rejection):
        return request
    if isinstance(event, RefundRejected):
        return _rejection(event, request, items, policy, version)
    return _approval(event, request, head, items, policy, version)


def _request(event: Refund, head: AccountHead, items: ItemLookup, policy: RefundPolicy,
             version: int) -> RefundOutcome | Rejection:
    entity = policy.for_entity(event.dimensions.entity)
    rule = entity.rule_for(event.amount_cents)
    credit = refund_credit(head, event.to)
    over = event.amount_cents > credit
    if over and not entity.over_credit_roles:
        return refund_exceeds(event.amount_cents, credit, event.to,
                              f"refund policy {policy.version} lets no role approve a refund "
                              "past the credit balance")
    posts = rule.approvals == 0 and not over
    changes = refund_item_changes(event, version, items, policy, posted=posts)
    if not posts:
        return RefundOutcome([], changes, (1, event.amount_cents), None)
    record = cast(RefundRecord, changes[("refund", event.event_id)])
    return RefundOutcome(refund_movements(event.amount_cents, event.to, head), changes,
                         (0, 0), approval_metadata(record))


def _request_record(event: RefundApproved | RefundRejected,
                    items: ItemLookup) -> RefundRecord | Rejection:
    found = items(("refund", event.request_id))
    if found is None:
        return _refused("refund_request_unknown",
                        f"no refund request {event.request_id!r} on this account")
    request = cast(RefundRecord, found)
    if request["state"] == "rejected":
        return _refused("refund_request_rejected",
                        f"refund request {event.request_id!r} was rejected by "
                        f"{_who(request['rejected'])}")
    if request["state"] == "posted":
        return _refused("refund_already_posted",
                        f"refund request {event.request_id!r} was already approved and posted")
    return request


def _approval(event: RefundApproved, request: RefundRecord, head: AccountHead,
              items: ItemLookup, policy: RefundPolicy,
              version: int) -> RefundOutcome | Rejection:
    allowed = [*request["roles"], *request["over_credit_roles"]]
    if event.role not in allowed:
        return _refused("refund_role_not_allowed",
                        f"{event.by} approved as {event.role}; rule {request['rule']} takes "
                        f"approvals by {' or '.join(dict.fromkeys(allowed))}")
    if request["requested_by"] is not None and event.by == request["requested_by"]:
        return _refused("refund_self_approval",
                        f"{event.by} requested refund {request['event_id']!r} and cannot "
                        "approve it")
    if any(done["by"] == event.by for done in request["approvals"]):
        return _refused("refund_same_approver",
                        f"{event.by} already approved refund {request['event_id']!r}; rule "
                        f"{request['rule']} needs {request['approvals_needed']} distinct "
                        "approvers")
    completes = len(request["approvals"]) + 1 >= request["approvals_needed"]
    if completes:
        credit = refund_credit(head, request["to"])
        if request["amount_cents"] > credit:
            roles = [*(done["role"] for done in request["approvals"]), event.role]
            if not set(roles) & set(request["over_credit_roles"]):
                why = (f"an approval by {' or '.join(request['over_credit_roles'])} lets it "
                       "post past it" if request["over_credit_roles"] else
                       f"policy {request['policy_version']} lets no role approve past it")
                return refund_exceeds(request["amount_cents"], credit, request["to"], why)
    changes = refund_item_changes(event, version, items, policy, posted=completes)
    if not completes:
        return RefundOutcome([], changes, (0, 0), None)
    record = cast(RefundRecord, changes[("refund", event.request_id)])
    return RefundOutcome(refund_movements(request["amount_cents"], request["to"], head),
                         changes, (-1, -request["amount_cents"]), approval_metadata(record))


def _rejection(event: RefundRejected, request: RefundRecord, items: ItemLookup,
               policy: RefundPolicy, version: int) -> RefundOutcome | Rejection:
    allowed = [*request["roles"], *request["over_credit_roles"]]
    withdrawn = request["requested_by"] is not None and event.by == request["requested_by"]
    if event.role not in allowed and not withdrawn:
        return _refused("refund_role_not_allowed",
                        f"{event.by} rejected as {event.role}; rule {request['rule']} takes "
                        f"decisions by {' or '.join(dict.fromkeys(allowed)) or 'no role'} "
                        "(or the requester, withdrawing it)")
    changes = refund_item_changes(event, version, items, policy, posted=False)
    return RefundOutcome([], changes, (-1, -request["amount_cents"]), None)


def refund_item_changes(event: RefundEvent, version: int, items: ItemLookup,
                        policy: RefundPolicy, *, posted: bool) -> dict[ItemRef, Item]:
    """The request's record (and the refund's payment record once it posts) after
    ``event``, applied as account ``version``; ``posted``: whether the event posted."""
    if isinstance(event, Refund):
        record = _filed(event, version, policy, posted=posted)
    else:
        before = cast(RefundRecord, items(("refund", event.request_id)))
        assert before is not None, "a decision on an unknown refund request was applied"
        decision: RefundApproval = {"by": event.by, "role": event.role, "at": event.occurred_at,
                                    "event_id": event.event_id,
                                    "note": getattr(event, "note", None)}
        record = {**before, "version": version}
        if isinstance(event, RefundRejected):
            record |= {"state": "rejected", "decided_at": event.occurred_at,
                       "rejected": decision, "rejection_reason": event.reason}
        else:
            approvals = [a for a in before["approvals"] if a["event_id"] != event.event_id]
            record["approvals"] = [*approvals, decision]
            if posted:
                record |= {"state": "posted", "decided_at": event.occurred_at,
                           "posted_event_id": event.event_id}
    changes: dict[ItemRef, Item] = {("refund", record["event_id"]): record}
    if posted:
        payment: PaymentRecord = {
            "version": version, "event_id": record["event_id"], "kind": "refund",
            "amount_cents": record["amount_cents"], "channel": record["to"],
            "reference": record["reference"], "occurred_at": event.occurred_at,
            "correlation_id": record["correlation_id"]}
        changes[("payment", record["event_id"])] = payment
    return changes


def _filed(event: Refund, version: int, policy: RefundPolicy, *, posted: bool) -> RefundRecord:
    entity = policy.for_entity(event.dimensions.entity)
    rule = entity.rule_for(event.amount_cents)
    name, needed, roles = rule.name, rule.approvals, list(rule.roles)
    if needed == 0 and not posted:
        # Within the automatic rule but past the credit balance: it waits for one approval
        # by a role the policy lets refund past the credit.
        name, needed, roles = f"{rule.name}+over_credit", 1, list(entity.over_credit_roles)
    return {
        "version": version, "event_id": event.event_id,
        "state": "posted" if posted else "pending", "amount_cents": event.amount_cents,
        "to": event.to, "reference": event.reference, "requested_by": event.requested_by,
        "source": event.source, "reason": event.reason, "entity": event.dimensions.entity,
        "requested_at": event.occurred_at, "correlation_id": event.correlation_id,
        "policy_version": policy.version, "rule": name, "approvals_needed": needed,
        "roles": roles, "over_credit_roles": list(entity.over_credit_roles), "approvals": [],
        "decided_at": event.occurred_at if posted else None, "rejected": None,
        "rejection_reason": None, "posted_event_id": event.event_id if posted else None,
    }


def approval_metadata(record: RefundRecord) -> dict[str, Any]:
    """What the refund's posting delta carries, and every ERP adapter writes: who asked,
    who approved in which role and when, under which policy version and rule."""
    return {
        "request_id": record["event_id"],
        "requested_by": record["requested_by"] or f"source:{record['source']}",
        "approvers": [{"by": a["by"], "role": a["role"], "at": a["at"]}
                      for a in record["approvals"]],
        "policy_version": record["policy_version"],
        "rule": record["rule"],
    }


def _who(decision: RefundApproval | None) -> str:
    return "?" if decision is None else f"{decision['by']} ({decision['role']})"


def _refused(reason: str, detail: str) -> Rejection:
    return Rejection(stage="rules", reason_code=reason, detail=detail)
