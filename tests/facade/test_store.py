"""The read model on its own: records per head and item, versions only move forward, invalid
FHIR is held back, a record costs the same whatever the account's size, a record an older
rcmflow wrote is refused naming the upgrade, and stores of the old layout still work."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from rcmflow.facade import store as store_module
from rcmflow.facade.feed import Feeder
from rcmflow.facade.params import RESOURCES, parse_search
from rcmflow.facade.resources import Built, build_resources, fhir_json, validate
from rcmflow.facade.store import SCHEMA_VERSION, Store
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.chart import load_chart
from rcmflow.streams.layout import head_key, item_key, parse_key
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.state import ItemRef
from rcmflow.streams.topics import EVENTS
from rcmflow.tables.upgrade import split_layout_1
from tests.facade.conftest import build_tables, filled_store, records
from tests.factories import adjudication, charge, event_doc

LEGACY = Path(__file__).with_name("legacy_records.json")


def _copy(tables: MemoryTables) -> MemoryTables:
    return MemoryTables(dict(tables.accounts), dict(tables.dedup))


def served(store: Store, account: str | None = None) -> dict[str, bytes]:
    """type/id -> body of every resource held (of one account)."""
    where, args = ("WHERE account = ?", (account,)) if account is not None else ("", ())
    return {f"{t}/{i}": bytes(b) for t, i, b in store.db.execute(
        f"SELECT type, id, body FROM resources {where}", args)}


def whole(tables: MemoryTables) -> dict[str, bytes]:
    """Every resource as ``build_resources`` makes it from each account's head and items."""
    heads: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[ItemRef, dict[str, Any]]] = defaultdict(dict)
    for (_, key), value in tables.accounts.items():
        parsed = parse_key(key)
        if parsed.item is None:
            heads[parsed.account] = orjson.loads(value)
        else:
            items[parsed.account][parsed.item] = orjson.loads(value)
    return {f"{b.type}/{b.id}": fhir_json(b.doc) for account, head in heads.items()
            for b in build_resources(head, items[account])}


def test_records_in_any_order_and_batching_make_the_whole_account_view(
        tmp_path: Path, store: Store, tables: MemoryTables) -> None:
    expected = whole(tables)
    assert served(store) == expected and len(expected) > 100
    # Record by record, newest first (as a compacted topic may hold an account's records).
    one_by_one = Store(tmp_path / "reversed.sqlite")
    for n, record in enumerate(reversed(records(tables))):
        one_by_one.apply([record], {0: n + 1})
    assert served(one_by_one) == expected
    one_by_one.close()


def test_older_record_never_replaces_a_newer_one(tmp_path: Path) -> None:
    newer = build_tables([charge(1_000, account="S1"), charge(2_000, account="S1")])
    older = build_tables([charge(1_000, account="S1")])
    store = Store(tmp_path / "read.sqlite")
    store.apply(records(newer), {0: 1})
    assert store.apply([("S1", older.accounts[(0, head_key("S1"))])], {0: 2}) == 0
    row = store.read("Account", "S1")
    assert row is not None and row.version == 2
    assert store.offsets() == {0: 2}
    store.close()


def test_blank_source_codes_still_make_valid_fhir() -> None:
    # A blank code passes the event schema (min length 1) but is not a FHIR code.
    tables = build_tables([
        charge(5_000, account="S2"),
        event_doc("claim_submitted", "S2", claim_id="K1", total_charge_cents=5_000,
                  lines=[{"line_id": "1", "charge_cents": 5_000, "procedure_code": " "}])])
    [account] = tables.views().values()
    head = {k: v for k, v in account.items() if k not in ("charges", "claims", "payments")}
    claims = {("claim", c["claim_id"]): {k: v for k, v in c.items() if k != "adjudications"}
              for c in account["claims"].values()}
    built = build_resources(head, claims)  # type: ignore[arg-type]
    assert [b.type for b in built] == ["Account", "Claim"]
    for b in built:
        validate(b.doc)


def test_resource_that_makes_invalid_fhir_is_not_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_tables([charge(1_000, account="S3")])
    second = build_tables([charge(2_000, account="S3")], _copy(first))
    store = Store(tmp_path / "read.sqlite")
    store.apply(records(first), {0: 1})
    account_resource = store_module.account_resource

    def broken(head: dict[str, Any], payers: list[str]) -> Built:
        built = account_resource(head, payers)
        del built.doc["status"]  # required in R4
        return built

    monkeypatch.setattr(store_module, "account_resource", broken)
    store.apply(records(second), {0: 2})
    assert store.invalid_snapshots == 1
    row = store.read("Account", "S3")
    assert row is not None and row.version == 1  # the last valid view stays
    assert store.offsets() == {0: 2}  # and the feed moves on
    # ... and it is said: an exception record for rcm.dlq naming the fields (not values).
    [(_, account, raw)] = store.unsent_exceptions()
    said = orjson.loads(raw)
    assert account == "S3" and said["reason_code"] == "resource_invalid"
    assert said["context"]["fields"] == ["status"] and "account S3" in said["reason"]
    unchecked = Store(tmp_path / "unchecked.sqlite", validate_every=0)
    unchecked.apply(records(second), {0: 1})
    assert unchecked.invalid_snapshots == 0 and unchecked.read("Account", "S3") is not None
    store.close()
    unchecked.close()


def test_a_layout1_record_is_refused_naming_the_upgrade_and_served_once_upgraded(
        tmp_path: Path) -> None:
    """Records an older rcmflow wrote (one per account, ``legacy_records.json``) are not
    read: nothing of one is served, and once the feed has read to the log's end (where the
    upgrade's records would have replaced it) each is an exception record naming `rcmflow
    upgrade`. What the upgrade writes for them is served as layout 2, as for an account a
    worker rewrote before: the same resources, but items all carry the record's version, so
    a resource's lastUpdated is its own time and a check's details come in event-id order."""
    legacy = orjson.loads(LEGACY.read_bytes())["accounts"]
    old = [(a, orjson.dumps(v["record"])) for a, v in legacy.items()]
    store = Store(tmp_path / "read.sqlite")
    assert store.apply(old, {0: len(legacy)}) == 0
    assert store.account_count() == 0 and not served(store)
    assert not store.unsent_exceptions()  # held: a newer record may follow
    assert store.release_held() == len(legacy)
    said = {account: orjson.loads(raw) for _, account, raw in store.unsent_exceptions()}
    assert set(said) == set(legacy)
    for record in said.values():
        assert record["reason_code"] == "record_unreadable", record
        assert "rcmflow upgrade" in record["reason"], record["reason"]

    upgraded = []
    for account, held in legacy.items():
        head, items = split_layout_1(held["record"])
        upgraded += [(item_key(account, ref).decode(), orjson.dumps(item))
                     for ref, item in items.items()]
        upgraded.append((account, orjson.dumps(head)))
    store.apply(upgraded, {0: len(legacy) + len(upgraded)})
    assert store.account_count() == len(legacy) and store.invalid_snapshots == 0
    assert not store.unsent_exceptions() and store.exception_count()["record_unreadable"] == 0
    # A store filled again from the log's beginning, before compaction dropped the old
    # records: they are passed over, and no exception is said once the end is reached.
    refilled = Store(tmp_path / "refilled.sqlite")
    refilled.apply(old, {0: len(old)})
    refilled.apply(upgraded, {0: len(old) + len(upgraded)})
    assert refilled.release_held() == 0 and not refilled.unsent_exceptions()
    assert served(refilled) == served(store)
    refilled.close()

    def comparable(resources: dict[str, Any]) -> dict[str, Any]:
        return {k: {**v, "meta": {m: x for m, x in v["meta"].items() if m != "lastUpdated"},
                    "detail": sorted(v.get("detail", []), key=orjson.dumps)}
                for k, v in resources.items()}
    for account, held in legacy.items():
        assert comparable({k: orjson.loads(v) for k, v in served(store, account).items()}) \
            == comparable(held["resources"]), account
    store.close()


def test_a_head_tombstone_removes_the_account_and_an_item_tombstone_its_resource(
        tmp_path: Path, tables: MemoryTables) -> None:
    store = Store(tmp_path / "read.sqlite")
    store.apply(records(tables), {0: 1})
    before = served(store)
    assert any(k.startswith("ClaimResponse/A1005.") for k in before)
    assert store.apply([("A1005", None)], {0: 2}) == 1
    after = served(store)
    assert not served(store, "A1005") and store.read("Account", "A1005") is None
    assert after == {k: v for k, v in before.items() if "A1005" not in k}
    for table in ("accounts", "items", "payers", "identifiers"):
        assert store.db.execute(f"SELECT count(*) FROM {table} WHERE account = 'A1005'"
                                ).fetchone()[0] == 0, table
    # An item's tombstone: its ClaimResponse goes, its check's part is rebuilt without it.
    [key] = [k for (_, k) in tables.accounts
             if k.startswith(b"A1001/adjudication/")]
    assert store.apply([(key.decode(), None)], {0: 3}) == 1
    gone = served(store, "A1001")
    assert "ClaimResponse/A1001.835-TRN9001-CLM1001" not in gone
    assert "PaymentReconciliation/trn.A1001.TRN9001" not in gone  # its only adjudication
    assert "Claim/A1001.CLM1001" in gone
    store.close()


async def test_a_store_of_the_old_layout_is_emptied_and_refilled(tmp_path: Path) -> None:
    path = tmp_path / "read.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE offsets (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);
        CREATE TABLE accounts (account TEXT PRIMARY KEY, version INTEGER NOT NULL);
        CREATE TABLE resources (type TEXT NOT NULL, id TEXT NOT NULL, account TEXT NOT NULL,
            patient TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,
            created TEXT, last_updated TEXT, request TEXT, outcome TEXT, body BLOB NOT NULL,
            PRIMARY KEY (type, id));
        INSERT INTO meta VALUES ('source', 'broker-1');
        INSERT INTO offsets VALUES (0, 42);
        INSERT INTO accounts VALUES ('A1', 3);
        INSERT INTO resources VALUES ('Account', 'A1', 'A1', 'pat.A1', 3, 'active', NULL,
            NULL, NULL, NULL, x'7b7d');
    """)
    old.commit()
    old.close()
    store = Store(path)
    assert store.meta("schema") == SCHEMA_VERSION and store.meta("source") is None
    assert store.offsets() == {} and store.account_count() == 0
    assert store.read("Account", "A1") is None
    # The feed finds no source: it starts from the topic's beginning (and records it).
    feeder = Feeder(store, KafkaConnection(servers=("127.0.0.1:1",)), source="broker-1")
    assert await feeder._start_offsets([0]) == {}
    assert store.meta("source") == "broker-1" and store.meta("schema") == SCHEMA_VERSION
    store.close()
    # Opened again, a store of this layout is kept.
    again = Store(path)
    assert again.meta("source") == "broker-1"
    again.close()


def _big_account(claims: int) -> MemoryTables:
    """One account holding ``claims`` claims, each submitted and adjudicated (2 items each),
    among three payers and their own check numbers."""
    docs: list[dict[str, Any]] = [charge(100_000, account="BIG")]
    for n in range(claims):
        payer = f"P{n % 3}"
        docs.append(event_doc("claim_submitted", "BIG", claim_id=f"K{n}",
                              total_charge_cents=1_000, dimensions={
                                  "entity": "01", "payer": payer, "payer_class": "COMMERCIAL"}))
        docs.append(adjudication(1_000, 700, [("CO", "45", 300)], account="BIG",
                                 claim_id=f"K{n}", correlation_id=f"T{n}",
                                 dimensions={"entity": "01", "payer": payer}))
    tables = MemoryTables()
    messages = [Message(EVENTS, 0, n, b"BIG", orjson.dumps(d)) for n, d in enumerate(docs)]
    result = Processor(load_chart()).process(messages, tables)
    assert result.counts.applied == len(docs), result.counts
    tables.write(result)
    return tables


def _explain(db: sqlite3.Connection, sql: str) -> list[str]:
    if not sql.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
        return []
    return [str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]


def _new_claim_cost(path: Path, claims: int) -> tuple[int, int, int, int]:
    """Apply a new claim and its 835 to an account of ``claims`` claims: (records, SQL
    statements, rows written, SQLite instructions / 100) of that batch. Checks that only
    the resources those records make changed, and that no statement scans a table."""
    tables = _big_account(claims)
    store = Store(path, validate_every=0)
    store.apply(records(tables), {0: 1})
    before = served(store)
    assert len(before) == 1 + 3 * claims  # Account, and per claim: Claim, response, check
    new = build_tables([
        event_doc("claim_submitted", "BIG", claim_id="NEW", total_charge_cents=1_000,
                  dimensions={"entity": "01", "payer": "P9", "payer_class": "COMMERCIAL"}),
        adjudication(1_000, 600, [("CO", "45", 400)], account="BIG", claim_id="NEW",
                     event_id="ANEW", correlation_id="TNEW",
                     dimensions={"entity": "01", "payer": "P9"})], _copy(tables))
    changed = [(k.decode(), v) for (_, k), v in new.accounts.items()
               if tables.accounts.get((0, k)) != v]
    # The lifecycle transitions (to claim_submitted, then payment_posted) are read and kept
    # nowhere by the store: they cost a record each, no statement.
    assert sorted(k for k, _ in changed) == [
        "BIG", "BIG/adjudication/ANEW", "BIG/claim/NEW", *(
            k for k, _ in changed if k.startswith("BIG/transition/"))]
    assert sum(k.startswith("BIG/transition/") for k, _ in changed) == 2
    statements: list[str] = []
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    store.db.set_trace_callback(statements.append)
    # SQLite calls this every 100 virtual machine instructions: rows visited show in it.
    store.db.set_progress_handler(step, 100)
    writes = store.db.total_changes
    store.apply(changed, {0: 2})
    writes = store.db.total_changes - writes
    store.db.set_trace_callback(None)
    store.db.set_progress_handler(None, 100)
    after = served(store)
    moved = sorted(k for k in after if before.get(k) != after[k])
    assert moved == ["Account/BIG", "Claim/BIG.NEW", "ClaimResponse/BIG.ANEW",
                     "PaymentReconciliation/trn.BIG.TNEW"], moved
    assert {k: v for k, v in after.items() if k not in moved} == {
        k: v for k, v in before.items() if k not in moved}
    assert b'"P9"' in after["Account/BIG"]  # coverage: the new payer
    scans = [(sql, plan) for sql in statements for plan in _explain(store.db, sql)
             if plan.startswith("SCAN")]
    assert not scans, scans
    store.close()
    return len(changed), len(statements), writes, steps[0]


def test_one_new_item_costs_the_same_whatever_the_account_holds(tmp_path: Path) -> None:
    """The same records on an account of 11 or 5,001 items cost the same statements, rows
    written and (up to the B-trees' depth) SQLite instructions: per record, not per item."""
    *small, small_steps = _new_claim_cost(tmp_path / "small.sqlite", 5)
    *big, big_steps = _new_claim_cost(tmp_path / "big.sqlite", 2_500)
    assert small == big, (small, big)
    assert big_steps < 1.5 * small_steps, (small_steps, big_steps)


def test_a_store_of_layout_2_gains_the_search_columns_in_place(
        tmp_path: Path, tables: MemoryTables) -> None:
    """A layout-2 store (before the string, payment-date and Organization searches) keeps its
    resources, offsets and source: the new columns are filled from the stored resources, and
    it answers those searches as a store filled anew does."""
    fresh = filled_store(tmp_path / "fresh.sqlite", tables)
    path = tmp_path / "read.sqlite"
    old = filled_store(path, tables)
    old.db.execute("INSERT INTO meta VALUES ('source', 'broker-1')")
    old.close()
    # Layout 2, as it was: no search columns, no indexes of theirs.
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE counts")  # layout 4's
    for index in ("resources_text_id", "resources_payment_date_id", "resources_payer",
                  "resources_entity"):
        db.execute(f"DROP INDEX {index}")
    for column in ("text", "text_key", "payment_date", "payer", "entity"):
        db.execute(f"ALTER TABLE resources DROP COLUMN {column}")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    db.close()
    store = Store(path)
    assert store.meta("schema") == SCHEMA_VERSION and store.meta("source") == "broker-1"
    assert store.offsets() == fresh.offsets() and served(store) == served(fresh)
    for type_, items in (("Account", [("name", "patient ACCOUNT a1")]),
                         ("ClaimResponse", [("disposition:exact", "Claim denied by the payer")]),
                         ("ClaimResponse", [("payment-date", "2026-11-12")]),
                         ("Claim", [("provider:identifier", "01")]),
                         ("PaymentReconciliation", [("payment-issuer:identifier", "ACME")])):
        search = parse_search(RESOURCES[type_], items, strict=True, count_default=200,
                              count_max=200, patient=None)
        found = [r.id for r in store.search(search.query, limit=200)]
        assert found and found == [r.id for r in fresh.search(search.query, limit=200)], items
    # It stays writable: resources rebuilt over migrated rows (whose new columns come after
    # body) are written column by column, as a fresh store's.
    held = records(tables)
    store.apply(held, {0: len(held)})
    assert served(store) == served(fresh)
    columns = "type, id, text, text_key, payment_date, payer, entity"
    assert sorted(store.db.execute(f"SELECT {columns} FROM resources")) == sorted(
        fresh.db.execute(f"SELECT {columns} FROM resources"))
    store.close()
    fresh.close()
