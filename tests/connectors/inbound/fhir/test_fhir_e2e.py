"""A ChargeItem and a patient's PaymentReconciliation for one account, through `rcmflow ingest
fhir`, the real broker and a real worker: the rcm.accounts snapshot shows the balances to the
cent; the same file again, and the same resources as NDJSON, change nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rcmflow.ops.accounts import latest_snapshots
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.topics import DLQ, EVENTS, RAW_FHIR
from tests.conftest import Broker, Workers, wait_until

pytestmark = pytest.mark.broker

ACCOUNT = "FHIR1001"
NAME = "Chalmers"  # a patient name in the resources: it must never reach the console

CHARGE = {
    "resourceType": "ChargeItem", "id": "ci-1",
    "identifier": [{"system": "urn:example:charges", "value": "CH-9001"}],
    "status": "billable",
    "code": {"coding": [{"system": "https://www.nubc.org/CodeSystem/RevenueCodes",
                         "code": "0450"}]},
    "subject": {"reference": "Patient/p-1", "display": f"Peter {NAME}"},
    "account": [{"reference": f"Account/{ACCOUNT}"}],
    "occurrenceDateTime": "2026-03-01T10:00:00-05:00",
    "quantity": {"value": 1},
    "priceOverride": {"value": 150.00, "currency": "USD"},
    "note": [{"text": f"seen by Dr. {NAME}"}],
}
PAYMENT = {
    "resourceType": "PaymentReconciliation", "id": "pr-1",
    "identifier": [{"system": "urn:example:portal", "value": "PAY-77"}],
    "status": "active", "created": "2026-03-02T09:00:00Z", "outcome": "complete",
    "paymentDate": "2026-03-02", "paymentAmount": {"value": 30.00, "currency": "USD"},
    "paymentIdentifier": {"system": "urn:example:portal-tx", "value": "TX-1"},
    "detail": [
        {"type": {"coding": [{"code": "payment"}]},
         "request": {"reference": f"Account/{ACCOUNT}"},
         "amount": {"value": 40.00, "currency": "USD"}},
        # a refund of part of it, as the facade writes refunds (a negative amount)
        {"type": {"coding": [{"code": "payment"}]},
         "request": {"reference": f"Account/{ACCOUNT}"},
         "amount": {"value": -10.00, "currency": "USD"}},
    ],
}
NOTICE = json.loads((Path(__file__).resolve().parents[3] / "samples" / "fhir"
                     / "r4_paymentnotice-example.json").read_text())

# charge 150.00 to insurance AR; the patient pays 40.00 with no patient AR open (a credit
# balance), and 10.00 of it is refunded.
EXPECTED = {"gross_charges": 15000, "payer_paid": 0, "contractual_adjustments": 0,
            "patient_responsibility": 0, "other_adjustments": 0, "denied": 0,
            "patient_paid": 4000, "refunds": 1000, "write_offs": 0, "insurance_ar": 15000,
            "patient_ar": 0, "unapplied_credit": 3000, "interest_income": 0,
            "payer_overpayments": 0, "balance": 12000}


def _cli(workers: Workers, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=workers.env(),
                          capture_output=True, text=True, timeout=120)


def _state(kafka: KafkaConnection) -> dict[str, Any]:
    return asyncio.run(latest_snapshots(kafka)).get(ACCOUNT, {})


def test_charge_and_payment_reach_the_balances_and_resends_change_nothing(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    bundle = tmp_path / "visit.json"
    bundle.write_text(json.dumps({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"fullUrl": "urn:uuid:1", "resource": CHARGE,
                   "request": {"method": "POST", "url": "ChargeItem"}},
                  {"fullUrl": "urn:uuid:2", "resource": PAYMENT,
                   "request": {"method": "POST", "url": "PaymentReconciliation"}},
                  {"resource": NOTICE, "request": {"method": "POST", "url": "PaymentNotice"}}]}))
    ndjson = tmp_path / "visit.ndjson"
    ndjson.write_text("\n".join(json.dumps(r) for r in (CHARGE, PAYMENT)) + "\n")
    worker = workers.start("w1")

    first = _cli(workers, "ingest", "fhir", str(bundle))
    assert first.returncode == 0, first.stderr
    assert "3 resources, 3 events to rcm.events (accounts FHIR1001), 1 notices" in first.stderr
    wait_until(lambda: _state(broker.connection).get("version") == 3, 60,
               "the worker to apply the charge, the payment and the refund", worker.log_tail)
    assert _state(broker.connection)["balances"] == EXPECTED

    # The same file again, then the same resources as NDJSON: the same event ids (from the
    # identifiers, not the file), so the worker drops them as replays.
    again = _cli(workers, "ingest", "fhir", str(bundle))
    as_lines = _cli(workers, "ingest", "fhir", str(ndjson))
    assert (again.returncode, as_lines.returncode) == (0, 0), (again.stderr, as_lines.stderr)
    events = asyncio.run(read_topic(broker.connection, EVENTS))
    assert len(events) == 9  # 3 + 3 + 3 published, 3 applied
    # A new charge for the same account after the re-sends: same partition, so once it is
    # applied the worker has read past them, and they must not have moved anything.
    marker = tmp_path / "marker.json"
    marker.write_text(json.dumps(CHARGE | {"identifier": [{"system": "urn:example:charges",
                                                            "value": "CH-9002"}],
                                           "priceOverride": {"value": 1, "currency": "USD"}}))
    assert _cli(workers, "ingest", "fhir", str(marker)).returncode == 0
    wait_until(lambda: _state(broker.connection).get("version") == 4, 60,
               "the marker charge after the re-sends", worker.log_tail)
    state = _state(broker.connection)
    assert state["balances"] == EXPECTED | {"gross_charges": 15100, "insurance_ar": 15100,
                                            "balance": 12100}
    dlq = asyncio.run(read_topic(broker.connection, DLQ))
    assert dlq == []  # replays are free: no conflict, nothing unmapped
    raw = asyncio.run(read_topic(broker.connection, RAW_FHIR))
    assert len(raw) == 3 + 3 + 2 + 1
    for done in (first, again, as_lines):
        assert NAME not in done.stderr + done.stdout
    assert worker.alive(), worker.log_tail()


def test_exit_codes_and_the_dlq_record_of_a_refused_sample(
        broker: Broker, tmp_path: Path) -> None:
    samples = Path(__file__).resolve().parents[3] / "samples" / "fhir"
    env = {"RCMFLOW_BROKER": broker.url, "RCMFLOW_DATA_DIR": str(tmp_path / "data"),
           "PATH": "/usr/bin:/bin"}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rcmflow.cli", "ingest", "fhir", *args],
                              env=env | extra, capture_output=True, text=True, timeout=120)

    charge = samples / "r4_chargeitem-example.json"
    refused = run(str(charge))
    assert refused.returncode == 1, refused.stderr
    assert "fhir_currency" in refused.stderr and "'EUR'" in refused.stderr
    [record] = [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, DLQ))]
    assert record["reason_code"] == "fhir_currency"
    assert record["origin"] == {"topic": f"file:{charge}", "partition": 0, "offset": 0,
                                "key": None}
    # The account is known (Account/example): the record names it for `rcmflow dlq list`.
    (problem,) = record["context"].pop("problems")
    assert record["context"] == {"resourceType": "ChargeItem", "account": "example"}
    assert problem["place"] == "resource" and problem["reason_code"] == "fhir_currency"
    assert json.loads(record["payload"]) == json.loads(charge.read_text())
    too_big = run(str(charge), RCMFLOW_FHIR_FILE_BYTES_MAX="1024")
    assert too_big.returncode == 2 and "RCMFLOW_FHIR_FILE_BYTES_MAX" in too_big.stderr
    no_broker = run(str(charge), RCMFLOW_BROKER="", RCMFLOW_DATA_DIR=str(tmp_path / "none"))
    assert no_broker.returncode == 2, no_broker.stderr
    assert run(str(samples / "r4_paymentnotice-example.json")).returncode == 0


def test_a_bundle_of_many_unsupported_entries_is_one_dlq_record_through_the_broker(
        broker: Broker, tmp_path: Path) -> None:
    """2,000 ignored entries, a charge and a charge in error: rcm.dlq gets the error and one
    warning counting the 2,000 (it got one record per entry), and the same ids again when the
    file is sent again."""
    n = 2_000
    unsupported = {"resource": {"resourceType": "Basic", "code": {"text": "x"}}}
    bad = CHARGE | {"identifier": [{"system": "urn:example:charges", "value": "CH-BAD"}],
                    "priceOverride": {"value": 1.005, "currency": "USD"}}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        unsupported] * 1000 + [{"resource": CHARGE}, {"resource": bad}] + [unsupported] * 1000}))
    env = {"RCMFLOW_BROKER": broker.url, "RCMFLOW_DATA_DIR": str(tmp_path / "data"),
           "PATH": "/usr/bin:/bin"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rcmflow.cli", "ingest", "fhir", str(path)],
                              env=env, capture_output=True, text=True, timeout=300)

    done = run()
    assert done.returncode == 1, done.stderr
    assert f"{n + 2} resources, 1 events to {EVENTS}" in done.stderr
    assert f"{n} × fhir_unsupported_resource" in done.stderr
    dlq = [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, DLQ))]
    assert sorted((d["severity"], d["reason_code"]) for d in dlq) == [
        ("error", "fhir_invalid_amount"), ("warning", "fhir_unsupported_resource")]
    (warned,) = [d for d in dlq if d["severity"] == "warning"]
    assert warned["context"]["count"] == n
    assert warned["context"]["places"][:2] == ["entry[0]", "entry[1]"]
    assert warned["context"]["places_more"] == n - 20
    (error,) = [d for d in dlq if d["severity"] == "error"]
    assert error["context"]["problems"][0]["place"] == "entry[1001]"
    assert run().returncode == 1
    again = [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, DLQ))]
    assert sorted(d["dlq_id"] for d in again) == sorted(2 * [d["dlq_id"] for d in dlq])
