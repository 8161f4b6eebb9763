"""The commit limit waits for a batch's writes: a batch held between its steps has none of its
offsets committed, however many of Faust's periodic commits run meanwhile.

The random kill -9 of the crash tests rarely lands in that window; this holds a real worker
there (``worker_hold_at``: the event loop runs on, so Faust commits what the limit allows) and
reads the group's committed offsets from the broker while it waits."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError

from rcmflow.runtime.faults import Faults
from rcmflow.runtime.kafka_io import committed_offsets
from rcmflow.streams.topics import EVENTS
from tests.conftest import PARTITIONS, Broker, Workers, wait_until
from tests.integration.test_crash import assert_exact, converged, difference
from tests.workload import Observed, Workload

pytestmark = pytest.mark.broker

HOLD_S = 8.0  # about three of Faust's commit intervals (2.8 s)


def _committed(broker: Broker) -> dict[int, int]:
    try:
        return asyncio.run(committed_offsets(broker.connection, "rcmflow", EVENTS,
                                             range(PARTITIONS)))
    except GroupCoordinatorNotAvailableError:  # Kafka, before the group's first join
        return {}


@pytest.mark.parametrize("point", ["outputs-acked", "dedup-acked"])
def test_nothing_of_a_batch_is_committed_before_its_states_are_written(
        broker: Broker, workers: Workers, point: str) -> None:
    workload = Workload.build(accounts=40, seed=8)
    expected = workload.expected()
    # Batch 0 is one event: applied, written and committed before the rest is published,
    # so its partition is one Faust commits; batch 1 is held at ``point``.
    workload.publish(broker.connection, end=1)
    worker = workers.start("w1", **Faults(worker_hold_at=(point, 1, HOLD_S)).environment())
    wait_until(lambda: sum(_committed(broker).values()) == 1, 60, "the first event committed",
               worker.log_tail)
    workload.publish(broker.connection, start=1)
    wait_until(lambda: "holding the batch" in worker.log.read_text(), 60,
               f"the second batch to reach {point}", worker.log_tail)
    seen: list[dict[int, int]] = []
    deadline = time.monotonic() + HOLD_S - 2
    while time.monotonic() < deadline:
        seen.append(_committed(broker))
        time.sleep(0.5)
    # The held batch's outputs (and at dedup-acked its dedup records) are on the broker, its
    # states are not: a commit of its offsets now would skip it after a crash.
    assert all(sum(offsets.values()) == 1 for offsets in seen), seen
    wait_until(lambda: converged(broker.connection, expected), 90, "the worker to finish",
               lambda: difference(broker.connection, expected) + worker.log_tail())
    assert_exact(Observed.read(broker.connection), expected)
    wait_until(lambda: sum(_committed(broker).values()) == len(workload.values), 30,
               "every offset committed once the batches are written", worker.log_tail)
