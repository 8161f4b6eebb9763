"""The facade's read model: FHIR resources built from rcm.accounts records, in SQLite.

Why SQLite and not RocksDB (rocksdict): the facade answers searches (patient, status,
identifier, created and _lastUpdated ranges, paging with totals) over every account, which
needs secondary indexes; SQLite keeps them in step with the rows in one transaction, and the
consumed offsets go in that same transaction, so after a crash the store and its offsets
always agree. RocksDB would need hand-made index keys with the same crash care. Resources are
built and validated once, on the way in, and kept as the JSON that is served: a read is one
indexed lookup, no FHIR model work.

rcm.accounts carries an account as a head and one record per item (``streams/layout.py``).
The store keeps those records as they are (``accounts``: heads, ``items``: items, indexed by
the columns that find related items: an adjudication's claim and payment trace) and, per
batch, rebuilds only the resources the batch's records affect (``resources.py`` says which
record makes which resource): a record costs the same on an account with ten items or ten
thousand. ``payers`` counts the claims naming each payer of an account, so Account.coverage
is read in O(distinct payers).

Two connections: the consumer writes through one (from a worker thread, one batch per
transaction), the API reads through the other (on the event loop). WAL mode lets the reader
run beside the writer and see only committed batches.

Every search parameter has an index that narrows it (``tests/facade/test_search_plans.py``
checks each query plan): at 1M resources a search is a few index lookups, not a scan. The
exception is a string's ``:contains`` (a substring anywhere): a page walks the type's ids in
order until it is full, a count walks the type. An exact count of many matches would read
each one's index entry (700k: ~0.15 s), so ``counts`` keeps, in each write's own
transaction, the resources per type, per token or Organization code and per identifier
system: a search of one such condition (or none) is counted from one row (``Query.counted``).

A resource the store cannot build (its builder fails, or FHIR validation refuses it) and a
record it cannot read are never dropped silently: each is an exception record in
``exceptions`` (in the same transaction as the batch), which the feed sends to rcm.dlq
(``unsent_exceptions``/``mark_sent``) and /metrics counts. The account's other resources are
still built and served; the failing one keeps its last good version, if it had one.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sqlite3
import traceback
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError

from rcmflow.facade.exceptions import StoreLocked
from rcmflow.facade.resources import (
    ENTITY_SYSTEM,
    PAYER_SYSTEM,
    Built,
    account_resource,
    claim_resource,
    claim_response_resource,
    fhir_id,
    fhir_json,
    is_provider,
    patient_payment_resource,
    payer_payment_resource,
    trace_order,
    validate,
)
from rcmflow.runtime.metrics import Metric, counter, gauge
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.exceptions import UpgradeNeeded
from rcmflow.streams.layout import Key, parse_key, read_record
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import ACCOUNTS

__all__ = ["Store", "Row", "Query", "SCHEMA_VERSION", "lock_store",
           "EXCEPTION_REASONS", "ID_ORDER", "text_key"]

log = logging.getLogger("rcmflow.facade")

#: The store's layout. A store of layout 2 or 3 is brought to 4 in place when opened (3 adds
#: the columns of the string, payment-date and Organization-identifier searches, read from
#: the stored resources; 4 the maintained ``counts``, counted from the rows); one of another
#: (older) layout is emptied, and the feed, finding no source in it, fills it again from the
#: topic's beginning.
SCHEMA_VERSION = "4"
#: The columns layout 3 added to ``resources`` (``_searched`` gives their values).
_SEARCHED_COLUMNS = ("text", "text_key", "payment_date", "payer", "entity")
#: Records changed before statistics are refreshed: this many, or as many resources as were
#: there at the last refresh (so a store growing from empty is analysed at 1k, 2k, 4k, ...).
ANALYZE_EVERY_MIN = 1000

_TABLES = ("meta", "offsets", "accounts", "items", "payers", "resources", "identifiers",
           "exceptions", "counts")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY, version INTEGER NOT NULL, entity TEXT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    account TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
    claim_id TEXT, trace TEXT, payer TEXT, body BLOB NOT NULL,
    PRIMARY KEY (account, kind, id));
CREATE INDEX IF NOT EXISTS items_claim ON items (account, claim_id)
    WHERE kind = 'adjudication';
CREATE INDEX IF NOT EXISTS items_trace ON items (account, trace) WHERE kind = 'adjudication';
CREATE TABLE IF NOT EXISTS payers (
    account TEXT NOT NULL, payer TEXT NOT NULL, claims INTEGER NOT NULL,
    PRIMARY KEY (account, payer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resources (
    type TEXT NOT NULL, id TEXT NOT NULL, account TEXT NOT NULL, patient TEXT NOT NULL,
    version INTEGER NOT NULL, status TEXT NOT NULL, created TEXT, last_updated TEXT,
    request TEXT, outcome TEXT, text TEXT, text_key TEXT, payment_date TEXT, payer TEXT,
    entity TEXT, body BLOB NOT NULL,
    PRIMARY KEY (type, id));
CREATE INDEX IF NOT EXISTS resources_account ON resources (account);
-- One index per search parameter (params.py), ending in id: equality searches come out in
-- id order (the page order) straight from the index, so a page of a million matches reads
-- a page of rows. identifier: the identifiers table's key (type, value, system, id).
CREATE INDEX IF NOT EXISTS resources_patient ON resources (type, patient, id);
DROP INDEX IF EXISTS resources_created;
DROP INDEX IF EXISTS resources_updated;
CREATE INDEX IF NOT EXISTS resources_created_id ON resources (type, created, id);
CREATE INDEX IF NOT EXISTS resources_updated_id ON resources (type, last_updated, id);
DROP INDEX IF EXISTS resources_request;
CREATE INDEX IF NOT EXISTS resources_request_id ON resources (type, request, id);
CREATE INDEX IF NOT EXISTS resources_status ON resources (type, status, id);
CREATE INDEX IF NOT EXISTS resources_outcome ON resources (type, outcome, id);
-- text: the one string parameter a type has (Account.name, disposition), text_key its
-- case- and accent-folded form that the index orders (prefix ranges, exact matches).
CREATE INDEX IF NOT EXISTS resources_text_id ON resources (type, text_key, id);
CREATE INDEX IF NOT EXISTS resources_payment_date_id ON resources (type, payment_date, id);
-- The identifier values of the Organization references (insurer / payment-issuer: payer;
-- provider / owner: entity).
-- (Partial: they are only searched by equality, and a type without such a reference, most
-- rows, adds no entry.)
CREATE INDEX IF NOT EXISTS resources_payer ON resources (type, payer, id)
    WHERE payer IS NOT NULL;
CREATE INDEX IF NOT EXISTS resources_entity ON resources (type, entity, id)
    WHERE entity IS NOT NULL;
CREATE TABLE IF NOT EXISTS identifiers (
    type TEXT NOT NULL, value TEXT NOT NULL, system TEXT NOT NULL, id TEXT NOT NULL,
    account TEXT NOT NULL, PRIMARY KEY (type, value, system, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identifiers_account ON identifiers (account);
CREATE INDEX IF NOT EXISTS identifiers_resource ON identifiers (type, id);
-- identifier=system| alone: its matches in id order, a page from any cursor (layout 4).
CREATE INDEX IF NOT EXISTS identifiers_system ON identifiers (type, system, id);
-- What could not be built or read (one row per resource, or per record key), with its
-- rcm.dlq record: sent = 1 once the broker acknowledged it.
CREATE TABLE IF NOT EXISTS exceptions (
    type TEXT NOT NULL, id TEXT NOT NULL, account TEXT NOT NULL, reason_code TEXT NOT NULL,
    dlq_id TEXT NOT NULL, record BLOB NOT NULL, sent INTEGER NOT NULL, PRIMARY KEY (type, id));
CREATE INDEX IF NOT EXISTS exceptions_unsent ON exceptions (sent) WHERE sent = 0;
"""

#: Resource columns whose matches are counted per value (``counts``): the token and
#: Organization-identifier parameters, whose one value may match most of a type.
COUNTED_COLUMNS = ("status", "outcome", "payer", "entity")
#: ``counts`` (layout 4): how many resources a type holds (param ''), per value of each
#: COUNTED_COLUMNS column (param: the column), per identifier system (param 'identifier':
#: resources with at least one identifier of that system). Every write and delete of a
#: resource row (a build, a drop, an account's tombstone) adds its steps
#: (``Store._count_steps``), and each transaction writes them before it commits: the counts
#: always agree with the rows they count. A count of 700k matches is one row read, not 700k
#: index entries (~0.15 s). Rows may reach n = 0 (a code no longer held): bounded by the codes.
_COUNTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS counts (type TEXT NOT NULL, param TEXT NOT NULL, "
    "value TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (type, param, value)) WITHOUT ROWID")
#: ``counts`` counted from the rows (a store migrated to layout 4).
_COUNTS_FROM_ROWS = (
    "INSERT INTO counts SELECT type, '', '', count(*) FROM resources GROUP BY type",
    *(f"INSERT INTO counts SELECT type, '{c}', {c}, count(*) FROM resources "
      f"WHERE {c} IS NOT NULL GROUP BY type, {c}" for c in COUNTED_COLUMNS),
    "INSERT INTO counts SELECT type, 'identifier', system, count(DISTINCT id) "
    "FROM identifiers GROUP BY type, system",
)

#: The reason codes of the store's rcm.dlq records (stage "facade"); /metrics counts each.
EXCEPTION_REASONS = ("resource_build_failed", "resource_invalid", "record_unreadable")
#: Source bytes kept in one exception record (an account's head or item is far smaller).
EXCEPTION_PAYLOAD_BYTES_MAX = 64 * 1024

#: FHIR validation while catching up: 1 resource in this many at most. Validating costs
#: ~0.2-0.8 ms a resource, 2.5x+ the rest of its build and write: validating all holds a
#: catch-up to ~1,500 records per CPU second, 1 in 20 to ~7,000, below what one worker
#: writes (~9,500; bench/RESULTS.md). A builder bug shows in any sample; live traffic (a
#: batch that empties the backlog) is validated at ``validate_every``.
CATCH_UP_VALIDATE_EVERY = 100

#: A resource to rebuild: (what, account, id): what is "Account" (id ""), "Claim" (claim
#: id), "ClaimResponse" (adjudication event id), "trace" (payment trace), "payment" (event id).
_Target = tuple[str, str, str]
#: What an item's related rows are found by: (claim_id, trace, payer).
_Links = tuple[str | None, str | None, str | None]


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
    #: When nothing narrows the search by equality: the index of its date range (or
    #: codes), which the store walks when few match, else the ids in order (``search``);
    #: ID_ORDER when there is no range either. None: SQLite picks the equality's index.
    range_index: str | None = None
    #: The ids come from a list (an identifier's): a page cursor must not walk the ids
    #: from it, only filter the listed ones (``search``).
    listed_ids: bool = False
    #: The search is one condition the store counts (``counts``), or none: (param, values):
    #: ("", ()) every resource of the type; (a COUNTED_COLUMNS column, codes) any of the
    #: codes, or any value when none are given; ("identifier", (system,)) a resource with
    #: an identifier of that system. None: counted from the index (``Store.count``).
    counted: tuple[str, tuple[str, ...]] | None = None


class Store:
    def __init__(self, path: Path, *, validate_every: int = 1) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # FHIR validation costs 0.3-0.8 ms per resource: 1 checks every resource built, N one
        # in N, 0 none (Settings.facade_validate_every says when to raise it).
        assert validate_every >= 0
        self.validate_every = validate_every
        self._validate_now = validate_every
        self._resources_built = 0
        #: Resources that failed FHIR validation and were not served (a bug: on /health).
        self.invalid_snapshots = 0
        #: Exception records made by this process, by reason code (/metrics).
        self.exceptions_recorded = dict.fromkeys(EXCEPTION_REASONS, 0)
        # The docs written by the batch being applied: its rebuild reads them from here.
        self._heads: dict[str, dict[str, Any] | None] = {}
        self._items: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        # check_same_thread off: each connection is used by one thread at a time, but the
        # writer's batches run on whichever pool thread asyncio.to_thread picks.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # The offsets live in the same transactions as the rows: NORMAL is crash-consistent
        # in WAL mode (a power cut may lose the last batches; they are read again).
        self.db.execute("PRAGMA synchronous=NORMAL")
        # 64 MiB of page cache for the writer (SQLite's default is 2 MiB): a catch-up batch
        # touches the 12 resource indexes all over; re-reading their pages from the OS was
        # ~15% of its CPU (bench/RESULTS.md, "Facade at scale"). Bounded: 64 MiB a store.
        self.db.execute("PRAGMA cache_size=-65536")
        #: The changes to ``counts`` of the transaction under way: (type, param, value) ->
        #: step, written by ``_Transaction`` before it commits.
        self._count_steps: Counter[tuple[str, str, str]] = Counter()
        self._open_schema()
        # Without statistics SQLite walks the primary key for "ORDER BY id" even when an
        # index narrows the search to one patient (~1000x slower at 100k accounts): keep
        # them fresh, at a bounded cost per ANALYZE.
        self.db.execute("PRAGMA analysis_limit=1000")
        self._since_analyze = 0
        self._analyzed_rows = 0
        if self._unanalyzed_indexes():
            # An index without statistics looks to SQLite as if it matched ~10 rows a key:
            # one added to an existing store would be preferred to every other.
            self._analyze()
        self.rdb = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.rdb.execute("PRAGMA query_only=ON")
        #: (type, id) of the exception rows held: a resource built again clears its own.
        self._failing = set(self.db.execute("SELECT type, id FROM exceptions").fetchall())

    def _open_schema(self) -> None:
        """Create the tables; a store of an older layout (one snapshot per account) is
        emptied first: without a source it is refilled from the topic's beginning."""
        has_meta = self.db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()[0]
        if has_meta and self.meta("schema") == "2":
            self._migrate_from_2()
        if has_meta and self.meta("schema") == "3":
            self._migrate_from_3()
        if has_meta and self.meta("schema") != SCHEMA_VERSION:
            log.warning("facade read model %s has an older layout: emptying it (it is "
                        "filled again from the beginning of rcm.accounts)", self.path)
            with self._tx():
                for table in _TABLES:
                    self.db.execute(f"DROP TABLE IF EXISTS {table}")
        self.db.executescript(_SCHEMA)
        self.db.execute(_COUNTS_SCHEMA)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def _migrate_from_2(self) -> None:
        """Layout 2 -> 3 in place: the new columns, filled from each resource's stored JSON
        (5.7 s for 200k resources on a 2-core EPYC, against minutes to refill from the topic); the
        indexes come with the schema script. One transaction: a crash leaves layout 2."""
        log.warning("facade read model %s: adding the layout-3 search columns", self.path)
        with self._tx():
            for column in _SEARCHED_COLUMNS:
                self.db.execute(f"ALTER TABLE resources ADD COLUMN {column} TEXT")
            last = -1
            # A batch at a time, by rowid: no read cursor is open while the rows change.
            while batch := self.db.execute(
                    "SELECT rowid, body FROM resources WHERE rowid > ? ORDER BY rowid "
                    "LIMIT 1000", (last,)).fetchall():
                last = batch[-1][0]
                self.db.executemany(
                    f"UPDATE resources SET {', '.join(f'{c} = ?' for c in _SEARCHED_COLUMNS)} "
                    "WHERE rowid = ?",
                    [(*_searched(orjson.loads(body)), rowid) for rowid, body in batch])
            self.db.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")

    def _migrate_from_3(self) -> None:
        """Layout 3 -> 4 in place: ``counts`` counted from the rows (4 s at 1M resources on
        a 2-core EPYC, with identifiers_system). One transaction: a crash leaves layout 3."""
        log.warning("facade read model %s: counting its resources (layout 4)", self.path)
        with self._tx():
            for statement in (_COUNTS_SCHEMA, *_COUNTS_FROM_ROWS):
                self.db.execute(statement)
            self.db.execute("UPDATE meta SET value = '4' WHERE key = 'schema'")

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
            for table in _TABLES:
                self.db.execute(f"DELETE FROM {table}")
            self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                [("source", source), ("schema", SCHEMA_VERSION)])
        self._failing.clear()

    def offsets(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT partition, next_offset FROM offsets").fetchall())

    def apply(self, records: Iterable[tuple[str, bytes | None]],
              offsets: dict[int, int], *, catching_up: bool = False) -> int:
        """Apply rcm.accounts records (key, value JSON or None for a tombstone), rebuild the
        resources they affect and remember the next offsets, all in one transaction.
        ``catching_up`` (a backlog waits): FHIR-validate at most 1 in
        CATCH_UP_VALIDATE_EVERY resources, so validation does not set the catch-up rate.
        Returns how many records changed something.

        A record older than the one held under its key is skipped: versions only grow per
        key, and a worker re-sending an old record after a crash must not move the view
        back. A head's tombstone removes the account with its items. A head an older
        rcmflow wrote (no ``layout``: ``rcmflow upgrade`` rewrites it) is unreadable here:
        nothing of it is applied, and its exception record names the command.
        """
        changed = 0
        dirty: set[_Target] = set()
        self._validate_now = self.validate_every and (
            max(self.validate_every, CATCH_UP_VALIDATE_EVERY) if catching_up
            else self.validate_every)
        self._heads.clear()
        self._items.clear()
        with self._tx():
            for key, value in records:
                try:
                    parsed = parse_key(key)
                except ValueError:
                    log.warning("facade: skipping a record whose key is not an account's")
                    continue
                if value is None:
                    changed += self._tombstone(parsed, dirty)
                    continue
                try:
                    record = orjson.loads(value)
                    part, doc = read_record(key, record)
                    int(doc["version"])
                except UpgradeNeeded as exc:  # an older rcmflow's head: said, not guessed at
                    log.error("facade: %s", exc)
                    self._exception("record", key, parsed.account, "record_unreadable",
                                    f"{exc}; it was not applied", key, value,
                                    {"account": parsed.account})
                    # Held, not sent, until the feed reaches the log's end: the upgrade's
                    # record of the same key further on clears it (compaction drops the old
                    # one in time).
                    self.db.execute("UPDATE exceptions SET sent = -1 WHERE type = 'record' "
                                    "AND id = ? AND sent = 0", (key,))
                    continue
                except Exception as exc:
                    # An unreadable record: nothing of it is applied, and it is said.
                    self._record_unreadable(parsed, key, value, exc)
                    continue
                if ("record", key) in self._failing:  # readable again: that one is over
                    self._failing.discard(("record", key))
                    self.db.execute("DELETE FROM exceptions WHERE type = 'record' AND id = ?",
                                    (key,))
                if part.item is None:
                    changed += self._put_head(part.account, doc, dirty)
                elif part.item[0] in ("transition", "denial"):
                    # Read and kept nowhere: the Account shows the state from the head (the
                    # history is `rcmflow accounts show`'s, the denials `rcmflow denials`').
                    changed += 1
                else:
                    changed += self._put_item(part, doc, dirty)
            self._rebuild(dirty)
            self.db.executemany(
                "INSERT INTO offsets VALUES (?, ?) ON CONFLICT(partition) "
                "DO UPDATE SET next_offset = excluded.next_offset", offsets.items())
        self._heads.clear()
        self._items.clear()
        self._since_analyze += changed
        if self._since_analyze > max(ANALYZE_EVERY_MIN, self._analyzed_rows):
            self._analyze()
        return changed

    def _unanalyzed_indexes(self) -> bool:
        if not self.db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
                               ).fetchone()[0]:
            return True
        return bool(self.db.execute(
            "SELECT count(*) FROM sqlite_master m WHERE m.type = 'index' AND m.tbl_name IN "
            "('resources', 'identifiers') AND NOT EXISTS (SELECT 1 FROM sqlite_stat1 s "
            "WHERE s.idx = m.name) AND EXISTS (SELECT 1 FROM resources)").fetchone()[0])

    def _analyze(self) -> None:
        self.db.execute("ANALYZE")
        self._since_analyze = 0
        self._analyzed_rows = self.db.execute("SELECT count(*) FROM resources").fetchone()[0]

    # The raw records, and what each change makes stale.

    def _put_head(self, account: str, head: dict[str, Any], dirty: set[_Target]) -> bool:
        version = int(head["version"])
        held = self.db.execute("SELECT version, entity FROM accounts WHERE account = ?",
                               (account,)).fetchone()
        if held is not None and held[0] > version:
            return False
        entity = head.get("entity")
        self.db.execute(
            "INSERT INTO accounts VALUES (?, ?, ?, ?) ON CONFLICT(account) DO UPDATE SET "
            "version = excluded.version, entity = excluded.entity, body = excluded.body",
            (account, version, entity, orjson.dumps(head)))
        self._heads[account] = head
        if is_provider(account):
            return True
        dirty.add(("Account", account, ""))
        if (held[1] if held is not None else None) != entity:
            # Claims show the entity (their provider): it is set once, by the account's
            # first event, so this walk over the claims happens at most once per account.
            dirty.update(("Claim", account, cid) for (cid,) in self.db.execute(
                "SELECT id FROM items WHERE account = ? AND kind = 'claim'", (account,)))
        return True

    def _put_item(self, key: Key, item: dict[str, Any], dirty: set[_Target]) -> bool:
        assert key.item is not None
        kind, item_id = key.item
        held = self.db.execute(
            "SELECT version, claim_id, trace, payer FROM items "
            "WHERE account = ? AND kind = ? AND id = ?", (key.account, kind, item_id)).fetchone()
        if held is not None and held[0] > int(item["version"]):
            return False
        adjudication = kind == "adjudication"
        links: _Links = (item.get("claim_id") if adjudication else None,
                         item.get("correlation_id") if adjudication else None,
                         item.get("payer") or None if kind in ("claim", "adjudication")
                         else None)
        self.db.execute(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(account, kind, id) DO UPDATE SET version = excluded.version, "
            "claim_id = excluded.claim_id, trace = excluded.trace, payer = excluded.payer, "
            "body = excluded.body",
            (key.account, kind, item_id, int(item["version"]), *links, orjson.dumps(item)))
        self._items[(key.account, kind, item_id)] = item
        self._item_changed(key, None if held is None else (held[1], held[2], held[3]), links,
                           dirty)
        return True

    def _tombstone(self, key: Key, dirty: set[_Target]) -> int:
        account = key.account
        if key.item is None:
            # The account is gone: its head, items and every resource it made.
            for type_, *columns in self.db.execute(
                    "DELETE FROM resources WHERE account = ? RETURNING type, "
                    f"{', '.join(COUNTED_COLUMNS)}", (account,)).fetchall():
                self._count_row(type_, columns, -1)
            for (type_, _), systems in _systems_by_resource(self.db.execute(
                    "DELETE FROM identifiers WHERE account = ? RETURNING type, id, system",
                    (account,))).items():
                self._count_systems(type_, systems, -1)
            for table in ("accounts", "items", "payers", "exceptions"):
                self.db.execute(f"DELETE FROM {table} WHERE account = ?", (account,))
            dirty.difference_update({t for t in dirty if t[1] == account})
            self._heads[account] = None
            self._items = {k: v for k, v in self._items.items() if k[0] != account}
            self._failing = set(self.db.execute("SELECT type, id FROM exceptions"))
            return 1
        kind, item_id = key.item
        held = self.db.execute(
            "DELETE FROM items WHERE account = ? AND kind = ? AND id = ? "
            "RETURNING claim_id, trace, payer", (account, kind, item_id)).fetchone()
        if held is None:
            return 0
        self._items[(account, kind, item_id)] = None
        self._item_changed(key, (held[0], held[1], held[2]), None, dirty)
        return 1

    def _item_changed(self, key: Key, was: _Links | None, now: _Links | None,
                      dirty: set[_Target]) -> None:
        """Mark the resources an item's change affects (``was``/``now``: its links before
        and after; None when it did not / no longer exists)."""
        assert key.item is not None
        account, (kind, item_id) = key.account, key.item
        if is_provider(account):
            return
        before: _Links = was if was is not None else (None, None, None)
        after: _Links = now if now is not None else (None, None, None)
        if kind == "claim":
            dirty.add(("Claim", account, item_id))
            if before[2] != after[2]:
                self._count_payer(account, before[2], -1)
                self._count_payer(account, after[2], +1)
                dirty.add(("Account", account, ""))
            # Adjudications naming no payer show this claim's (and its version).
            for adj_id, trace in self.db.execute(
                    "SELECT id, trace FROM items WHERE account = ? AND kind = 'adjudication' "
                    "AND claim_id = ? AND payer IS NULL", (account, item_id)).fetchall():
                dirty.add(("ClaimResponse", account, adj_id))
                if trace:
                    dirty.add(("trace", account, trace))
        elif kind == "adjudication":
            dirty.add(("ClaimResponse", account, item_id))
            dirty.update(("trace", account, t) for t in {before[1], after[1]} if t)
        elif kind == "payment":
            dirty.add(("payment", account, item_id))
        # A charge makes no resource (the Account shows its money through the head).

    def _count_payer(self, account: str, payer: str | None, step: int) -> None:
        if payer is None:
            return
        self.db.execute("INSERT INTO payers VALUES (?, ?, ?) ON CONFLICT(account, payer) "
                        "DO UPDATE SET claims = claims + excluded.claims",
                        (account, payer, step))
        if step < 0:
            self.db.execute("DELETE FROM payers WHERE account = ? AND payer = ? AND claims <= 0",
                            (account, payer))

    # The resources, rebuilt from the records held.

    def _rebuild(self, dirty: set[_Target]) -> None:
        """Build each resource the batch made stale, once. One that fails to build or to
        validate becomes an exception record; the others are built and served as usual."""
        heads = self._heads

        def head(account: str) -> dict[str, Any] | None:
            if account not in heads:
                row = self.db.execute("SELECT body FROM accounts WHERE account = ?",
                                      (account,)).fetchone()
                heads[account] = None if row is None else orjson.loads(row[0])
            return heads[account]

        for target in sorted(dirty):
            account = target[1]
            try:
                built = self._build(target, head(account))
            except Exception as exc:
                # Field paths and code places only: the values may be PHI.
                self._resource_failed(target, head(account), "resource_build_failed",
                                      f"its builder failed ({_where(exc)})")
                continue
            if built is None:
                self._drop(*_resource_id(target))
                continue
            invalid = self._invalid_fields(built)
            if invalid is not None:
                self._resource_failed(target, head(account), "resource_invalid",
                                      f"invalid FHIR in {', '.join(invalid)[:300]}",
                                      {"fields": invalid[:20]})
                continue
            self._write(account, built)

    def _build(self, target: _Target, head: dict[str, Any] | None) -> Built | None:
        what, account, item_id = target
        if what == "Account":
            if head is None:
                return None
            payers = [p for (p,) in self.db.execute(
                "SELECT payer FROM payers WHERE account = ? ORDER BY payer", (account,))]
            return account_resource(head, payers)
        if what == "Claim":
            claim = self._item(account, "claim", item_id)
            return None if claim is None else claim_resource(account, claim, head)
        if what == "ClaimResponse":
            adj = self._item(account, "adjudication", item_id)
            if adj is None:
                return None
            return claim_response_resource(account, adj, self._item(
                account, "claim", adj["claim_id"]), head)
        if what == "trace":
            adjs = [orjson.loads(body) for (body,) in self.db.execute(
                "SELECT body FROM items WHERE account = ? AND kind = 'adjudication' "
                "AND trace = ?", (account, item_id))]
            if not adjs:
                return None
            first = trace_order(adjs)[0]
            return payer_payment_resource(account, item_id, adjs, self._item(
                account, "claim", first["claim_id"]), head)
        assert what == "payment", target
        pay = self._item(account, "payment", item_id)
        return None if pay is None else patient_payment_resource(account, pay, head)

    def _item(self, account: str, kind: str, item_id: str) -> dict[str, Any] | None:
        if (account, kind, item_id) in self._items:
            return self._items[(account, kind, item_id)]
        row = self.db.execute("SELECT body FROM items WHERE account = ? AND kind = ? AND id = ?",
                              (account, kind, item_id)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def _invalid_fields(self, built: Built) -> list[str] | None:
        """Validate 1 in ``validate_every`` resources: the invalid fields, None if valid (or
        not checked). An invalid one is not served (the last valid one stays)."""
        self._resources_built += 1
        every = self._validate_now
        if not every or self._resources_built % every:
            return None
        fields = _invalid(built)
        if fields is not None:
            self.invalid_snapshots += 1
        return fields

    # Exceptions: what could not be built or read, as rcm.dlq records.

    def _resource_failed(self, target: _Target, head: dict[str, Any] | None, code: str,
                         what: str, context: dict[str, Any] | None = None) -> None:
        type_, rid = _resource_id(target)
        account = target[1]
        source = self._source(target, head)
        version = source.get("version") if isinstance(source, dict) else None
        log.error("account %s: %s %s not served: %s", account, type_, rid, what)
        self._exception(
            type_, rid, account, code,
            f"account {account}: {type_}/{rid} (version {version}) could not be served: "
            f"{what}; the account's other resources are served, this one keeps its last "
            "good version if it had one",
            f"{type_}/{rid}@{version}", orjson.dumps(source),
            {"account": account, "resource": f"{type_}/{rid}", "version": version,
             **(context or {})})

    def _source(self, target: _Target, head: dict[str, Any] | None) -> Any:
        """The record a resource is built from (the head for an Account, else its item;
        a payer payment's adjudications), for the exception record."""
        what, account, item_id = target
        if what == "Account":
            return head
        if what == "trace":
            return [orjson.loads(body) for (body,) in self.db.execute(
                "SELECT body FROM items WHERE account = ? AND kind = 'adjudication' "
                "AND trace = ?", (account, item_id))]
        kind = {"Claim": "claim", "ClaimResponse": "adjudication", "payment": "payment"}[what]
        return self._item(account, kind, item_id)

    def _record_unreadable(self, key: Key, raw_key: str, value: bytes,
                           exc: Exception) -> None:
        log.error("account %s: an rcm.accounts record could not be read (%s)", key.account,
                  _where(exc))
        digest = hashlib.sha256(value).hexdigest()[:16]
        self._exception(
            "record", raw_key, key.account, "record_unreadable",
            f"account {key.account}: an rcm.accounts record could not be read "
            f"({_where(exc)}); it was not applied",
            f"{raw_key}#{digest}", value, {"account": key.account, "record_sha256": digest})

    def _exception(self, type_: str, rid: str, account: str, code: str, reason: str,
                   discriminator: str, payload: bytes, context: dict[str, Any]) -> None:
        """Hold an exception record for the feed to send, once per failure: a resource
        still failing keeps its first record (a restart makes the same dlq_id)."""
        held = self.db.execute("SELECT reason_code FROM exceptions WHERE type = ? AND id = ?",
                               (type_, rid)).fetchone()
        if held is not None and held[0] == code:
            return  # the same failure, already recorded
        record = dlq_record(
            Rejection(stage="facade", reason_code=code, detail=reason),
            origin=Origin(topic=ACCOUNTS, partition=-1, offset=-1, key=account),
            payload=payload, received_at=datetime.now(UTC), context=context,
            discriminator=discriminator, payload_bytes_max=EXCEPTION_PAYLOAD_BYTES_MAX)
        self.db.execute(
            "INSERT INTO exceptions VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT(type, id) DO "
            "UPDATE SET reason_code = excluded.reason_code, dlq_id = excluded.dlq_id, "
            "record = excluded.record, sent = 0",
            (type_, rid, account, code, record.dlq_id, record.model_dump_json().encode()))
        self._failing.add((type_, rid))
        self.exceptions_recorded[code] += 1

    def unsent_exceptions(self, limit: int = 1000) -> list[tuple[str, str, bytes]]:
        """Exception records not yet acknowledged by rcm.dlq: (dlq_id, account, record)."""
        return [(dlq_id, account, bytes(record)) for dlq_id, account, record
                in self.db.execute(
                    "SELECT dlq_id, account, record FROM exceptions WHERE sent = 0 LIMIT ?",
                    (limit,))]

    def release_held(self) -> int:
        """Let the exception records of older rcmflow heads still unreplaced be sent (the
        feed calls this once it has read to the log's end); returns how many."""
        if self.db.execute("SELECT 1 FROM exceptions WHERE sent = -1 LIMIT 1").fetchone() is None:
            return 0  # the usual case: no write
        with self._tx():
            return self.db.execute("UPDATE exceptions SET sent = 0 WHERE sent = -1").rowcount

    def mark_sent(self, dlq_ids: Sequence[str]) -> None:
        with self._tx():
            self.db.executemany("UPDATE exceptions SET sent = 1 WHERE dlq_id = ?",
                                [(i,) for i in dlq_ids])

    def exception_count(self) -> dict[str, int]:
        """Resources (and records) not served now because they could not be built or read,
        by reason code."""
        counts = dict.fromkeys(EXCEPTION_REASONS, 0)
        for code, n in self.rdb.execute(
                "SELECT reason_code, count(*) FROM exceptions GROUP BY reason_code"):
            counts[code] = n
        return counts

    def metric_families(self) -> list[Metric]:
        """The exceptions on /metrics, by reason code (three values: bounded labels)."""
        now = self.exception_count()
        return [
            counter("rcmflow_facade_exceptions", "resources the facade could not build (or "
                    "records it could not read), each an rcm.dlq record (this process)",
                    [({"reason_code": c}, n) for c, n in self.exceptions_recorded.items()]),
            gauge("rcmflow_facade_unserved_resources", "resources (and records) not served "
                  "now because they could not be built or read", [({"reason_code": c}, n)
                                                                 for c, n in now.items()]),
        ]

    def _write(self, account: str, b: Built) -> None:
        if (b.type, b.id) in self._failing:  # it builds again: its exception is over
            self._failing.discard((b.type, b.id))
            self.db.execute("DELETE FROM exceptions WHERE type = ? AND id = ?", (b.type, b.id))
        values = (b.patient, int(b.doc["meta"]["versionId"]), b.status, b.created,
                  b.doc["meta"].get("lastUpdated"), b.request, b.outcome, *_searched(b.doc),
                  fhir_json(b.doc))
        held = self.db.execute(_HELD_SQL, (b.type, b.id)).fetchone()
        if held is None:
            self.db.execute(_INSERT_SQL, (b.type, b.id, account, *values))
            self._count_row(b.type, [values[i] for i in _COUNTED_AT], 1)
            self._count_systems(b.type, {i.split("|", 1)[0] for i in b.identifiers}, 1)
            self.db.executemany(
                "INSERT OR IGNORE INTO identifiers VALUES (?, ?, ?, ?, ?)",
                [(b.type, value, system, b.id, account)
                 for system, value in (i.split("|", 1) for i in b.identifiers)])
            return
        if held == values:
            return  # built again the same (its record changed nothing it shows)
        # Only the columns that changed: SQLite rewrites the index entries of each column an
        # UPDATE sets, changed or not (12 indexes; most updates change 2-4 columns).
        changed = [i for i, (was, now) in enumerate(zip(held, values, strict=True))
                   if was != now]
        self.db.execute(
            f"UPDATE resources SET {', '.join(f'{_WRITTEN[i]} = ?' for i in changed)} "
            "WHERE type = ? AND id = ?", (*(values[i] for i in changed), b.type, b.id))
        steps = self._count_steps
        for i, column in zip(_COUNTED_AT, COUNTED_COLUMNS, strict=True):
            if held[i] != values[i]:
                if held[i] is not None:
                    steps[(b.type, column, held[i])] -= 1
                if values[i] is not None:
                    steps[(b.type, column, values[i])] += 1
        held_ids = self.db.execute(
            "SELECT system, value FROM identifiers WHERE type = ? AND id = ?",
            (b.type, b.id)).fetchall()
        if sorted(f"{system}|{value}" for system, value in held_ids) == sorted(b.identifiers):
            return
        self.db.execute("DELETE FROM identifiers WHERE type = ? AND id = ?", (b.type, b.id))
        self.db.executemany(
            "INSERT OR IGNORE INTO identifiers VALUES (?, ?, ?, ?, ?)",
            [(b.type, value, system, b.id, account)
             for system, value in (i.split("|", 1) for i in b.identifiers)])
        self._count_systems(b.type, {system for system, _ in held_ids}, -1)
        self._count_systems(b.type, {i.split("|", 1)[0] for i in b.identifiers}, 1)

    def _drop(self, type_: str, rid: str) -> None:
        held = self.db.execute(
            f"DELETE FROM resources WHERE type = ? AND id = ? RETURNING "
            f"{', '.join(COUNTED_COLUMNS)}", (type_, rid)).fetchone()
        if held is not None:
            self._count_row(type_, held, -1)
        self._count_systems(type_, {system for (system,) in self.db.execute(
            "DELETE FROM identifiers WHERE type = ? AND id = ? RETURNING system",
            (type_, rid)).fetchall()}, -1)

    def _count_row(self, type_: str, columns: Sequence[str | None], step: int) -> None:
        """A resource row with these COUNTED_COLUMNS values added (1) or removed (-1)."""
        steps = self._count_steps
        steps[(type_, "", "")] += step
        for column, value in zip(COUNTED_COLUMNS, columns, strict=True):
            if value is not None:
                steps[(type_, column, value)] += step

    def _count_systems(self, type_: str, systems: Iterable[str], step: int) -> None:
        """A resource's identifier systems (each once) added (1) or removed (-1)."""
        for system in systems:
            self._count_steps[(type_, "identifier", system)] += step

    def _write_counts(self) -> None:
        """The transaction's count steps into ``counts`` (before it commits)."""
        steps = [(*key, n) for key, n in self._count_steps.items() if n]
        self._count_steps.clear()
        if steps:  # (none in a migration, before the table exists)
            self.db.executemany(
                "INSERT INTO counts VALUES (?, ?, ?, ?) ON CONFLICT (type, param, value) "
                "DO UPDATE SET n = n + excluded.n", steps)

    def _tx(self) -> _Transaction:
        return _Transaction(self)

    # --- the API's side -------------------------------------------------------------------

    def read(self, type_: str, id_: str) -> Row | None:
        row = self.rdb.execute(
            "SELECT type, id, patient, version, last_updated, request, body FROM resources "
            "WHERE type = ? AND id = ?", (type_, id_)).fetchone()
        return None if row is None else Row(*row)

    def count(self, query: Query, limit: int | None = None) -> int | None:
        """How many match; None when more than ``limit`` do. A search the store counts
        (``Query.counted``) is one read of ``counts``; any other reads each match's index
        entry (a million take ~0.3 s)."""
        if query.counted is not None:
            n = self._counted(query.type, *query.counted)
            return n if limit is None or n <= limit else None
        if limit is None:
            sql, args = _select(query, "count(*)")
            return int(self.rdb.execute(sql, args).fetchone()[0])
        sql, args = _select(query, "1")
        found = int(self.rdb.execute(f"SELECT count(*) FROM ({sql} LIMIT ?)",
                                     (*args, limit + 1)).fetchone()[0])
        return found if found <= limit else None

    def search(self, query: Query, *, limit: int, after: str | None = None,
               before: str | None = None) -> list[Row]:
        """Up to ``limit`` matches in id order: the first ones, those after id ``after``, or
        the last ones before id ``before`` (keyset paging: resources added or removed while
        a client pages never make it see one twice).

        Every equality parameter's index ends in id, so it gives its matches in page order.
        A date range alone cannot: with few matches its index is walked and they are
        sorted, with many the type is walked in id order until a page is found (a page in
        ~every (type / matches) rows). Without statistics on value ranges SQLite cannot
        tell the two apart, so the store counts the first RANGE_SORT_MAX and says which.
        """
        if query.counted is not None and not self._counted(query.type, *query.counted):
            return []  # none match: no walk of the type looking for one
        sql, args = self._page(query, limit, after, before)
        rows = self.rdb.execute(sql, args).fetchall()
        if before is not None:
            rows.reverse()
        return [Row(*row) for row in rows]

    def _page(self, query: Query, limit: int, after: str | None,
              before: str | None) -> tuple[str, tuple[Any, ...]]:
        if query.counted is not None and query.counted[0] == "identifier":
            return _system_page(query.type, query.counted[1][0], limit, after, before)
        plan = self._range_plan(query)
        # The few matches of a range are sorted by id from its index alone (it ends in id),
        # then only the page's rows are read.
        sorted_ids = plan != "" and ID_ORDER not in plan
        sql, args = _select(query, "r.id" if sorted_ids else _ROW_COLUMNS, plan)
        # "+": the cursor filters the listed ids, and SQLite walks none from it.
        cursor = "+r.id" if query.listed_ids else "r.id"
        order = "ORDER BY r.id DESC" if before is not None else "ORDER BY r.id"
        if before is not None or after is not None:
            sql += f" AND {cursor} {'<' if before is not None else '>'} ?"
            args = (*args, before if before is not None else after)
        sql, args = f"{sql} {order} LIMIT ?", (*args, limit)
        if sorted_ids:
            sql = (f"SELECT {_ROW_COLUMNS} FROM resources r WHERE r.type = ? AND r.id IN "
                   f"({sql}) {order}")
            args = (query.type, *args)
        return sql, args

    def _counted(self, type_: str, param: str, values: tuple[str, ...]) -> int:
        """The resources of ``type_`` that ``counts`` holds for ``param`` (see
        ``Query.counted``)."""
        sql = "SELECT coalesce(sum(n), 0) FROM counts WHERE type = ? AND param = ?"
        if not param:
            sql += " AND value = ''"
        elif values:
            sql += f" AND value IN ({', '.join('?' * len(values))})"
        return int(self.rdb.execute(sql, (type_, param, *values)).fetchone()[0])

    def plans(self, query: Query, *, after: str | None = None) -> dict[str, list[str]]:
        """SQLite's plan (EXPLAIN QUERY PLAN details) of a search's count and of its page."""
        count_sql, args = _select(query, "1")

        def plan(sql: str, values: tuple[Any, ...]) -> list[str]:
            return [row[3] for row in self.rdb.execute(f"EXPLAIN QUERY PLAN {sql}", values)]
        return {"count": plan(f"SELECT count(*) FROM ({count_sql} LIMIT ?)", (*args, 10)),
                "page": plan(*self._page(query, 21, after, None))}

    def _range_plan(self, query: Query) -> str:
        if query.range_index is None:
            return ""
        if query.range_index == ID_ORDER:
            return f" INDEXED BY {ID_ORDER}"
        few = self.count(query, RANGE_SORT_MAX) is not None
        return f" INDEXED BY {query.range_index if few else ID_ORDER}"

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


def lock_store(path: Path) -> IO[str]:
    """Hold ``path``'s lock file for this process's life (the handle; closing it frees the
    lock, as the process's end does). Two facades on one read model would fight over its
    writer ("database is locked" every 2 s): the second refuses to start instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    handle = open(lock, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise StoreLocked(
            f"the facade read model {path} is in use by another `rcmflow facade` (pid "
            f"{holder}): one facade per read model. For a second facade, set "
            "RCMFLOW_DATA_DIR (or RCMFLOW_FACADE_STORE) to a directory of its own") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


#: The columns a resource's build sets (all but its key and account, which never change),
#: in the order ``Store._write`` compares them with the row held.
_WRITTEN = ("patient", "version", "status", "created", "last_updated", "request", "outcome",
            *_SEARCHED_COLUMNS, "body")
# Columns named: a store migrated from layout 2 has the newer ones after body.
_HELD_SQL = f"SELECT {', '.join(_WRITTEN)} FROM resources WHERE type = ? AND id = ?"
#: Where the COUNTED_COLUMNS are in ``_WRITTEN`` (and in a row ``_HELD_SQL`` reads).
_COUNTED_AT = tuple(_WRITTEN.index(column) for column in COUNTED_COLUMNS)
_INSERT_SQL = (f"INSERT INTO resources (type, id, account, {', '.join(_WRITTEN)}) "
               f"VALUES ({', '.join('?' * (3 + len(_WRITTEN)))})")

#: The primary key's index (type, id): a type's resources in id order.
ID_ORDER = "sqlite_autoindex_resources_1"
#: Matches of a date range alone up to which its index is walked and the matches sorted.
RANGE_SORT_MAX = 5_000

_ROW_COLUMNS = "r.type, r.id, r.patient, r.version, r.last_updated, r.request, r.body"


def _resource_id(target: _Target) -> tuple[str, str]:
    what, account, item_id = target
    if what == "Account":
        return "Account", fhir_id(account)
    if what in ("Claim", "ClaimResponse"):
        return what, fhir_id(account, item_id)
    if what == "trace":
        return "PaymentReconciliation", fhir_id("trn", account, item_id)
    return "PaymentReconciliation", fhir_id("pay", account, item_id)


def _invalid(b: Built) -> list[str] | None:
    """The paths of the fields FHIR validation refuses (never their values: PHI)."""
    try:
        validate(b.doc)
    except ValidationError as exc:
        return sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
    return None


def _where(exc: BaseException) -> str:
    """Exception type and the line it came from (its message may quote a value)."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{last}"


def text_key(text: str) -> str:
    """A string as R4 string search compares it: accents dropped (NFKD, combining marks
    removed), case folded."""
    if text.isascii():  # most texts: nothing to decompose, and casefold is lower
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


#: Per type: the field of its string parameter, and its Organization references by column.
_TEXT_FIELD = {"Account": "name", "ClaimResponse": "disposition",
               "PaymentReconciliation": "disposition"}
_ORGANIZATIONS = {"Account": {"entity": ("owner", ENTITY_SYSTEM)},
                  "Claim": {"payer": ("insurer", PAYER_SYSTEM),
                            "entity": ("provider", ENTITY_SYSTEM)},
                  "ClaimResponse": {"payer": ("insurer", PAYER_SYSTEM)},
                  "PaymentReconciliation": {"payer": ("paymentIssuer", PAYER_SYSTEM)}}


def _searched(doc: dict[str, Any]) -> tuple[str | None, ...]:
    """The columns text, text_key, payment_date, payer, entity, read from the resource as
    served (so a search matches what a client sees)."""
    type_ = doc["resourceType"]
    text = doc.get(_TEXT_FIELD.get(type_, ""))
    day = (doc.get("payment") or {}).get("date") if type_ == "ClaimResponse" else None
    orgs: dict[str, str | None] = {"payer": None, "entity": None}
    for column, (field, system) in _ORGANIZATIONS.get(type_, {}).items():
        identifier = (doc.get(field) or {}).get("identifier") or {}
        if identifier.get("system") == system:
            orgs[column] = identifier.get("value")
    return (text, None if text is None else text_key(text),
            None if day is None else f"{day}T00:00:00.000000Z", orgs["payer"], orgs["entity"])


def _systems_by_resource(rows: Iterable[tuple[str, str, str]]
                         ) -> dict[tuple[str, str], set[str]]:
    """(type, id, system) rows -> each resource's identifier systems."""
    out: dict[tuple[str, str], set[str]] = {}
    for type_, rid, system in rows:
        out.setdefault((type_, rid), set()).add(system)
    return out


def _system_page(type_: str, system: str, limit: int, after: str | None,
                 before: str | None) -> tuple[str, tuple[Any, ...]]:
    """A page of the resources with an identifier of ``system`` (and no other condition):
    their ids from ``identifiers_system`` in id order from the cursor, then their rows. Walking
    the type's ids and probing each (the other searches' way) costs ~type / matches rows a
    match: the whole type when few have such an identifier."""
    cursor = "" if after is None and before is None else (
        f" AND i.id {'<' if before is not None else '>'} ?")
    desc = " DESC" if before is not None else ""
    ids = (f"SELECT i.id FROM identifiers i WHERE i.type = ? AND i.system = ?{cursor} "
           f"GROUP BY i.id ORDER BY i.id{desc} LIMIT ?")  # one a resource, whatever its values
    args = (type_, system, *((after if before is None else before,) if cursor else ()), limit)
    return (f"SELECT {_ROW_COLUMNS} FROM resources r WHERE r.type = ? AND r.id IN ({ids}) "
            f"ORDER BY r.id{desc}", (type_, *args))


def _select(query: Query, columns: str, plan: str = "") -> tuple[str, tuple[Any, ...]]:
    where = " AND ".join(("r.type = ?", *query.where))
    return (f"SELECT {columns} FROM resources r{plan} WHERE {where}",
            (query.type, *query.args))


class _Transaction:
    """One write transaction of the store: its count steps are written before it commits,
    and forgotten with it on a rollback."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> None:
        self.store._count_steps.clear()
        self.store.db.execute("BEGIN")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            if kind is None:
                self.store._write_counts()
        except BaseException:
            kind = "failed"
            raise
        finally:
            self.store._count_steps.clear()
            self.store.db.execute("COMMIT" if kind is None else "ROLLBACK")
