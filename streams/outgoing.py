"""What the core hands the shell to send, and what the broker acknowledged: plain values, so
the tables and the pure core name them without importing a Kafka client."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Acked", "OutRecord"]


class OutRecord(NamedTuple):
    topic: str
    partition: int
    key: bytes
    value: bytes | None  # None: a tombstone (compacted topics delete the key)


class Acked(NamedTuple):
    """The broker holds ``topic``/``partition`` up to ``last_offset``."""

    topic: str
    partition: int
    last_offset: int
