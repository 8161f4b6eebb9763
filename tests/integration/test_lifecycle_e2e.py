"""One account's lifecycle from real-format inputs, through the real connectors and worker.

The demo visit A3001: an ADT A04 registers it and its DFT posts the charges (`rcmflow ingest
hl7`), an eligibility result arrives as a workflow event (`rcmflow ingest events`), the 837
bills it, the payer's first 835 denies it (CO-50, held for appeal), an appeal is started, a
second 835 pays it (CO-45 and PR-1), a patient statement goes out and the patient pays the
rest from a lockbox file (`rcmflow ingest payments`), which leaves nothing owed: the
zero-balance rule closes the account. `rcmflow accounts show` and the worker's metrics give
the documented states and durations (docs/lifecycle.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rcmflow.cli.demo_sources import DEMO_ACCOUNT, HL7_FILE, X12_FILES
from rcmflow.runtime.broker import free_port
from tests.conftest import Broker, Workers, wait_until
from tests.scrape import scrape

pytestmark = pytest.mark.broker

ADT_A04 = (
    "MSH|^~\\&|DEMOEHR|DEMOHOSP|RCMFLOW|DEMOHOSP|20260228090000+0000||ADT^A04^ADT_A01|ADT3001"
    "|P|2.5\r"
    "EVN|A04|20260228090000+0000\r"
    "PID|1||MRN3001^^^DEMOHOSP^MR||DEMO^PATIENT||19800101|F||||||||||A3001\r"
    "PV1|1|O|CLINIC||||||||||||||||E3001\r")
DAY = 86_400


def remits(directory: Path) -> tuple[Path, Path]:
    """The demo 835 made into a denial (03-05) and the payment after the appeal (03-20)."""
    remit = X12_FILES[1].read_text()
    denial = (remit.replace("BPR*I*90.00*C*ACH", "BPR*H*0.00*C*NON")
              .replace("20260302", "20260305").replace("DEMOEFT3001", "DEMODENY3001")
              .replace("000000102", "000000103")
              .replace("CLP*A3001*1*150.00*90.00**CI*DEMOPCN3001~\nCAS*CO*45*40.00~\n"
                       "CAS*PR*1*20.00~", "CLP*A3001*4*150.00*0.00**CI*DEMOPCN3000~\n"
                       "CAS*CO*50*150.00~").replace("SE*12*0001", "SE*11*0001"))
    assert "CLP*A3001*4*" in denial
    paid = (remit.replace("20260302", "20260320").replace("DEMOEFT3001", "DEMOEFT3002")
            .replace("000000102", "000000104"))
    (directory / "denial.835").write_text(denial)
    (directory / "paid.835").write_text(paid)
    return directory / "denial.835", directory / "paid.835"


def step(name: str, when: str, **fields: Any) -> str:
    return json.dumps({"schema_version": 1, "kind": "workflow_step", "account": DEMO_ACCOUNT,
                       "event_id": f"wf:{name}:{DEMO_ACCOUNT}", "occurred_at": when,
                       "source": "workflow", "step": name, **fields})


def test_hl7_837_835_and_payments_give_the_documented_states_and_durations(
    broker: Broker, workers: Workers, tmp_path: Path
) -> None:
    env = workers.env()

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", *args],
                              env={**env, "COLUMNS": "250"},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def events(name: str, *lines: str) -> str:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    adt = tmp_path / "adt_a04.hl7"
    adt.write_text(ADT_A04)
    denial, paid = remits(tmp_path)
    lockbox = tmp_path / "lockbox.csv"
    lockbox.write_text("type,account,amount,date,reference\n"
                       f"payment,{DEMO_ACCOUNT},20.00,2026-03-25,LBX-3001-1\n")
    port = free_port()
    worker = workers.start("w1", RCMFLOW_WORKER_METRICS_PORT=str(port))
    # One partition (the account's), so the order they are sent in is the order applied.
    cli("ingest", "hl7", str(adt), str(HL7_FILE))
    cli("ingest", "events", events("eligibility", step(
        "eligibility_verified", "2026-02-28T10:00:00+00:00", result="active")))
    cli("ingest", "x12", str(X12_FILES[0]), str(denial))
    cli("ingest", "events", events("appeal", step(
        "appeal_initiated", "2026-03-07T00:00:00+00:00", claim_id="A3001")))
    cli("ingest", "x12", str(paid))
    cli("ingest", "events", events("statement", step(
        "patient_statement_issued", "2026-03-21T00:00:00+00:00")))
    cli("ingest", "payments", str(lockbox))

    def shown() -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "accounts", "show",
                               DEMO_ACCOUNT, "--json"], env=env, capture_output=True,
                              text=True, timeout=60)
        return json.loads(done.stdout) if done.returncode == 0 else {}

    # ADT: status + registration; DFT: 2 charges; eligibility; 837; 835 denial; appeal;
    # 835 payment; statement; lockbox payment.
    wait_until(lambda: shown().get("version") == 11, 90, "all eleven events", worker.log_tail)
    doc = shown()
    assert doc["balances"]["balance"] == 0 and doc["balances"]["patient_paid"] == 2000
    got = [(t["from_state"], t["state"], t["seconds_in_from"], t["expected"], t["event_kind"])
           for t in doc["transitions"]]
    assert got == [
        (None, "registration_complete", None, True, "workflow_step"),  # ADT A04, 02-28 09:00
        ("registration_complete", "eligibility_verified", 3_600, True, "workflow_step"),
        ("eligibility_verified", "claim_submitted", DAY + 2 * 3_600, True, "claim_submitted"),
        ("claim_submitted", "denial_received", 3 * DAY + 12 * 3_600, True, "claim_adjudicated"),
        ("denial_received", "appeal_initiated", 2 * DAY, True, "workflow_step"),
        ("appeal_initiated", "payment_posted", 13 * DAY, True, "claim_adjudicated"),
        ("payment_posted", "patient_statement_issued", DAY, True, "workflow_step"),
        ("patient_statement_issued", "payment_posted", 4 * DAY, True, "patient_payment"),
        ("payment_posted", "account_closed", 0, True, "patient_payment"),
    ]
    assert doc["transitions"][-1]["detail"] == "zero_balance"
    assert doc["transitions"][1]["detail"] == "result active"
    assert doc["lifecycle"]["state"] == "account_closed"
    assert doc["lifecycle"]["since"].startswith("2026-03-25")
    table = cli("accounts", "show", DEMO_ACCOUNT)
    assert "lifecycle: account_closed since 2026-03-25" in table
    assert "lifecycle history" in table and "appeal_initiated" in table

    # The worker's metrics: time in each state and the watched spans, in days.
    def sample(name: str, **labels: str) -> float:
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return scrape(port).get(f"{name}{{{text}}}", -1.0)

    span = "rcmflow_worker_lifecycle_span_days_sum"
    wait_until(lambda: sample(span, entity="01", span="claim_to_payment") >= 0, 30,
               "the lifecycle metrics", worker.log_tail)
    assert sample(span, entity="01", span="claim_to_payment") == pytest.approx(18.5)
    assert sample(span, entity="01", span="denial_to_appeal") == 2.0
    assert sample(span, entity="01", span="claim_to_denial") == 3.5
    assert sample("rcmflow_worker_lifecycle_time_in_state_days_sum", entity="01",
                  from_state="appeal_initiated", to_state="payment_posted") == 13.0
    assert sample("rcmflow_worker_lifecycle_transitions_total", entity="01",
                  from_state="payment_posted", to_state="account_closed", expected="true") == 1
    assert worker.alive(), worker.log_tail()
