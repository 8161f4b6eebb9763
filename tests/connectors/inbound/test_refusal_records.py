"""A refused HL7 message and a refused FHIR resource become rcm.dlq records of one shape:
the core rejection's problems, each with its place in the input, in ``context.problems``, and
a payload past the bound (RCMFLOW_DLQ_PAYLOAD_BYTES_MAX) cut the same way, the context saying
``payload_truncated`` and the whole size in ``payload_bytes`` (streams/dlq.py ``dlq_record``)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rcmflow.connectors.inbound.fhir import process_fhir
from rcmflow.connectors.inbound.hl7.intake import Intake, Record
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.streams.topics import DLQ

BOUND = 200
#: No account (PID-18, PV1-19 empty) and an amount that is not a number; padded past BOUND.
HL7 = (b"MSH|^~\\&|EHR|GEN|RCM|FAC|20261120103000||DFT^P03|C1|P|2.5\rPID|1\r"
       b"FT1|1||||20261120|CG|X|||1|abc\rNTE|1||" + b"x" * 300 + b"\r")
#: entry[1] is a charge in euros (the site takes USD); its text runs past BOUND.
CHARGE = {"resourceType": "ChargeItem", "id": "c1", "status": "billable",
          "code": {"text": "x" * 300}, "subject": {"reference": "Patient/pat.A1"},
          "occurrenceDateTime": "2026-11-20T10:00:00+00:00",
          "priceOverride": {"value": 12.5, "currency": "EUR"}}
FHIR = {"resourceType": "Bundle", "type": "collection", "entry": [
    {"resource": {"resourceType": "PaymentNotice", "id": "n1", "status": "active",
                  "created": "2026-11-20", "payment": {"reference": "PaymentReconciliation/1"},
                  "recipient": {"reference": "Organization/1"},
                  "amount": {"value": 1, "currency": "USD"}}},
    {"resource": CHARGE}]}


class MemorySink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def write(self, records: Sequence[Record]) -> None:
        self.records += records


def hl7_dlq() -> dict[str, Any]:
    sink = MemorySink()
    with tempfile.TemporaryDirectory() as tmp:
        store = ReplayStore(Path(tmp), 3600)
        try:
            intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="t",
                            dlq_payload_bytes_max=BOUND)
            assert asyncio.run(intake.handle(HL7)).code == "AE"
        finally:
            store.close()
    (record,) = [json.loads(r[2]) for r in sink.records if r[0] == DLQ]
    return record  # type: ignore[no-any-return]


def fhir_dlq() -> dict[str, Any]:
    outcome = process_fhir(json.dumps(FHIR).encode(), name="b.json", origin="file:b.json")
    (record,) = [json.loads(value) for topic, _, value in outcome.records(BOUND)
                 if topic == DLQ]
    return record  # type: ignore[no-any-return]


def test_refusals_of_both_formats_carry_their_problems_with_places_in_one_shape() -> None:
    hl7, fhir = hl7_dlq(), fhir_dlq()
    assert [(p["reason_code"], p["place"]) for p in hl7["context"]["problems"]] == [
        ("no_account", "PID^1^18"), ("invalid_amount", "FT1^1^11")]
    assert [(p["reason_code"], p["place"]) for p in fhir["context"]["problems"]] == [
        ("fhir_currency", "entry[1]")]
    shapes = {tuple(sorted(p)) for r in (hl7, fhir) for p in r["context"]["problems"]}
    assert shapes == {("detail", "place", "reason_code")}
    # The record's reason code is its first problem's; the reason says every problem.
    for record in (hl7, fhir):
        first = record["context"]["problems"][0]
        assert record["reason_code"] == first["reason_code"]
        assert all(p["detail"] in record["reason"] for p in record["context"]["problems"])
    # One list of problems: no second, format-only copy of them beside it.
    assert not {"errors", "location", "part"} & (hl7["context"].keys() | fhir["context"].keys())


def test_a_payload_past_the_bound_is_cut_the_same_way_in_both_formats() -> None:
    fhir_whole = len(json.dumps(CHARGE, separators=(",", ":")).encode())
    for record, whole in ((hl7_dlq(), len(HL7)), (fhir_dlq(), fhir_whole)):
        assert whole > BOUND
        assert len(record["payload"].encode()) == BOUND
        assert record["context"]["payload_truncated"] is True
        assert record["context"]["payload_bytes"] == whole
        assert not {"payload_cut", "size_bytes"} & record["context"].keys()
