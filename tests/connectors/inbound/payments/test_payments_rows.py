"""Payment files: bad rows answered with their row number, good rows go on (the amount
rules themselves: tests/streams/test_money.py)."""

from __future__ import annotations

import json

from rcmflow.connectors.inbound.payments.ingest import process_payments
from rcmflow.streams.events import PatientPayment, Refund, WriteOff
from rcmflow.streams.topics import DLQ, EVENTS, RAW_PAYMENTS

CSV = (
    "type,account,amount,date,reference,channel,reason,to,batch,payer_name\n"
    "payment,A1001,125.50,2026-03-01,LB-1,lockbox,,,DEP9,Somebody\n"
    "payment,A1001,12.345,2026-03-01,LB-2,lockbox,,,DEP9,Somebody\n"
    "refund,A1002,20,2026-03-02,RF-1,,,patient,,\n"
    "write_off,A1003,4.99,2026-03-03,WO-1,,small_balance,,,\n"
    "write_off,A1003,10.00,2026-03-03,WO-2,,,,,\n"
    "payment,A1004,-5.00,2026-03-01,PT-1,portal,,,,\n"
    "payment,A1005,5.00,03/01/2026,PT-2,portal,,,,\n"
    "donation,A1006,5.00,2026-03-01,X-1,,,,,\n"
    "payment,has space,5.00,2026-03-01,PT-3,portal,,,,\n"
    "payment,A1001,125.50,2026-03-01,LB-1,lockbox,,,DEP9,Somebody\n"
    "payment,A1007,1.00,2026-03-01T09:30:00-05:00,PT-4,portal,,,,\n"
)


def test_csv_good_rows_become_events_and_bad_rows_name_their_row() -> None:
    out = process_payments(CSV.encode(), name="day.csv", origin="file:day.csv")
    events = [e for _, e in out.events]
    assert [(type(e).__name__, e.account, e.amount_cents) for e in events] == [
        ("PatientPayment", "A1001", 12550),
        ("Refund", "A1002", 2000),
        ("WriteOff", "A1003", 499),
        ("PatientPayment", "A1007", 100),
    ]
    first = events[0]
    assert isinstance(first, PatientPayment)
    assert (first.event_id, first.channel, first.correlation_id, first.reference) == (
        "payment:lockbox:LB-1", "lockbox", "DEP9", "LB-1")
    assert isinstance(events[1], Refund) and events[1].to == "patient"
    assert isinstance(events[2], WriteOff) and events[2].reason == "small_balance"
    assert events[3].occurred_at.utcoffset() is not None
    # Spreadsheet rows: the header is row 1.
    assert [(r.row, r.rejection.reason_code) for r in out.rejected] == [
        (3, "row_invalid_amount"),
        (6, "row_missing_field"),
        (7, "row_invalid_amount"),
        (8, "row_invalid_date"),
        (9, "row_unknown_type"),
        (10, "row_invalid"),
        (11, "row_duplicate_reference"),
    ]
    by_row = {r.row: r.rejection.detail for r in out.rejected}
    assert "fraction of a cent" in by_row[3]
    assert "already used in row 2 (the same content)" in by_row[11]
    assert out.warnings == ["columns ignored: payer_name"]


def test_row_words_are_read_in_any_case_from_ar_too() -> None:
    # from_ar was the one word column not lower-cased: "Insurance" was a rejected row while
    # "Patient" in `to` and "Bad_Debt" in `reason` were read.
    text = ("type,account,amount,date,reference,channel,reason,to,from_ar\n"
            "Payment,A1,1.00,2026-03-01,P-1,Portal,,,\n"
            "REFUND,A1,1.00,2026-03-01,R-1,,,Patient,\n"
            "write_off,A1,1.00,2026-03-01,W-1,,Bad_Debt,,Insurance\n"
            "write_off,A1,1.00,2026-03-01,W-2,,denial,,PATIENT\n"
            "write_off,A1,1.00,2026-03-01,W-3,,denial,,payer\n")
    out = process_payments(text.encode(), name="day.csv", origin="file:day.csv")
    payment, refund, *write_offs = [e for _, e in out.events]
    assert isinstance(payment, PatientPayment) and payment.channel == "portal"
    assert isinstance(refund, Refund) and refund.to == "patient"
    assert [(w.reason, w.from_ar) for w in write_offs if isinstance(w, WriteOff)] == [
        ("bad_debt", "insurance"), ("denial", "patient")]
    assert [(r.row, r.rejection.reason_code) for r in out.rejected] == [(6, "row_invalid")]


def test_published_records_carry_the_row_and_reason_but_no_other_column() -> None:
    out = process_payments(CSV.encode(), name="day.csv", origin="file:/in/day.csv")
    records = out.records()
    topics = [t for t, _, _ in records]
    assert topics.count(EVENTS) == 4 and topics.count(RAW_PAYMENTS) == 4
    dlq = [json.loads(v) for t, _, v in records if t == DLQ]
    assert len(dlq) == 7
    amount = next(d for d in dlq if d["context"]["row"] == 3)
    assert amount["reason_code"] == "row_invalid_amount"
    assert amount["reason"].startswith("/in/day.csv row 3:")
    assert amount["origin"] == {"topic": "file:/in/day.csv", "partition": 0, "offset": 3,
                                "key": None}
    assert amount["payload"] == "payment,A1001,12.345,2026-03-01,LB-2,lockbox,,,DEP9,Somebody"
    # Reasons are for consoles and logs: no payer or patient names in them.
    assert all("Somebody" not in d["reason"] for d in dlq)
    assert len({d["dlq_id"] for d in dlq}) == 7
    raw = [json.loads(v) for t, _, v in records if t == RAW_PAYMENTS]
    assert "payer_name" not in raw[0]["fields"]


def test_jsonl_amounts_are_exact_whether_strings_or_numbers() -> None:
    lines = "\n".join([
        '{"type": "payment", "account": "A1", "amount": "0.10", "date": "2026-01-02", '
        '"reference": "J1"}',
        '{"type": "payment", "account": "A1", "amount": 0.20, "date": "2026-01-02", '
        '"reference": "J2", "channel": "portal"}',
        '{"type": "payment", "account": "A1", "amount": 1.005, "date": "2026-01-02", '
        '"reference": "J3"}',
        'not json',
        '[1, 2]',
    ])
    out = process_payments(lines.encode(), name="p.jsonl", origin="file:p.jsonl")
    assert [e.amount_cents for _, e in out.events] == [10, 20]
    assert [(r.row, r.rejection.reason_code) for r in out.rejected] == [
        (3, "row_invalid_amount"), (4, "row_invalid_json"), (5, "row_invalid_json")]


def test_a_file_without_the_required_columns_is_rejected_whole() -> None:
    out = process_payments(b"account,amount\nA1,1.00\n", name="x.csv", origin="file:x.csv")
    assert out.events == []
    (rejected,) = out.rejected
    assert rejected.rejection.reason_code == "file_unreadable"
    assert "no type, date, reference columns" in rejected.rejection.detail


def test_rows_past_the_limit_are_not_read_and_say_so() -> None:
    rows = "".join(f"payment,A{n},1.00,2026-01-01,R{n}\n" for n in range(5))
    out = process_payments(("type,account,amount,date,reference\n" + rows).encode(),
                           name="x.csv", origin="file:x.csv", rows_max=3)
    assert len(out.events) == 3
    assert [r.rejection.reason_code for r in out.rejected] == ["rows_max"]


def test_resending_a_file_gives_byte_identical_events() -> None:
    one = process_payments(CSV.encode(), name="a.csv", origin="file:a.csv")
    two = process_payments(CSV.encode(), name="b.csv", origin="file:b.csv")
    assert [e.model_dump_json() for _, e in one.events] == [
        e.model_dump_json() for _, e in two.events]


def test_applied_rows_state_their_amounts_by_type_on_their_day() -> None:
    """rcm.raw.payments source_totals: the row's own amount and date, attributed to its event,
    and its event's id."""
    rows = ("type,account,amount,date,reference,reason\n"
            "payment,A1,10.10,2026-03-01T23:30:00-05:00,P1,\n"
            "refund,A1,2.5,2026-03-02,R1,\n"
            "write_off,A2,7,2026-03-03,W1,small_balance\n")
    out = process_payments(rows.encode(), name="d.csv", origin="file:d.csv")
    raw = [json.loads(v)["source_totals"] for t, _, v in out.records() if t == RAW_PAYMENTS]
    assert raw == [
        {"amounts": [{"account": "A1", "day": "2026-03-01", "measure": "payments",
                      "cents": 1010, "event": "payment:lockbox:P1"}],
         "events": [["A1", "payment:lockbox:P1"]]},
        {"amounts": [{"account": "A1", "day": "2026-03-02", "measure": "refunds",
                      "cents": 250, "event": "refund:R1"}], "events": [["A1", "refund:R1"]]},
        {"amounts": [{"account": "A2", "day": "2026-03-03", "measure": "write_offs",
                      "cents": 700, "event": "write_off:W1"}], "events": [["A2", "write_off:W1"]]}]


def test_an_amount_past_the_bound_is_an_invalid_amount_with_its_value() -> None:
    # It was "row_invalid: amount_cents: Input should be less than or equal to ...": the
    # event's check, in its words; now the amount column is refused where it is read.
    text = ("type,account,amount,date,reference\n"
            "payment,A1,10000000000.01,2026-03-01,P-1\n"
            "payment,A1,10000000000.00,2026-03-01,P-2\n")
    out = process_payments(text.encode(), name="day.csv", origin="file:day.csv")
    assert [(r.row, r.rejection.reason_code, r.rejection.detail) for r in out.rejected] == [
        (2, "row_invalid_amount", "row 2: amount '10000000000.01' is out of range (at most "
         "10000000000.00 either way)")]
    assert [e.amount_cents for _, e in out.events] == [1_000_000_000_000]
