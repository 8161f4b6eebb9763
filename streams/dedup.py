"""Replay and conflict detection, TigerBeetle style: a replay is a no-op, a conflict is data.

The dedup record of an applied event keeps its content digest, where it was read from
(partition and offset) and the account version it produced. The worker writes a batch's
deltas first, then its dedup records, then its states, waiting for the broker after each; so a
dedup record on the broker means its delta is there too, and the classic at-least-once hole
(dedup durable, delta lost, replay skipped) cannot open. An event read again from the offset its
dedup record names is a *redelivery* (the batch did not finish), not a replay: if its state write
was lost it is applied again, and must post exactly what it posted the first time.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict

__all__ = ["DedupEntry", "Verdict", "judge", "dedup_key"]


class DedupEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: str
    partition: int
    offset: int
    #: ``applied``: the account moved to ``version``. ``rejected``: a posting rule refused the
    #: event (its DLQ record was sent); the key is used up all the same, so a replay of it
    #: changes nothing later either, even where the account could now take it.
    outcome: Literal["applied", "rejected"] = "applied"
    version: int
    #: SHA-256 of the delta as sent (None: nothing posted), to check a re-application.
    posting_sha256: str | None = None


    def to_json(self) -> bytes:
        """The table value (orjson: one is written per event)."""
        return orjson.dumps(self.__dict__)


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
