"""In-order delivery, checked: the worker never applies a message after a hole in its partition.

Determinism is what makes re-sent deltas byte-identical, and it needs each partition applied in
offset order without holes. Faust can deliver records fetched before a seek after it (its drain
loop then records a "gap" and drops the records it skipped). The guard checks two things per
partition:

- **the read position**: every record it admits is the one right after the last, starting from
  where the consumer was sought to (the committed offset after an assignment). A jump is a
  hole, even among redeliveries below the durable next offset: a skipped redelivery would be a
  batch whose lost states are never written again, and every later event of those accounts
  would apply to a stale state. A record below the position was already handled in this
  session (delivered again after a seek back) and is passed over;
- **the durable next offset** (kept next to the dedup records): the offset the next *new*
  record must have; anything beyond it is a hole too.

Either way the worker seeks back and reads the hole again. Everything admitted is contiguous
from the session's start, so once a batch is durable its ``read_to`` may be committed.
"""

from __future__ import annotations

from collections.abc import Callable

from rcmflow.streams.processor import Message

__all__ = ["OffsetGuard", "Admitted"]


class Admitted:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        #: Partition -> the offset to seek back to (a hole was found before it).
        self.holes: dict[int, int] = {}
        #: Partition -> the new next-offset to record with the batch.
        self.advanced: dict[int, int] = {}
        #: Partition -> the offset after the last admitted record: with the batch durable,
        #: every record below it is applied (the commit limit).
        self.read_to: dict[int, int] = {}


class OffsetGuard:
    def __init__(self, load_next: Callable[[int], int | None],
                 start_at: Callable[[int], int]) -> None:
        """``load_next``: the durable next offset of a partition (None: none yet);
        ``start_at``: where the consumer starts reading it (the committed offset)."""
        self._load_next = load_next
        self._start_at = start_at
        self._next: dict[int, int | None] = {}
        self._position: dict[int, int] = {}

    def next_offset(self, partition: int) -> int | None:
        """The offset the next new record of ``partition`` must have (None: none seen)."""
        if partition not in self._next:
            self._next[partition] = self._load_next(partition)
        return self._next[partition]

    def forget(self) -> None:
        """Partitions moved: read the durable next-offsets and start positions again."""
        self._next.clear()
        self._position.clear()

    def positioned(self, partition: int) -> bool:
        """Is the read position of ``partition`` known (sought, or a record admitted)?"""
        return partition in self._position

    def sought(self, partition: int, offset: int) -> None:
        """The consumer was sought: the next record of ``partition`` is ``offset``."""
        self._position[partition] = offset

    def admit(self, messages: list[Message]) -> Admitted:
        out = Admitted()
        for message in messages:
            partition, offset = message.partition, message.offset
            if partition in out.holes:
                continue  # nothing after a hole, until it has been read
            position = self._position.get(partition)
            if position is None:
                position = self._start_at(partition)
            if offset < position:
                continue  # handled already in this session, delivered again after a seek
            expected = self.next_offset(partition)
            if offset > position:
                out.holes[partition] = position
                continue
            if expected is not None and offset > expected:
                out.holes[partition] = expected
                continue
            self._position[partition] = offset + 1
            out.read_to[partition] = offset + 1
            if expected is None or offset == expected:
                self._next[partition] = offset + 1
                out.advanced[partition] = offset + 1
            out.messages.append(message)  # at or below `expected`: a redelivery, in order
        return out
