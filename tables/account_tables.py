"""The two tables of rcmflow, co-partitioned with ``rcm.events`` by account.

- **accounts**: each account's head and items (``streams/layout.py``: ``<account>`` -> head,
  ``<account>/<kind>/<id>`` -> item). Its changelog *is* ``rcm.accounts`` (a compacted
  topic), so every write is also the record the facade and operators read.
- **dedup**: (account, event_id) -> ``DedupEntry`` JSON, changelog ``<app>-dedup-changelog``.
  One reserved key per partition, ``NEXT_OFFSET_KEY``, holds the offset of the next rcm.events
  record that partition must apply (see ``streams/ordering.py``); account keys cannot start
  with the NUL byte it starts with.

Both are RocksDB stores (rocksdict) written a batch at a time (see ``faust_internals``).
Decoded heads are cached in memory; the cache is dropped whenever partitions move, because
recovery writes the stores underneath it.
"""

from __future__ import annotations

from collections.abc import Iterable

import faust
import orjson

from rcmflow.streams.dedup import HORIZON_PREFIX, PURGED_BEFORE_KEY, DedupEntry, horizon_key
from rcmflow.streams.layout import decode_head, head_key, item_key
from rcmflow.streams.outgoing import Acked, OutRecord
from rcmflow.streams.state import AccountHead, Item, ItemRef, head_json, item_json
from rcmflow.streams.topics import ACCOUNTS
from rcmflow.tables.faust_store import TableIO

__all__ = ["AccountTables", "HeadCache", "NEXT_OFFSET_KEY", "ROCKSDB_OPTIONS"]

#: Per RocksDB partition database (two tables x N partitions per worker). Faust's defaults
#: (a 2 GiB block cache and 3 x 64 MiB memtables each) would take gigabytes per worker; the
#: OS page cache serves reads well enough at these sizes.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
    "target_file_size_base": 32 * 1024**2,
    "block_cache_size": 16 * 1024**2,
    # Most dedup lookups are for keys that do not exist: 10 bits per key keeps the bloom
    # filter's false positives (each a block read) near 1 % (Faust's default 3 bits: ~25 %).
    "bloom_filter_size": 10,
}

NEXT_OFFSET_KEY = b"\x00next-offset"


class HeadCache:
    """Decoded account heads, least recently used dropped past ``size_max`` (0: none kept):
    a head is read by every event of its account, and decoding one costs more than the rest
    of a lookup."""

    def __init__(self, size_max: int) -> None:
        #: Insertion-ordered: re-inserting on use keeps the oldest-used first.
        self.entries: dict[tuple[int, str], AccountHead] = {}
        self.size_max = size_max
        #: Lookups answered from the cache, and not (read by bench.growth).
        self.hits = self.misses = 0

    def get(self, partition: int, account: str) -> AccountHead | None:
        head = self.entries.pop((partition, account), None)
        if head is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries[(partition, account)] = head
        return head

    def put(self, partition: int, account: str, head: AccountHead) -> None:
        if self.size_max <= 0:
            return
        self.entries.pop((partition, account), None)
        self.entries[(partition, account)] = head
        if len(self.entries) > self.size_max:
            del self.entries[next(iter(self.entries))]

    def clear(self) -> None:
        self.entries.clear()


class AccountTables:
    def __init__(self, app: faust.App, *, partitions: int, state_cache_max: int) -> None:
        changelog = app.topic(
            ACCOUNTS,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
            compacting=True,
            internal=True,
            # As Faust's own changelogs (Table._new_changelog_topic): no acks. A topic with
            # acks is one a stream consumes, and Faust's livelock check then logs ERROR
            # "Stream has not started processing TP(topic='rcm.accounts', ...)" every
            # broker_commit_interval * 2.5 s once the worker has written past its position.
            acks=False,
        )
        self.accounts = app.Table(
            "accounts",
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
            changelog_topic=changelog,
            options=dict(ROCKSDB_OPTIONS),
            help="Account heads and items (streams/layout.py); changelog = rcm.accounts.",
        )
        self.dedup = app.Table(
            "dedup",
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
            options=dict(ROCKSDB_OPTIONS),
            help="Applied events by (account, event_id): digest, offset, account version.",
        )
        self.accounts_io = TableIO(app, self.accounts)
        self.dedup_io = TableIO(app, self.dedup)
        self.heads = HeadCache(state_cache_max)

    def forget_cache(self) -> None:
        """Partitions moved: states may have been rewritten by recovery."""
        self.heads.clear()

    def flush(self) -> None:
        """Before partitions move: make the WAL-less writes durable (see ``TableIO``)."""
        self.accounts_io.flush()
        self.dedup_io.flush()

    def load_head(self, partition: int, account: str) -> AccountHead | None:
        head = self.heads.get(partition, account)
        if head is not None:
            return head
        raw = self.accounts_io.get(partition, head_key(account))
        if raw is None:
            return None
        loaded = decode_head(raw)  # UpgradeNeeded for an older layout: the worker stops
        self.heads.put(partition, account, loaded)
        return loaded

    def load_item(self, partition: int, account: str, ref: ItemRef) -> Item | None:
        raw = self.accounts_io.get(partition, item_key(account, ref))
        return orjson.loads(raw) if raw is not None else None

    def load_dedup(self, partition: int, key: bytes) -> DedupEntry | None:
        raw = self.dedup_io.get(partition, key)
        return DedupEntry.read(raw) if raw is not None else None

    def load_purge_mark(self, partition: int) -> int:
        raw = self.dedup_io.get(partition, PURGED_BEFORE_KEY)
        return int(raw) if raw is not None else 0

    def expired(self, partition: int, before_day: int, limit: int) -> list[bytes]:
        return self.dedup_io.keys_between(partition, HORIZON_PREFIX,
                                          horizon_key(before_day, b""), limit)

    def load_next_offset(self, partition: int) -> int | None:
        raw = self.dedup_io.get(partition, NEXT_OFFSET_KEY)
        return int(raw) if raw is not None else None

    def dedup_records(
        self, writes: dict[tuple[int, bytes], bytes | None],
        next_offsets: dict[int, int] | None = None,
    ) -> list[OutRecord]:
        """The changelog records of dedup records (None: deleted) and next-offsets (``store``
        writes them)."""
        topic = self.dedup_io.changelog_topic
        records = [OutRecord(topic, p, key, value) for (p, key), value in writes.items()]
        records += [OutRecord(topic, p, NEXT_OFFSET_KEY, str(offset).encode())
                    for p, offset in (next_offsets or {}).items()]
        return records

    @staticmethod
    def head_records(heads: dict[tuple[int, str], AccountHead]) -> list[OutRecord]:
        """The rcm.accounts records of account heads (``store`` writes them)."""
        return [OutRecord(ACCOUNTS, partition, head_key(account), head_json(head))
                for (partition, account), head in heads.items()]

    @staticmethod
    def item_records(items: dict[tuple[int, str, ItemRef], Item]) -> list[OutRecord]:
        """The rcm.accounts records of items (``store`` writes them)."""
        return [OutRecord(ACCOUNTS, partition, item_key(account, ref), item_json(item))
                for (partition, account, ref), item in items.items()]

    def store(self, records: Iterable[OutRecord], heads: dict[tuple[int, str], AccountHead],
              acks: Iterable[Acked] = ()) -> None:
        """Write changelog records to the local stores (and ``heads`` to the cache); with
        ``acks``, also the newest changelog offsets they reached, which recovery resumes from."""
        by_store: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        for record in records:
            by_store.setdefault((record.topic, record.partition), []).append(
                (record.key, record.value))
        ios = {io.changelog_topic: io for io in (self.dedup_io, self.accounts_io)}
        for (topic, partition), pairs in by_store.items():
            ios[topic].put_local(partition, pairs)
        for (partition, account), head in heads.items():
            self.heads.put(partition, account, head)
        acked = list(acks)
        for io in ios.values():
            io.persist_offsets(acked)
