"""A real worker's /metrics: its counters move by exactly what the pure core says."""

from __future__ import annotations

from collections import Counter

import pytest

from rcmflow.runtime.broker import free_port
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS
from tests.conftest import Broker, Workers, wait_until
from tests.scrape import scrape
from tests.workload import Workload

pytestmark = pytest.mark.broker


def _events(sample: dict[str, float]) -> float:
    return sum(v for k, v in sample.items() if k.startswith("rcmflow_worker_events_total"))


def test_worker_counters_for_a_stream_with_replays_and_a_conflict(
    broker: Broker, workers: Workers
) -> None:
    workload = Workload.build(accounts=12, seed=5, replay_ratio=0.25, conflicts=1, invalid=1)
    messages = [Message(EVENTS, 0, i, k.encode(), v) for i, (k, v) in enumerate(workload.values)]
    result = Processor(load_chart()).process(messages, MemoryTables())
    want = result.counts
    assert want.replays > 0 and want.conflicts == 1 and want.rejected == 1  # the test's point
    port = free_port()
    worker = workers.start("w1", RCMFLOW_WORKER_METRICS_PORT=str(port))
    wait_until(lambda: "rcmflow_worker_lag_records" in scrape(port) or not worker.alive(), 30,
               "the metrics endpoint", worker.log_tail)
    before = scrape(port)
    assert _events(before) == 0 and before["rcmflow_worker_postings_total"] == 0, before
    workload.publish(broker.connection)
    wait_until(lambda: _events(scrape(port)) >= len(messages) or not worker.alive(), 90,
               f"{len(messages)} events counted", worker.log_tail)
    after = scrape(port)
    got = {outcome: after[f'rcmflow_worker_events_total{{outcome="{outcome}"}}']
           for outcome in ("applied", "replay", "redelivery", "conflict", "rejected")}
    assert got == {"applied": want.applied, "replay": want.replays, "redelivery": 0,
                   "conflict": 1, "rejected": 1}
    assert after["rcmflow_worker_postings_total"] == want.postings == len(result.postings)
    assert after["rcmflow_worker_dlq_records_total"] == len(result.dlq)
    assert after["rcmflow_worker_batches_total"] >= 1
    # Applied events by source and kind, postings by kind, and one latency observation per
    # posting delta (from the rcm.events record to the delta's ack).
    applied = Counter((e.source, e.kind) for e in result.applied)
    assert {k: v for k, v in after.items()
            if k.startswith("rcmflow_worker_applied_events_total")} == {
        f'rcmflow_worker_applied_events_total{{kind="{kind}",source="{source}"}}': n
        for (source, kind), n in applied.items()}
    assert sum(v for k, v in after.items()
               if k.startswith("rcmflow_worker_postings_by_kind_total")) == want.postings
    assert after["rcmflow_worker_event_to_posting_seconds_count"] == want.postings
    assert 0 < after["rcmflow_worker_event_to_posting_seconds_sum"] / want.postings < 90
    # The lag is measured on the progress timer (every 10 s): everything is applied.
    wait_until(lambda: scrape(port).get("rcmflow_worker_lag_records") == 0, 30, "lag 0",
               worker.log_tail)
    assert worker.alive(), worker.log_tail()

