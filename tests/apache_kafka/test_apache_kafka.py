"""Apache Kafka from tests/apache_kafka starts, takes the rcm.* topics, and runs what Tansu
cannot: an idempotent producer and transactions (read_committed hides an aborted one)."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from rcmflow.runtime.broker import ensure_topics
from rcmflow.streams.topics import TopicSpec, topic_specs
from tests.apache_kafka.fixtures import PARTITIONS
from tests.apache_kafka.server import START_TIMEOUT_S, ApacheKafka

pytestmark = pytest.mark.broker

READ_TIMEOUT_S = 20.0


async def _fresh_topic(kafka: ApacheKafka, name: str) -> str:
    # One partition: the order of what was written is the order read back.
    await ensure_topics(kafka.connection, [TopicSpec(name, {}, "test")], 1, 1)
    return name


async def _read_all(kafka: ApacheKafka, topic: str, isolation_level: str) -> list[bytes]:
    """Every value up to the partition's end as this isolation level sees it (LSO or HW)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False,
                                isolation_level=isolation_level)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        # Transaction markers take offsets too: stop on position, not on a record count.
        while await consumer.position(partition) < end:
            assert time.monotonic() < deadline, f"read {values} of {topic}, not up to {end}"
            batches = await consumer.getmany(partition, timeout_ms=500)
            values += [record.value for record in batches.get(partition, []) if record.value]
        return values
    finally:
        await consumer.stop()


async def test_broker_starts_and_answers_on_loopback(apache_kafka: ApacheKafka) -> None:
    assert apache_kafka.process is not None and apache_kafka.process.poll() is None
    assert apache_kafka.url == f"kafka://127.0.0.1:{apache_kafka.port}"
    assert apache_kafka.started_in_s is not None and apache_kafka.started_in_s < START_TIMEOUT_S
    print(f"Apache Kafka started in {apache_kafka.started_in_s:.1f}s")


async def test_ensure_topics_created_the_rcm_topics(apache_kafka: ApacheKafka) -> None:
    specs = topic_specs("rcmflow")
    admin = AIOKafkaAdminClient(bootstrap_servers=apache_kafka.bootstrap)
    await admin.start()
    try:
        described = {topic["topic"]: topic
                     for topic in await admin.describe_topics([spec.name for spec in specs])}
    finally:
        await admin.close()
    for spec in specs:
        assert described[spec.name]["error_code"] == 0, described[spec.name]
        assert len(described[spec.name]["partitions"]) == PARTITIONS
    # The fixture created them all: a second call finds nothing missing.
    assert await ensure_topics(apache_kafka.connection, specs, PARTITIONS, 1) == []


async def test_idempotent_producer_writes_each_record_once(apache_kafka: ApacheKafka) -> None:
    topic = await _fresh_topic(apache_kafka, "test.apache-kafka.idempotent")
    producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, f"record-{n}".encode())
    finally:
        await producer.stop()
    assert await _read_all(apache_kafka, topic, "read_committed") == [
        f"record-{n}".encode() for n in range(10)]


async def test_read_committed_sees_committed_transactions_only(apache_kafka: ApacheKafka) -> None:
    topic = await _fresh_topic(apache_kafka, "test.apache-kafka.transactions")
    producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap,
                                transactional_id="rcmflow-test-apache-kafka")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed after the abort")
    finally:
        await producer.stop()
    assert await _read_all(apache_kafka, topic, "read_committed") == [
        b"committed", b"committed after the abort"]
    # The aborted record was written to the log: read_uncommitted shows it, so the line above
    # proves the broker filtered it, not that it never arrived.
    assert await _read_all(apache_kafka, topic, "read_uncommitted") == [
        b"committed", b"aborted", b"committed after the abort"]
