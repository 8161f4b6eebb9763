"""Replay and conflict detection, TigerBeetle style: a replay is a no-op, a conflict is data.

The dedup record of an applied event keeps its content digest, where it was read from
(partition and offset) and the account version it produced. The worker writes a batch's
deltas first, then its dedup records, then its states, waiting for the broker after each; so a
dedup record on the broker means its delta is there too, and the classic at-least-once hole
(dedup durable, delta lost, replay skipped) cannot open. An event read again from the offset its
dedup record names is a *redelivery* (the batch did not finish), not a replay: if its state write
was lost it is applied again, and must post exactly what it posted the first time.

**The horizon.** Dedup records are not kept for ever: each carries a day (``horizon_day``,
the later of the event's date and the day it was applied) and an index key filed under that
day, and once a partition's clock (its records' timestamps) is ``RCMFLOW_DEDUP_HORIZON_DAYS``
past a day, the records filed before it are deleted (``PURGED_BEFORE_KEY`` marks how far).
So the table holds the events of the last horizon, not of all time. What stops a replay
older than that from posting twice: an event *dated* before the purge mark that has no record
is refused (``beyond_dedup_horizon``); every purged record was filed, so dated, before the
mark, so a replay of one always is. The price: a first arrival dated before the mark is
refused too (a backfill of history older than the horizon, on a system that has run that
long). A record without a day (an older rcmflow wrote it) is not read: ``DedupEntry.read``
refuses it with ``UpgradeNeeded`` (``rcmflow upgrade`` gives it one: ``tables/upgrade.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict

from rcmflow.streams.exceptions import UpgradeNeeded

__all__ = ["DedupEntry", "Verdict", "judge", "RETRY_HEADER", "is_retry", "dedup_key", "day_of",
           "horizon_key", "dedup_key_of", "PURGED_BEFORE_KEY", "HORIZON_PREFIX",
           "DEFAULT_HORIZON_DAYS"]

#: Four years: re-sends happen within days (interface engines) to months (a payer's or a
#: clearinghouse's 835 again, a lockbox file loaded twice); Medicare may reopen a claim for
#: good cause up to four years after its determination, and a reopening that comes back as
#: the same 835 content is a replay. Past this, replays are still refused, as DLQ records
#: an operator sees, rather than dropped in silence. ~200 bytes per event kept for 4 years.
DEFAULT_HORIZON_DAYS = 4 * 365 + 1
#: Reserved keys of the dedup table (account keys never start with a NUL byte): the index of
#: records by day, and how far the partition was purged (a day, ``date.toordinal()``).
HORIZON_PREFIX = b"\x00by-day\x00"
PURGED_BEFORE_KEY = b"\x00purged-before"


class DedupEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: str
    partition: int
    offset: int
    #: ``applied``: the account moved to ``version``. ``rejected``: a posting rule refused the
    #: event (its DLQ record was sent); the key is used up all the same, so a replay of it
    #: changes nothing later either, even where the account could now take it, unless an
    #: operator re-sends it from the work queue (``RETRY_HEADER``: ``judge``).
    outcome: Literal["applied", "rejected"] = "applied"
    version: int
    #: SHA-256 of the delta as sent (None: nothing posted), to check a re-application.
    posting_sha256: str | None = None
    #: The day the horizon counts from (``date.toordinal()``): the later of the event's date
    #: and the day it was applied.
    horizon_day: int

    @classmethod
    def read(cls, raw: bytes) -> DedupEntry:
        """A table value; ``UpgradeNeeded`` for a record an older rcmflow wrote (no day)."""
        doc = orjson.loads(raw)
        if "horizon_day" not in doc:
            raise UpgradeNeeded("a dedup record without a horizon day")
        return cls.model_validate(doc)

    def to_json(self) -> bytes:
        """The table value (orjson: one is written per event)."""
        return orjson.dumps(self.__dict__)


class Verdict(Enum):
    NEW = "new"
    REPLAY = "replay"  # seen before with the same content: no change, nothing emitted
    REDELIVERY = "redelivery"  # the very message that was applied, read again after a crash
    CONFLICT = "conflict"  # same idempotency key, different content: to the DLQ


def judge(entry: DedupEntry | None, digest: str, partition: int, offset: int,
          *, retry: bool = False) -> Verdict:
    """``retry``: the message is an operator's replay of a refused event (``RETRY_HEADER``):
    an event whose only outcome so far was a refusal is judged again as new (the cause may
    have been fixed: a chart threshold, a currency). Nothing was posted for it, so nothing
    can post twice; an event that was applied stays a replay, and other content a conflict."""
    if entry is None:
        return Verdict.NEW
    if entry.digest != digest:
        return Verdict.CONFLICT
    if (entry.partition, entry.offset) == (partition, offset):
        return Verdict.REDELIVERY
    if retry and entry.outcome == "rejected":
        return Verdict.NEW
    return Verdict.REPLAY


#: The header of an event re-sent from the exception work queue (``rcmflow dlq replay``):
#: its value is the DLQ item's id. Only it lets a refused event be judged again.
RETRY_HEADER = "rcmflow-retry-of"


def is_retry(headers: object) -> bool:
    """Whether a record's headers ((name, value) pairs) mark an operator's replay."""
    if not isinstance(headers, (list, tuple)):
        return False
    return any(isinstance(h, tuple) and len(h) == 2 and h[0] == RETRY_HEADER for h in headers)


def dedup_key(account: str, event_id: str) -> bytes:
    """Table key: (account, event_id), so it lands in the account's partition."""
    return f"{account}\x00{event_id}".encode()


def day_of(moment: datetime) -> int:
    """A moment's UTC day as ``date.toordinal()``."""
    return moment.astimezone(UTC).date().toordinal()


def horizon_key(day: int, key: bytes) -> bytes:
    """The index key that files dedup record ``key`` under ``day`` (sorts by day)."""
    return b"%s%07d\x00%s" % (HORIZON_PREFIX, day, key)


def dedup_key_of(index_key: bytes) -> bytes:
    """The dedup record an index key files."""
    return index_key[len(HORIZON_PREFIX) + 8:]
