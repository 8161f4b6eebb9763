"""Posting rules, one ACCOUNTING.md row at a time: which GL accounts, which side, how much."""

from __future__ import annotations

from typing import Any

import pytest

from rcmflow.streams.chart import load_chart
from rcmflow.streams.core import Applied
from rcmflow.streams.postings import PostingDelta, posting_id
from rcmflow.streams.rejections import Rejection
from tests.factories import COMMERCIAL, adjudication, charge, event_doc, parse, payment
from tests.streams.accounts import AccountView, Outcome

CHART = load_chart()


def run(*docs: dict[str, Any], state: AccountView | None = None) -> Outcome:
    """Apply docs in order; every one must apply. Returns the last outcome."""
    current = state or AccountView.new(docs[0]["account"])
    outcome: Outcome | None = None
    for doc in docs:
        result, current = current.applied(parse(doc), CHART)
        assert isinstance(result, Applied), result
        outcome = Outcome(result.delta, result.unmapped, current)
    assert outcome is not None
    return outcome


def delta(outcome: Outcome) -> PostingDelta:
    """The outcome's delta, held to the published PostingDelta model."""
    assert outcome.delta is not None
    return PostingDelta.model_validate_json(outcome.delta)


def lines(outcome: Outcome) -> list[tuple[str, int, int]]:
    """(gl_account, debit, credit) of the outcome's delta."""
    return [(ln.gl_account, ln.debit_cents, ln.credit_cents) for ln in delta(outcome).lines]


def rejected(state: AccountView, doc: dict[str, Any]) -> Rejection:
    result, _ = state.applied(parse(doc), CHART)
    assert isinstance(result, Rejection), result
    return result


def test_charge_debits_insurance_ar_and_credits_department_revenue() -> None:
    out = run(charge(12_345, revenue_code="0450"))
    assert lines(out) == [("1200", 12_345, 0), ("4010-ED", 0, 12_345)]
    assert out.state.balances.gross_charges == 12_345
    assert out.state.balances.insurance_ar == 12_345


def test_self_pay_charge_goes_to_self_pay_ar() -> None:
    out = run(charge(500, self_pay=True, revenue_code="0300"))
    assert lines(out) == [("1210", 500, 0), ("4010-LAB", 0, 500)]
    assert out.state.balances.patient_ar == 500


def test_charge_reversal_mirrors_the_charge_and_references_its_posting() -> None:
    first = run(charge(8_000, event_id="CH1", self_pay=True))
    out = run(event_doc("charge_reversed", amount_cents=3_000, reverses_event_id="CH1",
                        dimensions={"revenue_code": "0450"}), state=first.state)
    assert lines(out) == [("4010-ED", 3_000, 0), ("1210", 0, 3_000)]
    assert delta(out).reverses_posting_id == posting_id("A1", "CH1", CHART.version)
    assert out.state.balances.gross_charges == 5_000
    assert out.state.balances.patient_ar == 5_000


def test_reversal_of_unknown_charge_or_more_than_charged_is_refused() -> None:
    state = run(charge(1_000, event_id="CH1")).state
    assert rejected(state, event_doc("charge_reversed", amount_cents=10,
                                     reverses_event_id="NOPE")).reason_code == "unknown_charge"
    assert rejected(state, event_doc("charge_reversed", amount_cents=1_001,
                                     reverses_event_id="CH1")).reason_code == \
        "reversal_exceeds_charge"


def test_adjudication_posts_payment_contractual_and_patient_reclass() -> None:
    state = run(charge(100_000)).state
    out = run(adjudication(100_000, 60_000, [("CO", "45", 25_000), ("PR", "1", 10_000),
                                             ("PR", "2", 5_000)]), state=state)
    assert lines(out) == [
        ("1110", 60_000, 0), ("1200", 0, 60_000),  # Dr cash clearing / Cr AR insurance
        ("4120", 25_000, 0), ("1200", 0, 25_000),  # Dr contractual [COMMERCIAL] / Cr AR ins
        ("1210", 10_000, 0), ("1200", 0, 10_000),  # PR-1 deductible: AR reclass
        ("1210", 5_000, 0), ("1200", 0, 5_000),  # PR-2 coinsurance
    ]
    b = out.state.balances
    assert (b.payer_paid, b.contractual_adjustments, b.patient_responsibility) == \
        (60_000, 25_000, 15_000)
    assert (b.insurance_ar, b.patient_ar, b.balance) == (0, 15_000, 15_000)


def test_appealable_denial_posts_nothing_and_is_tracked() -> None:
    state = run(charge(98_000)).state
    out = run(adjudication(98_000, 0, [("CO", "50", 98_000)], outcome="denied"), state=state)
    assert out.delta is None
    assert out.state.balances.denied == 98_000
    assert out.state.balances.insurance_ar == 98_000  # AR stays insurance AR
    assert out.state.claims["C1"]["status"] == "denied"


def test_final_denial_write_off_hits_denial_writeoff_not_bad_debt() -> None:
    state = run(charge(98_000), adjudication(98_000, 0, [("CO", "50", 98_000)],
                                             outcome="denied")).state
    out = run(event_doc("write_off", amount_cents=98_000, reason="denial"), state=state)
    assert lines(out) == [("4150", 98_000, 0), ("1200", 0, 98_000)]
    assert out.state.balances.balance == 0


def test_oa_23_posts_nothing_but_the_claim_still_balances() -> None:
    state = run(charge(10_000)).state
    out = run(adjudication(10_000, 7_000, [("CO", "45", 2_000), ("OA", "23", 1_000)]),
              state=state)
    assert ("4160", 1_000, 0) not in lines(out)
    assert out.state.balances.insurance_ar == 1_000


def test_unmapped_carc_posts_to_suspense_with_an_exception_record() -> None:
    state = run(charge(10_000)).state
    out = run(adjudication(10_000, 9_000, [("CO", "999", 1_000)]), state=state)
    assert ("2900", 1_000, 0) in lines(out)
    assert [u.missing for u in out.unmapped] == ["carc_rules[CO-999]"]
    assert out.unmapped[0].amount_cents == 1_000


def test_unmapped_payer_class_and_revenue_code_go_to_suspense_and_are_named() -> None:
    state = run(charge(5_000, revenue_code="0999")).state
    assert {u.missing for u in run(charge(5_000, revenue_code="0999")).unmapped} == {
        "gross_revenue[revenue code 0999]"}
    out = run(adjudication(5_000, 4_000, [("CO", "45", 1_000)],
                           dimensions={"entity": "01", "payer_class": "WORKERS_COMP"}),
              state=state)
    assert {u.missing for u in out.unmapped} == {"contractual[WORKERS_COMP]"}


def test_claim_reversal_negates_every_original_line() -> None:
    state = run(charge(10_000)).state
    paid = run(adjudication(10_000, 6_000, [("CO", "45", 3_000), ("PR", "3", 1_000)]),
               state=state)
    reversed_ = run(adjudication(-10_000, -6_000, [("CO", "45", -3_000), ("PR", "3", -1_000)],
                                 outcome="reversal"), state=paid.state)
    assert lines(reversed_) == [(gl, cr, dr) for gl, dr, cr in lines(paid)]
    assert reversed_.state.balances.insurance_ar == 10_000
    assert reversed_.state.balances.patient_ar == 0
    assert reversed_.state.claims["C1"]["status"] == "reversed"


def test_patient_payment_applies_to_patient_ar_then_unapplied_credit() -> None:
    state = run(charge(10_000, self_pay=True)).state
    out = run(payment(12_500, channel="lockbox"), state=state)
    assert lines(out) == [("1110", 12_500, 0), ("1210", 0, 10_000), ("2100", 0, 2_500)]
    assert (out.state.balances.patient_ar, out.state.balances.unapplied_credit) == (0, 2_500)
    assert out.state.balances.balance == -2_500


def test_portal_payment_debits_cash() -> None:
    out = run(charge(100, self_pay=True), payment(100, channel="portal"))
    assert lines(out) == [("1100", 100, 0), ("1210", 0, 100)]


def test_patient_refund_draws_unapplied_credit_first() -> None:
    state = run(charge(1_000, self_pay=True), payment(3_000)).state
    out = run(event_doc("refund", amount_cents=2_000, to="patient"), state=state)
    assert lines(out) == [("2110", 0, 2_000), ("2100", 2_000, 0)]
    assert out.state.balances.unapplied_credit == 0
    assert out.state.balances.refunds == 2_000


def test_refund_beyond_the_credit_balance_is_refused() -> None:
    state = run(charge(1_000, self_pay=True), payment(1_500)).state
    assert rejected(state, event_doc("refund", amount_cents=501)).reason_code == \
        "refund_exceeds_credit"
    assert rejected(state, event_doc("refund", amount_cents=1, to="payer")).reason_code == \
        "refund_exceeds_credit"


def test_payer_refund_of_an_overpayment() -> None:
    # The payer pays the same claim twice: insurance AR goes negative (owed to the payer).
    state = run(charge(1_000), adjudication(1_000, 1_000, []),
                adjudication(200, 200, [], claim_id="C1-DUP")).state
    assert state.balances.insurance_ar == -200
    out = run(event_doc("refund", amount_cents=200, to="payer"), state=state)
    assert lines(out) == [("1200", 200, 0), ("2120", 0, 200)]


@pytest.mark.parametrize(
    ("reason", "gl", "ar_gl"),
    [("price_concession", "4200", "1210"), ("bad_debt", "6500", "1210"),
     ("charity", "4300", "1210"), ("administrative", "4400", "1210"),
     ("small_balance", "4400", "1210")],
)
def test_write_offs_post_to_their_own_accounts(reason: str, gl: str, ar_gl: str) -> None:
    state = run(charge(300, self_pay=True)).state
    out = run(event_doc("write_off", amount_cents=300, reason=reason), state=state)
    assert lines(out) == [(gl, 300, 0), (ar_gl, 0, 300)]
    assert out.state.balances.write_offs == 300


def test_small_balance_write_off_must_be_under_the_threshold() -> None:
    state = run(charge(10_000, self_pay=True)).state
    assert rejected(state, event_doc("write_off", amount_cents=500, reason="small_balance")
                    ).reason_code == "small_balance_over_threshold"


def test_write_off_cannot_exceed_the_open_balance() -> None:
    state = run(charge(100, self_pay=True)).state
    assert rejected(state, event_doc("write_off", amount_cents=101, reason="charity")
                    ).reason_code == "write_off_exceeds_balance"


def test_manual_adjustment_sides_follow_the_sign() -> None:
    state = run(charge(1_000, self_pay=True)).state
    credit = run(event_doc("manual_adjustment", amount_cents=100), state=state)
    debit = run(event_doc("manual_adjustment", amount_cents=-100), state=state)
    assert lines(credit) == [("4400", 100, 0), ("1210", 0, 100)]
    assert lines(debit) == [("4400", 0, 100), ("1210", 100, 0)]
    assert {ln.memo for ln in delta(credit).lines} == {"manual"}
    # The charge that made the AR says so too (the journal's one-word why).
    assert {ln.memo for ln in delta(run(charge(1_000))).lines} == {"charge"}


@pytest.mark.parametrize(
    ("code", "amount", "expected"),
    [("L6", -1_250, [("1110", 1_250, 0), ("4800", 0, 1_250)]),  # interest paid to us
     ("L6", 300, [("1110", 0, 300), ("4800", 300, 0)]),  # interest reversed
     ("WO", -5_000, [("1110", 5_000, 0), ("2120", 0, 5_000)]),  # recovery deferred
     ("WO", 5_000, [("1110", 0, 5_000), ("2120", 5_000, 0)]),  # recouped
     ("ZZ", 700, [("1110", 0, 700), ("2900", 700, 0)])],  # unmapped: suspense
)
def test_provider_level_adjustments(code: str, amount: int,
                                    expected: list[tuple[str, int, int]]) -> None:
    out = run(event_doc("provider_adjustment", "provider:1234", reason_code=code,
                        amount_cents=amount))
    assert lines(out) == expected


def test_plb_72_paired_with_wo_posts_nothing() -> None:
    out = run(event_doc("provider_adjustment", "provider:1234", reason_code="72",
                        amount_cents=-900))
    assert out.delta is None
    assert out.state.version == 1


def test_entity_overrides_apply_and_unknown_entities_go_to_suspense() -> None:
    out = run(charge(100, self_pay=True, dimensions={"entity": "02"}), payment(100))
    assert lines(out)[0] == ("1100", 100, 0)  # payment has the default entity 01
    eastside = run(charge(100, revenue_code="0450", dimensions={"entity": "02"}))
    assert lines(eastside) == [("1200", 100, 0), ("4010-ED-02", 0, 100)]
    unknown = run(charge(100, dimensions={"entity": "77"}))
    assert lines(unknown) == [("2900", 100, 0), ("2900", 0, 100)]
    assert {u.missing for u in unknown.unmapped} == {"entity '77'"}


def test_foreign_currency_is_refused() -> None:
    assert rejected(AccountView.new("A1"), charge(100, currency="EUR")).reason_code == \
        "currency_unsupported"


def test_status_only_events_bump_the_version_and_post_nothing() -> None:
    out = run(event_doc("account_status_changed", status="collections"))
    assert out.delta is None
    assert (out.state.status, out.state.version) == ("collections", 1)
    submitted = run(event_doc("claim_submitted", claim_id="C9", total_charge_cents=100,
                              dimensions=COMMERCIAL))
    assert submitted.delta is None
    assert submitted.state.claims["C9"]["payer_class"] == "COMMERCIAL"


def test_account_item_bound_refuses_more_records() -> None:
    state = AccountView.new("A1")
    for amount in (1, 2):
        result, state = state.applied(parse(charge(amount, event_id=f"CH{amount}")), CHART,
                                      items_max=2)
        assert isinstance(result, Applied)
    result, _ = state.applied(parse(charge(3, event_id="CH3")), CHART, items_max=2)
    assert isinstance(result, Rejection) and result.reason_code == "account_items_max"
    # An 835 for a claim adds two items (the claim and its adjudication): refused at 2 of 3.
    one = AccountView.new("A1")
    result, one = one.applied(parse(charge(1, event_id="CH1")), CHART, items_max=2)
    result, _ = one.applied(parse(adjudication(1, 1, [])), CHART, items_max=2)
    assert isinstance(result, Rejection) and result.reason_code == "account_items_max"


# -- found by the mutation run (RELIABILITY.md): paths no test reached --------------------------

def test_a_partly_reversed_charge_can_be_reversed_to_the_cent_and_no_further() -> None:
    state = run(charge(1_000, event_id="CH1"),
                event_doc("charge_reversed", amount_cents=600, reverses_event_id="CH1")).state
    refused = rejected(state, event_doc("charge_reversed", amount_cents=401,
                                        reverses_event_id="CH1"))
    assert (refused.reason_code, refused.detail) == (
        "reversal_exceeds_charge", "reverses 401 cents of a charge with 400 cents left")
    out = run(event_doc("charge_reversed", amount_cents=400, reverses_event_id="CH1"),
              state=state)
    assert out.state.balances.gross_charges == 0 and out.state.balances.insurance_ar == 0
    assert {ln.memo for ln in delta(out).lines} == {"charge_reversal"}


def test_a_self_pay_reversal_without_its_charge_credits_self_pay_ar() -> None:
    state = run(charge(700, self_pay=True, revenue_code="0300")).state
    out = run(event_doc("charge_reversed", amount_cents=700, self_pay=True,
                        dimensions={"revenue_code": "0300"}), state=state)
    assert lines(out) == [("4010-LAB", 700, 0), ("1210", 0, 700)]
    assert out.state.balances.patient_ar == 0


def test_a_patient_refund_past_the_unapplied_credit_draws_on_a_credit_in_patient_ar() -> None:
    # 500 unapplied (paid 1 500 on 1 000), then 400 of the charge reversed: self-pay AR
    # is -400, money owed back to the patient.
    state = run(charge(1_000, self_pay=True, event_id="CH1"), payment(1_500),
                event_doc("charge_reversed", amount_cents=400, reverses_event_id="CH1")).state
    assert (state.balances.unapplied_credit, state.balances.patient_ar) == (500, -400)
    refused = rejected(state, event_doc("refund", amount_cents=901, to="patient"))
    assert refused.detail == (
        "refund of 901 cents to the patient exceeds the 900 cents credit balance: refund "
        "policy 2026-12-06.1 lets no role approve a refund past the credit balance")
    out = run(event_doc("refund", amount_cents=900, to="patient"), state=state)
    assert lines(out) == [("2110", 0, 900), ("2100", 500, 0), ("1210", 400, 0)]
    assert {ln.memo for ln in delta(out).lines} == {"refund_patient"}
    assert (out.state.balances.unapplied_credit, out.state.balances.patient_ar) == (0, 0)


def test_a_payer_refund_past_the_overpayment_is_refused_naming_both_amounts() -> None:
    state = run(charge(1_000), adjudication(1_000, 1_000, []),
                adjudication(200, 200, [], claim_id="C1-DUP")).state
    refused = rejected(state, event_doc("refund", amount_cents=201, to="payer"))
    assert refused.detail.startswith(
        "refund of 201 cents to the payer exceeds the 200 cents credit balance")
    out = run(event_doc("refund", amount_cents=200, to="payer"), state=state)
    assert {ln.memo for ln in delta(out).lines} == {"refund_payer"}


def test_a_patient_payment_with_nothing_owed_is_all_unapplied_credit() -> None:
    state = run(charge(1_000)).state  # insurance owes it all: nothing on self-pay AR
    out = run(payment(500, channel="portal"), state=state)
    assert lines(out) == [("1100", 500, 0), ("2100", 0, 500)]
    assert [ln.memo for ln in delta(out).lines] == ["patient_payment", "unapplied_cash"]
    assert (out.state.balances.patient_ar, out.state.balances.unapplied_credit) == (0, 500)


def test_a_patient_payment_on_an_open_balance_says_so_on_both_lines() -> None:
    out = run(charge(300, self_pay=True), payment(300, channel="portal"))
    assert [ln.memo for ln in delta(out).lines] == ["patient_payment", "patient_payment"]


def test_an_unmapped_plb_code_goes_to_suspense_with_an_exception_record() -> None:
    out = run(event_doc("provider_adjustment", "provider:1234", reason_code="ZZ",
                        amount_cents=700))
    assert [(u.missing, u.amount_cents) for u in out.unmapped] == [("plb_rules[ZZ]", 700)]
    assert {ln.memo for ln in delta(out).lines} == {"PLB-ZZ"}


def test_a_claim_first_seen_in_its_adjudication_takes_the_payer_and_the_charge() -> None:
    first = run(charge(1_000), adjudication(1_000, 800, [("CO", "45", 200)],
                                            occurred_at="2026-11-21T09:00:00-05:00"))
    claim = first.state.claims["C1"]
    assert (claim["payer"], claim["payer_class"], claim["total_charge_cents"]) == \
        ("ACME", "COMMERCIAL", 1_000)
    first_at = parse(adjudication(1, 1, [], occurred_at="2026-11-21T09:00:00-05:00")).occurred_at
    assert (claim["status"], claim["first_adjudicated_at"]) == ("adjudicated", first_at)
    # A later answer for the same claim keeps when it was first adjudicated.
    later = run(adjudication(-1_000, -800, [("CO", "45", -200)], outcome="reversal",
                             occurred_at="2026-11-25T09:00:00-05:00"), state=first.state)
    assert later.state.claims["C1"]["first_adjudicated_at"] == first_at
    assert later.state.claims["C1"]["status"] == "reversed"


def test_revenue_without_a_department_or_revenue_code_names_what_is_missing() -> None:
    out = run(event_doc("charge_posted", amount_cents=900, dimensions={"entity": "01"}))
    assert [u.missing for u in out.unmapped] == ["gross_revenue[no department]"]
