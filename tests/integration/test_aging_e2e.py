"""`rcmflow aging` against a real worker: a mixed workload goes in through `rcmflow ingest
events`, and the report's aged AR of every account equals what `rcmflow accounts show` gives
as its insurance_ar and patient_ar, to the cent; --csv and the table say the same totals."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rcmflow.ops.accounts import latest_heads
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Processor
from tests.conftest import Broker, Workers, wait_until
from tests.factories import adjudication, event_doc, messages
from tests.workload import account_stream

pytestmark = pytest.mark.broker


def mixed_docs() -> list[dict[str, Any]]:
    """Charges, claims, remits with CO and PR, patient payments (some over), a self-pay
    visit, a write-off, a statement, a charge after the claim (unbilled)."""
    rng = random.Random(18)
    docs = [d for n in range(6) for d in account_stream(rng, f"G{n:03d}")]
    docs += [
        event_doc("charge_posted", "G900", event_id="G900-CH", amount_cents=12_345,
                  self_pay=True, dimensions={"entity": "02", "revenue_code": "0450"},
                  occurred_at="2026-09-01T10:00:00-04:00"),
        event_doc("workflow_step", "G900", event_id="G900-ST", step="patient_statement_issued",
                  occurred_at="2026-09-05T10:00:00-04:00"),
        event_doc("write_off", "G900", event_id="G900-WO", amount_cents=345, reason="charity",
                  from_ar="patient", occurred_at="2026-09-20T10:00:00-04:00"),
        event_doc("charge_posted", "G901", event_id="G901-CH", amount_cents=20_000,
                  dimensions={"entity": "01", "revenue_code": "0300"},
                  occurred_at="2026-09-28T10:00:00-04:00"),
        event_doc("claim_submitted", "G901", event_id="G901-SUB", claim_id="G901-C",
                  total_charge_cents=20_000, occurred_at="2026-10-01T10:00:00-04:00",
                  dimensions={"entity": "01", "payer": "BCBS", "payer_class": "COMMERCIAL"}),
        adjudication(8_000, 5_000, [("CO", "45", 3_000)], "G901", claim_id="G901-C",
                     event_id="G901-ADJ", occurred_at="2026-10-20T10:00:00-04:00"),
        event_doc("charge_posted", "G000", event_id="G000-CH2", amount_cents=4_000,
                  dimensions={"entity": "01", "revenue_code": "0300"},
                  occurred_at="2026-12-01T10:00:00-05:00"),
    ]
    return docs


def test_aging_totals_equal_each_accounts_buckets(broker: Broker, workers: Workers,
                                                  tmp_path: Path) -> None:
    docs = mixed_docs()
    tables = MemoryTables()
    tables.write(Processor(load_chart()).process(messages(docs), tables))
    expected = {a: s["version"] for a, s in tables.views().items()}
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    env = {**workers.env(), "COLUMNS": "200"}

    def cli(*args: str, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stdout + done.stderr
        return done.stdout

    worker = workers.start("w1")
    cli("ingest", "events", str(path))

    def caught_up() -> bool:
        heads = asyncio.run(latest_heads(broker.connection))
        return {a: h["version"] for a, h in heads.items()} == expected

    wait_until(caught_up, 120, "the worker to apply the workload", worker.log_tail)
    report = json.loads(cli("aging", "--json", "--by", "payer"))
    for account in expected:
        balances = json.loads(cli("accounts", "show", account, "--json"))["balances"]
        aged = report["accounts"].get(account, {"insurance_ar": 0, "patient_ar": 0})
        assert aged == {"insurance_ar": balances["insurance_ar"],
                        "patient_ar": balances["patient_ar"]}, account
    assert report["differences"] == {}
    totals = report["totals"]
    assert totals["insurance_ar"] > 0 and totals["patient_ar"] > 0
    assert any(g["payer"] == "(unbilled)" for g in report["groups"])  # G000's late charge
    metrics = tmp_path / "aging.prom"
    rows = list(csv.reader(io.StringIO(cli("aging", "--csv", "--by", "entity",
                                           "--metrics-file", str(metrics)))))
    assert rows[-1][1] == "total" and rows[-1][-1] == f"{totals['total'] / 100:.2f}"
    aged = [s.value for f in text_string_to_metric_families(metrics.read_text())
            for s in f.samples if s.name == "rcmflow_ar_aging_cents"]
    assert sum(aged) == totals["total"]
    table = cli("aging")
    assert "AR aging as of" in table and "180+" in table
    items = json.loads(cli("aging", "--json", "--detail"))["items"]
    by_account = {(i["account"], i["kind"]): i for i in items}
    # Open on its claim, aged from the claim's submission; the statement starts G900's.
    assert by_account[("G901", "insurance")] | {"days": 0, "bucket": ""} == {
        "account": "G901", "kind": "insurance", "entity": "01", "claim_id": "G901-C",
        "payer": "BCBS", "payer_class": "COMMERCIAL", "statement": None,
        "start": "2026-10-01", "days": 0, "bucket": "", "cents": 12_000}
    assert by_account[("G900", "patient")]["statement"] == "2026-09-05"
    assert by_account[("G900", "patient")]["cents"] == 12_000
    # G901's claim moves from 0-30 to 31-60 as the as-of day passes its 30th day.
    for as_of, bucket in (("2026-10-31", "0-30"), ("2026-11-01", "31-60")):
        aged = json.loads(cli("aging", "--json", "--detail", "--as-of", as_of))["items"]
        [g901] = [i for i in aged if i["account"] == "G901"]
        assert (g901["bucket"], g901["cents"]) == (bucket, 12_000), as_of
    # Before any event was dated, nothing was owed.
    early = json.loads(cli("aging", "--json", "--as-of", "2000-01-01"))
    assert early["totals"]["total"] == 0 and early["accounts"] == {}
    cli("aging", "--by", "nobody", code=2)
