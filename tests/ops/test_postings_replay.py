"""A delta the ERP refused (rcm.postings.dlq) is replayed to rcm.postings once the ERP side is
fixed: the real connector posts it, and a second replay posts nothing more (the ERP's guard
by posting id, here the CSV journal's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rcmflow.connectors.erp.csv_journal import CsvJournal
from rcmflow.streams.chart import load_chart
from tests.conftest import PARTITIONS, Broker
from tests.connectors.erp.feed import (
    dlq_records,
    publish_deltas,
    real_deltas,
    run_in_process,
    unmapped_copy,
)
from tests.connectors.erp.test_csv import rows

pytestmark = pytest.mark.broker

SHIPPED = Path(__file__).resolve().parents[2] / "streams" / "chart_of_accounts.yaml"
GROUP = "rcmflow-erp-csv"  # the connector's group for app id rcmflow, adapter csv


def rcmflow(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(RCMFLOW_BROKER=broker.url, COLUMNS="200", RCMFLOW_PARTITIONS=str(PARTITIONS))
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def replay(broker: Broker, dlq_id: str) -> dict[str, Any]:
    done = rcmflow(broker, "dlq", "replay", dlq_id, "--wait", "0", "--json")
    assert done.returncode == 1, done.stderr  # sent; the connector reads it below
    [state] = json.loads(done.stdout)["replayed"]
    return dict(state["history"][-1]["replay"])


def test_a_refused_delta_is_replayed_to_the_erp_once(broker: Broker, tmp_path: Path) -> None:
    good = real_deltas(1)
    key, refused = unmapped_copy(good[0][1])
    publish_deltas(broker, [*good, (key, refused)])
    folder = tmp_path / "journal"
    folder.mkdir()
    # The ERP's chart lacks GL 9999-NOPE: the delta is parked in rcm.postings.dlq.
    run_in_process(CsvJournal(folder, load_chart()), broker, group=GROUP)
    [parked] = dlq_records(broker)
    assert parked["reason_code"] == "unmapped_gl_account"
    posting_id, lines = json.loads(refused)["posting_id"], len(json.loads(refused)["lines"])
    assert posting_id not in {r["posting_id"] for r in rows(folder)}

    # The chart fixed (the account added to the ERP's chart), the delta replayed.
    fixed = tmp_path / "chart.yaml"
    fixed.write_text(SHIPPED.read_text().replace('interest_income: "4800"',
                                                 'interest_income: "9999-NOPE"'))
    chart = load_chart(fixed)
    sent = replay(broker, parked["dlq_id"])
    assert (sent["topic"], sent["outcome"]) == ("rcm.postings", "pending")
    run_in_process(CsvJournal(folder, chart), broker, group=GROUP)
    item = json.loads(rcmflow(broker, "dlq", "show", parked["dlq_id"]).stdout)
    assert item["queue"]["replay"]["outcome"] == "applied"
    assert [r["posting_id"] for r in rows(folder)].count(posting_id) == lines

    # Replayed again: the journal's guard by posting id keeps one entry.
    replay(broker, parked["dlq_id"])
    run_in_process(CsvJournal(folder, chart), broker, group=GROUP)
    assert [r["posting_id"] for r in rows(folder)].count(posting_id) == lines
    assert len(dlq_records(broker)) == 1
