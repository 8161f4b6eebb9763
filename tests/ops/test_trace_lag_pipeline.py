"""`rcmflow trace` and `rcmflow lag` on a real pipeline: the demo visit (an HL7 DFT with two
charges, its 837P and the payer's 835) through `rcmflow ingest`, a worker process and the csv
ERP connector. One stack for the whole module's story (the CI budget): lag before the worker
and after it caught up, then the visit traced by MSH-10, TRN02, event id and posting id."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from rcmflow.cli.demo_sources import DEMO_ACCOUNT, HL7_FILE, X12_FILES
from rcmflow.cli.trace_view import render_lag, render_trace
from rcmflow.ops.lag import lag_report
from rcmflow.ops.trace import Trace, trace
from tests.conftest import Broker, Workers, wait_until

pytestmark = pytest.mark.broker

MSH_10 = "DEMO3001"
REFUSED_MSH_10 = "DEMO3001-ORU"
TRN02 = "DEMOEFT3001"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=180)


def _trace(broker: Broker, query: str, *, payloads: bool = False) -> Trace:
    return asyncio.run(trace(broker.connection, query, app_id="rcmflow", payloads=payloads))


def _in_order(found: Trace) -> None:
    """Source records, events, postings, ERP outcomes; by time within each."""
    stages = [s.stage for s in found.steps]
    assert stages == sorted(stages, key=["raw", "event", "posting", "erp"].index)
    for stage in ("raw", "event", "posting"):
        times = [s.timestamp_ms for s in found.steps if s.stage == stage]
        assert times == sorted(times)
    times = [s.timestamp_ms for s in found.steps if s.timestamp_ms is not None]
    assert found.latency_ms == max(times) - min(
        s.timestamp_ms for s in found.steps if s.stage == "raw" and s.timestamp_ms)


def test_the_demo_visit_is_traced_from_its_sources_to_the_erp_and_lag_follows_the_worker(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    env = workers.env(RCMFLOW_ERP_CSV_DIR=str(tmp_path / "journal"))
    # The visit, and a message of a type rcmflow does not take, refused into rcm.dlq.
    refused = tmp_path / "oru.hl7"
    refused.write_bytes(HL7_FILE.read_bytes().replace(MSH_10.encode(), REFUSED_MSH_10.encode())
                        .replace(b"DFT^P03^DFT_P03", b"ORU^R01^ORU_R01"))
    done = _cli(env, "ingest", "hl7", str(HL7_FILE), str(refused))
    assert done.returncode == 1, done.stdout + done.stderr
    done = _cli(env, "ingest", "x12", *map(str, X12_FILES))
    assert done.returncode == 0, done.stdout + done.stderr

    # Before any worker ran: the workers' group has committed nothing, all 4 events wait.
    done = _cli(env, "lag", "--json")
    assert done.returncode == 0, done.stderr
    before = {g["group"]: g for g in json.loads(done.stdout)["groups"]}["rcmflow"]
    assert (before["role"], before["committed_any"], before["total_lag"]) == ("worker", False, 4)

    worker = workers.start("w1")

    def caught_up() -> bool:
        report = asyncio.run(lag_report(broker.connection, app_id="rcmflow"))
        group = report.group("rcmflow")
        return group is not None and group.committed_any and group.total_lag == 0

    wait_until(caught_up, 90, "the worker group's lag to reach 0", worker.log_tail)
    erp = _cli(env, "erp", "csv", "--idle-exit-s", "1")
    assert erp.returncode == 0, erp.stdout + erp.stderr
    report = asyncio.run(lag_report(broker.connection, app_id="rcmflow"))
    erp_group = report.group("rcmflow-erp-csv")
    assert erp_group is not None and erp_group.role == "erp csv" and erp_group.total_lag == 0

    # By MSH-10, through the command: the message, its two charges, their two deltas and the
    # csv connector's outcome of each, in time order, with the latency; no PHI without
    # --payloads.
    done = _cli(env, "trace", MSH_10, "--json", "--erp", "csv")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    stages = [s["stage"] for s in doc["steps"]]
    assert stages == ["raw", "event", "event", "posting", "posting", "erp", "erp"], stages
    assert doc["steps"][0]["topic"] == "rcm.raw.hl7" and doc["steps"][0]["msh_10"] == MSH_10
    assert {s["amount_cents"] for s in doc["steps"] if s["stage"] == "event"} == {10000, 5000}
    erp_steps = [s for s in doc["steps"] if s["stage"] == "erp"]
    # The connector's own outcome records (rcm.erp.outcomes), with their time: the unit's
    # latency runs to the ERP.
    assert {(s["outcome"], s["in_erp"], s["topic"]) for s in erp_steps} == {
        ("posted", True, "rcm.erp.outcomes")}
    assert all(s["erp_ref"].startswith("journal-") for s in erp_steps)  # --erp csv: its file
    assert doc["latency_to"] == "erp" and doc["latency_ms"] >= 0
    assert "PATIENT" not in done.stdout and "PID|" not in done.stdout

    by_msh = _trace(broker, MSH_10, payloads=True)
    _in_order(by_msh)
    assert "PID|" in by_msh.steps[0].payload  # --payloads: the message as received
    shown = Console(record=True, width=160, file=io.StringIO())
    render_trace(_trace(broker, MSH_10), shown)
    text = shown.export_text()
    assert "end to end:" in text and "ERP: 2 posted" in text and "PATIENT" not in text
    if os.environ.get("SHOW_TRACE_EXAMPLE"):  # the docs' example
        print(text)
        render_lag(asyncio.run(lag_report(broker.connection, app_id="rcmflow")), shown)
        print(shown.export_text())

    # By an event id: that charge alone, back to its message and on to the ERP.
    charge = next(s for s in by_msh.steps if s.stage == "event")
    event_id = charge.summary["event_id"]
    by_event = _trace(broker, event_id)
    assert [s.stage for s in by_event.steps] == ["raw", "event", "posting", "erp"]
    posting_id = by_event.steps[2].summary["posting_id"]
    assert by_event.steps[2].summary["event_id"] == event_id
    # By its posting id: the same unit.
    by_posting = _trace(broker, posting_id)
    assert [(s.stage, s.offset) for s in by_posting.steps] == [
        (s.stage, s.offset) for s in by_event.steps]
    _in_order(by_posting)

    # By TRN02: the 835's set and its claim's adjudication, posted to the ERP.
    by_trn = _trace(broker, TRN02)
    assert [s.stage for s in by_trn.steps] == ["raw", "event", "posting", "erp"]
    assert by_trn.steps[1].summary["account"] == DEMO_ACCOUNT
    assert by_trn.steps[1].summary["kind"] == "claim_adjudicated"

    # The refused message: its raw record and its DLQ record, with the reason.
    by_refused = _trace(broker, REFUSED_MSH_10)
    assert [s.stage for s in by_refused.steps] == ["raw", "dlq"]
    assert by_refused.steps[0].summary["status"] == "refused"
    assert by_refused.steps[1].summary["reason_code"] == "unsupported_message_type"

    # --since bounds the scan by time: from an hour ahead there is nothing to read at all.
    later = asyncio.run(trace(broker.connection, MSH_10, app_id="rcmflow",
                              since=datetime.now(UTC) + timedelta(hours=1)))
    assert not later.found and sum(later.read.values()) == 0

    unknown = _cli(env, "trace", "NO-SUCH-ID")
    assert unknown.returncode == 1 and "nothing names 'NO-SUCH-ID'" in unknown.stderr
