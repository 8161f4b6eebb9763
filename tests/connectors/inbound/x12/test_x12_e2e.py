"""837 + 835 (and its re-send) + a payment file through the real broker and a real worker:
the account snapshots show the balances to the cent, and the re-send changed nothing."""

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
from rcmflow.streams.topics import DLQ, EVENTS
from tests.conftest import Broker, Workers, wait_until
from tests.connectors.inbound.x12.x12_build import (
    ClaimSpec,
    LineSpec,
    PlbSpec,
    claim_segments,
    envelope,
    remit_segments,
)
from tests.factories import charge

pytestmark = pytest.mark.broker

PROVIDER = "provider:1234567893"
ZERO = {"gross_charges": 0, "payer_paid": 0, "contractual_adjustments": 0,
        "patient_responsibility": 0, "other_adjustments": 0, "denied": 0, "patient_paid": 0,
        "refunds": 0, "write_offs": 0, "insurance_ar": 0, "patient_ar": 0,
        "unapplied_credit": 0, "interest_income": 0, "payer_overpayments": 0, "balance": 0}
EXPECTED = {
    # charge 800.00; 835: paid 450.00, CO-45 200.00, PR-1/PR-2 150.00; patient pays 150.00.
    "E2E1001": ZERO | {"gross_charges": 80000, "payer_paid": 45000,
                       "contractual_adjustments": 20000, "patient_responsibility": 15000,
                       "patient_paid": 15000},
    # charge 1200.00; 835: paid 975.00, CO-45 200.00, PR-3 25.00; pays 21.00, 4.00 written off.
    "E2E1002": ZERO | {"gross_charges": 120000, "payer_paid": 97500,
                       "contractual_adjustments": 20000, "patient_responsibility": 2500,
                       "patient_paid": 2100, "write_offs": 400},
    # PLB L6 interest -10.00 (first remit) and -2.50 (second remit): paid to the provider.
    PROVIDER: ZERO | {"payer_paid": 1250, "interest_income": 1250},
}
#: Applied events per account: charge, claim submitted, adjudicated, then the payment rows.
VERSIONS = {"E2E1001": 5, "E2E1002": 5, PROVIDER: 2}

PAYMENTS = (
    "type,account,amount,date,reference,channel,reason\n"
    "payment,E2E1001,100.00,2026-03-05,LB-100,lockbox,\n"
    "payment,E2E1001,50,2026-03-05,PT-200,portal,\n"
    "payment,E2E1002,21.00,2026-03-05,LB-101,lockbox,\n"
    "write_off,E2E1002,4.00,2026-03-06,WO-1,,small_balance\n"
    "payment,E2E1002,12.345,2026-03-06,LB-102,lockbox,\n"
)


def _files(folder: Path) -> dict[str, Path]:
    claims = claim_segments([("E2E1001", 80000, [("99284", 50000), ("71045", 30000)]),
                             ("E2E1002", 120000, [("80053", 120000)])])
    remit = remit_segments([
        ClaimSpec("E2E1001", 80000, 45000, pcn="PCN-1", lines=[
            LineSpec("99284", 50000, 30000, [("CO", "45", 10000), ("PR", "1", 10000)]),
            LineSpec("71045", 30000, 15000, [("CO", "45", 10000), ("PR", "2", 5000)])]),
        ClaimSpec("E2E1002", 120000, 97500, pcn="PCN-2",
                  cas=[("CO", "45", 20000), ("PR", "3", 2500)]),
    ], [PlbSpec("1234567893", "L6", "INT1", -1000)], trn02="EFT-1")
    interest_only = remit_segments([], [PlbSpec("1234567893", "L6", "INT2", -250)],
                                   trn02="EFT-2")
    paths = {
        "charges": folder / "charges.jsonl",
        "837": folder / "claims.837",
        "835": folder / "remit-1.835",
        "835-again": folder / "remit-1-resent.835",
        "835-2": folder / "remit-2.835",
        "payments": folder / "lockbox.csv",
    }
    paths["charges"].write_text(
        json.dumps(charge(80000, "E2E1001", "0450", event_id="CH-1")) + "\n"
        + json.dumps(charge(120000, "E2E1002", "0300", event_id="CH-2")) + "\n")
    paths["837"].write_bytes(envelope(claims, functional_id="HC", version="005010X222A2",
                                      isa13="000000101"))
    paths["835"].write_bytes(envelope(remit, isa13="000000201"))
    paths["835-again"].write_bytes(envelope(remit, isa13="000000201"))
    paths["835-2"].write_bytes(envelope(interest_only, isa13="000000202"))
    paths["payments"].write_text(PAYMENTS)
    return paths


def _cli(workers: Workers, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=workers.env(),
                          capture_output=True, text=True, timeout=120)


def _states(kafka: KafkaConnection) -> dict[str, Any]:
    return asyncio.run(latest_snapshots(kafka))


def test_837_835_resend_and_payments_reach_the_balances(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    files = _files(tmp_path)
    worker = workers.start("w1")
    steps = [("events", "charges", 0), ("x12", "837", 0), ("x12", "835", 0),
             ("x12", "835-again", 0), ("x12", "835-2", 0), ("payments", "payments", 1)]
    for command, name, code in steps:
        done = _cli(workers, "ingest", command, str(files[name]))
        assert done.returncode == code, (name, done.stdout, done.stderr)
    report = _cli(workers, "ingest", "x12", str(files["835"])).stderr
    assert "1 of 1 transaction set applied, 3 events" in report
    assert "DOE" not in report and "JANE" not in report  # patient names never printed

    def settled() -> bool:
        states = _states(broker.connection)
        return all(states.get(a, {}).get("version") == v for a, v in VERSIONS.items())

    wait_until(settled, 90, "the worker to apply the files", worker.log_tail)
    states = _states(broker.connection)
    for account, balances in EXPECTED.items():
        assert states[account]["balances"] == balances, account
    # The re-sent 835 (twice) applied nothing: versions count applied events exactly.
    assert {a: states[a]["version"] for a in VERSIONS} == VERSIONS
    claim = states["E2E1001"]["claims"]["E2E1001"]
    assert claim["total_charge_cents"] == 80000 and claim["status"] == "adjudicated"
    assert [a["payer_claim_control_number"] for a in claim["adjudications"]] == ["PCN-1"]
    dlq = [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, DLQ))]
    assert [(d["reason_code"], d["context"].get("row")) for d in dlq] == [
        ("row_invalid_amount", 6)]
    assert worker.alive(), worker.log_tail()


def test_watch_moves_files_to_done_or_rejected_with_a_reason(
        broker: Broker, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    good = remit_segments([ClaimSpec("W1", 10000, 8000, cas=[("CO", "45", 2000)])],
                          trn02="W-GOOD")
    bad = remit_segments([ClaimSpec("W2", 10000, 8000, cas=[("CO", "45", 1500)])],
                         trn02="W-BAD")
    (drop / "good.835").write_bytes(envelope(good))
    (drop / "mixed.835").write_bytes(envelope(good, bad))
    (drop / "pay.csv").write_text("type,account,amount,date,reference\n"
                                  "payment,W1,10.00,2026-01-01,R1\n")
    (drop / "incoming.835.part").write_bytes(b"ISA*")
    env = {"RCMFLOW_BROKER": broker.url, "RCMFLOW_DATA_DIR": str(tmp_path / "data"),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "watch", str(drop), "--once"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (drop / "done").iterdir()) == ["good.835", "pay.csv"]
    assert sorted(p.name for p in (drop / "rejected").iterdir()) == [
        "mixed.835", "mixed.835.reason"]
    reason = (drop / "rejected" / "mixed.835.reason").read_text()
    assert "ST 0001 (835, trace W-GOOD): applied (1 events)" in reason
    assert "ST 0002 (835, trace W-BAD): PARKED" in reason
    assert ("x12_claim_unbalanced: claim 1 (CLP01 W2): CLP03 100.00 - CLP04 80.00 = 20.00 but "
            "the CAS amounts add up to 15.00") in reason
    assert (drop / "incoming.835.part").exists()
    events = asyncio.run(read_topic(broker.connection, EVENTS))
    # good.835 and the good set of mixed.835 are the same remit: the same event twice
    # (the worker drops the replay), plus the payment.
    assert sorted(r.key for r in events if r.key) == [b"W1", b"W1", b"W1"]
