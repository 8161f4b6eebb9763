"""The facade's read model: FHIR resources built from rcm.accounts snapshots, in SQLite.

Why SQLite and not RocksDB (rocksdict): the facade answers searches (patient, status,
identifier, created and _lastUpdated ranges, paging with totals) over every account, which
needs secondary indexes; SQLite keeps them in step with the rows in one transaction, and the
consumed offsets go in that same transaction, so after a crash the store and its offsets
always agree. RocksDB would need hand-made index keys with the same crash care. Resources are
built and validated once per snapshot, on the way in, and kept as the JSON that is served:
a read is one indexed lookup, no FHIR model work.

Two connections: the consumer writes through one (from a worker thread, one batch per
transaction), the API reads through the other (on the event loop). WAL mode lets the reader
run beside the writer and see only committed batches.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from .resources import Built, build_resources, fhir_json, validate

__all__ = ["Store", "Row", "Query", "SNAPSHOT_VERSION_KEY"]

log = logging.getLogger("rcmflow.facade")

SNAPSHOT_VERSION_KEY = "version"
#: Accounts changed before statistics are refreshed: this many, or as many as were there at
#: the last refresh (so a store growing from empty is analysed at 1k, 2k, 4k, ... accounts).
ANALYZE_EVERY_MIN = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (account TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    type TEXT NOT NULL, id TEXT NOT NULL, account TEXT NOT NULL, patient TEXT NOT NULL,
    version INTEGER NOT NULL, status TEXT NOT NULL, created TEXT, last_updated TEXT,
    request TEXT, outcome TEXT, body BLOB NOT NULL,
    PRIMARY KEY (type, id));
CREATE INDEX IF NOT EXISTS resources_account ON resources (account);
CREATE INDEX IF NOT EXISTS resources_patient ON resources (type, patient, id);
CREATE INDEX IF NOT EXISTS resources_created ON resources (type, created);
CREATE INDEX IF NOT EXISTS resources_updated ON resources (type, last_updated);
CREATE INDEX IF NOT EXISTS resources_request ON resources (type, request);
CREATE TABLE IF NOT EXISTS identifiers (
    type TEXT NOT NULL, value TEXT NOT NULL, system TEXT NOT NULL, id TEXT NOT NULL,
    account TEXT NOT NULL, PRIMARY KEY (type, value, system, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identifiers_account ON identifiers (account);
"""


@dataclass(frozen=True)
class Row:
    type: str
    id: str
    patient: str
    version: int
    last_updated: str | None
    request: str | None
    body: bytes


@dataclass(frozen=True)
class Query:
    """A search as SQL: WHERE clauses over ``resources r`` with their arguments."""

    type: str
    where: tuple[str, ...] = ()
    args: tuple[Any, ...] = ()


class Store:
    def __init__(self, path: Path, *, validate_every: int = 1) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # FHIR validation costs 0.3-0.8 ms per resource, a few ms per snapshot: 1 checks every
        # snapshot, N one in N, 0 none (Settings.facade_validate_every says when to raise it).
        assert validate_every >= 0
        self.validate_every = validate_every
        self._snapshots_seen = 0
        #: Snapshots whose resources failed FHIR validation (a bug: shown on /health).
        self.invalid_snapshots = 0
        # check_same_thread off: each connection is used by one thread at a time, but the
        # writer's batches run on whichever pool thread asyncio.to_thread picks.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # The offsets live in the same transactions as the rows: NORMAL is crash-consistent
        # in WAL mode (a power cut may lose the last batches; they are read again).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        # Without statistics SQLite walks the primary key for "ORDER BY id" even when an
        # index narrows the search to one patient (~1000x slower at 100k accounts): keep
        # them fresh, at a bounded cost per ANALYZE.
        self.db.execute("PRAGMA analysis_limit=1000")
        self._since_analyze = 0
        self._analyzed_rows = 0
        if self.db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
                           ).fetchone()[0] == 0:
            self._analyze()
        self.rdb = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.rdb.execute("PRAGMA query_only=ON")

    def close(self) -> None:
        self.rdb.close()
        self.db.close()

    # --- the consumer's side -------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def reset(self, source: str) -> None:
        """Forget everything: the store will be filled again from ``source``'s beginning."""
        with self._tx():
            for table in ("meta", "offsets", "accounts", "resources", "identifiers"):
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("INSERT INTO meta VALUES ('source', ?)", (source,))

    def offsets(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT partition, next_offset FROM offsets").fetchall())

    def apply(self, records: Iterable[tuple[str, bytes | None]],
              offsets: dict[int, int]) -> int:
        """Apply (account, snapshot JSON or None for a tombstone) records and remember the
        next offsets, all in one transaction. Returns how many accounts changed.

        A snapshot older than the one held is skipped: versions only grow per account, and
        a worker re-sending an old state after a crash must not move the view back.
        """
        changed = 0
        with self._tx():
            for account, value in records:
                if value is None:
                    self._delete(account)
                    self.db.execute("DELETE FROM accounts WHERE account = ?", (account,))
                    changed += 1
                    continue
                snapshot = orjson.loads(value)
                version = int(snapshot[SNAPSHOT_VERSION_KEY])
                held = self.db.execute("SELECT version FROM accounts WHERE account = ?",
                                       (account,)).fetchone()
                if held is not None and held[0] > version:
                    continue
                built = build_resources(snapshot)
                self._snapshots_seen += 1
                check = self.validate_every and self._snapshots_seen % self.validate_every == 0
                if check and not _valid(account, built):
                    self.invalid_snapshots += 1
                    continue
                self._put(account, version, built)
                changed += 1
            self.db.executemany(
                "INSERT INTO offsets VALUES (?, ?) ON CONFLICT(partition) "
                "DO UPDATE SET next_offset = excluded.next_offset", offsets.items())
        self._since_analyze += changed
        if self._since_analyze > max(ANALYZE_EVERY_MIN, self._analyzed_rows):
            self._analyze()
        return changed

    def _analyze(self) -> None:
        self.db.execute("ANALYZE")
        self._since_analyze = 0
        self._analyzed_rows = self.db.execute("SELECT count(*) FROM accounts").fetchone()[0]

    def _put(self, account: str, version: int, built: Sequence[Built]) -> None:
        self._delete(account)
        self.db.execute("INSERT OR REPLACE INTO accounts VALUES (?, ?)", (account, version))
        self.db.executemany(
            "INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(b.type, b.id, account, b.patient, version, b.status, b.created,
              b.doc["meta"].get("lastUpdated"), b.request, b.outcome, fhir_json(b.doc))
             for b in built])
        self.db.executemany(
            "INSERT OR IGNORE INTO identifiers VALUES (?, ?, ?, ?, ?)",
            [(b.type, value, system, b.id, account)
             for b in built for system, value in (i.split("|", 1) for i in b.identifiers)])

    def _delete(self, account: str) -> None:
        self.db.execute("DELETE FROM resources WHERE account = ?", (account,))
        self.db.execute("DELETE FROM identifiers WHERE account = ?", (account,))

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)

    # --- the API's side -------------------------------------------------------------------

    def read(self, type_: str, id_: str) -> Row | None:
        row = self.rdb.execute(
            "SELECT type, id, patient, version, last_updated, request, body FROM resources "
            "WHERE type = ? AND id = ?", (type_, id_)).fetchone()
        return None if row is None else Row(*row)

    def count(self, query: Query) -> int:
        sql, args = _select(query, "count(*)")
        return int(self.rdb.execute(sql, args).fetchone()[0])

    def search(self, query: Query, *, limit: int, after: str | None = None,
               before: str | None = None) -> list[Row]:
        """Up to ``limit`` matches in id order: the first ones, those after id ``after``, or
        the last ones before id ``before`` (keyset paging: resources added or removed while
        a client pages never make it see one twice)."""
        sql, args = _select(query, _ROW_COLUMNS)
        if before is not None:
            rows = self.rdb.execute(f"{sql} AND r.id < ? ORDER BY r.id DESC LIMIT ?",
                                    (*args, before, limit)).fetchall()
            rows.reverse()
        elif after is not None:
            rows = self.rdb.execute(f"{sql} AND r.id > ? ORDER BY r.id LIMIT ?",
                                    (*args, after, limit)).fetchall()
        else:
            rows = self.rdb.execute(f"{sql} ORDER BY r.id LIMIT ?", (*args, limit)).fetchall()
        return [Row(*row) for row in rows]

    def read_many(self, type_: str, ids: Sequence[str]) -> list[Row]:
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = self.rdb.execute(
            f"SELECT {_ROW_COLUMNS} FROM resources r WHERE r.type = ? AND r.id IN ({marks}) "
            "ORDER BY r.id", (type_, *ids)).fetchall()
        return [Row(*row) for row in rows]

    def account_count(self) -> int:
        return int(self.rdb.execute("SELECT count(*) FROM accounts").fetchone()[0])


_ROW_COLUMNS = "r.type, r.id, r.patient, r.version, r.last_updated, r.request, r.body"


def _valid(account: str, built: Sequence[Built]) -> bool:
    for b in built:
        try:
            validate(b.doc)
        except ValidationError as exc:
            # Field paths only: the values may be PHI.
            where = sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
            log.error("account %s: invalid %s resource, not served (fields %s)",
                      account, b.type, where)
            return False
    return True


def _select(query: Query, columns: str) -> tuple[str, tuple[Any, ...]]:
    where = " AND ".join(("r.type = ?", *query.where))
    return f"SELECT {columns} FROM resources r WHERE {where}", (query.type, *query.args)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
