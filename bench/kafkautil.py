"""Broker-side helpers of the harness: create topics, produce the workload, watch and read
output topics.

Tansu notes: ListOffsets(LATEST) answers the base offset of the last record batch + 1, not the
log end, so "how far is a topic" is read from the high watermark of a fetch response
(``OutputWatch``), as ``rcmflow.runtime.kafka_io.read_topic`` does. Its admin OffsetFetch
(``list_consumer_group_offsets``) broke the connection in a probe; a group member's
``committed()`` works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record, read_topic

__all__ = [
    "KEEP_FOREVER",
    "create_topics",
    "produce_all",
    "OutputWatch",
    "CommittedCount",
    "wait_for_leaders",
    "delete_topics",
    "read_from",
    "read_topic",
    "Record",
    "committed_offsets",
]

#: Tansu reports only the configs a topic was created with: spell everything out.
KEEP_FOREVER = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
IN_FLIGHT_MAX = 5_000


async def create_topics(kafka: KafkaConnection, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=KEEP_FOREVER)
                                       for n in missing])
            await wait_for_leaders(admin, missing)
    finally:
        await admin.close()


async def wait_for_leaders(admin: AIOKafkaAdminClient, topics: Sequence[str],
                           timeout_s: float = 30.0) -> None:
    """Apache Kafka answers CreateTopics before the new partitions have a leader (a producer
    started in between gets NotLeaderForPartition and retries): wait for the leaders."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(list(topics))
        waiting = [e["topic"] for e in described if e["error_code"] != 0 or not e["partitions"]
                   or any(p["leader"] < 0 for p in e["partitions"])]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {waiting} have no leader after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


async def delete_topics(kafka: KafkaConnection, names: Sequence[str],
                        timeout_s: float = 60.0) -> None:
    """Delete ``names`` (those that exist) and wait until the broker no longer lists them
    (Apache Kafka deletes asynchronously: creating one again at once could fail)."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=30_000)
    await admin.start()
    try:
        present = [n for n in names if n in set(await admin.list_topics())]
        if present:
            await admin.delete_topics(present)
        deadline = time.monotonic() + timeout_s
        while set(present) & set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {present} still listed {timeout_s:.0f} s after "
                                   "their deletion")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def produce_all(kafka: KafkaConnection, topic: str,
                      records: Sequence[tuple[bytes, bytes]]) -> dict[int, int]:
    """Send every (key, value) with acks=all (default partitioner: murmur2 of the key).

    Returns the record count per partition, from the broker's acks.
    """
    producer = AIOKafkaProducer(**kafka.client_options(), acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    per_partition: dict[int, int] = {}
    try:
        pending: list[asyncio.Future[object]] = []

        async def drain() -> None:
            for meta in await asyncio.gather(*pending):
                part = meta.partition  # type: ignore[attr-defined]
                per_partition[part] = per_partition.get(part, 0) + 1
            pending.clear()

        for key, value in records:
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= IN_FLIGHT_MAX:
                await drain()
        await drain()
    finally:
        await producer.stop()
    return per_partition


class OutputWatch:
    """Cheap progress probe of a topic: the summed high watermark of its partitions.

    Each probe seeks to Tansu's ListOffsets answer (the last batch's base offset + 1) and
    fetches once, which returns at most one batch per partition and the true high watermark.
    """

    def __init__(self, kafka: KafkaConnection, topic: str, partitions: int) -> None:
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                                         enable_auto_commit=False, fetch_max_wait_ms=50)

    async def __aenter__(self) -> OutputWatch:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def highwaters(self) -> dict[int, int]:
        await self.consumer.seek_to_end(*self.tps)
        await self.consumer.getmany(timeout_ms=200, max_records=100_000)
        return {tp.partition: self.consumer.highwater(tp) or 0 for tp in self.tps}

    async def total(self) -> int:
        return sum((await self.highwaters()).values())


class CommittedCount:
    """Progress of a transactional system: the records a ``read_committed`` reader gets from
    ``start``. (Offsets cannot count them: each transaction adds a commit marker per
    partition, which takes an offset but is no record.) Same ``total()`` as OutputWatch:
    ``sum(start)`` + records read so far."""

    def __init__(self, kafka: KafkaConnection, topic: str, start: dict[int, int]) -> None:
        self.start = start
        self.tps = [TopicPartition(topic, p) for p in sorted(start)]
        self.count = 0
        self.consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                                         enable_auto_commit=False, fetch_max_wait_ms=50,
                                         isolation_level="read_committed")

    async def __aenter__(self) -> CommittedCount:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        for tp in self.tps:
            self.consumer.seek(tp, self.start[tp.partition])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def total(self) -> int:
        for _ in range(20):  # what is there now, in bounded steps
            batch = await self.consumer.getmany(timeout_ms=50, max_records=50_000)
            got = sum(len(messages) for messages in batch.values())
            self.count += got
            if not got:
                break
        return sum(self.start.values()) + self.count


async def read_from(kafka: KafkaConnection, topic: str, start: dict[int, int],
                    timeout_s: float = 60.0) -> list[Record]:
    """The records of ``topic`` from ``start`` offsets (per partition) to the current end."""
    return await read_topic(kafka, topic, start=start, timeout_s=timeout_s)


async def committed_offsets(kafka: KafkaConnection, group: str, topic: str,
                            partitions: int) -> dict[int, int | None]:
    """The offsets ``group`` committed on ``topic`` (asked by a member that never joins)."""
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p))
                for p in range(partitions)}
    finally:
        await consumer.stop()
