"""In-order delivery, checked: the worker never applies a message after a hole in its partition.

Determinism is what makes re-sent deltas byte-identical, and it needs each partition applied in
offset order without holes. Faust can deliver records fetched before a rebalance's seek after
it (its drain loop then records a "gap" and drops the records it skipped). The guard keeps, per
partition, the offset the next new message must have (durable, next to the dedup records) and
refuses anything beyond it: the worker seeks back and reads the hole again.
"""

from __future__ import annotations

from collections.abc import Callable

from .processor import Message

__all__ = ["OffsetGuard", "Admitted"]


class Admitted:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        #: Partition -> the offset to seek back to (a hole was found before it).
        self.holes: dict[int, int] = {}
        #: Partition -> the new next-offset to record with the batch.
        self.advanced: dict[int, int] = {}


class OffsetGuard:
    def __init__(self, load_next: Callable[[int], int | None]) -> None:
        self._load_next = load_next
        self._next: dict[int, int | None] = {}

    def next_offset(self, partition: int) -> int | None:
        """The offset the next new record of ``partition`` must have (None: none seen)."""
        if partition not in self._next:
            self._next[partition] = self._load_next(partition)
        return self._next[partition]

    def forget(self) -> None:
        """Partitions moved: read the durable next-offsets again."""
        self._next.clear()

    def admit(self, messages: list[Message]) -> Admitted:
        out = Admitted()
        for message in messages:
            partition = message.partition
            if partition in out.holes:
                continue  # nothing after a hole, until it has been read
            if partition not in self._next:
                self._next[partition] = self._load_next(partition)
            expected = self._next[partition]
            if expected is not None and message.offset > expected:
                out.holes[partition] = expected
                continue
            if expected is None or message.offset == expected:
                self._next[partition] = message.offset + 1
                out.advanced[partition] = message.offset + 1
            out.messages.append(message)  # at or below `expected`: a redelivery, in order
        return out
