"""Contract variance on a real broker with a real worker, as finance sees it.

An 835 of two claims from payer 1999999999 (its TRN03) goes in through `rcmflow ingest x12`;
the worker runs with a fee schedule (RCMFLOW_FEE_SCHEDULE) that prices 99213 at 95.00.
Claim V1 was allowed 85.00 (paid 80.00 + 5.00 patient responsibility): underpaid by 10.00.
Claim V2 was allowed 95.00, exactly the contract, and has a second line (80053) the schedule
does not price. `rcmflow variance list --json` shows exactly that variance and one unpriced
line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PARTITIONS, Broker, Workers, wait_until
from tests.connectors.inbound.x12.x12_build import ClaimSpec, LineSpec, envelope, remit_segments

pytestmark = pytest.mark.broker

SCHEDULE = """
version: "e2e-1"
schedules:
  - name: test-payer
    payer: "1999999999"
    effective_from: 2026-01-01
    procedures:
      "99213": {amount_cents: 9500}
"""


def rcmflow(broker: Broker, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(RCMFLOW_BROKER=broker.url, RCMFLOW_DATA_DIR=str(data_dir),
               RCMFLOW_PARTITIONS=str(PARTITIONS), COLUMNS="200", TERM="dumb")
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=180)


def test_a_known_underpayment_is_exactly_the_variance_listed(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    fees = tmp_path / "fees.yaml"
    fees.write_text(SCHEDULE)
    worker = workers.start("w1", RCMFLOW_FEE_SCHEDULE=str(fees))
    remit = tmp_path / "era.835"
    remit.write_bytes(envelope(remit_segments([
        ClaimSpec("V1", 15_000, 8000, pcn="PCNV1", lines=[
            LineSpec("99213", 15_000, 8000, [("CO", "45", 6500), ("PR", "1", 500)])]),
        ClaimSpec("V2", 20_000, 13_000, pcn="PCNV2", lines=[
            LineSpec("99213", 15_000, 9000, [("CO", "45", 5500), ("PR", "1", 500)]),
            LineSpec("80053", 5000, 4000, [("CO", "45", 1000)])]),
    ])))
    done = rcmflow(broker, workers.data_dir, "ingest", "x12", str(remit))
    assert done.returncode == 0, done.stderr + done.stdout

    listed: dict[str, Any] = {}

    def both_claims_compared() -> bool:
        shown = rcmflow(broker, workers.data_dir, "variance", "list", "--json")
        assert shown.returncode == 0, shown.stderr + shown.stdout
        listed.update(json.loads(shown.stdout))
        return len(listed["items"]) >= 2

    wait_until(both_claims_compared, 120, "the variance and the unpriced line",
               on_timeout=worker.log_tail)
    underpaid, unpriced = sorted(listed["items"], key=lambda r: r["kind"] != "underpaid")
    assert len(listed["items"]) == 2
    assert {k: underpaid[k] for k in ("kind", "payer", "account", "claim_id", "line_id",
                                      "procedure_code", "expected_cents", "allowed_cents",
                                      "paid_cents", "difference_cents", "schedule_version")} == {
        "kind": "underpaid", "payer": "1999999999", "account": "V1", "claim_id": "V1",
        "line_id": "1", "procedure_code": "99213", "expected_cents": 9500,
        "allowed_cents": 8500, "paid_cents": 8000, "difference_cents": -1000,
        "schedule_version": "e2e-1"}
    assert (unpriced["kind"], unpriced["account"], unpriced["unpriced_lines"]) == (
        "unpriced", "V2", 1)
    assert listed["totals"] == [{
        "payer": "1999999999", "period": "2026-03", "underpaid_count": 1,
        "underpaid_cents": 1000, "overpaid_count": 0, "overpaid_cents": 0,
        "unpriced_lines": 1}]
    table = rcmflow(broker, workers.data_dir, "variance", "list")
    assert table.returncode == 0 and "totals per payer and period" in table.stdout
