"""kill -9 and rebalances with real worker processes: nothing lost, nothing doubled.

At the end, the distinct posting ids and their contents equal what the pure core computes for
the stream (= a run that never crashed), no posting id was ever sent with two contents, and the
account tables (their rcm.accounts snapshots) equal the crash-free states.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time

import pytest

from rcmflow.runtime.faults import Faults
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.topics import EVENTS
from tests.conftest import Broker, WorkerProcess, Workers, wait_until
from tests.workload import Expected, Observed, Workload

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: The workers' session timeout here (production: 10 s). A worker killed -9 stays in the group
#: until its session expires, so every restart after a kill waited ~10 s for the rebalance
#: (and a first join on Tansu takes about half the session): most of these tests' time. What
#: they prove does not depend on it; the fault runs (tests/chaos) use 4 s too.
SESSION_S = 4
FAST = {"RCMFLOW_SESSION_TIMEOUT_S": str(SESSION_S)}


def publish_slowly(workload: Workload, kafka: KafkaConnection, chunks: int,
                   pause_s: float) -> threading.Thread:
    """Feed the stream in chunks from a thread, so workers die while events flow."""
    size = len(workload.values) // chunks + 1

    def feed() -> None:
        for start in range(0, len(workload.values), size):
            workload.publish(kafka, start, start + size)
            time.sleep(pause_s)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def assert_exact(observed: Observed, expected: Expected) -> None:
    doubled = {pid: v for pid, v in observed.postings.items() if len(v) > 1}
    assert not doubled, f"posting ids sent with two contents: {list(doubled)[:3]}"
    missing = set(expected.postings) - set(observed.postings)
    extra = set(observed.postings) - set(expected.postings)
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected"
    assert all(v == {expected.postings[pid]} for pid, v in observed.postings.items())
    assert observed.states == expected.states
    assert observed.dlq_reasons() == expected.dlq_reasons


def converged(kafka: KafkaConnection, expected: Expected) -> bool:
    observed = Observed.read(kafka)
    return set(observed.postings) >= set(expected.postings) and observed.states == expected.states


def difference(kafka: KafkaConnection, expected: Expected) -> str:
    """What is still wrong, for a failure message."""
    observed = Observed.read(kafka)
    missing = sorted(set(expected.postings) - set(observed.postings))
    wrong = sorted(a for a, s in expected.states.items() if observed.states.get(a) != s)
    lines = [f"{len(missing)} postings missing, {len(wrong)} account states differ"]
    lines.append(_offsets(kafka, {json.loads(expected.postings[p])["event_id"]
                                      for p in missing}))
    for account in wrong[:3]:
        got = observed.states.get(account, {})
        lines.append(f"{account}: expected version {expected.states[account]['version']}, "
                     f"snapshot version {got.get('version')}")
    return "\n".join(lines)


def _offsets(kafka: KafkaConnection, event_ids: set[str]) -> str:
    """Per partition: committed offset, log end, and where the unposted events sit."""
    async def probe() -> str:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        events = await read_topic(kafka, EVENTS)
        consumer = AIOKafkaConsumer(**kafka.client_options(), group_id="rcmflow",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            out = []
            for partition in range(4):
                tp = TopicPartition(EVENTS, partition)
                offsets = [r.offset for r in events if r.partition == partition
                           and json.loads(r.value).get("event_id") in event_ids]
                end = max((r.offset for r in events if r.partition == partition), default=-1)
                out.append(f"p{partition}: committed {await consumer.committed(tp)}, last "
                           f"{end}, unposted at {offsets[:5]}..{offsets[-3:]} ({len(offsets)})")
            return "\n".join(out)
        finally:
            await consumer.stop()

    return asyncio.run(probe())


def wait_for_progress(kafka: KafkaConnection, worker: WorkerProcess, at_least: int,
                      required: bool = True, every: int | None = None) -> None:
    """Until ``at_least`` distinct postings exist; with ``required=False`` give up quietly
    once ``every`` posting of the stream exists or after 30 s (the stream may hold nothing
    more for this worker: waiting the 30 s then proves nothing)."""
    def posted() -> bool:
        count = len(Observed.read(kafka).postings)
        return (count >= at_least or (every is not None and count >= every)
                or not worker.alive())

    if required:
        wait_until(posted, 90, f"{at_least} postings", worker.log_tail)
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not posted():
        time.sleep(0.25)


def test_kill_9_at_every_step_then_at_random(broker: Broker, workers: Workers) -> None:
    workload = Workload.build(accounts=800, seed=3)
    expected = workload.expected()
    feeder = publish_slowly(workload, broker.connection, chunks=30, pause_s=0.6)
    rng = random.Random(5)

    # 1. Each step of a batch, deterministically: applied in memory (nothing sent), deltas
    #    durable (no dedup record), dedup records durable (states not written).
    for point, batch in (("processed", 2), ("outputs-acked", 3), ("dedup-acked", 2)):
        killed = workers.start("w1", **FAST,
                                **Faults(worker_kill_at=(point, batch)).environment())
        wait_until(lambda w=killed: not w.alive(), 90, f"the injected kill at {point}",
                   killed.log_tail)
        assert killed.process.returncode == -9, killed.log_tail()
    # 2. kill -9 from outside at random moments, keeping the store or losing it.
    #    Each round waits until this worker has posted something (so the kill lands while it
    #    works, not while it joins the group), unless it finds nothing left to do.
    #    (Two rounds: the whole-pipeline fault runs, tests/chaos, kill workers at random too.)
    for round_ in range(2):
        before = len(Observed.read(broker.connection).postings)
        worker = workers.start("w1", **FAST)
        wait_for_progress(broker.connection, worker, at_least=before + 1, required=False,
                          every=len(expected.postings))
        time.sleep(rng.uniform(0.2, 2.5))
        worker.kill()
        if round_ == 1:
            workers.wipe_tables("w1")
    feeder.join()
    worker = workers.start("w1", **FAST)
    wait_until(lambda: converged(broker.connection, expected), 120, "convergence",
               lambda: difference(broker.connection, expected) + "\n" + worker.log_tail())
    assert_exact(Observed.read(broker.connection), expected)
    assert worker.alive(), worker.log_tail()


@pytest.mark.parametrize("standbys", [0, 1])
def test_two_workers_a_third_joins_one_dies_and_returns(
    broker: Broker, workers: Workers, standbys: int
) -> None:
    """With standby replicas off (the default) and on (RCMFLOW_STANDBY_REPLICAS=1)."""
    workload = Workload.build(accounts=1200, seed=9)
    expected = workload.expected()
    feeder = publish_slowly(workload, broker.connection, chunks=30, pause_s=0.8)
    env = {"RCMFLOW_STANDBY_REPLICAS": str(standbys), **FAST}
    first, second = workers.start("w1", **env), workers.start("w2", **env)
    wait_for_progress(broker.connection, first, at_least=200)
    third = workers.start("w3", **env)  # joins: partitions move while events flow
    time.sleep(SESSION_S + 1)  # its join done (~2 s on Tansu, ~1 s on Kafka), it works
    second.kill()  # dies without leaving the group: noticed after the session timeout
    time.sleep(SESSION_S / 2)  # (4 s of 10): before that
    second = workers.start("w2", **env)  # returns with its old store
    feeder.join()
    wait_until(lambda: converged(broker.connection, expected), 150, "convergence",
               lambda: difference(broker.connection, expected))
    assert_exact(Observed.read(broker.connection), expected)
    for worker in (first, second, third):
        assert worker.alive(), worker.log_tail()
