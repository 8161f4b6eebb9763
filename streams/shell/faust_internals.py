"""Everything the worker needs from Faust's consumer side beyond its public API, in one
place (the tables' store access is ``tables/faust_store.py``).

faust-streaming is pinned (pyproject.toml) and ``tests/streams/shell/test_faust_internals.py``
fails when any of these hooks moves. The reasons to reach inside:

1. **Batch writes.** ``table[key] = value`` sends one changelog record through Faust's own
   producer path per write, which costs ~120 µs on this class of machine. rcmflow instead
   writes a whole batch to the table's RocksDB partition, produces its changelog records as
   record batches (``streams/shell/outbox.py``), waits once for the acks and then records the
   changelog offset the way ``Collection._on_changelog_sent`` does, so recovery resumes there.
2. **Stalled partitions.** Faust can leave an assigned partition out of what its consumer
   fetches after a rebalance (paused, or dropped from its active set; faust-streaming #629).
   The worker's watchdog (``streams/shell/worker.py``) notices an assigned partition
   that has records but delivers none, puts it back (``resume``), seeks it, and crashes
   loudly if that fails.
3. **No commits past unread records.** Faust's drain loop treats a jump in offsets as a "gap"
   and lets the commit run past it. A jump also happens when records fetched before a
   rebalance's seek are delivered after it; the records in between were never processed.
   ``disable_gap_commits`` turns the gap bookkeeping off, so an offset is committed only when
   every record before it was acked (``streams/ordering.py`` re-reads such holes). rcm.events is
   written without transactions and kept forever, so it has no real gaps. That is not enough
   on its own: with no committed offset yet (a new group), or a hole of exactly one record
   (``_new_offset`` tests ``min(acked) - committed > 1``), Faust still commits past records it
   never delivered. ``limit_commits`` hands the commit offset of rcm.events to the worker: the
   offset after the last record whose batch is durable, never more.
4. **Records a fetch at a time.** Faust hands every record to its agents one by one: a
   ``ConsumerMessage``, four tasks and an ``asyncio.wait`` in the drain loop, the conductor's
   decode and queue, the stream's iteration, an ack — ~60 µs per record, as much as the
   rest of the worker. ``bulk_consume`` takes the rcm.events records out of each fetch
   (``BulkFeed``) before Faust's drain loop sees them; Faust keeps the consumer, the group,
   the rebalances, the table recovery (changelog records still take its per-record path)
   and the commits (``limit_commits``), and ``wait_empty`` waits for the batch in hand, as
   it waits for unacked events.
5. **Recovery highwaters on Tansu.** The embedded broker answers ListOffsets(LATEST) with the
   base offset of the last record batch + 1 instead of the log end; Faust's recovery stops at
   that answer and silently misses records (or raises ConsistencyError when the local store is
   further along). ``install_highwater_fix`` takes the larger of that answer and the high
   watermark a short-lived, group-less consumer reads from a fetch. On Apache Kafka both agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import faust
from aiokafka.structs import TopicPartition
from faust.tables import recovery as faust_recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from rcmflow.runtime.kafka_probes import fetch_highwaters, last_committed_ends

__all__ = [
    "FAUST_VERSION",
    "install_highwater_fix",
    "disable_gap_commits",
    "limit_commits",
    "CommitLimit",
    "BulkFeed",
    "bulk_consume",
    "mark_for_commit",
    "note_committed",
    "own_transactions",
    "seek",
    "assigned_partitions",
    "commit_in_flight",
    "committed_offset",
    "settled",
    "fetching_state",
    "pause",
    "resume",
]

#: The faust-streaming release these hooks were written and tested against.
FAUST_VERSION = "0.15.3"


def disable_gap_commits() -> None:
    """Commit only offsets below which every record was acked (idempotent)."""
    consumer_cls: Any = faust_consumer.Consumer

    async def _add_gap(self: Any, tp: TP, offset_from: int, offset_to: int) -> None:
        return None

    consumer_cls._add_gap = _add_gap


#: What the consumer may commit for a partition: the next offset to read (every record below
#: it is durably applied), or None to commit nothing for it.
CommitLimit = Callable[[TP], int | None]

#: App -> its commit limit. The patch is on Faust's Consumer class (shared by every app in the
#: process); each consumer finds its own app's limit here, given by ``limit_commits``.
_COMMIT_LIMITS: weakref.WeakKeyDictionary[Any, CommitLimit] = weakref.WeakKeyDictionary()


def limit_commits(app: Any, limit: CommitLimit) -> None:
    """Let ``limit(tp)`` decide the offsets the consumer of ``app`` commits.

    Apps given no limit keep Faust's rule. Installs the consumer patch once per process.
    """
    _COMMIT_LIMITS[app] = limit
    consumer_cls: Any = faust_consumer.Consumer
    if getattr(consumer_cls, "_rcmflow_commit_limit", False):
        return
    faust_new_offset = consumer_cls._new_offset

    def _new_offset(self: Any, tp: TP) -> int | None:
        limit_for = _COMMIT_LIMITS.get(self.app)
        if limit_for is None:
            return cast(int | None, faust_new_offset(self, tp))
        limit = limit_for(tp)
        if limit is None:
            return None
        # Acked offsets below the limit are covered by it: drop them (memory stays bounded).
        acked = self._acked[tp]
        covered = [offset for offset in acked if offset < limit]
        if covered:
            acked[:] = [offset for offset in acked if offset >= limit]
            self._acked_index[tp].difference_update(covered)
        return limit

    consumer_cls._new_offset = _new_offset
    consumer_cls._faust_new_offset = faust_new_offset  # Faust's own, for the pinning tests
    consumer_cls._rcmflow_commit_limit = True


class BulkFeed:
    """The rcm.events records of each fetch, for the worker to take a batch at a time.

    ``bulk_consume(app, feed)`` hands that app's fetches to it. A batch is
    ``batch_max`` records, or fewer once the oldest of them waited ``batch_wait_s`` (as
    ``Stream.take_events`` cuts them: few batches, so few ack waits and transactions, at low
    rates). Records keep their partition order; records fetched in an earlier consumer
    generation (before a rebalance) or while the flow is stopped are dropped, as Faust clears
    its agents' queues: the consumer reads them again from the committed offsets.
    """

    def __init__(self, app: faust.App, topic: str, *, batch_max: int, batch_wait_s: float,
                 handover: Callable[[list[Any]], list[Any]] | None = None) -> None:
        self.app = app
        #: Test-only (``Faults.worker_skip_at``): what of one partition's records of a fetch
        #: is handed over; None: all of them.
        self._handover = handover
        self.topic = topic
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        #: (consumer generation, when fetched, one partition's records of one fetch).
        self._pending: deque[tuple[int, float, list[Any]]] = deque()
        self._count = 0  # records pending
        self._has_records = asyncio.Event()
        self._full = asyncio.Event()  # a whole batch is pending
        self._room = asyncio.Event()  # fewer than two batches are pending
        self._room.set()
        self._idle = asyncio.Event()  # no batch in hand
        self._idle.set()

    def put(self, records: list[Any]) -> None:
        if self._handover is not None:
            records = self._handover(records)
            if not records:
                return
        self._pending.append((self.app.consumer_generation_id, time.monotonic(), records))
        self._count += len(records)
        self._signal()

    def _signal(self) -> None:
        for event, on in ((self._has_records, bool(self._pending)),
                          (self._full, self._count >= self.batch_max),
                          (self._room, self._count < 2 * self.batch_max)):
            if on:
                event.set()
            else:
                event.clear()

    async def room(self) -> None:
        """Wait while two batches are pending (back-pressure on the fetches)."""
        await self._room.wait()

    async def take(self) -> list[Any]:
        """The next batch (1..batch_max records); the worker calls ``done`` after it."""
        while True:
            await self._has_records.wait()
            if not self._full.is_set():
                fetched_at = self._pending[0][1]
                delay = fetched_at + self.batch_wait_s - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), delay)
            batch = self._take()
            if batch:
                self._idle.clear()
                monitor = self.app.monitor
                if monitor is not None:  # Faust's "stream is idle" check reads these
                    now = time.monotonic()
                    for partition in {r.partition for r in batch}:
                        monitor.stream_inbound_time[TP(self.topic, partition)] = now
                return batch

    def _take(self) -> list[Any]:
        consumer: Any = self.app.consumer
        generation = self.app.consumer_generation_id
        batch: list[Any] = []
        pending = self._pending
        while pending and len(batch) < self.batch_max:
            fetched_in, fetched_at, records = pending.popleft()
            if fetched_in != generation or not consumer.flow_active:
                self._count -= len(records)
                continue
            room = self.batch_max - len(batch)
            if len(records) > room:
                pending.appendleft((fetched_in, fetched_at, records[room:]))
                records = records[:room]
            batch += records
            self._count -= len(records)
        self._signal()
        return batch

    def done(self) -> None:
        """The batch taken last is finished (durable, or failed)."""
        self._idle.set()

    def clear(self) -> None:
        """Drop what was fetched and not taken (a rebalance or shutdown begins)."""
        self._pending.clear()
        self._count = 0
        self._signal()

    async def idle(self) -> None:
        """Wait until no batch is in hand."""
        await self._idle.wait()


#: The feed of each app that has one (weak: an app gone is forgotten).
_FEEDS: weakref.WeakKeyDictionary[Any, BulkFeed] = weakref.WeakKeyDictionary()


def bulk_consume(app: Any, feed: BulkFeed) -> None:
    """Hand each fetch's records of ``feed.topic`` by the consumer of ``app`` to ``feed``.

    Apps without a feed keep Faust's per-record path. Records of other topics (table
    changelogs during recovery) still go through it, after the feed's records are taken out.
    Installs the consumer patch once per process.
    """
    _FEEDS[app] = feed
    consumer_cls: Any = faust_consumer.Consumer
    if getattr(consumer_cls, "_rcmflow_bulk", False):
        return
    faust_wait_next_records = consumer_cls._wait_next_records
    faust_wait_empty = consumer_cls.wait_empty

    async def _wait_next_records(self: Any, timeout: float) -> tuple[Any, Any]:
        records, active = await faust_wait_next_records(self, timeout)
        feed = _FEEDS.get(self.app)
        if feed is None or not records:
            return records, active
        # The partitions Faust's getmany would deliver (active, or buffered by a resume).
        mine = [tp for tp in records if tp.topic == feed.topic
                and (active is None or tp in active or tp in self._buffered_partitions)]
        if not mine:
            return records, active
        await feed.room()
        if self.should_stop or not self.flow_active:
            return records, active  # Faust's getmany drops them all and seeks back
        rest = dict(records)
        read_offset = self._read_offset
        for tp in mine:
            batch = rest.pop(tp)
            # As Faust's drain loop: records below the read offset were fetched before a seek.
            since = read_offset[tp]
            if since is not None and batch[0].offset < since:
                batch = [record for record in batch if record.offset >= since]
            if batch:
                read_offset[tp] = batch[-1].offset
                feed.put(batch)
        return rest, active

    async def wait_empty(self: Any) -> None:
        feed = _FEEDS.get(self.app)
        if feed is not None:
            feed.clear()
            await feed.idle()
        await faust_wait_empty(self)

    consumer_cls._wait_next_records = _wait_next_records
    consumer_cls.wait_empty = wait_empty
    consumer_cls._rcmflow_bulk = True


def mark_for_commit(app: faust.App, topic: str, partitions: Iterable[int]) -> None:
    """Make Faust's periodic commit consider these partitions, as an ack would: it commits
    only partitions listed in its acked offsets (``limit_commits`` then decides the offset)."""
    acked: Any = cast(Any, app.consumer)._acked
    for partition in partitions:
        acked[TP(topic, partition)]  # a defaultdict: the lookup lists the partition


def own_transactions() -> None:
    """exactly_once: the worker's outbox runs the transactions (one producer per rcm.events
    partition, offsets committed inside), so Faust's TransactionManager starts none of its own
    (idle producers, and 'begin_transaction' warnings at every rebalance) and must never
    commit: it would commit offsets outside the worker's transactions. Idempotent."""
    manager_cls: Any = faust_consumer.TransactionManager

    async def on_rebalance(self: Any, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        return None

    async def commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        raise RuntimeError(f"Faust tried to commit {offsets} outside rcmflow's transactions")

    manager_cls.on_rebalance = on_rebalance
    manager_cls.commit = commit


def note_committed(app: faust.App, topic: str, offsets: Mapping[int, int]) -> None:
    """Offsets committed outside Faust (in the worker's transactions): recorded where Faust
    keeps its own, so that its periodic commit finds nothing newer to commit."""
    consumer: Any = app.consumer
    consumer._committed_offset.update({TP(topic, p): offset for p, offset in offsets.items()})


async def seek(app: faust.App, topic: str, partition: int, offset: int) -> None:
    """Make the consumer read ``partition`` again from ``offset``."""
    await app.consumer.seek(TP(topic, partition), offset)


async def refresh_metadata(app: faust.App) -> None:
    """Ask the broker for cluster metadata now (aiokafka asks every 5 minutes). A group
    leader that assigned while its metadata lacked the topics (a broker just restarted:
    "Ignoring missing topic") gave every member nothing; aiokafka rejoins once its metadata
    shows them, which this brings forward."""
    thread: Any = cast(Any, app.consumer)._thread

    async def refresh() -> None:
        await thread._ensure_consumer()._client.force_metadata_update()

    await thread.call_thread(refresh)


def committed_offset(app: faust.App, topic: str, partition: int) -> int:
    """The group's committed offset for a partition as this consumer knows it (0: none)."""
    consumer: Any = app.consumer
    return int(consumer._committed_offset.get(TP(topic, partition)) or 0)


def commit_in_flight(app: faust.App) -> bool:
    """Is Faust's consumer in the middle of a commit (its next ones wait for it)?"""
    return cast(Any, app.consumer)._commit_fut is not None


def assigned_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this worker is the active owner of."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def settled(app: faust.App) -> bool:
    """No rebalance or table recovery is under way."""
    return not (getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))


def fetching_state(app: faust.App, topic: str, partition: int) -> str:
    """Why the consumer may not fetch a partition: 'paused', 'inactive' or 'fetching'."""
    consumer: Any = app.consumer
    tp = TP(topic, partition)
    if tp in consumer._paused_partitions:
        return "paused"
    active = consumer._active_partitions
    if active is not None and tp not in active and tp not in consumer._buffered_partitions:
        return "inactive"
    return "fetching"


def pause(app: faust.App, topic: str, partition: int) -> None:
    """Take a partition out of what the consumer fetches (tests: the #629 state)."""
    app.consumer.pause_partitions({TP(topic, partition)})


def resume(app: faust.App, topic: str, partition: int) -> None:
    """Put a partition back among the ones the consumer fetches."""
    app.consumer.resume_partitions({TP(topic, partition)})


def install_highwater_fix() -> None:
    """Make Faust's recovery read changelogs to their true end (idempotent).

    - at_least_once: the larger of ListOffsets and a fetch's high watermark (Tansu's
      ListOffsets lags; on Apache Kafka both agree), then the offset after the last record
      before it: a changelog that an exactly_once worker once wrote ends in a commit marker,
      never delivered, and recovery would wait for it for ever.
    - exactly_once (Apache Kafka): Faust takes the last stable offset of its consumer's latest
      fetch, which a partition just assigned has not had (None: ``ConsistencyError``), and
      then waits for the offset before it, which is a transaction's commit marker, never
      delivered (10 s lost per recovery). It gets the offset after the last committed record
      instead (``last_committed_ends``).
    """
    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_rcmflow_highwater_fix", False):
        return
    listed_highwaters = thread_cls._highwaters

    async def _highwaters(self: Any, partitions: list[TP]) -> Mapping[TP, int]:
        conf = self.transport.app.conf
        options = {
            "bootstrap_servers": faust_aiokafka.server_list(self.transport.url,
                                                            self.transport.default_port),
            **faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials,
                                                          conf.ssl_context),
        }
        if self.consumer.in_transaction:
            # ListOffsets of a read_committed consumer: the last stable offsets.
            stable = await self._ensure_consumer().end_offsets(partitions)
            ends = await last_committed_ends(options, {
                TopicPartition(tp.topic, tp.partition): offset for tp, offset in stable.items()})
            return {tp: ends.get(TopicPartition(tp.topic, tp.partition), 0)
                    for tp in stable}
        listed = await listed_highwaters(self, partitions)
        fetched = await fetch_highwaters(options, listed)
        ends = {TopicPartition(tp.topic, tp.partition):
                max(offset or 0, fetched.get(TopicPartition(tp.topic, tp.partition), 0))
                for tp, offset in listed.items()}
        # A changelog an exactly_once worker wrote before ends in a commit marker, which an
        # at_least_once recovery would wait for for ever: read to the last record instead.
        committed = await last_committed_ends(options, ends)
        return {tp: committed[TopicPartition(tp.topic, tp.partition)] for tp in listed}

    thread_cls._highwaters = _highwaters
    thread_cls._rcmflow_highwater_fix = True


def install_recovery_seek_fix() -> None:
    """Faust's recovery seeks a changelog partition to the offset it tracked, -1 meaning
    "none yet" (read from 0); after a rebalance during a standby's recovery it can hold
    another negative offset, or None, and aiokafka's seek raises ValueError, crashing the
    worker (seen with standby replicas on: tests/integration/test_crash.py). Any offset that is
    not a position is read from the start, as -1 is (idempotent)."""
    recovery_cls: Any = faust_recovery.Recovery
    if getattr(recovery_cls, "_rcmflow_seek_fix", False):
        return
    seek_offsets = recovery_cls._seek_offsets

    async def _seek_offsets(self: Any, consumer: Any, tps: Any, offsets: Any,
                            title: str) -> None:
        for tp in tps:
            offset = offsets.get(tp)
            if offset is None or offset < -1:
                offsets[tp] = -1  # Faust reads -1 as "from the start"
        await seek_offsets(self, consumer, tps, offsets, title)

    recovery_cls._seek_offsets = _seek_offsets
    recovery_cls._rcmflow_seek_fix = True
