"""One account through every inbound path, on the real broker with a real worker.

An HL7 DFT^P03 to the `rcmflow mllp` listener (two charges), the visit's 837P claim and the
payer's 835 through `rcmflow ingest x12`, and the patient's payment through `rcmflow ingest
payments`: the account's snapshot ends exact to the cent. Everything sent a second time (the
interface engine re-sends, the clearinghouse re-drops the files) changes nothing, and
`rcmflow reconcile` finds what the connectors accepted on rcm.events to the cent (exit 0).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rcmflow.cli.demo_sources import DEMO_ACCOUNT, HL7_FILE, X12_FILES, send_mllp
from rcmflow.ops.accounts import latest_snapshots
from rcmflow.runtime.broker import free_port
from tests.conftest import Broker, Workers, wait_until

pytestmark = pytest.mark.broker


def snapshot(broker: Broker) -> dict[str, Any]:
    return asyncio.run(latest_snapshots(broker.connection, DEMO_ACCOUNT)).get(DEMO_ACCOUNT, {})


def test_hl7_835_and_a_payment_for_one_account_end_exact(
    broker: Broker, workers: Workers, tmp_path: Path
) -> None:
    env = workers.env()
    port = free_port()
    with open(tmp_path / "mllp.log", "wb") as log:
        listener = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "mllp", "--port",
                                     str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    payments = tmp_path / "lockbox.csv"
    payments.write_text("type,account,amount,date,reference\n"
                        f"payment,{DEMO_ACCOUNT},20.00,2026-03-10,LBX-3001-1\n")

    def ingest(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "ingest", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def send_everything() -> None:
        assert send_mllp("127.0.0.1", port, HL7_FILE.read_bytes()) == "AA"
        ingest("x12", *map(str, X12_FILES))
        ingest("payments", str(payments))

    try:
        worker = workers.start("w1")
        send_everything()
        wait_until(lambda: snapshot(broker).get("version") == 5, 90,
                   "the account to take all five events", worker.log_tail)
        first = snapshot(broker)
        b = first["balances"]
        # Charges 150.00; the payer paid 90.00, CO-45 wrote off 40.00, PR-1 moved 20.00 to the
        # patient, who paid it: nothing is owed, and every bucket says where the money went.
        assert (b["gross_charges"], b["payer_paid"], b["contractual_adjustments"]) == (
            15000, 9000, 4000)
        assert (b["patient_responsibility"], b["patient_paid"]) == (2000, 2000)
        assert (b["insurance_ar"], b["patient_ar"], b["balance"]) == (0, 0, 0)

        send_everything()
        # A new payment after the re-sends, on the same account (so the same partition, read
        # after them): once it shows, the worker has read every re-send.
        later = tmp_path / "later.csv"
        later.write_text("type,account,amount,date,reference\n"
                         f"payment,{DEMO_ACCOUNT},5.00,2026-03-11,LBX-3001-2\n")
        ingest("payments", str(later))
        wait_until(lambda: snapshot(broker)["balances"]["patient_paid"] == 2500, 60,
                   "the later payment", worker.log_tail)
        after = snapshot(broker)
        assert after["version"] == 6  # the re-sends applied nothing, the new payment did
        for bucket in ("gross_charges", "payer_paid", "contractual_adjustments",
                       "patient_responsibility", "insurance_ar"):
            assert after["balances"][bucket] == b[bucket], bucket
        assert worker.alive(), worker.log_tail()
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "reconcile", "--json"],
                              env=env, capture_output=True, text=True, timeout=120)
        report = json.loads(done.stdout)
        assert done.returncode == 0, report["findings"][:5]
        # What the DFT, the 837, the 835 and the two lockbox rows said, to the cent.
        assert {m: (a["source_cents"], a["events_cents"])
                for m, a in report["source_totals"].items()} == {
            "charges": (15000, 15000), "billed": (15000, 15000), "payer_paid": (9000, 9000),
            "adjusted": (4000, 4000), "patient_responsibility": (2000, 2000),
            "payments": (2500, 2500)}
        assert report["source_account_days_differing"] == {}
    finally:
        listener.terminate()
        listener.wait(30)
