"""Controlled refunds in the pure core: a refund is a request, and only an approved one posts.

Run through the worker's own ``Processor`` over in-memory tables (dedup included), with the
refund policy shipped with rcmflow (``streams/refund_policy.yaml``): entity 01 approves up to
100.00 itself, one approval by refund_approver/refund_manager up to 1 000.00, two managers
above, nothing past the credit balance; entity 02 lets a refund_manager refund past it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rcmflow.streams.chart import load_chart
from rcmflow.streams.exceptions import RefundPolicyError
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.processor import Processor
from rcmflow.streams.refund_policy import load_refund_policy
from tests.factories import event_doc, messages, payment

POLICY = load_refund_policy()


class Ledger:
    """One worker's tables: feed events, read what was posted and refused."""

    def __init__(self) -> None:
        self.tables = MemoryTables()
        self.processor = Processor(load_chart(), refund_policy=POLICY)
        self.offset = 0
        self.postings: list[PostingDelta] = []
        self.refused: list[tuple[str, str]] = []

    def feed(self, *docs: dict[str, Any] | tuple[str, bytes]) -> None:
        result = self.processor.process(messages(list(docs), first_offset=self.offset),
                                        self.tables)
        self.offset += len(docs)
        self.tables.write(result)
        self.postings += [PostingDelta.model_validate_json(v) for _, _, v in result.postings]
        self.refused += [(json.loads(v)["reason_code"], json.loads(v)["reason"])
                         for _, _, v in result.dlq]

    def account(self, account: str = "A1") -> dict[str, Any]:
        return self.tables.views()[account]

    def request(self, request_id: str, account: str = "A1") -> dict[str, Any]:
        found = [r for r in self.account(account)["refunds"] if r["event_id"] == request_id]
        assert found, f"no request {request_id}"
        return found[0]


def refund(cents: int, rid: str = "RQ1", entity: str = "01", **fields: Any) -> dict[str, Any]:
    return event_doc("refund", event_id=rid, amount_cents=cents, to="patient",
                     dimensions={"entity": entity}, **fields)


def approve(by: str, role: str, rid: str = "RQ1", **fields: Any) -> dict[str, Any]:
    return event_doc("refund_approved", event_id=f"ok:{rid}:{by}", request_id=rid, by=by,
                     role=role, occurred_at="2026-11-21T09:30:00-05:00", **fields)


def reject(by: str, role: str, rid: str = "RQ1") -> dict[str, Any]:
    return event_doc("refund_rejected", event_id=f"no:{rid}:{by}", request_id=rid, by=by,
                     role=role, reason="refunded by cheque already")


def credit(cents: int, entity: str = "01") -> dict[str, Any]:
    """A patient payment with nothing owed: all of it a credit balance."""
    return payment(cents, event_id=f"PAY{cents}", dimensions={"entity": entity})


def test_a_refund_within_the_automatic_rule_posts_at_once_approved_by_the_policy() -> None:
    ledger = Ledger()
    ledger.feed(credit(50_000), refund(10_000, requested_by="lockbox-clerk"))
    posted = ledger.postings[-1]
    assert posted.event_kind == "refund" and posted.total_cents == 10_000
    assert posted.approval is not None
    assert (posted.approval.rule, posted.approval.approvers) == ("auto_small", ())
    assert posted.approval.policy_version == POLICY.version
    assert posted.approval.requested_by == "lockbox-clerk"
    account = ledger.account()
    assert account["balances"]["refunds"] == 10_000
    assert account["refunds_pending"] == {"count": 0, "cents": 0}


def test_a_refund_over_the_threshold_posts_nothing_until_approved() -> None:
    ledger = Ledger()
    ledger.feed(credit(50_000), refund(25_000, requested_by="ann"))
    assert len(ledger.postings) == 1  # the payment only
    account = ledger.account()
    assert account["balances"]["refunds"] == 0
    assert account["balances"]["unapplied_credit"] == 50_000
    assert account["refunds_pending"] == {"count": 1, "cents": 25_000}
    assert ledger.request("RQ1")["state"] == "pending"
    assert ledger.request("RQ1")["rule"] == "one_approver"

    ledger.feed(approve("bob", "refund_approver", note="patient called"))
    posted = ledger.postings[-1]
    assert posted.event_kind == "refund_approved" and posted.total_cents == 25_000
    assert posted.approval is not None
    assert posted.approval.request_id == "RQ1" and posted.approval.requested_by == "ann"
    assert [(a.by, a.role) for a in posted.approval.approvers] == [("bob", "refund_approver")]
    account = ledger.account()
    assert account["balances"]["refunds"] == 25_000
    assert account["balances"]["unapplied_credit"] == 25_000
    assert account["refunds_pending"] == {"count": 0, "cents": 0}
    request = ledger.request("RQ1")
    assert request["state"] == "posted" and request["posted_event_id"] == "ok:RQ1:bob"
    # The refund shows as paid out once posted (the facade's PaymentReconciliation).
    assert [p["event_id"] for p in account["payments"] if p["kind"] == "refund"] == ["RQ1"]


def test_the_requester_cannot_approve_their_own_refund() -> None:
    ledger = Ledger()
    ledger.feed(credit(50_000), refund(25_000, requested_by="ann"),
                approve("ann", "refund_manager"))
    assert ledger.refused[-1][0] == "refund_self_approval"
    assert "ann requested refund 'RQ1' and cannot approve it" in ledger.refused[-1][1]
    assert ledger.request("RQ1")["approvals"] == []
    assert ledger.account()["balances"]["refunds"] == 0


def test_a_two_approver_rule_needs_two_distinct_users() -> None:
    ledger = Ledger()
    ledger.feed(credit(500_000), refund(150_000, requested_by="ann"),
                approve("bob", "refund_manager"))
    assert ledger.account()["balances"]["refunds"] == 0, "one approval of two posts nothing"
    assert ledger.request("RQ1")["rule"] == "two_managers"
    second_by_bob = approve("bob", "refund_manager") | {"event_id": "ok:RQ1:bob-again"}
    ledger.feed(second_by_bob)
    assert ledger.refused[-1][0] == "refund_same_approver"
    assert ledger.account()["balances"]["refunds"] == 0
    ledger.feed(approve("cy", "refund_approver"))
    assert ledger.refused[-1][0] == "refund_role_not_allowed", "two_managers takes managers"
    ledger.feed(approve("dee", "refund_manager"))
    posted = ledger.postings[-1]
    assert posted.approval is not None
    assert [a.by for a in posted.approval.approvers] == ["bob", "dee"]
    assert ledger.account()["balances"]["refunds"] == 150_000


def test_a_replayed_approval_posts_once() -> None:
    ledger = Ledger()
    ledger.feed(credit(50_000), refund(25_000, requested_by="ann"))
    approval = approve("bob", "refund_approver")
    ledger.feed(approval, approval)
    ledger.feed(approval)
    refunds = [p for p in ledger.postings if p.approval is not None]
    assert len(refunds) == 1
    assert ledger.account()["balances"]["refunds"] == 25_000
    assert ledger.refused == []  # a replay is dropped, not refused


@pytest.mark.parametrize(("state", "reason"), [
    ("unknown", "refund_request_unknown"),
    ("rejected", "refund_request_rejected"),
    ("posted", "refund_already_posted"),
])
def test_an_approval_of_an_unknown_rejected_or_posted_request_is_refused(
        state: str, reason: str) -> None:
    ledger = Ledger()
    ledger.feed(credit(50_000), refund(25_000, requested_by="ann"))
    if state == "rejected":
        ledger.feed(reject("bob", "refund_approver"))
        assert ledger.account()["refunds_pending"] == {"count": 0, "cents": 0}
    elif state == "posted":
        ledger.feed(approve("bob", "refund_approver"))
    ledger.feed(approve("cy", "refund_manager", rid="NOPE" if state == "unknown" else "RQ1"))
    assert ledger.refused[-1][0] == reason
    expected = 25_000 if state == "posted" else 0
    assert ledger.account()["balances"]["refunds"] == expected


def test_a_rejection_keeps_who_why_and_ends_the_request() -> None:
    ledger = Ledger()
    ledger.feed(credit(50_000), refund(25_000, requested_by="ann"),
                reject("bob", "refund_approver"))
    request = ledger.request("RQ1")
    assert request["state"] == "rejected"
    assert (request["rejected"]["by"], request["rejected"]["role"]) == ("bob", "refund_approver")
    assert request["rejection_reason"] == "refunded by cheque already"
    assert len(ledger.postings) == 1


def test_a_refund_over_the_credit_balance_is_refused() -> None:
    ledger = Ledger()
    ledger.feed(credit(5_000), refund(5_001))
    assert ledger.refused[-1][0] == "refund_exceeds_credit"
    assert "lets no role approve a refund past the credit balance" in ledger.refused[-1][1]
    assert "refunds" not in ledger.account() or ledger.account()["refunds"] == []
    # Above the automatic rule too: refused at once, not left pending.
    ledger.feed(refund(50_000, rid="RQ2"))
    assert ledger.refused[-1][0] == "refund_exceeds_credit"
    assert ledger.account()["refunds_pending"] == {"count": 0, "cents": 0}


def test_a_credit_spent_while_a_refund_waited_refuses_the_approval_not_the_money() -> None:
    ledger = Ledger()
    # A request does not hold the credit: a smaller refund approved by the policy meanwhile
    # leaves too little for it.
    ledger.feed(credit(30_000), refund(25_000, requested_by="ann"), refund(9_000, rid="RQ2"),
                approve("bob", "refund_approver"))
    assert ledger.refused[-1][0] == "refund_exceeds_credit"
    assert "21000 cents credit balance" in ledger.refused[-1][1]
    assert ledger.request("RQ1")["state"] == "pending", "the request waits to be rejected"
    assert ledger.account()["balances"]["refunds"] == 9_000


def test_the_policy_lets_a_role_refund_past_the_credit_balance_where_it_says_so() -> None:
    # Entity 02: automatic up to 25.00, but past the credit balance a refund_manager must
    # approve; the rest becomes the patient's balance again.
    ledger = Ledger()
    ledger.feed(credit(1_000, entity="02"), refund(2_000, entity="02", requested_by="ann"))
    request = ledger.request("RQ1")
    assert (request["state"], request["rule"]) == ("pending", "auto_small+over_credit")
    assert ledger.account()["balances"]["refunds"] == 0
    ledger.feed(approve("bob", "refund_approver"))
    assert ledger.refused[-1][0] == "refund_role_not_allowed"
    ledger.feed(approve("dee", "refund_manager"))
    balances = ledger.account()["balances"]
    assert (balances["refunds"], balances["unapplied_credit"], balances["patient_ar"]) == (
        2_000, 0, 1_000)


def test_each_entity_has_its_own_thresholds() -> None:
    ledger = Ledger()
    ledger.feed(credit(10_000, entity="02"), refund(3_000, entity="02"))
    assert ledger.request("RQ1")["rule"] == "one_manager"
    assert ledger.account()["refunds_pending"]["cents"] == 3_000


def test_a_request_keeps_the_rule_it_was_filed_under(tmp_path: Path) -> None:
    ledger = Ledger()
    ledger.feed(credit(50_000), refund(25_000, requested_by="ann"))
    stricter = tmp_path / "policy.yaml"
    stricter.write_text(
        "version: v2\ndefault:\n  rules:\n    - {name: everyone, approvals: 3, "
        "roles: [refund_manager]}\n")
    ledger.processor = Processor(load_chart(), refund_policy=load_refund_policy(stricter))
    ledger.feed(approve("bob", "refund_approver"))
    assert ledger.account()["balances"]["refunds"] == 25_000
    assert ledger.postings[-1].approval is not None
    assert ledger.postings[-1].approval.policy_version == POLICY.version


@pytest.mark.parametrize(("text", "message"), [
    ("version: x\ndefault:\n  rules:\n    - {name: a, up_to_cents: 5, approvals: 0}\n",
     "the last rule must cover any amount"),
    ("version: x\ndefault:\n  rules:\n    - {name: a, up_to_cents: 9, approvals: 0}\n"
     "    - {name: b, up_to_cents: 5, approvals: 1, roles: [m]}\n"
     "    - {name: c, approvals: 1, roles: [m]}\n", "ordered by up_to_cents"),
    ("version: x\ndefault:\n  rules:\n    - {name: a, approvals: 1}\n", "names no roles"),
    ("version: x\ndefault:\n  rules:\n    - {name: a, approvals: 1, roles: [Boss!]}\n",
     "String should match pattern"),
    ("- just a list\n", "expected a mapping"),
])
def test_a_wrong_policy_file_is_refused_saying_why(tmp_path: Path, text: str,
                                                    message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(RefundPolicyError, match=message):
        load_refund_policy(path)


def test_the_requester_may_withdraw_but_another_user_needs_the_role() -> None:
    ledger = Ledger()
    ledger.feed(credit(50_000), refund(25_000, requested_by="ann"),
                reject("vic", "viewer"))
    assert ledger.refused[-1][0] == "refund_role_not_allowed"
    ledger.feed(reject("ann", "operator"))
    assert ledger.request("RQ1")["state"] == "rejected"
    assert ledger.account()["refunds_pending"] == {"count": 0, "cents": 0}
