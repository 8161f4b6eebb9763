"""Plain Kafka reads and writes: publish records, read a topic to its end, log ends.

"The end" is what a fetch response reports (Tansu's ListOffsets answer is not the log end),
read per partition by a consumer that joins no group and commits nothing. Readers read
``read_committed``: under exactly_once a worker's records become visible when its transaction
commits, and an aborted transaction's records are never seen (on a broker without
transactions both isolation levels read the same).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Literal, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    KafkaError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from aiokafka.structs import TopicPartition

from rcmflow.runtime.exceptions import RecordTooLarge
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.topics import RAW_HL7_RECORD_BYTES_MAX, record_bytes_max

log = logging.getLogger("rcmflow.kafka")

__all__ = ["Record", "Outgoing", "Headers", "read_topic", "iter_topic", "publish", "send",
           "stop_consumer",
           "log_ends", "topic_partitions", "committed_offsets", "group_lag",
           "check_record_sizes", "record_size", "IsolationLevel", "READ_TIMEOUT_S",
           "PUBLISH_IN_FLIGHT_MAX"]

READ_TIMEOUT_S = 30.0
#: Room kept under a topic's record limit for the record's own overhead.
RECORD_OVERHEAD_BYTES = 1024
#: A request holds records up to the largest any rcm.* topic takes (rcm.raw.hl7's).
PUBLISH_REQUEST_BYTES_MAX = RAW_HL7_RECORD_BYTES_MAX
#: Records, and their bytes, queued before waiting for acks: bounds memory on a large file.
PUBLISH_IN_FLIGHT_MAX = 5_000
PUBLISH_IN_FLIGHT_BYTES_MAX = 32 * 1024 * 1024


Headers = tuple[tuple[str, bytes], ...]
IsolationLevel = Literal["read_committed", "read_uncommitted"]
#: What connectors publish: (topic, key, value), or with Kafka record headers as a fourth
#: item (rcm.raw.hl7 keeps the bytes as received and says what became of them in headers).
Outgoing = tuple[str, bytes | None, bytes] | tuple[str, bytes | None, bytes, Headers]


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: Headers = ()


async def read_topic(
    kafka: KafkaConnection,
    topic: str,
    *,
    keep: Callable[[bytes | None], bool] | None = None,
    start: dict[int, int] | None = None,
    timeout_s: float = READ_TIMEOUT_S,
    isolation_level: IsolationLevel = "read_committed",
) -> list[Record]:
    """The records of ``topic`` to its current end: from the beginning, or from ``start``
    offsets (partition -> offset, those partitions only); optionally only keys ``keep``s.
    ``read_committed`` ends at the last stable offset (before an open transaction).
    TimeoutError past ``timeout_s`` in all (``iter_topic`` is the stream of the same read)."""
    records: list[Record] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for batch in iter_topic(kafka, topic, keep=keep, start=start,
                                          idle_timeout_s=timeout_s,
                                          isolation_level=isolation_level):
                records.extend(batch)
    except TimeoutError:
        raise TimeoutError(f"reading {topic} did not reach its end in {timeout_s}s") from None
    return records


async def iter_topic(
    kafka: KafkaConnection,
    topic: str,
    *,
    keep: Callable[[bytes | None], bool] | None = None,
    start: dict[int, int] | None = None,
    idle_timeout_s: float = READ_TIMEOUT_S,
    isolation_level: IsolationLevel = "read_committed",
    batch_records: int = 10_000,
    on_read: Callable[[int], None] | None = None,
) -> AsyncIterator[list[Record]]:
    """``read_topic`` as a stream: the records to the topic's current end in batches of at
    most ``batch_records``, in offset order per partition, so a caller that folds each batch
    in holds one batch, not the topic. ``on_read(n)``: n records were read (before ``keep``),
    for progress. TimeoutError when no record arrives for ``idle_timeout_s`` before the end
    (a long topic is not a timeout; a broker that stops answering is)."""
    tps = [TopicPartition(topic, p) for p in sorted(start or await topic_partitions(kafka, topic))]
    if not tps:
        return
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100,
                                isolation_level=isolation_level)
    await consumer.start()
    try:
        consumer.assign(tps)
        if start is None:
            await consumer.seek_to_beginning(*tps)
        else:
            for tp in tps:
                consumer.seek(tp, start[tp.partition])
        done: set[TopicPartition] = set()
        deadline = time.monotonic() + idle_timeout_s
        while len(done) < len(tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: nothing arrived for {idle_timeout_s}s "
                                   "before its end")
            batch = await consumer.getmany(timeout_ms=200, max_records=batch_records)
            records: list[Record] = []
            for messages in batch.values():
                if messages:
                    deadline = time.monotonic() + idle_timeout_s
                if on_read is not None:
                    on_read(len(messages))
                records.extend(Record(m.topic, m.partition, m.offset, m.key, m.value,
                                      m.timestamp, tuple(m.headers or ()))
                               for m in messages if keep is None or keep(m.key))
            if records:
                yield records
                deadline = time.monotonic() + idle_timeout_s  # the caller's time is not idle
            del records
            for tp in tps:
                end = consumer.highwater(tp)
                stable = consumer.last_stable_offset(tp)
                if isolation_level == "read_committed" and end is not None and stable:
                    end = min(end, stable) if stable > 0 else end
                if end is not None and await consumer.position(tp) >= end:
                    done.add(tp)
    finally:
        await stop_consumer(consumer)


async def topic_partitions(kafka: KafkaConnection, topic: str) -> list[int]:
    """The partitions of ``topic`` ([] if it does not exist), from a metadata request made now.

    Not from a consumer's metadata: a consumer that started while the topic was being created
    (Apache Kafka: partitions without a leader yet) keeps a view without them and does not
    ask again for a topic it was not given.
    """
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry["topic"] != topic or entry["error_code"] == UnknownTopicOrPartitionError.errno:
            continue
        if entry["error_code"] == TopicAuthorizationFailedError.errno:
            raise TopicAuthorizationFailedError(
                f"{topic}: not authorized for {kafka.describe()} (a Kafka ACL is missing)")
        if entry["error_code"] != 0:
            raise KafkaError(f"{topic}: metadata error {entry['error_code']}")
        return sorted(p["partition"] for p in entry["partitions"])
    return []


async def committed_offsets(kafka: KafkaConnection, group_id: str, topic: str,
                            partitions: Iterable[int]) -> dict[int, int]:
    """The offsets ``group_id`` committed for these partitions (none committed: absent)."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(
            group_id, partitions=[TopicPartition(topic, p) for p in sorted(partitions)])
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in found.items() if meta.offset >= 0}


async def send(producer: AIOKafkaProducer, item: Outgoing) -> asyncio.Future[object]:
    """Queue one outgoing record (with its headers, if any); the future is its ack."""
    topic, key, value = item[0], item[1], item[2]
    headers = list(item[3]) if len(item) > 3 else None
    future: asyncio.Future[object] = await producer.send(topic, value=value, key=key,
                                                         headers=headers)
    return future


def record_size(item: Outgoing) -> int:
    """Bytes of a record's key, value and headers (the broker adds a few dozen)."""
    headers = item[3] if len(item) > 3 else ()
    return (len(item[1] or b"") + len(item[2])
            + sum(len(name) + len(value) for name, value in headers))


def check_record_sizes(items: Iterable[Outgoing]) -> None:
    """RecordTooLarge for the first record its topic would refuse (nothing is sent)."""
    for item in items:
        size, limit = record_size(item), record_bytes_max(item[0])
        if size + RECORD_OVERHEAD_BYTES > limit:
            raise RecordTooLarge(f"a record for {item[0]} of {size} bytes is larger than the "
                                 f"{limit} bytes that topic takes")


async def publish(
    kafka: KafkaConnection,
    items: Iterable[Outgoing],
    *,
    on_acked: Callable[[int], None] | None = None,
) -> int:
    """Send (topic, key, value[, headers]) with acks=all; returns how many the broker
    acknowledged. A record its topic cannot take raises RecordTooLarge before it is sent
    (callers check a unit's records first: ``check_record_sizes``)."""
    producer = AIOKafkaProducer(**kafka.client_options(), acks="all", linger_ms=5,
                                max_request_size=PUBLISH_REQUEST_BYTES_MAX)
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[object]] = []
        queued_bytes = 0
        for item in items:
            check_record_sizes([item])
            pending.append(await send(producer, item))
            queued_bytes += record_size(item)
            if len(pending) >= PUBLISH_IN_FLIGHT_MAX or queued_bytes >= PUBLISH_IN_FLIGHT_BYTES_MAX:
                await asyncio.gather(*pending)
                sent += len(pending)
                if on_acked:
                    on_acked(len(pending))
                pending.clear()
                queued_bytes = 0
        await asyncio.gather(*pending)
        sent += len(pending)
        if on_acked and pending:
            on_acked(len(pending))
    finally:
        await producer.stop()
    return sent


async def log_ends(kafka: KafkaConnection, topic: str, partitions: list[int], *,
                   timeout_s: float = READ_TIMEOUT_S) -> dict[int, int]:
    """The true end offset of each partition: ListOffsets, or the high watermark a fetch
    reports where that is larger (Tansu answers ListOffsets with the last batch's base offset
    + 1: streams/shell/faust_internals.py, 5). One client, Faust not imported (a quarter of a
    second of an operator listing)."""
    tps = [TopicPartition(topic, p) for p in partitions]
    deadline = time.monotonic() + timeout_s
    probe = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=100,
                             max_partition_fetch_bytes=1024)
    await probe.start()
    try:
        probe.assign(tps)  # its metadata first: else ListOffsets waits a retry backoff
        listed = await probe.end_offsets(tps)
        ends = {tp.partition: listed[tp] for tp in tps}
        waiting = [tp for tp in tps if listed[tp] > 0]  # 0: an empty partition
        if not waiting:
            return ends
        probe.assign(waiting)  # (an empty assignment would leave stop() waiting)
        for tp in waiting:
            probe.seek(tp, listed[tp] - 1)
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no high watermark of {topic} in {timeout_s}s")
            await probe.getmany(*waiting, timeout_ms=200, max_records=1)
            for tp in list(waiting):
                highwater = probe.highwater(tp)
                if highwater is not None:
                    ends[tp.partition] = max(ends[tp.partition], highwater)
                    waiting.remove(tp)
                    probe.pause(tp)
    finally:
        await stop_consumer(probe)
    return ends


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, without the CancelledError aiokafka raises from its own fetch task
    when that task was backing off from a failed fetch (the broker down): not a cancellation
    of ours, and it would end a caller's timer (the worker's watchdog) for good."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: let it through
        log.warning("a consumer's fetch task ended cancelled while it stopped (broker down?)")


async def group_lag(kafka: KafkaConnection, consumer: AIOKafkaConsumer, topic: str,
                    timeout_s: float = 10.0) -> int | None:
    """Σ over ``topic``'s partitions of (true log end − the offset ``consumer``'s group has
    committed, 0 when none); None while the consumer knows no partitions of it yet."""
    partitions = sorted(consumer.partitions_for_topic(topic) or [])
    if not partitions:
        return None
    ends = await asyncio.wait_for(log_ends(kafka, topic, partitions), timeout_s)
    lag = 0
    for p in partitions:
        committed = await consumer.committed(TopicPartition(topic, p))
        lag += max(0, ends[p] - (committed or 0))
    return lag
