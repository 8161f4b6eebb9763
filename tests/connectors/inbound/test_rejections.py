"""One rejection shape across the file connectors: a refused payment row, a parked X12 set
and a canonical-event line that cannot be keyed each become an rcm.dlq record whose
``context.problems`` lists (reason_code, detail, place), and whose payload is cut past the
DLQ payload bound the same way (``payload_truncated``, ``payload_bytes``: the whole size)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from rcmflow.connectors.inbound.events import key_document
from rcmflow.connectors.inbound.files import Record
from rcmflow.connectors.inbound.payments.ingest import PaymentsIngest, process_payments
from rcmflow.connectors.inbound.x12.ingest import X12File, X12Limits, process_x12
from rcmflow.streams.dlq import Origin
from rcmflow.streams.topics import DLQ
from tests.connectors.inbound.x12.x12_build import ClaimSpec, envelope, remit_segments

#: Small enough that each input below is past it.
BOUND = 24


def payment_row(bound: int) -> list[Record]:
    data = b"type,account,amount,date,reference\npayment,A1,12.345,2026-03-01,REF-1\n"
    return process_payments(data, name="p.csv", origin="file:p.csv").records(bound)


def x12_set(bound: int) -> list[Record]:
    unbalanced = ClaimSpec("A1", 10_000, 8_000, cas=[("CO", "45", 1_000)])
    data = envelope(remit_segments([unbalanced]))
    limits = X12Limits(guide_validation=False, dlq_payload_bytes_max=bound)
    return list(process_x12(data, origin="file:r.835", limits=limits).records(limits))


def event_line(bound: int) -> list[Record]:
    data = b'{"account": "A1", "kind": "charge_posted"}\n{"kind": "charge_posted", "x": 1}\n'
    return key_document(data, line_bytes_max=4096, payload_bytes_max=bound, where="e.jsonl",
                        origin=Origin(topic="file:e.jsonl", partition=0, offset=0, key=None))


def the_dlq_record(records: list[Record]) -> dict[str, Any]:
    (value,) = [r[2] for r in records if r[0] == DLQ]
    doc: dict[str, Any] = orjson.loads(value)
    return doc


CASES: list[tuple[Callable[[int], list[Record]], str, str]] = [
    (payment_row, "row_invalid_amount", "row 2"),
    (x12_set, "x12_claim_unbalanced", "claim 1 (CLP01 A1)"),
    (event_line, "no_account", "line 2"),
]


@pytest.mark.parametrize(("refuse", "code", "place"), CASES,
                         ids=["payment row", "x12 set", "event line"])
def test_every_refusal_is_one_rejection_shape_with_its_problems_and_places(
        refuse: Callable[[int], list[Record]], code: str, place: str) -> None:
    whole = the_dlq_record(refuse(1024 * 1024))
    assert whole["reason_code"] == code
    (problem,) = whole["context"]["problems"]
    assert set(problem) == {"reason_code", "detail", "place"}
    assert (problem["reason_code"], problem["place"]) == (code, place)
    assert problem["detail"] and problem["detail"] in whole["reason"]
    assert "payload_truncated" not in whole["context"]
    assert "payload_bytes" not in whole["context"]


@pytest.mark.parametrize(("refuse", "code", "place"), CASES,
                         ids=["payment row", "x12 set", "event line"])
def test_every_refused_payload_past_the_bound_is_cut_and_says_its_whole_size(
        refuse: Callable[[int], list[Record]], code: str, place: str) -> None:
    whole = the_dlq_record(refuse(1024 * 1024))
    cut = the_dlq_record(refuse(BOUND))
    assert len(whole["payload"]) > BOUND, "the input must be past the bound"
    assert cut["payload"] == whole["payload"][:BOUND]
    assert cut["context"]["payload_truncated"] is True
    assert cut["context"]["payload_bytes"] == len(whole["payload"].encode())
    assert "payload_cut" not in cut["context"]
    assert cut["context"]["problems"] == whole["context"]["problems"]


def test_a_file_refused_whole_and_read_only_to_its_start_says_its_whole_size(
        tmp_path: Path) -> None:
    """A payment file or an X12 file refused whole is read as a stream: only the bound's
    worth of it is kept, and the record still says the whole file's size."""
    payments = tmp_path / "p.csv"
    payments.write_bytes(b"account,amount\n" + b"A1,1.00\n" * 100)
    x12 = tmp_path / "r.835"
    x12.write_bytes(b"ST*835*0001~" * 100)  # no ISA: refused whole
    for path, records in [
            (payments, PaymentsIngest(payments, payload_bytes_max=BOUND).records()),
            (x12, X12File(x12, X12Limits(dlq_payload_bytes_max=BOUND)).records())]:
        doc = the_dlq_record(list(records))
        assert doc["payload"] == path.read_text()[:BOUND]
        assert doc["context"]["payload_truncated"] is True
        assert doc["context"]["payload_bytes"] == path.stat().st_size
        (problem,) = doc["context"]["problems"]
        assert problem["place"] == ""  # the file as a whole
