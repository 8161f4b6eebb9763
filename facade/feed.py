"""Feeds the read model from the compacted ``rcm.accounts`` topic.

The topic carries a head and one record per item for each account (``streams/layout.py``).
A consumer that joins no group (the facade scales apart from the workers and never moves
their partitions) reads every partition from the offsets the store remembers, applies each
batch and its next offsets in one store transaction, and keeps the high watermark each fetch
reports, so lag = high watermark - next offset needs no ListOffsets (which the embedded broker
answers wrongly). A store filled from another broker, or from a topic that was recreated
(offsets past the log end), is emptied and filled again from the beginning.

Catching up, a batch is up to ``BATCH_RECORDS_MAX`` records: one transaction, and each
resource the batch touches built once, however many of its records name it (an account's
head comes once per worker batch). What the store could not build or read it holds as
exception records (``Store.unsent_exceptions``): the feed sends them to rcm.dlq after the
batch and marks them sent once acknowledged, so a crash in between sends them again, with
the same dlq_id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from rcmflow.facade.store import Store
from rcmflow.runtime.exceptions import KafkaAccessError
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import log_ends, publish, topic_partitions
from rcmflow.runtime.kafka_preflight import access_error
from rcmflow.streams.topics import ACCOUNTS, DLQ

__all__ = ["Feeder", "FeedStatus", "samples_validation"]

log = logging.getLogger("rcmflow.facade")

#: Records per store transaction while catching up (caught up, a batch is what arrived in
#: one fetch wait): one commit, and each resource built once, per 5,000 (bench/RESULTS.md,
#: "Facade at scale"). The API reads beside the writer (WAL): a batch holds no reader, only
#: ~0.5 s of the GIL in turns.
BATCH_RECORDS_MAX = 5_000
#: A batch of more records than this is a bulk arrival (a file's worth written at once), not
#: live traffic: its resources' FHIR validation is sampled as a backlog's is. Live traffic
#: (hundreds of events a second) brings tens of records per fetch; the last batch of a bulk
#: file fully validated cost ~380 µs a record, the whole catch-up's rate down to the worker's.
LIVE_BATCH_RECORDS_MAX = 500
#: Longest a fetch waits for new records: bounds the read-your-writes delay it adds.
FETCH_WAIT_MS = 100
#: Longest wait for the topic's metadata at start before trying again (logged each time).
METADATA_WAIT_S = 5.0


def samples_validation(batch_records: int, lag_behind: int | None) -> bool:
    """Whether a batch is applied as catch-up (FHIR validation sampled, ``Store.apply``):
    a full batch, one larger than live traffic brings, or one with more waiting behind it
    (the lag last fetched, ``lag_behind``, past this batch)."""
    return (batch_records > LIVE_BATCH_RECORDS_MAX
            or (lag_behind is not None and lag_behind > 0))


@dataclass
class FeedStatus:
    started: bool = False
    #: partition -> next offset applied / high watermark last fetched.
    positions: dict[int, int] = field(default_factory=dict)
    highwaters: dict[int, int] = field(default_factory=dict)
    applied_records: int = 0
    last_applied_at_s: float | None = None
    #: Exception records (resources not built, records not read) rcm.dlq acknowledged.
    exceptions_sent: int = 0
    error: str | None = None

    def positions_json(self) -> dict[str, dict[str, int | None]]:
        return {str(p): {"next_offset": pos, "highwater": self.highwaters.get(p)}
                for p, pos in sorted(self.positions.items())}

    def lag(self) -> int | None:
        """Records on the topic not yet in the store; None until every partition fetched."""
        if not self.started or set(self.highwaters) != set(self.positions):
            return None
        return sum(max(0, hw - self.positions[p]) for p, hw in self.highwaters.items())


class Feeder:
    def __init__(self, store: Store, kafka: KafkaConnection, *, source: str,
                 topic: str = ACCOUNTS) -> None:
        self.store = store
        self.kafka = kafka
        self.source = source
        self.topic = topic
        self.status = FeedStatus()
        #: Set when the feed stopped for good: the broker refused the login or an ACL.
        self.fatal: KafkaAccessError | None = None
        #: Called once then (`rcmflow facade` stops the server: no retry can fix it).
        self.on_fatal: Callable[[KafkaAccessError], None] | None = None

    async def run(self) -> None:
        """Consume until cancelled. Errors are logged and shown on /health, then retried;
        a refused login or a missing ACL (no retry fixes those) stops the feed instead."""
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fatal = access_error(exc, self.kafka, "facade")
                if fatal is not None:
                    self.fatal = fatal
                    self.status.error = str(fatal)[:300]
                    log.error("facade feed from %s stopped: %s", self.topic, fatal)
                    if self.on_fatal is not None:
                        self.on_fatal(fatal)
                    return
                self.status.error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("facade feed from %s failed; retrying in 2 s", self.topic)
                await asyncio.sleep(2)

    async def _consume(self) -> None:
        # read_committed: under exactly_once a record shows once its transaction commits.
        consumer = AIOKafkaConsumer(**self.kafka.client_options(), group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS,
                                    auto_offset_reset="earliest",
                                    isolation_level="read_committed")
        await consumer.start()
        try:
            partitions = await self._partitions()
            start = await self._start_offsets(partitions)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start.get(tp.partition, 0))
            self.status.positions = {p: start.get(p, 0) for p in partitions}
            self.status.started = True
            self.status.error = None
            log.info("facade feed: reading %s (%d partitions) from %s", self.topic,
                     len(partitions), self.status.positions)
            while True:
                batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS * 2,
                                               max_records=BATCH_RECORDS_MAX)
                records: list[tuple[str, bytes | None]] = []
                offsets: dict[int, int] = {}
                for tp, messages in batch.items():
                    for m in messages:
                        if m.key is not None:
                            records.append((m.key.decode(), m.value))
                        offsets[tp.partition] = m.offset + 1
                if offsets:
                    lag = self.status.lag()
                    fetched = sum(map(len, batch.values()))
                    bulk = samples_validation(
                        fetched, None if lag is None else lag - fetched)
                    await asyncio.to_thread(self.store.apply, records, offsets,
                                            catching_up=bulk)
                    self.status.positions.update(offsets)
                    self.status.applied_records += len(records)
                    self.status.last_applied_at_s = time.time()
                if self.status.lag() == 0:  # at the end: held exceptions stand (store.py)
                    await asyncio.to_thread(self.store.release_held)
                await self._send_exceptions()
                for tp in tps:
                    hw = consumer.highwater(tp)
                    if hw is not None:
                        self.status.highwaters[tp.partition] = hw
        finally:
            self.status.started = False
            await consumer.stop()

    async def _send_exceptions(self) -> None:
        """Send the store's unsent exception records to rcm.dlq (keyed by account, so an
        account's records keep their order); marked sent once acknowledged."""
        while unsent := self.store.unsent_exceptions():
            await publish(self.kafka, [(DLQ, account.encode(), record)
                                       for _, account, record in unsent])
            await asyncio.to_thread(self.store.mark_sent, [dlq_id for dlq_id, _, _ in unsent])
            self.status.exceptions_sent += len(unsent)
            log.warning("facade feed: %d exception record(s) sent to %s", len(unsent), DLQ)

    async def _partitions(self) -> list[int]:
        while True:
            found = await topic_partitions(self.kafka, self.topic)
            if found:
                return found
            log.warning("facade feed: topic %s not found yet; waiting", self.topic)
            await asyncio.sleep(METADATA_WAIT_S)

    async def _start_offsets(self, partitions: list[int]) -> dict[int, int]:
        if self.store.meta("source") != self.source:
            log.warning("facade read model was filled from another broker or is new: "
                        "filling it from the beginning of %s", self.topic)
            await asyncio.to_thread(self.store.reset, self.source)
            return {}
        held = self.store.offsets()
        ends = await log_ends(self.kafka, self.topic, partitions)
        if any(held.get(p, 0) > ends[p] for p in partitions) or set(held) - set(partitions):
            log.warning("facade read model is ahead of %s (topic recreated?): filling it again",
                        self.topic)
            await asyncio.to_thread(self.store.reset, self.source)
            return {}
        return held
