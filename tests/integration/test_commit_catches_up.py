"""Records applied but never committed are committed, even when the consumer never delivers
them again.

A fault run (python -m tests.chaos, seed 129 on Tansu) ended with the group's committed offset
of two partitions at none for good, every event applied once: the worker that took them after
a rebalance had applied them before, its commits had failed (the group had moved on), and
Faust's drain loop dropped the records the consumer fetched again, below a read offset it kept
across the rebalance. Only an admitted batch moves the commit limit, so nothing did; the lag
never returned to 0 and every later rebalance had those records to read again.
``worker_drop_once_at`` drops them the same way here.
"""

from __future__ import annotations

import asyncio

import pytest

from rcmflow.runtime.faults import Faults
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import committed_offsets, log_ends
from rcmflow.streams.topics import EVENTS
from tests.conftest import PARTITIONS, Broker, Workers, wait_until
from tests.integration.test_crash import FAST, converged
from tests.workload import Observed, Workload

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def behind(kafka: KafkaConnection) -> dict[int, tuple[int | None, int]]:
    """Partition -> (committed, log end), for every partition whose commit lags its end."""
    async def probe() -> dict[int, tuple[int | None, int]]:
        partitions = list(range(PARTITIONS))
        ends = await log_ends(kafka, EVENTS, partitions)
        committed = await committed_offsets(kafka, "rcmflow", EVENTS, partitions)
        return {p: (committed.get(p), ends[p]) for p in partitions
                if committed.get(p, 0) < ends[p]}

    return asyncio.run(probe())


def test_applied_records_the_consumer_drops_are_read_again_and_committed(
    broker: Broker, workers: Workers
) -> None:
    workload = Workload.build(accounts=60, seed=11)
    expected = workload.expected()
    workload.publish(broker.connection)
    # w1 applies everything and commits nothing, then dies: all of it applied, none committed.
    first = workers.start("w1", **FAST, **Faults(worker_commit_hold_s=600).environment())
    wait_until(lambda: converged(broker.connection, expected), 90, "w1 applied everything",
               first.log_tail)
    first.kill()
    lagging = behind(broker.connection)
    assert set(lagging) == set(range(PARTITIONS)), lagging
    # Back with its store; the records of partition 0 it fetches first are dropped.
    end = lagging[0][1]
    # (FAST: its join waits for the killed member's session to expire.)
    again = workers.start("w1", **FAST, **Faults(worker_drop_once_at=(0, 0, end)).environment())
    wait_until(lambda: not behind(broker.connection), 90, "every partition committed to its end",
               lambda: f"{behind(broker.connection)}\n{again.log_tail()}")
    log = again.log.read_text(errors="replace")
    assert "partition 0: applied up to offset" in log and "so that it is committed" in log
    assert len(Observed.read(broker.connection).postings) == len(expected.postings)
    assert again.alive(), again.log_tail()
