"""The account and dedup tables in memory (``Lookups``), for running the pure core without a
broker or RocksDB: ``rcmflow dev``'s expected results, the bench's check, the tests."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from rcmflow.streams.dedup import HORIZON_PREFIX, PURGED_BEFORE_KEY, DedupEntry, horizon_key
from rcmflow.streams.layout import (
    assemble,
    decode_head,
    head_key,
    item_key,
    read_record,
)
from rcmflow.streams.processor import BatchResult
from rcmflow.streams.state import AccountHead, Item, ItemRef, head_json, item_json

__all__ = ["MemoryTables", "Records", "merge", "views", "head_records", "item_records"]

Records = dict[tuple[int, bytes], bytes]


def merge(records: Records, writes: dict[tuple[int, bytes], bytes | None]) -> None:
    """Apply writes to records as a compacted topic or a store does (None deletes)."""
    for key, value in writes.items():
        if value is None:
            records.pop(key, None)
        else:
            records[key] = value


class DedupRecords(Records):
    """Dedup records that also keep their index keys sorted per partition, so ``expired``
    costs what it returns, as a RocksDB range read does (not a scan of every record)."""

    def __init__(self, records: Records | None = None) -> None:
        super().__init__()
        self.index: dict[int, list[bytes]] = {}
        for key, value in (records or {}).items():
            self[key] = value

    def __setitem__(self, key: tuple[int, bytes], value: bytes) -> None:
        if key not in self and key[1].startswith(HORIZON_PREFIX):
            bisect.insort(self.index.setdefault(key[0], []), key[1])
        super().__setitem__(key, value)

    def pop(self, key: tuple[int, bytes], default: Any = None) -> Any:
        if key in self and key[1].startswith(HORIZON_PREFIX):
            keys = self.index[key[0]]
            del keys[bisect.bisect_left(keys, key[1])]
        return super().pop(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


@dataclass
class MemoryTables:
    """The accounts and dedup tables as key -> value bytes per partition (``Lookups``)."""

    accounts: Records = field(default_factory=dict)
    dedup: Records = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.dedup, DedupRecords):
            self.dedup = DedupRecords(self.dedup)

    def load_head(self, partition: int, account: str) -> AccountHead | None:
        raw = self.accounts.get((partition, head_key(account)))
        return decode_head(raw) if raw is not None else None

    def load_item(self, partition: int, account: str, ref: ItemRef) -> Item | None:
        raw = self.accounts.get((partition, item_key(account, ref)))
        return orjson.loads(raw) if raw is not None else None

    def load_dedup(self, partition: int, key: bytes) -> DedupEntry | None:
        raw = self.dedup.get((partition, key))
        return DedupEntry.read(raw) if raw is not None else None

    def load_purge_mark(self, partition: int) -> int:
        raw = self.dedup.get((partition, PURGED_BEFORE_KEY))
        return int(raw) if raw is not None else 0

    def expired(self, partition: int, before_day: int, limit: int) -> list[bytes]:
        assert isinstance(self.dedup, DedupRecords)
        keys = self.dedup.index.get(partition, [])
        return keys[:min(limit, bisect.bisect_left(keys, horizon_key(before_day, b"")))]

    def views(self) -> dict[str, dict[str, Any]]:
        """Account -> its head and items as one JSON document (``layout.assemble``)."""
        return views(self.accounts)

    def write(self, result: BatchResult) -> None:
        """Write everything a batch wrote (no crash in between)."""
        merge(self.dedup, result.dedup_writes)
        for phase in (result.purge_marks, result.purged_records, result.purged_index):
            merge(self.dedup, phase)
        self.accounts.update({**head_records(result), **item_records(result)})


def views(accounts: Records) -> dict[str, dict[str, Any]]:
    heads: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[ItemRef, dict[str, Any]]] = defaultdict(dict)
    for (_, key), value in accounts.items():
        parsed, doc = read_record(key, orjson.loads(value))
        if parsed.item is None:
            heads[parsed.account] = doc
        else:
            items[parsed.account][parsed.item] = doc
    return {account: assemble(head, items[account]) for account, head in heads.items()}


def head_records(result: BatchResult) -> Records:
    return {(p, head_key(account)): head_json(head) for (p, account), head in result.heads.items()}


def item_records(result: BatchResult) -> Records:
    """The items and the lifecycle transitions a batch wrote."""
    return {(p, item_key(account, ref)): item_json(item)
            for (p, account, ref), item in (*result.transitions.items(), *result.items.items())}

