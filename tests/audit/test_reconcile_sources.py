"""`rcmflow reconcile` source totals: what the connectors accepted, in cents, vs rcm.events.

The demo visit A3001 goes through the real connectors (HL7 intake, X12 835 and 837, a
payments CSV) onto the real broker; the records they produce are published whole, or with
one event dropped or altered on its way to rcm.events. No worker runs here, so posting
findings (missing_posting, ...) are expected and ignored: only the source causes are asserted.
The whole pipeline with a worker and exit code 0 is tests/integration/test_inbound_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from typer.testing import CliRunner

from rcmflow.audit.reconcile import Report, reconcile
from rcmflow.cli import app
from rcmflow.cli.demo_sources import DEMO_ACCOUNT, HL7_FILE, X12_FILES
from rcmflow.connectors.inbound.files import Record
from rcmflow.connectors.inbound.hl7.intake import Intake
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.connectors.inbound.payments.ingest import process_payments
from rcmflow.connectors.inbound.x12.ingest import X12Limits, process_x12
from rcmflow.runtime.kafka_io import publish, topic_partitions
from rcmflow.streams.chart import load_chart
from rcmflow.streams.topics import EVENTS, RAW_X12
from tests.conftest import Broker

pytestmark = pytest.mark.broker
CHART = load_chart()
LIMITS = X12Limits(guide_validation=False)
SOURCE_CAUSES = ("source_event_missing", "source_amount_differs")
PAYMENTS_CSV = ("type,account,amount,date,reference\n"
                f"payment,{DEMO_ACCOUNT},20.00,2026-03-10,LBX-3001-1\n")
#: The demo visit in cents, per measure: DFT 100.00 + 50.00; 837 CLM02 150.00; the 835 paid
#: 90.00, CO-45 40.00, PR-1 20.00; the lockbox row 20.00.
VISIT = {"charges": 15000, "billed": 15000, "payer_paid": 9000, "adjusted": 4000,
         "patient_responsibility": 2000, "payments": 2000}


class MemorySink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)


def hl7_records(message: bytes) -> tuple[str, list[Record]]:
    """One message through the HL7 intake: its ACK code and the records it wrote."""
    sink = MemorySink()
    with tempfile.TemporaryDirectory() as tmp:
        store = ReplayStore(Path(tmp), 3600)
        try:
            intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="test")
            outcome = asyncio.run(intake.handle(message))
        finally:
            store.close()
    return outcome.code, sink.records


def visit_records() -> list[Record]:
    code, records = hl7_records(HL7_FILE.read_bytes())
    assert code == "AA"
    for path in X12_FILES:
        outcome = process_x12(path.read_bytes(), origin=f"file:{path.name}", limits=LIMITS)
        assert outcome.ok(), outcome.reason_text()
        records += outcome.records(LIMITS)
    payments = process_payments(PAYMENTS_CSV.encode(), name="lockbox.csv",
                                origin="file:lockbox.csv")
    assert payments.ok()
    return records + payments.records()


def run(broker: Broker, records: list[Record]) -> Report:
    asyncio.run(publish(broker.connection, records))
    return asyncio.run(reconcile(broker.connection, CHART))


def source_findings(report: Report) -> list[tuple[str, str | None, str | None, int]]:
    return [(f.cause, f.account, f.day, f.amount_cents) for f in report.ordered()
            if f.cause in SOURCE_CAUSES]


def sums(report: Report) -> dict[str, tuple[int, int]]:
    return {m: (a.source_cents, a.events_cents) for m, a in report.sources.items()}


def test_the_visit_through_every_connector_agrees_to_the_cent(broker: Broker) -> None:
    report = run(broker, visit_records())
    assert source_findings(report) == []
    assert sums(report) == {m: (c, c) for m, c in VISIT.items()}
    assert report.counts["source_records_applied"] == 4  # the DFT, the 837, the 835, the row
    assert report.counts["source_events_found"] == report.counts["source_events_listed"] == 5
    # everything again (an intake with a fresh replay store publishes the DFT again too):
    # each source unit and each event counts once
    report = run(broker, visit_records())
    assert source_findings(report) == []
    assert sums(report) == {m: (c, c) for m, c in VISIT.items()}
    assert report.counts["source_records_resent"] == 4


def test_a_lost_event_and_an_altered_one_are_named_with_their_cents(
        broker: Broker) -> None:
    records = visit_records()
    events = [r for r in records if r[0] == EVENTS]
    remit = next(r for r in events if b'"claim_adjudicated"' in r[2])
    charge = next(r for r in events if b'"amount_cents":10000' in r[2])
    altered = (EVENTS, charge[1], charge[2].replace(b'"amount_cents":10000',
                                                    b'"amount_cents":9000'))
    report = run(broker, [altered if r is charge else r for r in records if r is not remit])
    assert source_findings(report) == [
        ("source_event_missing", DEMO_ACCOUNT, None, 0),
        ("source_amount_differs", DEMO_ACCOUNT, "2026-03-01", 1000),  # charges 150 vs 140
        ("source_amount_differs", DEMO_ACCOUNT, "2026-03-02", 4000),  # adjusted
        ("source_amount_differs", DEMO_ACCOUNT, "2026-03-02", 2000),  # patient_responsibility
        ("source_amount_differs", DEMO_ACCOUNT, "2026-03-02", 9000)]  # payer_paid
    details = " ".join(f.detail for f in report.findings)
    assert "charges: the sources accepted 150.00, their events on rcm.events carry 140.00" in (
        details)
    assert "payer_paid: the sources accepted 90.00" in details
    assert sums(report)["payer_paid"] == (9000, 0)
    result = CliRunner().invoke(app, ["reconcile", "--json"],
                                env={"RCMFLOW_BROKER": broker.url})
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["source_totals"]["charges"] == {"source_cents": 15000, "events_cents": 14000,
                                               "difference_cents": 1000}
    assert doc["source_account_days_differing"][f"{DEMO_ACCOUNT}|2026-03-02"]["payer_paid"][
        "difference_cents"] == 9000
    assert any(f["cause"] == "source_amount_differs" and f["account"] == DEMO_ACCOUNT
               for f in doc["findings"])
    table = CliRunner().invoke(app, ["reconcile"], env={"RCMFLOW_BROKER": broker.url})
    assert table.exit_code == 1
    assert "source_amount_differs" in table.stdout and "payer_paid" in table.stdout
    # the lost event arrives late: the sources are all accounted for
    report = run(broker, [remit])
    assert [f[0] for f in source_findings(report)] == ["source_amount_differs"]  # the 10.00


def test_a_refused_hl7_message_counts_for_nothing(broker: Broker) -> None:
    refused = HL7_FILE.read_bytes().replace(b"|A3001\r", b"|\r").replace(b"|E3001\r", b"|\r")
    code, records = hl7_records(refused)
    assert code == "AE" and records[0][0] == "rcm.raw.hl7"
    report = run(broker, records)
    assert source_findings(report) == [] and report.sources == {}
    assert report.counts["source_records_not_applied"] == 1
    assert "source_records_applied" not in report.counts


def remit_835(control: str, claims: Sequence[tuple[str, int, int]]) -> bytes:
    """A one-set 835 under TRN02 DEMOEFT3001 paid 2026-03-02: per claim (CLP01, paid, CO-45),
    ISA13 ``control`` (another interchange, so another raw record)."""
    body = [f"CLP*{acct}*1*{(paid + co) / 100:.2f}*{paid / 100:.2f}**CI*PCN{acct}~"
            f"CAS*CO*45*{co / 100:.2f}" for acct, paid, co in claims]
    total = sum(paid for _, paid, _ in claims) / 100
    segments = [f"BPR*I*{total:.2f}*C*ACH*CCP*01*999999999*DA*123456*1999999999**01*999988880"
                "*DA*98765*20260302", "TRN*1*DEMOEFT3001*1999999999", "DTM*405*20260302",
                "N1*PR*DEMO HEALTH PLAN", "N1*PE*DEMO HOSPITAL*XX*1234567893", "LX*1", *body]
    count = 2 + sum(s.count("~") + 1 for s in segments)
    return ("ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *260301*1200"
            f"*^*00501*{control}*0*P*:~GS*HP*SENDER*RECEIVER*20260301*1200*1*X*005010X221A1~"
            f"ST*835*0001~{'~'.join(segments)}~SE*{count}*0001~GE*1*1~IEA*1*{control}~"
            ).encode()


def test_a_corrected_835_resending_some_claims_counts_each_claim_once(
        broker: Broker) -> None:
    """File 2 repeats claim A3001 of file 1 (same TRN, same event id: the worker applies it
    once) beside a new claim: the repeated claim's cents count once on the source side too."""
    first = remit_835("000000201", [("A3001", 9000, 4000), ("A3002", 5000, 1000)])
    second = remit_835("000000202", [("A3001", 9000, 4000), ("A3003", 7000, 500)])
    records: list[Record] = []
    for n, text in enumerate((first, second)):
        outcome = process_x12(text, origin=f"file:remit{n}.835", limits=LIMITS)
        assert outcome.ok(), outcome.reason_text()
        records += outcome.records(LIMITS)
    events = {json.loads(r[2])["event_id"] for r in records if r[0] == EVENTS}
    assert len(events) == 3  # A3001 once, A3002, A3003
    report = run(broker, records)
    assert source_findings(report) == []
    assert sums(report) == {"payer_paid": (21000, 21000), "adjusted": (5500, 5500)}
    assert report.counts["source_records_applied"] == 2
    assert report.counts["source_events_found"] == report.counts["source_events_listed"] == 3


def test_a_conflicting_resend_read_before_the_original_does_not_stand_for_it(
        broker: Broker) -> None:
    """Claim A3001 re-sent later with other amounts (same TRN and CLP: the same event id, which
    the worker refuses as a conflict) under an envelope whose raw record sits in a partition
    reconcile reads before the original's: the original's cents are still the source (the
    earliest record listing an event counts it), so the sources agree with the events."""
    partitions = asyncio.run(topic_partitions(broker.connection, RAW_X12))
    where = DefaultPartitioner()

    def partition(control: str) -> int:
        return int(where(f"{control}:1:0001".encode(), partitions, partitions))

    controls = [f"000000{n:03d}" for n in range(300, 400)]
    original = next(c for c in controls if partition(c) > 0)
    resend = next(c for c in controls if partition(c) < partition(original))
    sent: list[list[Record]] = []
    for control, paid in ((original, 9000), (resend, 9500)):
        text = remit_835(control, [("A3001", paid, 13000 - paid)])
        outcome = process_x12(text, origin=f"file:remit-{control}.835", limits=LIMITS)
        assert outcome.ok(), outcome.reason_text()
        sent.append(list(outcome.records(LIMITS)))
    asyncio.run(publish(broker.connection, sent[0]))
    time.sleep(0.05)  # the re-send comes later (record timestamps are in milliseconds)
    report = run(broker, sent[1])
    assert source_findings(report) == []
    assert sums(report) == {"payer_paid": (9000, 9000), "adjusted": (4000, 4000)}
    assert report.counts["source_records_resent"] == 1
