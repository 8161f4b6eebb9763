"""`rcmflow audit` on a real broker: a real worker's ledger agrees with its deltas, and a delta
written behind rcmflow's back is named (once, and on rcm.dlq under --follow)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rcmflow.cli import app
from rcmflow.runtime.broker import free_port
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_io import publish, read_topic
from rcmflow.streams.topics import ACCOUNTS, DLQ, POSTINGS
from tests.conftest import Broker, Workers, wait_until
from tests.scrape import scrape
from tests.workload import Observed, Workload

pytestmark = pytest.mark.broker

#: What the forged delta moves, worked out by hand (not with rcmflow's rules): a debit to
#: patient_ar (debit-normal: it grows) and a credit to gross_charges (credit-normal: it
#: grows), so the head is short of the deltas by 1234 cents in each.
FORGED_CENTS = 1234
FORGED_DIFFERENCES = {"gross_charges": -FORGED_CENTS, "patient_ar": -FORGED_CENTS}


def audit(broker: Broker, data_dir: Path) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["audit", "--json"], env={
        "RCMFLOW_BROKER": broker.url, "RCMFLOW_DATA_DIR": str(data_dir)})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout), result.stdout


def a_delta(observed: Observed) -> tuple[str, dict[str, Any], bytes]:
    """An account, its head, and one of its real deltas (the first in id order)."""
    raw = min(next(iter(v)) for v in observed.postings.values())
    doc = json.loads(raw)
    return doc["account"], observed.states[doc["account"]], raw


def forged(account: str, version: int, posting_id: str = "pst_forged") -> bytes:
    """A balanced delta rcmflow never made: a new posting id, a version the head has."""
    return json.dumps({
        "posting_id": posting_id, "account": account, "entity": "E1",
        "effective_date": "2026-01-05", "currency": "USD",
        "lines": [{"gl_account": "1200", "debit_cents": FORGED_CENTS, "credit_cents": 0,
                   "bucket": "patient_ar", "memo": "forged", "entity": "E1"},
                  {"gl_account": "4000", "debit_cents": 0, "credit_cents": FORGED_CENTS,
                   "bucket": "gross_charges", "memo": "forged", "entity": "E1"}],
        "event_id": "forged-1", "event_kind": "charge", "correlation_id": None,
        "account_version": version, "coa_version": "x"}).encode()


def applied(broker: Broker, workers: Workers, accounts: int) -> Observed:
    workload = Workload.build(accounts=accounts, conflicts=2, invalid=2)  # ~20 % replays
    expected = workload.expected()
    workload.publish(broker.connection)
    worker = workers.start("w1")
    wait_until(lambda: Observed.read(broker.connection).states == expected.states, 60,
               "the worker to apply the workload", worker.log_tail)
    return Observed.read(broker.connection)


def test_audit_agrees_on_a_worker_state_and_names_a_forged_delta(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    observed = applied(broker, workers, 40)
    code, report, _ = audit(broker, tmp_path)
    assert code == ExitCode.OK, report
    assert report["accounts"] == len(observed.states) and report["mismatching"] == 0
    assert report["deltas"] == len(observed.postings)

    account, head, raw = a_delta(observed)
    newer = forged(account, head["version"] + 1, "pst_not_yet")  # its head is not written yet
    asyncio.run(publish(broker.connection, [(POSTINGS, account.encode(), raw),  # a re-send
                                            (POSTINGS, account.encode(), newer)]))
    code, report, _ = audit(broker, tmp_path)
    assert code == ExitCode.OK, report  # a re-send counts once; a newer delta is in flight
    assert (report["duplicates"], report["in_flight"]) == (1, 1)

    asyncio.run(publish(broker.connection,
                        [(POSTINGS, account.encode(), forged(account, head["version"]))]))
    code, report, _ = audit(broker, tmp_path)
    assert code == ExitCode.ATTENTION
    assert report["mismatching"] == 1
    assert report["mismatches"] == [{"account": account, "version": head["version"],
                                     "differences_cents": FORGED_DIFFERENCES, "conflicts": 0}]
    text = CliRunner().invoke(app, ["audit"], env={
        "RCMFLOW_BROKER": broker.url, "RCMFLOW_DATA_DIR": str(tmp_path), "COLUMNS": "200"})
    assert text.exit_code == ExitCode.ATTENTION
    assert account in text.stdout and "-1234" in text.stdout


def test_a_posting_id_sent_with_other_lines_is_a_mismatch(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    observed = applied(broker, workers, 5)
    account, head, raw = a_delta(observed)
    doc = json.loads(raw)
    other = forged(account, doc["account_version"], doc["posting_id"])
    asyncio.run(publish(broker.connection, [(POSTINGS, account.encode(), other)]))
    code, report, _ = audit(broker, tmp_path)
    assert code == ExitCode.ATTENTION
    assert report["mismatches"] == [{"account": account, "version": head["version"],
                                     "differences_cents": {}, "conflicts": 1}]


def _head(broker: Broker, account: str) -> bytes:
    """The account's newest head record on rcm.accounts, as the worker wrote it."""
    records = asyncio.run(read_topic(broker.connection, ACCOUNTS))
    value = [r.value for r in records if r.key == account.encode()][-1]
    assert value is not None
    return value


def _ledger_records(broker: Broker) -> list[dict[str, Any]]:
    records = asyncio.run(read_topic(broker.connection, DLQ))
    docs = [json.loads(r.value) for r in records if r.value]
    return [d for d in docs if d["reason_code"] == "ledger_mismatch"]


def test_follow_counts_no_mismatch_then_one_for_a_forged_delta(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "audit.log"
    with open(log, "wb") as handle:
        follower = subprocess.Popen(
            [sys.executable, "-m", "rcmflow.cli", "audit", "--follow", "--metrics-port",
             str(port)], env=workers.env(), stdout=handle, stderr=subprocess.STDOUT)
    try:
        def tail() -> str:
            return log.read_text(errors="replace")[-3000:]

        observed = applied(broker, workers, 30)  # the follower reads as the worker writes
        wait_until(lambda: scrape(port).get("rcmflow_audit_accounts_checked_total", 0)
                   >= len(observed.states), 30, "the follower to check every account", tail)
        metrics = scrape(port)
        assert metrics["rcmflow_audit_mismatches_total"] == 0, tail()
        assert _ledger_records(broker) == []

        # A delta read before its head (the worker writes the delta first): held, then
        # counted when the head arrives; never a mismatch.
        first, second = sorted(observed.states)[:2]
        head_raw = _head(broker, first)
        head_doc = json.loads(head_raw)
        early = forged(first, head_doc["version"] + 1, "pst_early")
        asyncio.run(publish(broker.connection, [(POSTINGS, first.encode(), early)]))
        wait_until(lambda: scrape(port).get("rcmflow_audit_deltas_in_flight") == 1, 15,
                   "the follower to hold the early delta", tail)
        head_doc["version"] += 1
        for bucket in FORGED_DIFFERENCES:
            head_doc["balances"][bucket] += FORGED_CENTS
        checked = scrape(port)["rcmflow_audit_accounts_checked_total"]
        asyncio.run(publish(broker.connection,
                            [(ACCOUNTS, first.encode(), json.dumps(head_doc).encode())]))
        wait_until(lambda: scrape(port)["rcmflow_audit_accounts_checked_total"] > checked,
                   15, "the follower to check the new head", tail)
        metrics = scrape(port)
        assert metrics["rcmflow_audit_deltas_in_flight"] == 0, tail()
        assert metrics["rcmflow_audit_mismatches_total"] == 0, tail()

        account, head = second, observed.states[second]
        tampered = forged(account, head["version"])
        # Sent twice (a re-sending producer): the same delta, one mismatch, one record.
        asyncio.run(publish(broker.connection, [(POSTINGS, account.encode(), tampered)] * 2))
        wait_until(lambda: scrape(port).get("rcmflow_audit_mismatches_total") == 1, 30,
                   "the follower to count the mismatch", tail)
        wait_until(lambda: len(_ledger_records(broker)) == 1, 15, "the DLQ record", tail)
        (record,) = _ledger_records(broker)
        assert record["stage"] == "posting" and record["origin"]["key"] == account
        assert record["context"]["differences_cents"] == FORGED_DIFFERENCES
        assert account in record["reason"]
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(30) == ExitCode.OK, tail()
        assert scrape(port) == {}  # stopped: nothing answers
    finally:
        if follower.poll() is None:
            follower.kill()
