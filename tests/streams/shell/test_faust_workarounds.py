"""Faust behaviours reported by its users, checked for real on both brokers (Apache Kafka 4.1
and the embedded Tansu), and what rcmflow does about each (streams/shell/faust_internals.py):

- faust-streaming #667, Faust's ``<app id>-__assignor-__leader`` topic with aiokafka against
  Kafka 4: a Faust app with Faust's defaults creates it and runs. rcmflow's worker turns
  leader election off (``topic_disable_leader``: it has no ``on_leader`` timers), so it needs
  neither the topic nor the CREATE ACL for it.
- faust-streaming #629, an assigned partition that stops fetching after a rebalance: the
  worker's watchdog finds a partition that has records but delivers none, puts it back and
  reads on (here the partition is paused on purpose, the state #629 leaves it in).
- A jump in the offsets Faust delivers: its drain loop passes over a "gap" (records fetched
  before a seek delivered after it, the re-read ones below them then dropped). The worker's
  offset guard sees the hole, and the worker seeks back and reads it again (here a range of
  records is kept from the worker once, at the hand-over of a fetch, ``worker_skip_at``).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from rcmflow.runtime.broker import ensure_topics
from rcmflow.runtime.faults import Faults
from rcmflow.runtime.kafka_io import publish
from rcmflow.streams.topics import TopicSpec
from tests.conftest import Broker, Workers, wait_until
from tests.integration.test_crash import assert_exact, converged, difference
from tests.streams.shell import faust_plain_app
from tests.workload import Observed, Workload

pytestmark = [pytest.mark.broker]


def topics(broker: Broker) -> set[str]:
    async def names() -> set[str]:
        admin = AIOKafkaAdminClient(**broker.connection.client_options())
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(names())


def test_a_faust_app_with_faust_defaults_makes_its_leader_topic(broker: Broker,
                                                                tmp_path: Path) -> None:
    """#667: leader topic creation through aiokafka 0.14 works on this broker."""
    asyncio.run(ensure_topics(broker.connection,
                              [TopicSpec(faust_plain_app.TOPIC, {}, "probe")], 1, 1))
    out = tmp_path / "count"
    log = tmp_path / "faust.log"
    env = {**os.environ, "BROKER": broker.url, "OUT": str(out)}
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, faust_plain_app.__file__, "worker", "-l", "info",
             ], env=env, cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT)
    try:
        asyncio.run(publish(broker.connection,
                            [(faust_plain_app.TOPIC, None, b"probe")] * 10))
        wait_until(lambda: out.exists() and out.read_text() == "10", 60,
                   "the Faust app to consume", lambda: log.read_text(errors="replace")[-3000:])
        assert f"{faust_plain_app.APP_ID}-__assignor-__leader" in topics(broker)
    finally:
        process.kill()
        process.wait()


def test_the_watchdog_puts_back_a_partition_left_paused(broker: Broker,
                                                        workers: Workers) -> None:
    """#629: partition 0 stops fetching after the worker's first batch; the watchdog notices
    it (it has records, delivers none for 15 s), resumes and seeks it, and the stream ends
    exactly as the pure core says. The worker needs no leader topic either."""
    workload = Workload.build(accounts=200, seed=29, conflicts=0, invalid=0)
    expected = workload.expected()
    half = len(workload.values) // 2
    workload.publish(broker.connection, 0, half)
    worker = workers.start("w1", **Faults(worker_pause_at=(0, 0)).environment())
    wait_until(lambda: "pausing the partition" in worker.log.read_text(errors="replace"), 60,
               "the pause", worker.log_tail)
    workload.publish(broker.connection, half)
    wait_until(lambda: converged(broker.connection, expected), 90, "convergence",
               lambda: difference(broker.connection, expected) + "\n" + worker.log_tail())
    log = worker.log.read_text(errors="replace")
    assert "rcm.events partition 0 stalled at offset" in log, worker.log_tail()
    assert len(Observed.read(broker.connection).postings) == len(expected.postings)
    assert worker.alive(), worker.log_tail()
    assert not [t for t in topics(broker) if t.endswith("-__assignor-__leader")]


def test_the_worker_reads_again_records_the_consumer_skipped(broker: Broker,
                                                              workers: Workers) -> None:
    """Records 40..64 of partition 0 are not handed over the first time they are fetched (the
    hole Faust's drain loop leaves when it passes over a "gap"): the offset guard sees the
    jump, applies nothing past it, the worker seeks back and reads them, and the stream ends
    exactly as the pure core says. Without the guard's hole check they would never be
    applied and the commit would run past them."""
    workload = Workload.build(accounts=200, seed=31)
    expected = workload.expected()
    workload.publish(broker.connection)
    worker = workers.start("w1", **Faults(worker_skip_at=(0, 40, 25)).environment())
    wait_until(lambda: converged(broker.connection, expected), 60, "convergence",
               lambda: difference(broker.connection, expected) + "\n" + worker.log_tail())
    log = worker.log.read_text(errors="replace")
    kept_back = re.findall(r"worker_skip_at=0:40:25: (\d+) records of a fetch not handed", log)
    assert sum(map(int, kept_back)) == 25, worker.log_tail()
    reread = re.findall(r"rcm\.events partition 0: the consumer skipped the records from "
                        r"offset 40; reading them again from (\d+)", log)
    assert reread and int(reread[0]) <= 40, worker.log_tail()
    assert_exact(Observed.read(broker.connection), expected)
    assert worker.alive(), worker.log_tail()
