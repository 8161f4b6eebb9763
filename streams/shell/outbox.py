"""The worker's producer: a batch's records go out as one record batch per topic partition.

Per-record ``send`` costs ~10 µs and a future each; building aiokafka record batches costs ~3 µs
per record and one future per partition.

- **at_least_once**: one producer, acks from all replicas, idempotence off (the embedded broker
  lacks it; duplicates are harmless because every re-send is byte-identical).
- **exactly_once** (Apache Kafka): one transactional producer per assigned ``rcm.events``
  partition, ``transactional.id`` = ``<app id>-events-<partition>``. Everything a batch makes
  for source partition *p* (deltas, DLQ records, dedup and state changelog records: all on
  partition *p* of their topics) and the next ``rcm.events`` offset of *p* are committed in
  one transaction of producer *p*: a ``read_committed`` reader sees all of it or none.
  Starting producer *p* (InitProducerId) fences every earlier incarnation of it — a crashed or
  paused worker that had *p* — and aborts its open transaction, so a zombie can never commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from mode import Service

from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_preflight import ACCESS_ERRORS, access_error
from rcmflow.streams.outgoing import Acked, OutRecord
from rcmflow.streams.topics import OUTPUT_RECORD_BYTES_MAX

__all__ = ["Outbox", "RECORD_BATCH_BYTES_MAX", "transactional_id"]

#: Record batches are cut at this size (a record larger than it travels in a batch alone).
RECORD_BATCH_BYTES_MAX = 512 * 1024


def transactional_id(app_id: str, partition: int) -> str:
    """The transactional id of the producer that owns ``rcm.events`` partition ``partition``."""
    return f"{app_id}-events-{partition}"


class Outbox(Service):
    def __init__(self, *, kafka: KafkaConnection, timeout_s: float, app_id: str,
                 source_topic: str, exactly_once: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.app_id = app_id
        #: The topic whose offsets commit with each transaction (rcm.events).
        self.source_topic = source_topic
        self.exactly_once = exactly_once
        self._producer: AIOKafkaProducer | None = None
        #: exactly_once: rcm.events partition -> its transactional producer.
        self._transactional: dict[int, AIOKafkaProducer] = {}
        #: exactly_once: partitions whose producer has a transaction open.
        self._open: set[int] = set()
        #: Held while producers start: the assignment handler and a batch may both ask.
        self._opening = asyncio.Lock()

    def _new_producer(self, **extra: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self.kafka.client_options(),
            acks="all",
            linger_ms=0,
            max_batch_size=RECORD_BATCH_BYTES_MAX,
            # A batch holds one record larger than max_batch_size alone: up to the output
            # topics' limit (a large delta or DLQ record).
            max_request_size=OUTPUT_RECORD_BYTES_MAX,
            request_timeout_ms=int(self.timeout_s * 1000),
            **extra,
        )

    async def on_start(self) -> None:
        if not self.exactly_once:
            self._producer = self._new_producer(enable_idempotence=False)
            await self._producer.start()

    async def on_stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        await self.close_partitions(list(self._transactional))

    # -- exactly_once: the producers follow the assignment -------------------------------
    async def open_partitions(self, partitions: Iterable[int]) -> None:
        """Start the transactional producers of newly assigned partitions (fencing the
        previous owner's, and aborting what it left open)."""
        if not self.exactly_once:
            return
        async with self._opening:
            for partition in sorted(set(partitions) - set(self._transactional)):
                producer = self._new_producer(
                    transactional_id=transactional_id(self.app_id, partition))
                await producer.start()
                self._transactional[partition] = producer

    async def close_partitions(self, partitions: Iterable[int]) -> None:
        """Stop the producers of revoked partitions: their new owner fences them anyway."""
        for partition in list(partitions):
            self._open.discard(partition)
            producer = self._transactional.pop(partition, None)
            if producer is not None:
                await producer.stop()

    async def _producer_for(self, partition: int) -> AIOKafkaProducer:
        if not self.exactly_once:
            assert self._producer is not None, "the outbox is not started"
            return self._producer
        if partition not in self._transactional:
            # Records can arrive before the assignment handler has started the producers.
            await self.open_partitions([partition])
        producer = self._transactional[partition]
        if partition not in self._open:
            await producer.begin_transaction()
            self._open.add(partition)
        return producer

    # -- sending ------------------------------------------------------------------------
    async def send(self, records: Iterable[OutRecord]) -> list[Acked]:
        """Send every record, in order per partition, and wait until the broker has them all.

        Under exactly_once each record joins the open transaction of its partition's producer
        (opened here): acknowledged, but invisible to ``read_committed`` readers until
        ``commit``. A refused write (an ACL missing or removed) raises KafkaAccessError naming
        it: the agent crashes the worker rather than retry what no retry fixes.
        """
        try:
            return await self._send(records)
        except ACCESS_ERRORS as exc:
            reason = access_error(exc, self.kafka, "worker", operation="WRITE")
            assert reason is not None
            raise reason from exc

    async def _send(self, records: Iterable[OutRecord]) -> list[Acked]:
        futures: list[tuple[str, int, int, asyncio.Future[Any]]] = []
        builders: dict[tuple[str, int], Any] = {}
        counts: dict[tuple[str, int], int] = {}

        async def flush(topic: str, partition: int) -> None:
            batch = builders.pop((topic, partition))
            producer = await self._producer_for(partition)
            future = await producer.send_batch(batch, topic, partition=partition)
            futures.append((topic, partition, counts.pop((topic, partition)), future))

        for record in records:
            tp = (record.topic, record.partition)
            if tp not in builders:
                builders[tp] = (await self._producer_for(record.partition)).create_batch()
                counts[tp] = 0
            if builders[tp].append(key=record.key, value=record.value, timestamp=None) is None:
                await flush(*tp)
                builders[tp] = (await self._producer_for(record.partition)).create_batch()
                counts[tp] = 0
                metadata = builders[tp].append(key=record.key, value=record.value,
                                               timestamp=None)
                size = len(record.value or b"")
                assert metadata is not None, f"a record of {size} bytes is too big"
            counts[tp] += 1
        for tp in list(builders):
            await flush(*tp)
        done = await asyncio.wait_for(asyncio.gather(*(f for *_, f in futures)), self.timeout_s)
        return [Acked(topic, partition, meta.offset + count - 1)
                for (topic, partition, count, _), meta in zip(futures, done, strict=True)]

    async def commit(self, next_offsets: dict[int, int], group_id: str) -> None:
        """exactly_once: commit each partition's transaction with the offset of the next
        ``source_topic`` record it must read (the group's committed offset, in the same
        transaction). Raises if a producer was fenced (a newer owner took the partition)."""
        async def commit_one(partition: int, offset: int) -> None:
            producer = await self._producer_for(partition)
            await producer.send_offsets_to_transaction(
                {TopicPartition(self.source_topic, partition): offset}, group_id)
            await producer.commit_transaction()
            self._open.discard(partition)

        await asyncio.wait_for(
            asyncio.gather(*(commit_one(p, o) for p, o in sorted(next_offsets.items()))),
            self.timeout_s)
