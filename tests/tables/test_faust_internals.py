"""The Faust internals rcmflow leans on are still there and still behave as assumed.

If faust-streaming is upgraded, these fail first: re-read tables/faust_internals.py against the
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

from rcmflow.tables.faust_internals import FAUST_VERSION, fetch_highwaters, install_highwater_fix
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


def test_take_events_exists_and_acks_after_the_batch() -> None:
    source = inspect.getsource(faust.Stream.take_events)
    assert "yield list(events)" in source
    assert source.index("yield list(events)") < source.index("await self.ack(event)")


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

    from rcmflow.tables.faust_internals import disable_gap_commits

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

    from rcmflow.tables.faust_internals import limit_commits

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

    limit_commits()
    assert Consumer._new_offset(consumer(FakeApp()), tp) == 14  # past unread offset 10
    app = FakeApp()
    app.rcmflow_commit_limit = lambda tp: 10  # type: ignore[attr-defined]
    limited = consumer(app)
    assert Consumer._new_offset(limited, tp) == 10
    app.rcmflow_commit_limit = lambda tp: 13  # type: ignore[attr-defined]
    assert Consumer._new_offset(limited, tp) == 13
    assert limited._acked[tp] == [13] and limited._acked_index[tp] == {13}
    app.rcmflow_commit_limit = lambda tp: None  # type: ignore[attr-defined]
    assert Consumer._new_offset(limited, tp) is None
