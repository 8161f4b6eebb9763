"""The items an account keeps (what `rcmflow accounts show` and the facade read), field by
field: claims submitted or first seen in an answer, charges partly reversed, denials taken
back. Written after the mutation run (RELIABILITY.md) found these fields unread by any test."""

from __future__ import annotations

from typing import Any

from rcmflow.streams.chart import load_chart
from rcmflow.streams.postings import PostingDelta, posting_id
from tests.factories import COMMERCIAL, adjudication, charge, event_doc, parse
from tests.streams.test_rules import delta, lines, run

CHART = load_chart()
AT = "2026-11-21T09:00:00-05:00"


def submitted(claim_id: str = "C1", **fields: Any) -> dict[str, Any]:
    return event_doc("claim_submitted", claim_id=claim_id, total_charge_cents=1_500,
                     lines=[{"line_id": "1", "charge_cents": 1_000, "revenue_code": "0450"},
                            {"line_id": "2", "charge_cents": 500, "units": 2}],
                     dimensions=COMMERCIAL, **fields)


def test_a_submitted_claim_keeps_its_payer_lines_and_submission_time() -> None:
    doc = submitted(occurred_at=AT)
    out = run(charge(1_500), doc)
    event = parse(doc)
    assert out.state.claims["C1"] == {
        "version": 2, "claim_id": "C1", "status": "submitted", "payer": "ACME",
        "payer_class": "COMMERCIAL", "total_charge_cents": 1_500,
        "lines": [line.model_dump() for line in event.lines],
        "submitted_at": event.occurred_at, "first_adjudicated_at": None}


def test_a_claim_first_seen_in_its_answer_starts_empty_but_for_what_the_answer_says() -> None:
    doc = adjudication(1_000, 1_000, [], occurred_at=AT)
    out = run(charge(1_000), doc)
    assert out.state.claims["C1"] == {
        "version": 2, "claim_id": "C1", "status": "adjudicated", "payer": "ACME",
        "payer_class": "COMMERCIAL", "total_charge_cents": 1_000, "lines": [],
        "submitted_at": None, "first_adjudicated_at": parse(doc).occurred_at}


def test_an_answer_to_a_submitted_claim_keeps_the_submission() -> None:
    out = run(charge(1_500), submitted(), adjudication(1_500, 1_500, []))
    claim = out.state.claims["C1"]
    assert (claim["status"], claim["version"], len(claim["lines"])) == ("adjudicated", 3, 2)
    assert claim["submitted_at"] is not None


def test_a_charge_records_how_much_of_it_was_reversed() -> None:
    first = run(charge(1_000, event_id="CH1"))
    assert first.state.of("charge")[0]["reversed_cents"] == 0
    out = run(event_doc("charge_reversed", amount_cents=600, reverses_event_id="CH1"),
              event_doc("charge_reversed", amount_cents=300, reverses_event_id="CH1"),
              state=first.state)
    (item,) = out.state.of("charge")
    assert (item["reversed_cents"], item["amount_cents"], item["version"]) == (900, 1_000, 3)


def test_a_denial_counts_its_charge_and_its_reversal_takes_it_back() -> None:
    denied = run(charge(1_000), adjudication(1_000, 0, [("CO", "50", 1_000)], outcome="denied"))
    assert denied.state.balances.denied == 1_000
    back = run(adjudication(-1_000, 0, [("CO", "50", -1_000)], outcome="reversal"),
               state=denied.state)
    assert back.state.balances.denied == 0
    # A reversal of a paid claim leaves the denied count alone.
    paid = run(charge(1_000), adjudication(1_000, 1_000, []),
               adjudication(-1_000, -1_000, [], outcome="reversal"))
    assert paid.state.balances.denied == 0


def test_a_delta_is_identified_by_account_event_and_chart_version() -> None:
    out = run(charge(1_000, event_id="CH9"))
    posted = delta(out)
    assert posted.posting_id == posting_id("A1", "CH9", CHART.version)
    assert posted.posting_id.startswith("pst_") and len(posted.posting_id) == 4 + 32
    assert posted.reverses_posting_id is None
    assert PostingDelta.model_validate_json(out.delta or b"").posting_id == posted.posting_id


def test_only_mapped_revenue_lines_carry_a_department_and_only_suspense_lines_say_so() -> None:
    mapped = delta(run(charge(1_000, revenue_code="0450")))
    assert [(ln.department, ln.suspense) for ln in mapped.lines] == [(None, False),
                                                                      ("ED", False)]
    unmapped = delta(run(charge(1_000, revenue_code="0999")))
    assert [(ln.department, ln.suspense) for ln in unmapped.lines] == [(None, False),
                                                                        (None, True)]


def test_every_line_of_an_answer_is_kept_with_its_memo() -> None:
    out = run(charge(10_000), adjudication(10_000, 6_000, [("CO", "45", 2_000),
                                                          ("OA", "18", 1_500),
                                                          ("CO", "999", 500)]))
    assert [(gl, d, c, ln.memo) for (gl, d, c), ln in zip(lines(out), delta(out).lines,
                                                          strict=True)] == [
        ("1110", 6_000, 0, "payer_payment"), ("1200", 0, 6_000, "payer_payment"),
        ("4120", 2_000, 0, "CO-45"), ("1200", 0, 2_000, "CO-45"),
        ("4160", 1_500, 0, "OA-18"), ("1200", 0, 1_500, "OA-18"),
        ("2900", 500, 0, "CO-999"), ("1200", 0, 500, "CO-999")]
    assert out.state.balances.other_adjustments == 1_500


def test_a_submission_that_arrives_after_the_answer_keeps_the_answer() -> None:
    answered = run(charge(1_000), adjudication(1_000, 1_000, [], occurred_at=AT))
    late = run(submitted(), state=answered.state)
    claim = late.state.claims["C1"]
    assert (claim["status"], claim["first_adjudicated_at"]) == \
        ("adjudicated", parse(adjudication(1, 1, [], occurred_at=AT)).occurred_at)
    assert claim["total_charge_cents"] == 1_500 and len(claim["lines"]) == 2


def test_an_account_keeps_the_entity_of_its_first_event() -> None:
    out = run(charge(1_000), charge(500, dimensions={"entity": "02"}))
    assert out.state.head.entity == "01"
