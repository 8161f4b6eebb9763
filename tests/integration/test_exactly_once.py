"""exactly_once on Apache Kafka, proven by breaking it: kill -9 at every step of a batch and at
random, a paused worker whose partitions moved (a zombie), and the difference from
at_least_once.

Under exactly_once a batch's deltas, DLQ records, dedup and state changelog records and its
rcm.events offsets commit in one transaction per source partition. So a ``read_committed``
reader of rcm.postings sees every posting id exactly once — not "at least once, byte-identical"
— and an ERP connector (which reads ``read_committed``) never receives a re-send at all.
``read_uncommitted`` shows what the crashes left behind: the aborted transactions' records.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from rcmflow.runtime.faults import Faults
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import IsolationLevel, read_topic
from rcmflow.streams.topics import ACCOUNTS, DLQ, POSTINGS
from tests.conftest import Broker, Workers, wait_until
from tests.connectors.erp.feed import already_there_in_logs, start_connector
from tests.integration.test_crash import (
    FAST,
    SESSION_S,
    assert_exact,
    converged,
    difference,
    publish_slowly,
    wait_for_progress,
)
from tests.workload import Expected, Observed, Workload

pytestmark = [pytest.mark.broker, pytest.mark.slow,
              pytest.mark.brokers("kafka")]  # the embedded broker has no transactions

#: With test_crash.py's short session: a restart after a kill -9 waits for it (FAST).
EXACTLY_ONCE = {"RCMFLOW_PROCESSING_GUARANTEE": "exactly_once", **FAST}


def records_per_id(kafka: KafkaConnection, topic: str, field: str,
                   isolation_level: IsolationLevel) -> Counter[str]:
    """How many records of ``topic`` carry each ``field`` value (a posting id, a dlq id)."""
    records = asyncio.run(read_topic(kafka, topic, isolation_level=isolation_level))
    return Counter(json.loads(r.value)[field] for r in records)


def assert_exactly_once(kafka: KafkaConnection, expected: Expected) -> Counter[str]:
    """Every posting id and every DLQ record exactly once to a read_committed reader; returns
    what a read_uncommitted reader sees (with the aborted transactions' records)."""
    committed = records_per_id(kafka, POSTINGS, "posting_id", "read_committed")
    assert set(committed) == set(expected.postings)
    twice = {pid: n for pid, n in committed.items() if n != 1}
    assert not twice, f"{len(twice)} posting ids read more than once: {list(twice.items())[:3]}"
    dlq_records = asyncio.run(read_topic(kafka, DLQ))
    dlq = Counter(json.loads(r.value)["dlq_id"] for r in dlq_records)
    twice_dlq = [(r.partition, r.offset, r.value[:300]) for r in dlq_records
                 if dlq[json.loads(r.value)["dlq_id"]] > 1]
    assert not twice_dlq, f"DLQ records read more than once: {twice_dlq}"
    assert len(dlq) == sum(expected.dlq_reasons.values())
    # The compacted snapshots too: one committed record per account version.
    snapshots = asyncio.run(read_topic(kafka, ACCOUNTS))
    versions = Counter((r.key, json.loads(r.value)["version"]) for r in snapshots)
    assert max(versions.values()) == 1, versions.most_common(3)
    return records_per_id(kafka, POSTINGS, "posting_id", "read_uncommitted")


def test_exactly_once_kill_9_at_every_step_then_at_random(
    broker: Broker, workers: Workers, tmp_path: Path
) -> None:
    workload = Workload.build(accounts=700, seed=13)
    expected = workload.expected()
    feeder = publish_slowly(workload, broker.connection, chunks=30, pause_s=0.5)
    rng = random.Random(17)
    # An ERP connector reads rcm.postings the whole time, as in production.
    journal = tmp_path / "erp"
    connector = start_connector("csv", broker, journal, 0)

    # 1. Each step of a batch: applied in memory; everything sent, the transaction open;
    #    the transaction committed, the local stores not written.
    for point, batch in (("processed", 2), ("outputs-acked", 3), ("committed", 2)):
        killed = workers.start("w1", **EXACTLY_ONCE,
                                **Faults(worker_kill_at=(point, batch)).environment())
        wait_until(lambda w=killed: not w.alive(), 90, f"the injected kill at {point}",
                   killed.log_tail)
        assert killed.process.returncode == -9, killed.log_tail()
    # 2. kill -9 from outside at random moments, keeping the store or losing it.
    #    (Two rounds: the whole-pipeline fault runs, tests/chaos, kill workers at random too.)
    for round_ in range(2):
        before = len(Observed.read(broker.connection).postings)
        worker = workers.start("w1", **EXACTLY_ONCE)
        wait_for_progress(broker.connection, worker, at_least=before + 1, required=False,
                          every=len(expected.postings))
        time.sleep(rng.uniform(0.2, 2.5))
        worker.kill()
        if round_ == 1:
            workers.wipe_tables("w1")
    feeder.join()
    worker = workers.start("w1", **EXACTLY_ONCE)
    wait_until(lambda: converged(broker.connection, expected), 120, "convergence",
               lambda: difference(broker.connection, expected) + "\n" + worker.log_tail())
    assert_exact(Observed.read(broker.connection), expected)
    uncommitted = assert_exactly_once(broker.connection, expected)
    # The kills did abort transactions holding deltas: a read_uncommitted reader sees them.
    assert sum(uncommitted.values()) > len(expected.postings), "no transaction was aborted"
    assert worker.alive(), worker.log_tail()

    # The ERP received every delta once and was never sent one again.
    def journal_complete() -> bool:
        posted = set()
        for path in journal.glob("journal/journal-*.csv"):
            with path.open(newline="") as handle:
                posted |= {row["posting_id"] for row in csv.DictReader(handle)}
        return posted == set(expected.postings)

    wait_until(journal_complete, 60, "the csv journal", connector.log_tail)
    connector.stop()
    assert already_there_in_logs(journal) == 0, connector.log_tail()


def test_at_least_once_on_kafka_resends_byte_identical_deltas(
    broker: Broker, workers: Workers
) -> None:
    """The difference: killed between its deltas and its dedup records, an at_least_once
    worker sends those deltas again. A reader sees them twice (byte-identical; the ERP drops
    them by posting id); under exactly_once the same kill leaves nothing twice."""
    workload = Workload.build(accounts=300, seed=21)
    expected = workload.expected()
    workload.publish(broker.connection)
    killed = workers.start("w1", **FAST,
                           **Faults(worker_kill_at=("outputs-acked", 1)).environment())
    wait_until(lambda: not killed.alive(), 90, "the injected kill", killed.log_tail)
    worker = workers.start("w1", **FAST)
    wait_until(lambda: converged(broker.connection, expected), 120, "convergence",
               lambda: difference(broker.connection, expected) + "\n" + worker.log_tail())
    observed = Observed.read(broker.connection)
    assert_exact(observed, expected)  # same ids, same contents: byte-identical re-sends
    committed = records_per_id(broker.connection, POSTINGS, "posting_id", "read_committed")
    assert any(n > 1 for n in committed.values()), "the kill re-sent nothing"


def test_exactly_once_rebalance_with_a_paused_zombie(broker: Broker, workers: Workers) -> None:
    """Two workers; one is paused (SIGSTOP) longer than the session timeout, its partitions
    move to the other, a third joins; the paused one resumes as a zombie: its transactions
    were fenced when the partitions' new owner started, so it commits nothing more."""
    workload = Workload.build(accounts=1000, seed=23)
    expected = workload.expected()
    feeder = publish_slowly(workload, broker.connection, chunks=30, pause_s=0.6)
    first = workers.start("w1", **EXACTLY_ONCE)
    second = workers.start("w2", **EXACTLY_ONCE)
    wait_for_progress(broker.connection, first, at_least=200)
    second.process.send_signal(signal.SIGSTOP)
    time.sleep(SESSION_S + 4)  # > the session timeout: w2 is out of the group, w1 took its share
    third = workers.start("w3", **EXACTLY_ONCE)
    time.sleep(4)
    second.process.send_signal(signal.SIGCONT)
    feeder.join()
    wait_until(lambda: converged(broker.connection, expected), 150, "convergence",
               lambda: difference(broker.connection, expected))
    assert_exact(Observed.read(broker.connection), expected)
    assert_exactly_once(broker.connection, expected)
    for worker in (first, third):
        assert worker.alive(), worker.log_tail()
