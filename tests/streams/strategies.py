"""Hypothesis strategies: random but plausible event streams with replays and conflicts."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.factories import event_doc

ACCOUNTS = ["A1", "A2", "A3"]
CARCS = [("CO", "45"), ("CO", "253"), ("CO", "50"), ("PR", "1"), ("PR", "2"), ("PR", "3"),
         ("OA", "23"), ("OA", "94"), ("PI", "12"), ("CO", "999")]
REVENUE_CODES = ["0450", "0300", "0120", "0999", "0250"]
PAYER_CLASSES = ["COMMERCIAL", "MEDICARE", "MEDICAID", "UNKNOWN"]
cents = st.integers(min_value=1, max_value=5_000_000)


@st.composite
def adjudication_doc(draw: st.DrawFn, account: str, n: int) -> dict[str, Any]:
    charge = draw(cents)
    paid = draw(st.integers(0, charge))
    rest = charge - paid
    adjustments = []
    while rest > 0:
        amount = draw(st.integers(1, rest))
        group, reason = draw(st.sampled_from(CARCS))
        adjustments.append({"group": group, "reason": reason, "amount_cents": amount})
        rest -= amount
    outcome = "denied" if paid == 0 and draw(st.booleans()) else "processed"
    doc = event_doc("claim_adjudicated", account, event_id=f"{account}-ADJ{n}",
                    claim_id=f"{account}-C{draw(st.integers(1, 3))}", outcome=outcome,
                    charge_cents=charge, paid_cents=paid, adjustments=adjustments,
                    dimensions={"entity": "01", "payer": "P",
                                "payer_class": draw(st.sampled_from(PAYER_CLASSES))})
    return doc


def reversal_of(doc: dict[str, Any]) -> dict[str, Any]:
    """An 835 CLP02=22 reversal: the same claim with every amount negated."""
    negated = [dict(a, amount_cents=-a["amount_cents"]) for a in doc["adjustments"]]
    return dict(doc, event_id=doc["event_id"] + "-R", outcome="reversal",
                charge_cents=-doc["charge_cents"], paid_cents=-doc["paid_cents"],
                adjustments=negated)


@st.composite
def account_docs(draw: st.DrawFn, account: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    charges: list[dict[str, Any]] = []
    for n in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(["charge", "charge", "reverse", "adjudicate", "reverse_claim",
                                   "pay", "refund", "approve", "approve", "reject",
                                   "write_off", "manual", "status"]))
        eid = f"{account}-{op}-{n}"
        if op == "charge" or not charges and op == "reverse":
            doc = event_doc("charge_posted", account, event_id=eid, amount_cents=draw(cents),
                            self_pay=draw(st.booleans()),
                            dimensions={"entity": "01",
                                        "revenue_code": draw(st.sampled_from(REVENUE_CODES))})
            charges.append(doc)
        elif op == "reverse":
            original = draw(st.sampled_from(charges))
            doc = event_doc("charge_reversed", account, event_id=eid,
                            amount_cents=draw(st.integers(1, original["amount_cents"])),
                            reverses_event_id=original["event_id"],
                            dimensions=original["dimensions"])
        elif op == "adjudicate":
            doc = draw(adjudication_doc(account, n))
        elif op == "reverse_claim":
            adjudicated = [d for d in docs if d["kind"] == "claim_adjudicated"
                           and d["outcome"] != "reversal"]
            if not adjudicated:
                continue
            doc = reversal_of(draw(st.sampled_from(adjudicated)))
        elif op == "pay":
            doc = event_doc("patient_payment", account, event_id=eid, amount_cents=draw(cents),
                            channel=draw(st.sampled_from(["portal", "lockbox"])))
        elif op == "refund":
            doc = event_doc("refund", account, event_id=eid, amount_cents=draw(cents),
                            to=draw(st.sampled_from(["patient", "payer"])),
                            requested_by=draw(st.sampled_from([None, "ann", "bob"])))
        elif op in ("approve", "reject"):
            # Decisions by users in roles the policy takes, and some it does not; on
            # requests that may be pending, posted, rejected or unknown.
            requests = [d["event_id"] for d in docs if d["kind"] == "refund"]
            decision = {"request_id": draw(st.sampled_from([*requests, f"{account}-nope"])),
                        "by": draw(st.sampled_from(["ann", "bob", "cy", "dee"])),
                        "role": draw(st.sampled_from(["refund_approver", "refund_manager",
                                                      "viewer"]))}
            if op == "approve":
                doc = event_doc("refund_approved", account, event_id=eid, **decision)
            else:
                doc = event_doc("refund_rejected", account, event_id=eid,
                                reason="not owed", **decision)
        elif op == "write_off":
            doc = event_doc("write_off", account, event_id=eid, amount_cents=draw(cents),
                            reason=draw(st.sampled_from(["price_concession", "bad_debt",
                                                         "charity", "small_balance",
                                                         "administrative", "denial"])))
        elif op == "manual":
            doc = event_doc("manual_adjustment", account, event_id=eid,
                            amount_cents=draw(st.integers(-100_000, 100_000).filter(bool)))
        else:
            doc = event_doc("account_status_changed", account, event_id=eid,
                            status=draw(st.sampled_from(["billed", "collections", "closed"])))
        docs.append(doc)
    return docs


@st.composite
def provider_docs(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [
        event_doc("provider_adjustment", "provider:99", event_id=f"PLB-{n}",
                  reason_code=draw(st.sampled_from(["L6", "WO", "FB", "72", "ZZ"])),
                  amount_cents=draw(st.integers(-1_000_000, 1_000_000)))
        for n in range(draw(st.integers(0, 4)))
    ]


@st.composite
def event_stream(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """(key, value) messages: several accounts interleaved, with replays and conflicts.

    Each account's own events keep their order (they share a partition in production).
    """
    per_account = [draw(account_docs(a)) for a in ACCOUNTS] + [draw(provider_docs())]
    queues = [[(d["account"], json.dumps(d).encode()) for d in docs] for docs in per_account]
    stream: list[tuple[str, bytes]] = []
    while any(queues):
        queue = draw(st.sampled_from([q for q in queues if q]))
        stream.append(queue.pop(0))
    extras = draw(st.lists(st.tuples(st.integers(0, max(len(stream) - 1, 0)),
                                     st.integers(0, 10**9), st.booleans()), max_size=8))
    for position, seed, conflict in extras:
        if not stream:
            break
        key, value = stream[seed % len(stream)]
        if conflict:
            doc = json.loads(value)
            doc["source"] = doc["source"] + "-conflicting"
            value = json.dumps(doc).encode()
        # A replay or conflict arrives after the original.
        original_at = stream.index((key, stream[seed % len(stream)][1]))
        stream.insert(max(position, original_at + 1), (key, value))
    return stream
