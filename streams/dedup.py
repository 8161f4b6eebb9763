"""Replay and conflict detection, TigerBeetle style: a replay is a no-op, a conflict is data.

The dedup record of an applied event keeps its content digest, where it was read from
(partition and offset), the account version it produced and the exact bytes of what it
emitted. That last part closes the at-least-once hole without transactions: if a worker dies
after the dedup record reached the changelog but before the delta left, the event is read again
from the same offset (its offset was never committed), recognised as a *redelivery* rather than
a replay, and the stored delta is re-sent byte-identical.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["DedupEntry", "Verdict", "judge", "dedup_key"]


class DedupEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: str
    partition: int
    offset: int
    #: ``applied``: the account moved to ``version``. ``rejected``: a posting rule refused the
    #: event (its DLQ record is kept below); the key is used up all the same, so a replay of
    #: it changes nothing later either, even where the account could now take it.
    outcome: Literal["applied", "rejected"] = "applied"
    version: int
    #: The posting delta exactly as sent, or None for a status-only or rejected event.
    posting: str | None = None
    #: DLQ records exactly as sent: exception records (unmapped lines) or the rejection.
    exceptions: tuple[str, ...] = ()


class Verdict(Enum):
    NEW = "new"
    REPLAY = "replay"  # seen before with the same content: no change, nothing emitted
    REDELIVERY = "redelivery"  # the very message that was applied, read again after a crash
    CONFLICT = "conflict"  # same idempotency key, different content: to the DLQ


def judge(entry: DedupEntry | None, digest: str, partition: int, offset: int) -> Verdict:
    if entry is None:
        return Verdict.NEW
    if entry.digest != digest:
        return Verdict.CONFLICT
    if (entry.partition, entry.offset) == (partition, offset):
        return Verdict.REDELIVERY
    return Verdict.REPLAY


def dedup_key(account: str, event_id: str) -> bytes:
    """Table key: (account, event_id), so it lands in the account's partition."""
    return f"{account}\x00{event_id}".encode()
