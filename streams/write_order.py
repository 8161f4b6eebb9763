"""The worker's per-batch sequence and the order of its writes, apart from Faust and Kafka.

``Batches.apply`` is what the worker's agent does with each batch (``streams/shell/worker.py``
says why each step waits for the one before): admit the records in order (``OffsetGuard``),
apply them (``Processor``), and, at_least_once:

1. send the posting deltas and DLQ records; wait for the acks;
2. write the dedup records and next offsets (local store, then changelog); wait;
3. write the lifecycle transition records, then the account heads, then the items (local
   store, then rcm.accounts); wait for each;
4. the dedup horizon's purge, if due: its mark, the records, the index keys; wait for each;
5. move the commit limit (``durable_next``) past the batch.

exactly_once: everything of steps 1-4 in one transaction per source partition that also
commits the offsets; then the commit limit; then the local stores.

The shell (the Faust worker, or a test's in-memory broker that crashes at any step)
implements ``Shell`` and ``Tables``: sending and committing, test-only fault points, and the
stores. The property test runs this very code, so a change of the order here is a change of
what it checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from rcmflow.streams.ordering import Admitted, OffsetGuard
from rcmflow.streams.outgoing import Acked, OutRecord
from rcmflow.streams.processor import BatchResult, Lookups, Message, Processor
from rcmflow.streams.state import AccountHead, Item, ItemRef
from rcmflow.streams.topics import DLQ, POSTINGS

__all__ = ["Batches", "Shell", "Tables"]


class Tables(Lookups, Protocol):
    """The stores a batch reads and writes (``AccountTables``, or a test's dicts)."""

    def dedup_records(self, writes: dict[tuple[int, bytes], bytes | None],
                      next_offsets: dict[int, int] | None = None) -> list[OutRecord]:
        """The changelog records of dedup writes (None: deleted) and next offsets."""

    def head_records(self, heads: dict[tuple[int, str], AccountHead]) -> list[OutRecord]:
        """The rcm.accounts records of account heads."""

    def item_records(self, items: dict[tuple[int, str, ItemRef], Item]) -> list[OutRecord]:
        """The rcm.accounts records of items."""

    def store(self, records: Iterable[OutRecord], heads: dict[tuple[int, str], AccountHead],
              acks: Iterable[Acked] = ()) -> None:
        """Write changelog records to the local stores; with ``acks``, the changelog offsets
        they reached (recovery resumes after them)."""


class Shell(Protocol):
    """The broker side of a batch."""

    @property
    def exactly_once(self) -> bool: ...

    async def send(self, records: list[OutRecord]) -> list[Acked]:
        """Send, in order per partition; return once the broker has them all (under
        exactly_once: in the open transaction of each record's partition)."""

    async def commit(self, read_to: dict[int, int]) -> None:
        """exactly_once: commit each source partition's transaction with its next offset."""

    async def reached(self, point: str) -> None:
        """A named step of the batch (``rcmflow.runtime.faults.WORKER_KILL_POINTS``):
        test-only kills and holds happen here."""


class Batches:
    """Applies batches and writes their results in crash-safe order."""

    def __init__(self, processor: Processor, tables: Tables, shell: Shell,
                 guard: OffsetGuard) -> None:
        self.processor = processor
        self.tables = tables
        self.shell = shell
        self.guard = guard
        #: Partition -> the offset after the last record whose whole batch is durable (all
        #: records before it were applied, in order, in this session or before its start):
        #: the only offset the consumer may commit (the commit limit).
        self.durable_next: dict[int, int] = {}

    async def apply(self, messages: list[Message]) -> tuple[Admitted, BatchResult]:
        """Admit, apply and write one batch; the caller reads the holes again."""
        admitted = self.guard.admit(messages)
        result = self.processor.process(admitted.messages, self.tables)
        if admitted.messages:
            await self.write(admitted, result)
        return admitted, result

    async def write(self, admitted: Admitted, result: BatchResult) -> None:
        # What the ledger and the operators see. Outputs go to the source partition's number
        # (all rcm.* topics have the same count): co-partitioned, and one transaction per
        # source partition under exactly_once.
        outputs = [OutRecord(POSTINGS, p, k, v) for p, k, v in result.postings]
        outputs += [OutRecord(DLQ, p, k, v) for p, k, v in result.dlq]
        await self.shell.reached("processed")
        if self.shell.exactly_once:
            await self._write_in_transactions(admitted, result, outputs)
        else:
            await self._write_in_order(admitted, result, outputs)
        self._advance(admitted.read_to)

    async def _write_in_order(self, admitted: Admitted, result: BatchResult,
                              outputs: list[OutRecord]) -> None:
        """at_least_once: each step waits for the broker before the next one starts, and the
        consumer commits the offsets only after the last (the commit limit)."""
        tables, send = self.tables, self.shell.send
        await send(outputs)
        await self.shell.reached("outputs-acked")
        # Dedup records, only once the outputs they vouch for are durable.
        dedup = tables.dedup_records(result.dedup_writes, admitted.advanced)
        tables.store(dedup, {})  # the local store may run ahead of its changelog
        tables.store([], {}, await send(dedup))
        await self.shell.reached("dedup-acked")
        # Lifecycle transitions, then account heads, then items (rcm.accounts records): a
        # head on the broker means its batch's dedup records and transitions are there (a
        # transition depends on the head before its event: it cannot be re-derived later),
        # and items not there are re-derived on redelivery.
        transitions = tables.item_records(result.transitions)
        if transitions:
            tables.store(transitions, {})
            tables.store([], {}, await send(transitions))
        heads = tables.head_records(result.heads)
        items = tables.item_records(result.items)
        tables.store(heads + items, result.heads)
        tables.store([], {}, await send(heads))
        tables.store([], {}, await send(items))
        # The dedup horizon's purge, if due: the mark, then the records, then their index
        # keys, each durable before the next (``BatchResult.purge_marks``).
        for writes in (result.purge_marks, result.purged_records, result.purged_index):
            if writes:
                purge = tables.dedup_records(writes)
                tables.store(purge, {})
                tables.store([], {}, await send(purge))

    async def _write_in_transactions(self, admitted: Admitted, result: BatchResult,
                                     outputs: list[OutRecord]) -> None:
        """exactly_once: outputs, changelog records and the next offsets of each source
        partition in one transaction; the local stores only after it committed."""
        tables = self.tables
        changelog = tables.dedup_records(result.dedup_writes, admitted.advanced)
        changelog += tables.item_records(result.transitions)
        changelog += tables.head_records(result.heads)
        changelog += tables.item_records(result.items)
        for writes in (result.purge_marks, result.purged_records, result.purged_index):
            changelog += tables.dedup_records(writes)
        acks = await self.shell.send(outputs + changelog)
        await self.shell.reached("outputs-acked")
        await self.shell.commit(admitted.read_to)
        # Nothing awaited between the commit and this (the shell tells its consumer what the
        # transaction committed before it returns).
        self._advance(admitted.read_to)
        await self.shell.reached("committed")
        tables.store(changelog, result.heads, acks)

    def _advance(self, read_to: dict[int, int]) -> None:
        for partition, offset in read_to.items():
            self.durable_next[partition] = max(offset, self.durable_next.get(partition, 0))
