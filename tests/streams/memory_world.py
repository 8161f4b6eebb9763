"""An in-memory model of the worker's durability steps, for crash properties without Kafka.

It follows ``worker.Pipeline.handle``: per batch, send deltas and DLQ records, wait; write
dedup records locally and to the changelog, wait; write states locally and to the changelog,
wait; commit offsets. A crash stops a batch at a chosen step with a chosen subset of the records
in flight having reached the broker; a restart either recovers from the changelogs (fresh store)
or keeps the local store, which may be ahead of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.dedup import DedupEntry
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.state import AccountState
from rcmflow.streams.topics import EVENTS


@dataclass
class World:
    chart: ChartOfAccounts
    #: Durable on the broker: changelogs (latest per key), outputs (append-only), offsets.
    dedup_log: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    state_log: dict[tuple[int, str], AccountState] = field(default_factory=dict)
    postings: list[bytes] = field(default_factory=list)
    dlq: list[bytes] = field(default_factory=list)
    committed: int = 0
    #: The worker's local RocksDB store (may run ahead of the changelogs).
    local_dedup: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    local_state: dict[tuple[int, str], AccountState] = field(default_factory=dict)

    def recover(self, keep_local_store: bool) -> None:
        """Restart: the store is the changelog, overlaid on the old local store if kept."""
        if keep_local_store:
            self.local_dedup = {**self.local_dedup, **self.dedup_log}
            self.local_state = {**self.local_state, **self.state_log}
        else:
            self.local_dedup = dict(self.dedup_log)
            self.local_state = dict(self.state_log)

    def run(self, values: list[tuple[str, bytes]], batch_size: int,
            crash: tuple[int, int, int] | None = None) -> bool:
        """Process from the committed offset; returns False when the crash happened.

        ``crash`` = (batch number, step 0-4, seed for which in-flight records landed).
        """
        processor = Processor(self.chart)
        for number, start in enumerate(range(self.committed, len(values), batch_size)):
            batch = [Message(EVENTS, 0, offset, key.encode(), value)
                     for offset, (key, value) in enumerate(values[start:start + batch_size],
                                                           start=start)]
            result = processor.process(
                batch,
                lambda p, a: self.local_state.get((p, a)),
                lambda p, k: _entry(self.local_dedup.get((p, k))),
            )
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
            self.local_dedup.update(result.dedup_writes)
            if step == 2:
                self.dedup_log.update(_some(result.dedup_writes, rng))
                return False
            self.dedup_log.update(result.dedup_writes)
            self.local_state.update(result.state_writes)
            if step == 3:
                self.state_log.update(_some(result.state_writes, rng))
                return False
            self.state_log.update(result.state_writes)
            if step == 4:
                return False
            self.committed = start + len(batch)
        return True


def _entry(raw: bytes | None) -> DedupEntry | None:
    return DedupEntry.model_validate_json(raw) if raw is not None else None


def _some(writes: dict, rng: random.Random) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in writes.items() if rng.random() < 0.5}
