"""The lifecycle state machine (streams/lifecycle.py) through the pure core: which events move
the state, what a transition records, and that out-of-order arrivals are applied and flagged."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rcmflow.streams.chart import load_chart
from rcmflow.streams.core import Applied, apply, new_account
from rcmflow.streams.lifecycle import EXPECTED, SPANS, STATES, expectation
from rcmflow.streams.state import AccountHead, Item, ItemRef
from tests.factories import adjudication, charge, event_doc, parse, payment

CHART = load_chart()


def day(n: int, hour: int = 10) -> str:
    return f"2026-11-{n:02d}T{hour:02d}:00:00-05:00"


def run(docs: list[dict[str, Any]]) -> tuple[AccountHead, dict[ItemRef, Item]]:
    head, items = new_account("A1"), {}
    for doc in docs:
        result = apply(head, parse(doc), CHART, items.get)
        assert isinstance(result, Applied), result
        head, items = result.head, {**items, **result.items}
    return head, items


def history(items: dict[ItemRef, Item]) -> list[dict[str, Any]]:
    return [dict(v) for (k, _), v in sorted(items.items()) if k == "transition"]


def step(name: str, n: int, **fields: Any) -> dict[str, Any]:
    return event_doc("workflow_step", step=name, occurred_at=day(n), **fields)


#: A realistic account: registered, charged, eligibility checked, coded, billed, denied,
#: appealed, paid by the payer, a statement for the patient's share, paid by the patient.
FLOW = [
    step("registration_complete", 1),
    charge(10_000, occurred_at=day(1, 12)),
    step("eligibility_verified", 2, result="active"),
    step("coding_approved", 3),
    event_doc("claim_submitted", claim_id="C1", total_charge_cents=10_000, occurred_at=day(4)),
    adjudication(10_000, 0, [("CO", "50", 10_000)], outcome="denied", status_code="4",
                 occurred_at=day(11)),
    step("appeal_initiated", 13, claim_id="C1"),
    adjudication(10_000, 7_000, [("CO", "45", 2_000), ("PR", "1", 1_000)],
                 occurred_at=day(24)),
    step("patient_statement_issued", 25),
    payment(1_000, occurred_at=day(30)),
]


def test_a_realistic_flow_gives_the_documented_states_and_durations() -> None:
    head, items = run(FLOW)
    got = [(t["from_state"], t["state"], t["seconds_in_from"], t["expected"])
           for t in history(items)]
    d = 86_400
    assert got == [
        (None, "registration_complete", None, True),
        ("registration_complete", "eligibility_verified", d, True),
        ("eligibility_verified", "coding_approved", d, True),
        ("coding_approved", "claim_submitted", d, True),
        ("claim_submitted", "denial_received", 7 * d, True),
        ("denial_received", "appeal_initiated", 2 * d, True),
        ("appeal_initiated", "payment_posted", 11 * d, True),
        ("payment_posted", "patient_statement_issued", d, True),
        ("patient_statement_issued", "payment_posted", 5 * d, True),
        # The patient's payment left nothing owed: the zero-balance rule closes the account.
        ("payment_posted", "account_closed", 0, True),
    ]
    assert head.lifecycle is not None and head.lifecycle.state == "account_closed"
    assert head.items.transition == 10 and head.items.total() == 5
    last = history(items)[-1]
    assert last["detail"] == "zero_balance" and last["event_id"] == FLOW[-1]["event_id"]
    assert history(items)[2]["detail"] is None
    assert history(items)[1]["detail"] == "result active"


def test_a_payment_before_its_claim_is_applied_recorded_and_flagged() -> None:
    head, items = run([
        step("registration_complete", 1),
        charge(10_000, occurred_at=day(1)),
        payment(2_000, occurred_at=day(3)),  # a copay before the 837 arrived
        event_doc("claim_submitted", claim_id="C1", total_charge_cents=10_000,
                  occurred_at=day(2)),
    ])
    got = history(items)
    assert [(t["state"], t["expected"]) for t in got] == [
        ("registration_complete", True), ("payment_posted", False),
        ("claim_submitted", False)]
    assert got[1]["reason"] == (
        "payment_posted is not expected after registration_complete (expected: "
        "eligibility_verified, charge_review_complete, coding_approved, claim_submitted, "
        "patient_statement_issued, account_closed)")
    # A claim may follow a payment (a secondary claim), but not one dated before it.
    assert got[2]["reason"] == "dated 1.00 days before payment_posted was entered"
    assert got[2]["seconds_in_from"] == -86_400
    assert head.lifecycle is not None
    assert (head.lifecycle.state, head.lifecycle.expected) == ("claim_submitted", False)
    assert head.balances.patient_paid == 2_000  # money moved as always


def test_staying_in_a_state_is_no_transition_and_statuses_other_than_closed_move_nothing(
        ) -> None:
    head, items = run([
        step("registration_complete", 1),
        step("registration_complete", 2),
        event_doc("account_status_changed", status="discharged", occurred_at=day(3)),
        event_doc("account_status_changed", status="closed", occurred_at=day(4)),
    ])
    assert [t["state"] for t in history(items)] == ["registration_complete", "account_closed"]
    assert head.lifecycle is not None and head.lifecycle.since.day == 4
    assert history(items)[1]["detail"] == "test status closed"


def test_a_refund_is_a_refund_approved_and_a_zero_balance_after_it_closes() -> None:
    _, items = run([
        charge(1_000, occurred_at=day(1), self_pay=True),
        payment(1_500, occurred_at=day(2)),  # 500 over: a credit balance, not closed
        event_doc("refund", amount_cents=500, occurred_at=day(3)),  # approved by the policy
    ])
    assert [(t["from_state"], t["state"]) for t in history(items)] == [
        (None, "payment_posted"), ("payment_posted", "refund_approved"),
        ("refund_approved", "account_closed")]


def test_a_refund_waiting_for_approval_is_no_transition_until_approved() -> None:
    _, items = run([
        charge(10_000, occurred_at=day(1), self_pay=True),
        payment(30_000, occurred_at=day(2)),  # 200.00 over
        event_doc("refund", event_id="RQ", amount_cents=20_000, occurred_at=day(3)),
    ])
    assert [t["state"] for t in history(items)] == ["payment_posted"]
    _, items = run([
        charge(10_000, occurred_at=day(1), self_pay=True),
        payment(30_000, occurred_at=day(2)),
        event_doc("refund", event_id="RQ", amount_cents=20_000, occurred_at=day(3)),
        event_doc("refund_approved", request_id="RQ", by="bob", role="refund_approver",
                  occurred_at=day(5)),
    ])
    assert [(t["state"], t["seconds_in_from"]) for t in history(items)][1:] == [
        ("refund_approved", 3 * 86_400), ("account_closed", 0)]


def test_spans_measure_from_the_last_entry_whatever_lay_between() -> None:
    head, _ = run(FLOW[:8])
    assert head.lifecycle is not None
    entered = head.lifecycle.entered
    assert (entered["payment_posted"] - entered["claim_submitted"]).days == 20
    result = apply(new_account("A1"), parse(step("registration_complete", 1)), CHART,
                   lambda _: None)
    assert isinstance(result, Applied) and result.transitions[0].spans == ()


def test_the_transitions_metrics_see_match_the_records() -> None:
    head, items = new_account("A1"), {}
    made = []
    for doc in FLOW:
        result = apply(head, parse(doc), CHART, items.get)
        assert isinstance(result, Applied)
        made += result.transitions
        head, items = result.head, {**items, **result.items}
    assert [(t.from_state, t.state, t.seconds_in_from) for t in made] == [
        (r["from_state"], r["state"], r["seconds_in_from"]) for r in history(items)]
    spans = dict(s for t in made for s in t.spans)
    assert spans["claim_to_payment"] == 20 * 86_400
    assert spans["denial_to_appeal"] == 2 * 86_400


def test_the_table_names_only_known_states_and_every_span_is_made_of_states() -> None:
    assert set(EXPECTED) == {None, *STATES}
    assert all(targets <= set(STATES) for targets in EXPECTED.values())
    assert all(a in STATES and b in STATES for a, b in SPANS.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(STATES[:4] + ("appeal_initiated", "patient_statement_issued")),
                max_size=12),
       st.lists(st.integers(0, 29), min_size=12, max_size=12))
def test_any_order_of_steps_is_applied_and_flagged_exactly_where_the_table_says(
        steps: list[str], days: list[int]) -> None:
    docs = [step(s, 1 + d) for s, d in zip(steps, days, strict=False)]
    head, items = run(docs)
    got = history(items)
    state: str | None = None
    for record in got:
        assert record["from_state"] == state != record["state"]
        expected, reason = expectation(state, record["state"], record["seconds_in_from"])
        assert (record["expected"], record["reason"]) == (expected, reason)
        assert record["expected"] == (reason is None)
        state = record["state"]
    collapsed = [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]
    assert [r["state"] for r in got] == collapsed
    assert head.version == len(steps)
    assert (head.lifecycle.state if head.lifecycle else None) == state
