"""An in-memory model of the worker's durability steps, for crash properties without Kafka.

It follows ``worker.Pipeline.handle``: per batch, send deltas and DLQ records, wait; write
dedup records locally and to the changelog, wait; write heads, wait; write items, wait;
commit offsets. A crash stops a batch at a chosen step with a chosen subset of the records
in flight having reached the broker; a restart either recovers from the changelogs (fresh
store) or keeps the local store, which may be ahead of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.memory_tables import (
    MemoryTables,
    head_records,
    item_records,
    merge,
)
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS


@dataclass
class World:
    chart: ChartOfAccounts
    #: Durable on the broker: changelogs (latest per key), outputs (append-only), offsets.
    log: MemoryTables = field(default_factory=MemoryTables)
    postings: list[bytes] = field(default_factory=list)
    dlq: list[bytes] = field(default_factory=list)
    committed: int = 0
    #: The worker's local RocksDB store (may run ahead of the changelogs).
    local: MemoryTables = field(default_factory=MemoryTables)
    #: rcm.events record timestamps by offset (None: the processor's clock).
    timestamps: dict[int, int] = field(default_factory=dict)

    def timestamp_ms(self, offset: int) -> int | None:
        return self.timestamps.get(offset)

    def recover(self, keep_local_store: bool) -> None:
        """Restart: the store is the changelog, or the old local store if kept.

        A kept store needs nothing from the changelog: recovery replays only the records
        after the changelog offset the store persisted, and those are the crashed batch's
        own, which the store got before they were sent.
        """
        if not keep_local_store:
            self.local = MemoryTables(dict(self.log.accounts), dict(self.log.dedup))

    def run(self, values: list[tuple[str, bytes]], batch_size: int,
            crash: tuple[int, int, int] | None = None,
            processor: Processor | None = None) -> bool:
        """Process from the committed offset; returns False when the crash happened.

        ``crash`` = (batch number, step 0-8, seed for which in-flight records landed).
        """
        processor = processor or Processor(self.chart)
        for number, start in enumerate(range(self.committed, len(values), batch_size)):
            batch = [Message(EVENTS, 0, offset, key.encode(), value, self.timestamp_ms(offset))
                     for offset, (key, value) in enumerate(values[start:start + batch_size],
                                                           start=start)]
            result = processor.process(batch, self.local)
            step = crash[1] if crash is not None and crash[0] == number else None
            rng = random.Random(crash[2] if crash else 0)
            if step == 0:
                return False
            outputs = [(self.postings, v) for _, _, v in result.postings] + \
                [(self.dlq, v) for _, _, v in result.dlq]
            for sink, value in outputs:
                if step != 1 or rng.random() < 0.5:
                    sink.append(value)
            if step == 1:
                return False
            merge(self.local.dedup, result.dedup_writes)
            if step == 2:
                merge(self.log.dedup, _some(result.dedup_writes, rng))
                return False
            merge(self.log.dedup, result.dedup_writes)
            heads, items = head_records(result), item_records(result)
            self.local.accounts.update({**heads, **items})
            for phase, records in ((3, heads), (4, items)):
                if step == phase:
                    self.log.accounts.update(_some(records, rng))
                    return False
                self.log.accounts.update(records)
            for phase, writes in ((5, result.purge_marks), (6, result.purged_records),
                                  (7, result.purged_index)):
                merge(self.local.dedup, writes)
                if step == phase:
                    merge(self.log.dedup, _some(writes, rng))
                    return False
                merge(self.log.dedup, writes)
            if step == 8:
                return False
            self.committed = start + len(batch)
        return True


def _some(writes: dict, rng: random.Random) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in writes.items() if rng.random() < 0.5}
