"""The Faust internals rcmflow leans on are still there and still behave as assumed.

If faust-streaming is upgraded, these fail first: re-read streams/shell/faust_internals.py against
the
new release before changing the pin.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faust.stores.rocksdb import Store
from faust.tables.base import Collection
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from rcmflow.runtime.kafka_probes import fetch_highwaters
from rcmflow.streams.shell.faust_internals import FAUST_VERSION, install_highwater_fix
from tests.conftest import Broker


def test_faust_is_the_pinned_release() -> None:
    assert version("faust-streaming") == FAUST_VERSION


def test_changelog_offsets_are_persisted_per_ack_as_tableio_mimics() -> None:
    source = inspect.getsource(Collection._on_changelog_sent)
    assert "self.data.set_persisted_offset(res.topic_partition, res.offset)" in source
    assert "persist_offset_on_commit" in source


def test_rocksdb_store_hooks_exist() -> None:
    assert inspect.signature(Store._db_for_partition).parameters.keys() == {"self", "partition"}
    assert "offset_key" in vars(Store)
    assert callable(Store.set_persisted_offset)


def test_recovery_reads_highwaters_through_the_consumer_thread() -> None:
    assert "consumer.highwaters(*tps)" in inspect.getsource(Recovery._build_highwaters)
    thread = faust_aiokafka.AIOKafkaConsumerThread
    source = inspect.getsource(thread.highwaters)
    assert "self._highwaters" in source
    assert list(inspect.signature(thread._highwaters).parameters) == ["self", "partitions"]


def test_highwater_fix_installs_once() -> None:
    install_highwater_fix()
    patched = faust_aiokafka.AIOKafkaConsumerThread._highwaters
    install_highwater_fix()
    assert faust_aiokafka.AIOKafkaConsumerThread._highwaters is patched


def test_transport_producer_send_signature() -> None:
    params = list(inspect.signature(faust_aiokafka.Producer.send).parameters)
    assert params[:7] == ["self", "topic", "key", "value", "partition", "timestamp", "headers"]


def test_the_hooks_bulk_consume_wraps_are_where_it_expects_them() -> None:
    """The drain loop takes its records from _wait_next_records and drops those below the
    read offset; a rebalance and a shutdown wait in wait_empty; the periodic commit considers
    the partitions listed in _acked; the idle check reads stream_inbound_time."""
    from faust.sensors.monitor import Monitor
    from faust.transport.consumer import Consumer

    getmany = inspect.getsource(Consumer.getmany)
    assert "await self._wait_next_records(timeout)" in getmany
    assert "tp in active_partitions" in getmany and "self._buffered_partitions" in getmany
    drain = inspect.getsource(Consumer._drain_messages)
    assert "if r_offset is None or offset >= r_offset:" in drain
    assert "set_read_offset(tp, offset)" in drain
    assert "await consumer.wait_empty()" in inspect.getsource(faust.App._consumer_wait_empty)
    assert "for tp in self._acked" in inspect.getsource(Consumer._filter_tps_with_pending_acks)
    assert "self.stream_inbound_time[tp] = monotonic()" in inspect.getsource(
        Monitor.on_stream_event_in)
    assert "consumer_generation_id" in inspect.getsource(Consumer.getmany)


class _FakeConsumer:
    flow_active = True


class _FakeApp:
    def __init__(self) -> None:
        self.consumer = _FakeConsumer()
        self.consumer_generation_id = 1
        self.monitor = type("FakeMonitor", (), {"stream_inbound_time": {}})()


class _Record:
    def __init__(self, partition: int, offset: int) -> None:
        self.partition, self.offset = partition, offset

    def __repr__(self) -> str:
        return f"{self.partition}:{self.offset}"


async def test_the_bulk_feed_cuts_batches_keeps_order_and_drops_stale_fetches() -> None:
    from rcmflow.streams.shell.faust_internals import BulkFeed

    app = _FakeApp()
    feed = BulkFeed(app, "rcm.events", batch_max=4, batch_wait_s=60)  # type: ignore[arg-type]
    feed.put([_Record(0, o) for o in range(5)])
    feed.put([_Record(1, o) for o in range(3)])
    assert not feed._room.is_set()  # two batches pending: the drain loop waits
    first = await feed.take()
    assert [(r.partition, r.offset) for r in first] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert feed._room.is_set()
    assert TP("rcm.events", 0) in app.monitor.stream_inbound_time
    idle = asyncio.ensure_future(feed.idle())
    await asyncio.sleep(0)
    assert not idle.done()  # a batch is in hand
    feed.done()
    await asyncio.sleep(0)
    assert idle.done()
    second = await feed.take()
    assert [(r.partition, r.offset) for r in second] == [(0, 4), (1, 0), (1, 1), (1, 2)]
    feed.done()
    # Fetched before a rebalance (another generation): dropped.
    feed.put([_Record(2, 0)])
    app.consumer_generation_id = 2
    feed.put([_Record(2, o) for o in range(7, 11)])
    assert [(r.partition, r.offset) for r in await feed.take()] == [
        (2, 7), (2, 8), (2, 9), (2, 10)]
    feed.done()
    # Less than a batch: taken once the oldest record waited batch_wait_s, or once full.
    feed.batch_wait_s = 0.05
    feed.put([_Record(3, 0)])
    partial = asyncio.ensure_future(feed.take())
    await asyncio.sleep(0.01)
    assert not partial.done()
    assert [(r.partition, r.offset) for r in await partial] == [(3, 0)]
    feed.done()
    feed.batch_wait_s = 60
    feed.put([_Record(3, 1)])
    filling = asyncio.ensure_future(feed.take())
    await asyncio.sleep(0.01)
    feed.put([_Record(3, o) for o in range(2, 5)])
    assert [r.offset for r in await asyncio.wait_for(filling, 1)] == [1, 2, 3, 4]
    feed.done()
    # While the flow is stopped nothing is taken; what was not taken is dropped.
    feed.put([_Record(3, 5)])
    app.consumer.flow_active = False
    feed.batch_wait_s = 0
    stopped = asyncio.ensure_future(feed.take())
    await asyncio.sleep(0)
    assert not stopped.done() and not feed._pending
    stopped.cancel()
    app.consumer.flow_active = True
    feed.put([_Record(0, 5)])
    feed.clear()
    taken = asyncio.ensure_future(feed.take())
    await asyncio.sleep(0)
    assert not taken.done() and feed._room.is_set() and feed._count == 0
    taken.cancel()


@pytest.mark.broker
def test_tansu_list_offsets_lags_the_log_end_and_the_fetch_probe_does_not(
    broker: Broker, broker_kind: str,
) -> None:
    """The broker bug the highwater fix exists for (skips itself once Tansu is fixed), and on
    Apache Kafka the fix is a no-op: ListOffsets already answers the log end."""

    async def scenario() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
        await producer.start()
        futures = [await producer.send("rcm.events", b"v", key=b"k", partition=0)
                   for _ in range(1000)]
        await asyncio.gather(*futures)
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        tp = TopicPartition("rcm.events", 0)
        listed = (await consumer.end_offsets([tp]))[tp]
        await consumer.stop()
        fetched = await fetch_highwaters(broker.connection.client_options(), {tp: listed})
        return listed, fetched[tp]

    listed, fetched = asyncio.run(scenario())
    assert fetched == 1000
    if broker_kind == "kafka":
        assert listed == 1000
        return
    if listed == 1000:
        pytest.skip("this broker answers ListOffsets with the log end: the fix is a no-op")
    assert listed < 1000


def test_the_drain_loop_commits_past_gaps_through_add_gap() -> None:
    from faust.transport.consumer import Consumer

    from rcmflow.streams.shell.faust_internals import disable_gap_commits

    source = inspect.getsource(Consumer._drain_messages)
    assert "await self._add_gap(tp, r_offset + 1, offset)" in source
    # Faust's own rule (limit_commits may have replaced it already in this process).
    faust_new_offset = getattr(Consumer, "_faust_new_offset", Consumer._new_offset)
    assert "gap_for_tp.overlap(0, max_offset)" in inspect.getsource(faust_new_offset)
    disable_gap_commits()
    assert asyncio.run(Consumer._add_gap(object(), None, 1, 5)) is None  # type: ignore[arg-type]


def test_the_consumer_keeps_committed_offsets_where_committed_offset_reads_them() -> None:
    from faust.transport.consumer import Consumer

    assert "self._committed_offset.update(committed_offsets)" in inspect.getsource(
        Consumer.perform_seek)
    assert "_paused_partitions" in inspect.getsource(Consumer.pause_partitions)


def test_faust_commits_past_a_one_record_hole_and_limit_commits_does_not() -> None:
    """Faust's own rule commits past offset 10 that was never acked (delivered); with the
    worker's limit the commit stops at the first record not durably applied."""
    from collections import defaultdict

    from faust.transport.consumer import Consumer
    from intervaltree import IntervalTree

    from rcmflow.streams.shell.faust_internals import limit_commits

    tp = TP("rcm.events", 0)

    class FakeApp:
        pass

    def consumer(app: object) -> Any:
        fake: Any = type("FakeConsumer", (), {})()
        fake.app = app
        fake._acked = defaultdict(list, {tp: [11, 12, 13]})
        fake._acked_index = defaultdict(set, {tp: {11, 12, 13}})
        fake._gap = defaultdict(IntervalTree)
        fake._committed_offset = {tp: 10}  # the next offset to read is 10
        return fake

    app, durable_next = FakeApp(), [10]
    limit_commits(app, lambda tp: durable_next[0])  # the object the worker hands over
    assert Consumer._new_offset(consumer(FakeApp()), tp) == 14  # no limit: past unread 10
    limited = consumer(app)
    assert Consumer._new_offset(limited, tp) == 10
    durable_next[0] = 13
    assert Consumer._new_offset(limited, tp) == 13
    assert limited._acked[tp] == [13] and limited._acked_index[tp] == {13}
    limit_commits(app, lambda tp: None)
    assert Consumer._new_offset(limited, tp) is None


def test_recovery_reads_a_changelog_from_its_start_where_faust_held_no_position() -> None:
    """Faust seeks a changelog partition to the offset it tracked; after a rebalance during
    a standby's recovery that was sometimes negative (not -1) or None, aiokafka refused the
    seek and the worker crashed (tests/integration/test_crash.py, standby replicas on)."""
    import asyncio
    from collections import Counter

    from faust.tables.recovery import Recovery
    from faust.types import TP

    from rcmflow.streams.shell.faust_internals import install_recovery_seek_fix

    install_recovery_seek_fix()
    sought: dict[TP, int] = {}

    class Consumer:
        async def seek_wait(self, offsets: dict[TP, int]) -> None:
            sought.update(offsets)

    tps = [TP("rcm.accounts", n) for n in range(4)]
    offsets: Counter[TP] = Counter({tps[0]: 7, tps[1]: -1, tps[2]: -5})
    offsets[tps[3]] = None  # type: ignore[assignment]
    asyncio.run(Recovery._seek_offsets(object(), Consumer(), set(tps), offsets, "standby"))
    assert sought == {tps[0]: 7, tps[1]: 0, tps[2]: 0, tps[3]: 0}
