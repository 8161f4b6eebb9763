"""rcm.postings -> `rcmflow erp tryton` -> a real Tryton: e2e from events, kill -9, outage, DLQ.

Every test ends by checking the ledger in Tryton: exactly one posted, balanced move per
posting id, with the delta's lines to the cent.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from rcmflow.runtime.broker import free_port
from rcmflow.runtime.faults import Faults
from rcmflow.streams.postings import PostingDelta, posting_id
from tests.conftest import Broker, Workers, wait_until
from tests.connectors.erp.conftest import adapter_for, tryton_env
from tests.connectors.erp.feed import (
    already_there_in_logs,
    dlq_records,
    feed_slowly,
    publish_deltas,
    real_deltas,
    run_in_process,
    start_connector,
    status,
    unmapped_copy,
)
from tests.connectors.erp.test_tryton import assert_moves_equal, moves, parse
from tests.connectors.erp.tryton_server import TrytonServer
from tests.scrape import scrape
from tests.workload import Observed, Workload

pytestmark = pytest.mark.broker


def _count(server: TrytonServer) -> int:
    return len(moves(server.rpc()))


@pytest.mark.slow
def test_events_to_worker_to_tryton(broker: Broker, workers: Workers,
                                    tryton: TrytonServer, tmp_path: Path) -> None:
    """Real workers make the deltas (with replays, conflicts, invalid events); every one
    becomes one move, and the AR accounts in Tryton equal the account tables."""
    workload = Workload.build(accounts=40, seed=21)
    expected = workload.expected()
    workload.publish(broker.connection)
    worker = workers.start("w1")
    connector = start_connector("tryton", broker, tmp_path / "erp", 0, **tryton_env(tryton))
    try:
        wait_until(lambda: _count(tryton) >= len(expected.postings) or not connector.alive(),
                   120, f"{len(expected.postings)} moves", connector.log_tail)
        assert connector.alive(), connector.log_tail()
    finally:
        connector.stop()
        worker.stop()
    rpc = tryton.rpc()
    assert_moves_equal(rpc, [PostingDelta.model_validate_json(v)
                             for v in expected.postings.values()])
    observed = Observed.read(broker.connection)
    assert set(observed.postings) == set(expected.postings)
    # The ledger equals the tables: AR in Tryton = Σ insurance_ar / patient_ar of the states.
    balance: Counter[str] = Counter()
    for move in moves(rpc):
        for line in move["lines."]:
            balance[line["account."]["code"]] += int((line["debit"] - line["credit"]) * 100)
    states = observed.states.values()
    assert balance["1200"] == sum(s["balances"]["insurance_ar"] for s in states)
    assert balance["1210"] == sum(s["balances"]["patient_ar"] for s in states)
    assert sum(balance.values()) == 0
    assert dlq_records(broker) == []


@pytest.mark.slow
def test_kill_9_connector_mid_stream(broker: Broker, tryton: TrytonServer,
                                     tmp_path: Path) -> None:
    items = real_deltas(120, seed=31)
    half = len(items) // 2
    publish_deltas(broker, items[:half])
    data = tmp_path / "erp"
    env = tryton_env(tryton) | {"RCMFLOW_ERP_BATCH_MAX": "5"}
    # Killed right after Tryton committed a batch, before the offset commit ...
    for n, calls in enumerate((2, 5)):
        proc = start_connector("tryton", broker, data, n, **env,
                                **Faults(erp_kill_after=calls).environment())
        assert proc.process.wait(90) == -9, proc.log_tail()
    # ... and from outside while it posts and deltas keep arriving.
    feeder = feed_slowly(broker, items[half:], chunks=20, pause_s=0.7)
    rng = random.Random(8)
    for n in range(2, 4):
        before = _count(tryton)
        proc = start_connector("tryton", broker, data, n, **env)
        wait_until(lambda b=before, p=proc: _count(tryton) > b or not p.alive(), 90,
                   "progress", proc.log_tail)
        time.sleep(rng.uniform(0.0, 0.5))
        assert proc.alive(), proc.log_tail()
        proc.kill()
    feeder.join()
    final = start_connector("tryton", broker, data, 99, "--idle-exit-s", "2", **env)
    assert final.process.wait(120) == 0, final.log_tail()
    assert_moves_equal(tryton.rpc(), parse(items))
    assert already_there_in_logs(data) >= 5, "the kills after a post must cause re-sends"
    assert status(data, "tryton")["lag"] == 0


@pytest.mark.slow
def test_tryton_down_mid_stream(broker: Broker, tryton: TrytonServer,
                                tmp_path: Path) -> None:
    """Outage: the connector stalls, its lag (scraped from /metrics) grows with each delta
    that arrives; after the restart the lag returns to 0, nothing lost, nothing doubled."""
    items = real_deltas(60, seed=41)
    first, second = len(items) * 2 // 3, len(items) * 5 // 6
    publish_deltas(broker, items[:first])
    data = tmp_path / "erp"
    port = free_port()
    proc = start_connector("tryton", broker, data, 0, "--metrics-port", str(port),
                           **tryton_env(tryton), RCMFLOW_ERP_BATCH_MAX="10",
                           RCMFLOW_ERP_TIMEOUT_S="3")
    try:
        wait_until(lambda: _count(tryton) > 0, 60, "first moves", proc.log_tail)
        tryton.kill()  # kill -9: a post_external in flight is rolled back by PostgreSQL
        publish_deltas(broker, items[first:second])
        # Stalled: failures counted, the circuit opens, the lag stays > 0, nothing dropped.
        wait_until(lambda: scrape(port).get("rcmflow_erp_circuit_open") == 1, 60,
                   "the circuit to open", proc.log_tail)
        stalled = scrape(port)
        assert stalled["rcmflow_erp_transient_failures_total"] >= 5, stalled
        assert stalled["rcmflow_erp_lag_records"] >= second - first, stalled
        # The status file says the same (written every RCMFLOW_ERP_PROGRESS_S).
        wait_until(lambda: status(data, "tryton").get("breaker") == "open", 10,
                   "the status file to say open", proc.log_tail)
        # Deltas that arrive during the outage make the lag grow by as many.
        publish_deltas(broker, items[second:])
        wait_until(lambda: scrape(port).get("rcmflow_erp_lag_records", 0)
                   == stalled["rcmflow_erp_lag_records"] + len(items) - second, 30,
                   "the lag to grow", proc.log_tail)
        assert proc.alive(), proc.log_tail()
        tryton.start()
        wait_until(lambda: scrape(port).get("rcmflow_erp_lag_records") == 0, 90, "lag 0",
                   proc.log_tail)
        recovered = scrape(port)
    finally:
        proc.stop()
    assert_moves_equal(tryton.rpc(), parse(items))
    assert "circuit open" in proc.log.read_text()
    assert recovered["rcmflow_erp_circuit_open"] == 0
    assert recovered["rcmflow_erp_dlq_total"] == 0
    # Every delta posted once. A kill -9 in the instant between Tryton's commit and its
    # answer makes the re-sent batch "already there" instead: still once in the ledger.
    assert (recovered["rcmflow_erp_posted_total"]
            + recovered["rcmflow_erp_already_there_total"]) == len(items), recovered
    assert recovered["rcmflow_erp_already_there_total"] <= 10, recovered
    assert recovered["rcmflow_erp_last_commit_timestamp_seconds"] > time.time() - 60


def test_rejections_to_the_posting_dlq(broker: Broker, tryton: TrytonServer) -> None:
    """Tryton's own message (closed period), an unmapped GL account, a record that is no
    delta: each to rcm.postings.dlq with its context; every delta after them still posts."""
    rpc = tryton.rpc()
    closed_day = date(2025, 6, 15)
    period = rpc.model("account.period", "search", [("start_date", "=", date(2025, 6, 1)),
                                                    ("type", "=", "standard")], 0, None, None)
    rpc.model("account.period", "close", period)
    items = real_deltas(20, seed=51)
    doc = json.loads(items[3][1]) | {"effective_date": closed_day.isoformat(),
                                      "correlation_id": "corr-77"}
    doc["event_id"] += "-late"
    doc["posting_id"] = posting_id(doc["account"], doc["event_id"], doc["coa_version"])
    late = (doc["account"].encode(), json.dumps(doc).encode())
    unmapped = unmapped_copy(items[5][1])
    stream = items[:10] + [late, unmapped, (b"X9", b"[]")] + items[10:]
    publish_deltas(broker, stream)
    progress = run_in_process(adapter_for(tryton), broker, batch_max=50)
    assert (progress.posted, progress.rejected, progress.invalid) == (len(items), 2, 1)
    assert_moves_equal(rpc, parse(items))
    dlq = {r["reason_code"]: r for r in dlq_records(broker)}
    assert set(dlq) == {"erp_rejected", "unmapped_gl_account", "invalid_delta"}
    closed = dlq["erp_rejected"]
    assert "closed" in closed["reason"].lower(), closed["reason"]
    want = {"adapter": "tryton", "posting_id": doc["posting_id"], "account": doc["account"],
            "correlation_id": "corr-77", "effective_date": "2025-06-15",
            "amount_cents": PostingDelta.model_validate(doc).total_cents}
    assert {k: closed["context"][k] for k in want} == want
    assert "9999-NOPE" in dlq["unmapped_gl_account"]["reason"]
    assert json.loads(closed["payload"]) == doc
