"""Payment files are read as a stream: memory follows one row (plus the per-file duplicate
check's ~200 bytes per applied row), not the file, and no line of a file is ever read whole
past a bound."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import orjson

from rcmflow.connectors.inbound.payments.ingest import (
    REASONS_KEPT,
    PaymentsIngest,
    process_payments,
)
from rcmflow.connectors.inbound.payments.rows import LINE_CHARS_MAX
from rcmflow.connectors.inbound.seen import BYTES_PER_KEY, SeenKeys
from rcmflow.streams.topics import DLQ, EVENTS, RAW_PAYMENTS

HEADER = "type,account,amount,date,reference\n"


def write_rows(path: Path, rows: int, *, start: int = 0) -> Path:
    with path.open("w") as f:
        f.write(HEADER)
        for n in range(start, start + rows):
            f.write(f"payment,A{n % 1000},12.50,2026-03-01,LB-{n}\n")
    return path


def peak_mb(path: Path) -> tuple[float, PaymentsIngest, int]:
    tracemalloc.start()
    try:
        ingest = PaymentsIngest(path, rows_max=10_000_000)
        records = sum(1 for _ in ingest.records())
        return tracemalloc.get_traced_memory()[1] / 1e6, ingest, records
    finally:
        tracemalloc.stop()


def test_memory_follows_a_row_and_the_duplicate_check_not_the_file(tmp_path: Path) -> None:
    """A reported 50 MB file took 7.1 GB (~140x its size) when read whole."""
    small_rows, large_rows = 5_000, 40_000
    small_mb, _, _ = peak_mb(write_rows(tmp_path / "small.csv", small_rows))
    large = write_rows(tmp_path / "large.csv", large_rows)
    large_mb, ingest, records = peak_mb(large)
    assert (ingest.events, records) == (large_rows, 2 * large_rows)
    growth = (large_rows - small_rows) * BYTES_PER_KEY / 1e6
    assert large_mb < small_mb + growth + 0.5, (small_mb, large_mb)
    # ~3x a file of 38-byte rows, all of it the duplicate check (read whole: ~140x).
    assert large_mb < 10 * large.stat().st_size / 1e6, (large_mb, large.stat().st_size)


def test_the_duplicate_check_costs_what_the_docs_say_per_row() -> None:
    seen = SeenKeys()
    tracemalloc.start()
    try:
        for n in range(100_000):
            assert seen.first(f"A{n % 1000}", f"payment:lockbox:LB-{n}", n + 2, "{}") is None
        per_key = tracemalloc.get_traced_memory()[0] / 100_000
    finally:
        tracemalloc.stop()
    assert per_key <= BYTES_PER_KEY, per_key
    assert seen.first("A7", "payment:lockbox:LB-7", 99, "{}") == (9, True)
    assert seen.first("A7", "payment:lockbox:LB-7", 99, '{"x":1}') == (9, False)


def test_a_line_without_an_end_is_skipped_in_pieces_and_the_rows_after_it_go_through(
        tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(HEADER + "payment,A1,1.00,2026-03-01,R1\n"
                    + "payment,A2," + "9" * (LINE_CHARS_MAX * 3) + ",2026-03-01,R2\n"
                    + "payment,A3,1.00,2026-03-01,R3\n")
    ingest = PaymentsIngest(path)
    records = list(ingest.records())
    assert ingest.events == 2
    assert [(r.row, r.rejection.reason_code) for r in ingest.first_rejected] == [
        (3, "row_too_large")]
    (dlq,) = [orjson.loads(v) for t, _, v in records if t == DLQ]
    assert dlq["payload"] == ""  # the row is not kept: it is larger than a row may be
    jsonl = tmp_path / "long.jsonl"
    jsonl.write_text(json.dumps({"type": "payment", "account": "A1", "amount": "1",
                                 "date": "2026-03-01", "reference": "J1"}) + "\n"
                     + '{"note": "' + "x" * (LINE_CHARS_MAX * 2) + '"}\n'
                     + json.dumps({"type": "payment", "account": "A1", "amount": "2",
                                   "date": "2026-03-01", "reference": "J2"}) + "\n")
    out = process_payments(jsonl.read_bytes(), name="long.jsonl", origin="file:long.jsonl")
    assert len(out.events) == 2
    assert [(r.row, r.rejection.reason_code) for r in out.rejected] == [(2, "row_too_large")]


def test_a_quote_never_closed_stops_the_file_at_its_row_with_the_reason() -> None:
    text = HEADER + "payment,A1,1.00,2026-03-01,R1\n" + 'payment,"A2,1.00\n' + "x\n" * 70_000
    out = process_payments(text.encode(), name="q.csv", origin="file:q.csv")
    assert len(out.events) == 1
    assert [(r.row, r.rejection.reason_code) for r in out.rejected] == [(3, "row_invalid_csv")]


def test_a_streamed_file_publishes_what_the_whole_file_reader_does(tmp_path: Path) -> None:
    text = (HEADER + "payment,A1,1.00,2026-03-01,R1\npayment,A1,1.005,2026-03-01,R2\n"
            "payment,A1,1.00,2026-03-01,R1\n\nrefund,A2,3,2026-03-02,F1\n")
    path = tmp_path / "day.csv"
    path.write_text(text)
    ingest = PaymentsIngest(path)
    streamed = list(ingest.records())
    whole = process_payments(text.encode(), name="day.csv", origin=f"file:{path}").records()

    def comparable(records: list[tuple[str, bytes | None, bytes]]) -> list[object]:
        # The streamed file publishes in the file's order, the whole one grouped by topic.
        return sorted(((t, k, orjson.dumps({**orjson.loads(v), "received_at": None})
                        if t == DLQ else v) for t, k, v in records), key=repr)

    assert comparable(streamed) == comparable(whole)
    assert [t for t, _, _ in streamed].count(EVENTS) == 2
    assert [t for t, _, _ in streamed].count(RAW_PAYMENTS) == 2
    assert ingest.bytes_read == path.stat().st_size
    assert "2 rows published as events, 2 rejected" in ingest.reason_text()


def test_the_report_keeps_the_first_reasons_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "".join(f"payment,A1,-1,2026-03-01,R{n}\n" for n in range(500)))
    ingest = PaymentsIngest(path)
    dlq = sum(1 for t, _, _ in ingest.records() if t == DLQ)
    assert (dlq, ingest.rejected, len(ingest.first_rejected)) == (500, 500, REASONS_KEPT)
    assert f"... {500 - REASONS_KEPT} more in {DLQ}" in ingest.reason_text()
