"""Batched, WAL-less access to a Faust table's RocksDB partitions and its changelog offsets:
the one place the tables reach inside Faust (faust-streaming is pinned; the shell's
``faust_internals`` holds the consumer-side hooks, ``tests/streams/shell/test_faust_internals.py``
checks both)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import faust
from faust.stores.rocksdb import Store
from faust.tables.base import Collection
from faust.types import TP
from faust.types.tables import TableT
from rocksdict import WriteBatch, WriteOptions

__all__ = ["TableIO"]


class TableIO:
    """Raw, batched access to one Faust table's RocksDB partitions and its changelog.

    rcmflow's writes skip RocksDB's write-ahead log: the changelog on the broker is the durable
    copy, and the WAL doubled the cost of every state write. A crash then loses the unflushed
    memtable, data and persisted changelog offset *together* (they share it), so the store
    falls back to an older consistent point and recovery replays from there. That holds only
    while no WAL-logged write (Faust's own recovery) follows an unflushed WAL-less one:
    ``flush`` is called whenever partitions are revoked, before any recovery. Under
    exactly_once the local writes come only after the transaction that carries their
    changelog records committed, so the store never holds what a reader of the changelog
    (``read_committed``) cannot see.
    """

    def __init__(self, app: faust.App, table: TableT[Any, Any]) -> None:
        self.app = app
        # App.Table is typed as returning the TableT interface; what it makes is a faust
        # Table, a Collection, whose store this class reaches into. (mypy holds TableT and
        # Collection to be disjoint, so an isinstance check would not narrow: it would make
        # the rest of the method unreachable to it.)
        self.table = cast(Collection, table)
        self._write_options = WriteOptions()
        # rocksdict exposes this as a property (its stub says method).
        self._write_options.disable_wal = True  # type: ignore[method-assign,assignment]

    @property
    def changelog_topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def get(self, partition: int, key: bytes) -> bytes | None:
        db = self.table.data._db_for_partition(partition)
        value = db.get(key)
        return cast(bytes | None, value)

    def put_local(self, partition: int, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Write to the local store (a None value deletes), as recovery does."""
        batch = WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.table.data._db_for_partition(partition).write(batch, write_opt=self._write_options)

    def keys_between(self, partition: int, start: bytes, end: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` keys k of the partition's store with start <= k < end, in order."""
        found: list[bytes] = []
        it = self.table.data._db_for_partition(partition).iter()
        it.seek(start)
        while it.valid() and len(found) < limit:
            key = cast(bytes, it.key())
            if key >= end:
                break
            found.append(key)
            it.next()
        return found

    def flush(self) -> None:
        """Make every WAL-less write durable (memtables to SST files)."""
        for db in list(self.table.data._dbs.values()):
            db.flush()

    def persist_offsets(self, acked: Iterable[tuple[str, int, int]]) -> None:
        """Remember the newest changelog offset per partition, as Faust does after a send.

        ``acked``: (topic, partition, last offset the broker acknowledged).
        """
        newest: dict[TP, int] = {}
        for topic, partition, offset in acked:
            if topic == self.changelog_topic:
                tp = TP(topic, partition)
                newest[tp] = max(offset, newest.get(tp, -1))
        for tp, offset in newest.items():
            # Like Store.set_persisted_offset, but WAL-less like the data it vouches for.
            db = self.table.data._db_for_partition(tp.partition)
            db.put(Store.offset_key, str(offset).encode(), write_opt=self._write_options)
