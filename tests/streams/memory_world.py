"""The worker's own batch code (``streams/write_order.py``) on an in-memory broker that crashes.

``World.run`` feeds rcm.events to ``Batches.apply``, the code the worker's agent runs, with
this module's ``MemoryShell`` as its broker and stores: sends land on in-memory topics, the
local store is a dict that may run ahead of them, and the consumer commits up to the commit
limit the code moves (``Batches.durable_next``). A crash stops a batch at its Nth call into the
shell (a send, a local write, a commit or a named step), whatever order the code makes those
calls in; a send cut by a crash lands a chosen subset of its records (under exactly_once:
none, the transaction aborts). A restart either recovers from the changelogs (fresh store) or
keeps the local store, and reads from the committed offset.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.dedup import DedupEntry
from rcmflow.streams.layout import head_key, item_key
from rcmflow.streams.memory_tables import MemoryTables, Records, merge
from rcmflow.streams.ordering import OffsetGuard
from rcmflow.streams.outgoing import Acked, OutRecord
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.state import AccountHead, Item, ItemRef, head_json, item_json
from rcmflow.streams.topics import ACCOUNTS, DLQ, EVENTS, POSTINGS, dedup_changelog
from rcmflow.streams.write_order import Batches

DEDUP = dedup_changelog("rcmflow")
#: The dedup store's key of a partition's next offset (``AccountTables.NEXT_OFFSET_KEY``).
NEXT_OFFSET_KEY = b"\x00next-offset"
#: Calls into the shell a crash can cut a batch at: more than a batch makes (then it is cut
#: after its last).
CALLS_MAX = 24


def store_locally(local: MemoryTables, records: Iterable[OutRecord]) -> None:
    for topic, partition, key, value in records:
        target: Records = local.dedup if topic == DEDUP else local.accounts
        merge(target, {(partition, key): value})


class Crash(Exception):
    """The worker process died here."""


@dataclass
class World:
    chart: ChartOfAccounts
    #: Under exactly_once, as on Apache Kafka (else at_least_once).
    exactly_once: bool = False
    #: Durable on the broker: changelogs (latest per key), outputs (append-only), offsets.
    log: MemoryTables = field(default_factory=MemoryTables)
    postings: list[bytes] = field(default_factory=list)
    dlq: list[bytes] = field(default_factory=list)
    committed: int = 0
    #: The worker's local RocksDB store (may run ahead of the changelogs).
    local: MemoryTables = field(default_factory=MemoryTables)
    #: rcm.events record timestamps by offset (None: the processor's clock).
    timestamps: dict[int, int] = field(default_factory=dict)
    #: exactly_once: changelog records of a committed transaction the local store has not
    #: written yet (a restart's recovery reads them from the changelog).
    unstored: list[OutRecord] = field(default_factory=list)
    #: (topic, partition) -> the offset of its last record sent.
    log_ends: dict[tuple[str, int], int] = field(default_factory=dict)

    def timestamp_ms(self, offset: int) -> int | None:
        return self.timestamps.get(offset)

    def recover(self, keep_local_store: bool) -> None:
        """Restart: the store is the changelog, or the old local store if kept.

        A kept store needs nothing from the changelog: recovery replays only the records
        after the changelog offset the store persisted: at_least_once the crashed batch's
        own, which the store got before they were sent; exactly_once those of a committed
        transaction the store had not written yet.
        """
        if not keep_local_store:
            self.local = MemoryTables(dict(self.log.accounts), dict(self.log.dedup))
        else:
            store_locally(self.local, self.unstored)
        self.unstored = []

    def run(self, values: list[tuple[str, bytes]], batch_size: int,
            crash: tuple[int, int, int] | None = None,
            processor: Processor | None = None) -> bool:
        """Process from the committed offset; returns False when the crash happened.

        ``crash`` = (batch number, call into the shell, seed for which in-flight records
        landed).
        """
        return asyncio.run(self._run(values, batch_size, crash, processor or
                                     Processor(self.chart)))

    async def _run(self, values: list[tuple[str, bytes]], batch_size: int,
                   crash: tuple[int, int, int] | None, processor: Processor) -> bool:
        shell = MemoryShell(self, random.Random(crash[2] if crash else 0))
        start_at = self.committed
        guard = OffsetGuard(shell.load_next_offset, lambda partition: start_at)
        batches = Batches(processor, shell, shell, guard)
        guard.sought(0, start_at)
        try:
            for number, start in enumerate(range(start_at, len(values), batch_size)):
                shell.calls_left = crash[1] if crash is not None and crash[0] == number \
                    else None
                batch = [Message(EVENTS, 0, offset, key.encode(), value,
                                 self.timestamp_ms(offset))
                         for offset, (key, value) in enumerate(values[start:start + batch_size],
                                                               start=start)]
                admitted, _ = await batches.apply(batch)
                assert not admitted.holes, admitted.holes
                assert shell.unstored_acks is None, "a changelog's acks were not stored"
                if shell.calls_left is not None:
                    raise Crash  # cut after the batch's last call
                # The consumer's periodic commit: up to the commit limit, never past it.
                self.committed = batches.durable_next.get(0, self.committed)
        except Crash:
            # It may have committed right before dying: the commit limit at that instant.
            self.committed = max(self.committed, batches.durable_next.get(0, 0))
            return False
        return True


class MemoryShell:
    """``write_order.Shell`` and ``Tables`` over a ``World``, crashing at the chosen call."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        #: Calls into the shell until the crash (None: no crash in this batch).
        self.calls_left: int | None = None
        #: exactly_once: the open transaction's records.
        self.transaction: list[OutRecord] = []
        #: at_least_once: the acks of a changelog send not yet handed to ``store`` (the
        #: offsets recovery resumes from: the next call must hand them over).
        self.unstored_acks: list[Acked] | None = None

    def call(self, storing: bool = False) -> None:
        """One call into the shell: the crash, if it is this one."""
        assert storing or self.unstored_acks is None, "a changelog's acks were not stored"
        if self.calls_left is not None:
            if self.calls_left == 0:
                raise Crash
            self.calls_left -= 1

    # -- Shell ------------------------------------------------------------------------------
    @property
    def exactly_once(self) -> bool:
        return self.world.exactly_once

    async def send(self, records: list[OutRecord]) -> list[Acked]:
        if self.exactly_once:
            self.call()
            self.transaction += records
        else:
            try:
                self.call()
            except Crash:  # some records reached the broker before it died
                self._land(r for r in records if self.rng.random() < 0.5)
                raise
            self._land(records)
        acks = self._acks(records)
        if not self.exactly_once and any(r.topic in (DEDUP, ACCOUNTS) for r in records):
            self.unstored_acks = acks
        return acks

    def _acks(self, records: list[OutRecord]) -> list[Acked]:
        """One per topic partition, with the offset of its last record (as ``Outbox.send``)."""
        last: dict[tuple[str, int], int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            last[tp] = self.world.log_ends[tp] = self.world.log_ends.get(tp, -1) + 1
        return [Acked(topic, partition, offset) for (topic, partition), offset in last.items()]

    async def commit(self, read_to: dict[int, int]) -> None:
        self.call()
        self._land(self.transaction)
        self.world.unstored = [r for r in self.transaction if r.topic in (DEDUP, ACCOUNTS)]
        self.transaction = []
        self.world.committed = max(self.world.committed, *read_to.values())  # one partition

    async def reached(self, point: str) -> None:
        self.call()

    def _land(self, records: Iterable[OutRecord]) -> None:
        log = self.world.log
        for topic, partition, key, value in records:
            if topic == POSTINGS and value is not None:
                self.world.postings.append(value)
            elif topic == DLQ and value is not None:
                self.world.dlq.append(value)
            else:
                merge(log.dedup if topic == DEDUP else log.accounts, {(partition, key): value})

    # -- Tables -----------------------------------------------------------------------------
    def dedup_records(self, writes: dict[tuple[int, bytes], bytes | None],
                      next_offsets: dict[int, int] | None = None) -> list[OutRecord]:
        records = [OutRecord(DEDUP, p, key, value) for (p, key), value in writes.items()]
        records += [OutRecord(DEDUP, p, NEXT_OFFSET_KEY, str(offset).encode())
                    for p, offset in (next_offsets or {}).items()]
        return records

    def head_records(self, heads: dict[tuple[int, str], AccountHead]) -> list[OutRecord]:
        return [OutRecord(ACCOUNTS, p, head_key(account), head_json(head))
                for (p, account), head in heads.items()]

    def item_records(self, items: dict[tuple[int, str, ItemRef], Item]) -> list[OutRecord]:
        return [OutRecord(ACCOUNTS, p, item_key(account, ref), item_json(item))
                for (p, account, ref), item in items.items()]

    def store(self, records: Iterable[OutRecord], heads: dict[tuple[int, str], AccountHead],
              acks: Iterable[Acked] = ()) -> None:
        assert isinstance(heads, dict), heads
        acks = list(acks)
        if acks:
            assert acks == self.unstored_acks or self.exactly_once, (acks, self.unstored_acks)
            self.unstored_acks = None
        self.call(storing=True)
        store_locally(self.world.local, records)
        if self.exactly_once:
            self.world.unstored = []

    def load_next_offset(self, partition: int) -> int | None:
        raw = self.world.local.dedup.get((partition, NEXT_OFFSET_KEY))
        return int(raw) if raw is not None else None

    # -- Lookups: the local store -------------------------------------------------------------
    def load_head(self, partition: int, account: str) -> AccountHead | None:
        return self.world.local.load_head(partition, account)

    def load_item(self, partition: int, account: str, ref: ItemRef) -> Item | None:
        return self.world.local.load_item(partition, account, ref)

    def load_dedup(self, partition: int, key: bytes) -> DedupEntry | None:
        return self.world.local.load_dedup(partition, key)

    def load_purge_mark(self, partition: int) -> int:
        return self.world.local.load_purge_mark(partition)

    def expired(self, partition: int, before_day: int, limit: int) -> list[bytes]:
        return self.world.local.expired(partition, before_day, limit)
