"""AR aging (``audit/aging.py``): the rule on hand-made ledgers, and the tie to the ledger on
random mixed streams run through the real core (no broker)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcmflow.audit.aging import (
    CREDIT,
    UNBILLED,
    AccountLedger,
    ClaimInfo,
    Movement,
    account_ledger,
    age_bucket,
    aging_report,
    open_items,
)
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Processor
from tests.factories import adjudication, charge, event_doc, messages, payment
from tests.streams.strategies import account_docs

CHART = load_chart()
D = date(2026, 1, 1)


def move(kind: str, day: int, cents: int, n: int, event_kind: str = "charge_posted",
         event_id: str | None = None) -> Movement:
    return Movement(kind, n, D + timedelta(days=day), cents, "01",  # type: ignore[arg-type]
                    event_id or f"E{n}", event_kind)


def test_buckets_edges() -> None:
    assert [age_bucket(d) for d in (-3, 0, 30, 31, 60, 61, 90, 91, 120, 121, 180, 181)] == [
        "0-30", "0-30", "0-30", "31-60", "31-60", "61-90", "61-90", "91-120", "91-120",
        "121-180", "121-180", "180+"]


def test_an_item_moves_buckets_as_the_as_of_date_advances() -> None:
    ledger = AccountLedger("A1", [move("insurance", 0, 10_000, 1)],
                           claims={"C1": ClaimInfo("C1", D + timedelta(days=2), "ACME", "COM")})
    early = open_items(ledger, today=D, as_of=D + timedelta(days=32))
    later = open_items(ledger, today=D, as_of=D + timedelta(days=33))
    # Aged from the claim's submission (day 2), not the charge (day 0).
    assert [(i.claim_id, i.start, i.days, i.bucket, i.cents) for i in early] == [
        ("C1", D + timedelta(days=2), 30, "0-30", 10_000)]
    assert [(i.bucket, i.cents) for i in later] == [("31-60", 10_000)]
    # Before the claim was submitted (as of day 1) the charge is unbilled, from its own date.
    [unbilled] = open_items(ledger, today=D, as_of=D + timedelta(days=1))
    assert (unbilled.claim_id, unbilled.payer, unbilled.start) == (None, UNBILLED, D)
    # A movement dated after the as-of date does not count.
    assert open_items(ledger, today=D, as_of=D - timedelta(days=1)) == []


def test_credits_close_the_oldest_first_and_an_adjudication_its_own_claim_first() -> None:
    claims = {"C1": ClaimInfo("C1", D + timedelta(days=1), "ACME", "COM"),
              "C2": ClaimInfo("C2", D + timedelta(days=40), "BETA", "MCR")}
    ledger = AccountLedger("A1", [
        move("insurance", 0, 5_000, 1),            # -> C1
        move("insurance", 35, 7_000, 2),           # -> C2
        move("insurance", 50, -3_000, 3, "claim_adjudicated", "ADJ2"),  # paid on C2
        move("insurance", 55, -1_000, 4, "write_off"),                  # oldest first: C1
    ], claims=claims, adjudications={"ADJ2": "C2"})
    items = open_items(ledger, today=D, as_of=D + timedelta(days=60))
    assert {(i.claim_id, i.cents, i.bucket) for i in items} == {
        ("C1", 4_000, "31-60"), ("C2", 4_000, "0-30")}
    assert sum(i.cents for i in items) == 5_000 + 7_000 - 3_000 - 1_000


def test_more_credited_than_open_is_a_credit_row_and_a_later_debit_closes_it() -> None:
    ledger = AccountLedger("A1", [move("patient", 0, 1_000, 1),
                                  move("patient", 3, -1_500, 2, "manual_adjustment")])
    [credit] = open_items(ledger, today=D + timedelta(days=90))
    assert (credit.bucket, credit.cents, credit.start) == (CREDIT, -500, D + timedelta(days=3))
    ledger.movements.append(move("patient", 10, 800, 3))
    [left] = open_items(ledger, today=D + timedelta(days=90))
    assert (left.bucket, left.cents, left.start) == ("61-90", 300, D + timedelta(days=10))


def test_patient_ar_ages_from_the_first_statement_after_it_arose() -> None:
    ledger = AccountLedger("A1", [move("patient", 0, 2_000, 1), move("patient", 20, 3_000, 2)],
                           statements=[D + timedelta(days=5), D + timedelta(days=45)])
    items = open_items(ledger, today=D, as_of=D + timedelta(days=40))
    # The first from the day-5 statement; the second has none by day 40: from its own date.
    assert [(i.statement, i.start, i.cents, i.bucket) for i in items] == [
        (D + timedelta(days=5), D + timedelta(days=5), 2_000, "31-60"),
        (None, D + timedelta(days=20), 3_000, "0-30")]
    items = open_items(ledger, today=D, as_of=D + timedelta(days=50))
    assert [(i.statement, i.cents) for i in items] == [(D + timedelta(days=5), 2_000),
                                                       (D + timedelta(days=45), 3_000)]


def run(docs: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The real core over ``docs``: account -> its snapshot, and every posting delta."""
    tables = MemoryTables()
    result = Processor(CHART).process(messages(docs), tables)
    tables.write(result)
    return tables.views(), [json.loads(v) for _, _, v in result.postings]


def test_a_visit_through_the_core_ties_and_ages_by_claim_and_statement() -> None:
    at = "T10:00:00-05:00"
    docs = [charge(50_000, event_id="CH1", occurred_at="2026-01-02" + at),
            event_doc("claim_submitted", event_id="SUB1", claim_id="C1",
                      total_charge_cents=50_000, occurred_at="2026-01-05" + at,
                      dimensions={"entity": "01", "payer": "ACME", "payer_class": "COMMERCIAL"}),
            adjudication(45_000, 25_000, [("CO", "45", 15_000), ("PR", "2", 5_000)],
                         event_id="ADJ1", claim_id="C1", occurred_at="2026-02-01" + at),
            event_doc("workflow_step", event_id="ST1", step="patient_statement_issued",
                      occurred_at="2026-02-03" + at),
            payment(1_000, event_id="PAY1", occurred_at="2026-02-10" + at),
            charge(7_000, event_id="CH2", occurred_at="2026-02-20" + at)]
    snapshots, deltas = run(docs)
    ledger = account_ledger(snapshots["A1"], deltas)
    report = aging_report([ledger], today=date(2026, 3, 10), by="payer")
    balances = snapshots["A1"]["balances"]
    assert report.accounts() == {"A1": {"insurance_ar": balances["insurance_ar"],
                                        "patient_ar": balances["patient_ar"]}}
    rows = {(g["kind"], g["payer"]): g["buckets"] for g in report.groups()}
    # CH1's 50,000 less the 45,000 the remit took (paid, CO, PR) is C1's, from its
    # submission on 2026-01-05 (64 days: 61-90); CH2 is on no claim yet (unbilled, 18 days).
    assert rows[("insurance", "ACME")]["61-90"] == 5_000
    assert rows[("insurance", UNBILLED)]["0-30"] == 7_000
    # The PR 5,000 arose on 2026-02-01, the statement came 2026-02-03: 35 days.
    assert rows[("patient", "patient")]["31-60"] == 4_000


PROPERTY = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def dated_stream(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Mixed events of two accounts (charges, reversals, claims, adjudications and their
    reversals, payments, refunds and decisions, write-offs, manual adjustments, statements),
    on days that mostly go forward and sometimes back."""
    docs = []
    for account in ("A1", "A2"):
        day = D
        for n, doc in enumerate(draw(account_docs(account))):
            day += timedelta(days=draw(st.integers(-10, 60)))
            at = f"{day.isoformat()}T10:00:00-05:00"
            if draw(st.integers(0, 4)) == 0:
                docs.append(event_doc("claim_submitted", account, event_id=f"{account}-S{n}",
                                      claim_id=f"{account}-C{draw(st.integers(1, 3))}",
                                      total_charge_cents=1, occurred_at=at,
                                      dimensions={"entity": "01", "payer": "P",
                                                  "payer_class": "MEDICARE"}))
            if draw(st.integers(0, 5)) == 0:
                docs.append(event_doc("workflow_step", account, event_id=f"{account}-ST{n}",
                                      step="patient_statement_issued", occurred_at=at))
            docs.append(doc | {"occurred_at": at})
    return docs


@PROPERTY
@given(dated_stream(), st.integers(0, 900))
def test_aged_totals_equal_every_accounts_ar_buckets(docs: list[dict[str, Any]],
                                                     offset: int) -> None:
    snapshots, deltas = run(docs)
    ledgers = [account_ledger(snap, [d for d in deltas if d["account"] == account])
               for account, snap in snapshots.items()]
    for ledger in ledgers:
        balances = snapshots[ledger.account]["balances"]
        ledger.head_ar = (balances["insurance_ar"], balances["patient_ar"])
    report = aging_report(ledgers, today=D + timedelta(days=offset), by="entity")
    assert report.differences() == {}
    for account, snap in snapshots.items():
        aged = report.accounts().get(account, {"insurance_ar": 0, "patient_ar": 0})
        assert aged == {"insurance_ar": snap["balances"]["insurance_ar"],
                        "patient_ar": snap["balances"]["patient_ar"]}, account
    assert report.totals()["total"] == sum(g["total"] for g in report.groups())
    if ledgers:  # a head that disagrees with its ledger is named
        first = ledgers[0]
        first.head_ar = (first.head_ar[0] + 1, first.head_ar[1]) if first.head_ar else (1, 0)
        assert first.account in aging_report(ledgers, today=D).differences()
        first.head_ar = None
    # As of any day: the AR of the movements dated by then, each open item of one sign.
    as_of = D + timedelta(days=offset)
    for ledger in ledgers:
        items = open_items(ledger, today=D, as_of=as_of)
        for kind in ("insurance", "patient"):
            dated = sum(m.cents for m in ledger.movements if m.kind == kind and m.day <= as_of)
            assert sum(i.cents for i in items if i.kind == kind) == dated
        assert all((i.bucket == CREDIT) == (i.cents < 0) and i.cents for i in items)


def test_the_metrics_file_has_every_age_of_every_entity(tmp_path: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from rcmflow.audit.aging_metrics import write_aging_metrics

    ledger = AccountLedger("A1", [move("insurance", 0, 10_000, 1), move("patient", 0, -300, 2)])
    report = aging_report([ledger], today=D + timedelta(days=45))
    path = tmp_path / "aging.prom"
    write_aging_metrics(report, path, finished_at_s=1.0)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(path.read_text()) for s in f.samples}
    aged = {labels: v for (name, labels), v in samples.items() if name == "rcmflow_ar_aging_cents"}
    assert len(aged) == 2 * 7  # insurance and patient, six ages and credit, entity 01
    assert aged[(("age", "31-60"), ("entity", "01"), ("kind", "insurance"))] == 10_000
    assert aged[(("age", "credit"), ("entity", "01"), ("kind", "patient"))] == -300
    assert sum(aged.values()) == 10_000 - 300
