"""The worker's producer: a batch's records go out as one record batch per topic partition.

Per-record ``send`` costs ~10 µs and a future each; building aiokafka record batches costs ~3 µs
per record and one future per partition. Acks are all-replicas, idempotence off (the embedded
broker lacks it; duplicates are harmless because every re-send is byte-identical).

Under ``exactly_once`` (Apache Kafka), records go through Faust's transactional producer one by
one instead, so they join the transaction of their source partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, NamedTuple

import faust
from aiokafka import AIOKafkaProducer
from mode import Service

from rcmflow.kafka_connection import KafkaConnection
from rcmflow.kafka_preflight import ACCESS_ERRORS, access_error

__all__ = ["OutRecord", "Acked", "Outbox", "RECORD_BATCH_BYTES_MAX"]

#: Largest record batch sent (Kafka's default message.max.bytes is 1 MiB).
RECORD_BATCH_BYTES_MAX = 512 * 1024


class OutRecord(NamedTuple):
    topic: str
    partition: int
    key: bytes
    value: bytes


class Acked(NamedTuple):
    """The broker holds ``topic``/``partition`` up to ``last_offset``."""

    topic: str
    partition: int
    last_offset: int


class Outbox(Service):
    def __init__(self, app: faust.App, *, kafka: KafkaConnection, timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.kafka = kafka
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        await self._ensure_started()

    async def _ensure_started(self) -> None:
        if self._producer is not None or self.app.in_transaction:
            return
        self._producer = AIOKafkaProducer(
            **self.kafka.client_options(),
            acks="all",
            enable_idempotence=False,
            linger_ms=0,
            max_batch_size=RECORD_BATCH_BYTES_MAX,
            max_request_size=2 * RECORD_BATCH_BYTES_MAX,
            request_timeout_ms=int(self.timeout_s * 1000),
        )
        await self._producer.start()

    async def on_stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, records: Iterable[OutRecord]) -> list[Acked]:
        """Send every record, in order per partition, and wait until the broker has them all.

        A refused write (an ACL missing or removed) raises KafkaAccessError naming it: the
        agent crashes the worker rather than retry what no retry fixes.
        """
        try:
            return await self._send(records)
        except ACCESS_ERRORS as exc:
            reason = access_error(exc, self.kafka, "worker", operation="WRITE")
            assert reason is not None
            raise reason from exc

    async def _send(self, records: Iterable[OutRecord]) -> list[Acked]:
        await self._ensure_started()
        if self._producer is None:
            return await self._send_transactional(records)
        producer = self._producer
        futures: list[tuple[str, int, int, asyncio.Future[Any]]] = []
        builders: dict[tuple[str, int], Any] = {}
        counts: dict[tuple[str, int], int] = {}

        async def flush(topic: str, partition: int) -> None:
            batch = builders.pop((topic, partition))
            future = await producer.send_batch(batch, topic, partition=partition)
            futures.append((topic, partition, counts.pop((topic, partition)), future))

        for record in records:
            tp = (record.topic, record.partition)
            if tp not in builders:
                builders[tp] = producer.create_batch()
                counts[tp] = 0
            if builders[tp].append(key=record.key, value=record.value, timestamp=None) is None:
                await flush(*tp)
                builders[tp] = producer.create_batch()
                counts[tp] = 0
                metadata = builders[tp].append(key=record.key, value=record.value,
                                               timestamp=None)
                assert metadata is not None, f"a record of {len(record.value)} bytes is too big"
            counts[tp] += 1
        for tp in list(builders):
            await flush(*tp)
        done = await asyncio.wait_for(asyncio.gather(*(f for *_, f in futures)), self.timeout_s)
        return [Acked(topic, partition, meta.offset + count - 1)
                for (topic, partition, count, _), meta in zip(futures, done, strict=True)]

    async def _send_transactional(self, records: Iterable[OutRecord]) -> list[Acked]:
        futures = [await self.app.producer.send(r.topic, r.key, r.value, r.partition, None, None)
                   for r in records]
        done = await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s)
        return [Acked(m.topic, m.partition, m.offset) for m in done]
