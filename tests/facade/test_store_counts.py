"""The counts the store keeps (``counts``, layout 4): a search that is one token, one
Organization identifier or one identifier system alone (or no condition) is counted from one
row, not from its matches' index entries (~0.15 s at 700k). They must stay exact: after any
writes, updates that change a resource's status, payer or identifiers, drops, tombstones and
resets they equal a COUNT(*) of the rows, and a store of layout 3 gains them at open."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcmflow.facade.params import RESOURCES, parse_search
from rcmflow.facade.resources import ENTITY_SYSTEM, PAYER_SYSTEM, Built
from rcmflow.facade.store import SCHEMA_VERSION, Store
from rcmflow.streams.layout import parse_key
from rcmflow.streams.memory_tables import MemoryTables
from tests.facade.conftest import filled_store, records

COLUMNS = ("status", "outcome", "payer", "entity")


def recounted(store: Store) -> dict[tuple[str, str, str], int]:
    """What ``counts`` must hold, by COUNT(*) over the rows (zero counts left out)."""
    db = store.db
    out = {(t, "", ""): n for t, n in db.execute(
        "SELECT type, count(*) FROM resources GROUP BY type")}
    for column in COLUMNS:
        out |= {(t, column, v): n for t, v, n in db.execute(
            f"SELECT type, {column}, count(*) FROM resources WHERE {column} IS NOT NULL "
            f"GROUP BY type, {column}")}
    out |= {(t, "identifier", s): n for t, s, n in db.execute(
        "SELECT r.type, i.system, count(DISTINCT r.id) FROM resources r JOIN identifiers i "
        "ON i.type = r.type AND i.id = r.id GROUP BY r.type, i.system")}
    return out


def kept(store: Store) -> dict[tuple[str, str, str], int]:
    return {(t, p, v): n for t, p, v, n in store.db.execute(
        "SELECT type, param, value, n FROM counts WHERE n != 0")}


def searches(store: Store) -> list[tuple[str, list[tuple[str, str]]]]:
    """Searches the store counts: none, each code held (and one not), two at once, each
    identifier system alone (and one not held), an Organization's any / one code."""
    held = store.db.execute("SELECT DISTINCT type, param, value FROM counts").fetchall()
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for type_ in RESOURCES:
        out += [(type_, []), (type_, [("identifier", "urn:none|")]),
                (type_, [("status", "active,cancelled")])]
    for type_, param, value in held:
        if param in ("status", "outcome") and RESOURCES[type_].param(param):
            out.append((type_, [(param, value)]))
        elif param == "identifier":
            out.append((type_, [("identifier", f"{value}|")]))
        elif param == "payer":
            name = {"Claim": "insurer", "ClaimResponse": "insurer",
                    "PaymentReconciliation": "payment-issuer"}.get(type_)
            if name:
                out += [(type_, [(f"{name}:identifier", f"{PAYER_SYSTEM}|")]),
                        (type_, [(f"{name}:identifier", value)])]
    return out


def assert_counts_exact(store: Store) -> None:
    assert kept(store) == recounted(store)
    for type_, items in searches(store):
        query = parse_search(RESOURCES[type_], items, strict=True, count_default=20,
                             count_max=200, patient=None).query
        assert query.counted is not None, items
        by_index = dataclasses.replace(query, counted=None)
        assert store.count(query) == store.count(by_index), (type_, items)
        # A page of a counted search is the index's page (none when the count says none),
        # from either cursor too (identifier=system| pages come from identifiers_system).
        page = store.search(by_index, limit=5)
        assert store.search(query, limit=5) == page
        for cursor in {row.id for row in page[1:2] + page[-1:]}:
            for direction in ("after", "before"):
                assert store.search(query, limit=2, **{direction: cursor}) == store.search(
                    by_index, limit=2, **{direction: cursor}), (items, direction)


def test_only_one_condition_or_none_is_counted_from_the_kept_counts() -> None:
    """Two conditions, a patient's token, or a parameter without kept counts are counted
    from their index (few matches: an exact count there is cheap)."""
    def counted(type_: str, items: list[tuple[str, str]], patient: str | None = None
                ) -> tuple[str, tuple[str, ...]] | None:
        return parse_search(RESOURCES[type_], items, strict=True, count_default=20,
                            count_max=200, patient=patient).query.counted

    assert counted("Claim", []) == counted("Claim", [("use", "claim")]) == ("", ())
    assert counted("Claim", [("status", "active,http://x|draft")]) == (
        "status", ("active", "draft"))
    assert counted("Claim", [("insurer:identifier", f"{PAYER_SYSTEM}|")]) == ("payer", ())
    assert counted("Claim", [("identifier", "urn:a|,urn:a|")]) == ("identifier", ("urn:a",))
    for type_, items in (("Claim", [("status", "active"), ("use", "claim"),
                                    ("identifier", "urn:a|")]),
                         ("Claim", [("identifier", "urn:a|,urn:b|")]),
                         ("Claim", [("identifier", "urn:a|K1")]),
                         ("Claim", [("_id", "K1")]),
                         ("Claim", [("created", "ge2026")]),
                         ("Claim", [("use", "other")])):
        assert counted(type_, items) is None, items
    assert counted("Claim", [("status", "active")], patient="pat.A1") is None


def _built(type_: str, n: int, status: str, payer: str | None, entity: str | None,
           systems: tuple[str, ...], version: int) -> Built:
    doc: dict[str, Any] = {"resourceType": type_, "id": f"r{n}", "status": status,
                           "meta": {"versionId": str(version)}}
    if payer is not None:
        field = "insurer" if type_ == "Claim" else "paymentIssuer"
        doc[field] = {"identifier": {"system": PAYER_SYSTEM, "value": payer}}
    if entity is not None and type_ == "Claim":
        doc["provider"] = {"identifier": {"system": ENTITY_SYSTEM, "value": entity}}
    outcome = "complete" if type_ == "PaymentReconciliation" else None
    # Two values of one system on some: a resource counts once per system.
    identifiers = tuple(f"{s}|v{n}{suffix}" for s in systems
                        for suffix in (("", "b") if s == "urn:b" else ("",)))
    return Built(type_, f"r{n}", f"pat.{n}", status, None, identifiers, None, outcome, doc)


WRITE = st.tuples(st.just("write"), st.sampled_from(["Claim", "PaymentReconciliation"]),
                  st.integers(0, 5),
                  st.sampled_from(["active", "cancelled", "draft"]),
                  st.sampled_from([None, "ACME", "BETA"]), st.sampled_from([None, "01", "02"]),
                  st.lists(st.sampled_from(["urn:a", "urn:b", "urn:c"]), unique=True,
                           max_size=3).map(tuple))
DROP = st.tuples(st.just("drop"), st.sampled_from(["Claim", "PaymentReconciliation"]),
                 st.integers(0, 5))
TOMBSTONE = st.tuples(st.just("tombstone"), st.sampled_from(["A1", "A2", "A3"]))
OPS = st.lists(st.lists(st.one_of(WRITE, DROP, TOMBSTONE, st.just(("reset",))), max_size=8),
               max_size=6)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=OPS)
def test_counts_equal_a_count_of_the_rows_after_any_writes(
        tmp_path_factory: Any, batches: list[list[tuple[Any, ...]]]) -> None:
    store = Store(tmp_path_factory.mktemp("counts") / "read.sqlite")
    version = 0
    for batch in batches:
        with store._tx():
            for op in batch:
                version += 1
                if op[0] == "write":
                    _, type_, n, status, payer, entity, systems = op
                    # A resource id names its account (fhir_id), as the builders' do.
                    store._write(f"A{n % 3 + 1}", _built(type_, n, status, payer, entity, systems,
                                                 version))
                elif op[0] == "drop":
                    store._drop(op[1], f"r{op[2]}")
                elif op[0] == "tombstone":
                    store._tombstone(parse_key(op[1]), set())
        if any(op[0] == "reset" for op in batch):
            store.reset("broker-1")
        assert_counts_exact(store)
    store.close()


def test_counts_follow_real_records_and_tombstones(tmp_path: Path,
                                                   tables: MemoryTables) -> None:
    store = filled_store(tmp_path / "read.sqlite", tables)
    assert_counts_exact(store)
    assert kept(store)[("PaymentReconciliation", "identifier", "urn:rcmflow:event")] > 0
    accounts = sorted({k.decode().split("/")[0] for (_, k) in tables.accounts})
    items = [k.decode() for (_, k) in tables.accounts if b"/" in k]
    store.apply([(items[0], None), (items[-1], None), (accounts[0], None)], {0: 10**6})
    assert_counts_exact(store)
    # Everything again: the dropped resources come back, counted once.
    store.apply(records(tables), {0: 10**6 + 1})
    assert_counts_exact(store)
    store.close()


def test_a_store_of_layout_3_gains_its_counts_in_place(tmp_path: Path,
                                                       tables: MemoryTables) -> None:
    fresh = filled_store(tmp_path / "fresh.sqlite", tables)
    path = tmp_path / "read.sqlite"
    old = filled_store(path, tables)
    old.db.execute("INSERT INTO meta VALUES ('source', 'broker-1')")
    old.close()
    db = sqlite3.connect(path, isolation_level=None)  # layout 3: no counts
    db.execute("DROP TABLE counts")
    db.execute("DROP INDEX identifiers_system")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    db.close()
    store = Store(path)
    assert store.meta("schema") == SCHEMA_VERSION == "4" and store.meta("source") == "broker-1"
    assert kept(store) == kept(fresh) == recounted(store) and kept(store)
    assert_counts_exact(store)
    # Kept from then on: an account's tombstone takes its resources out of the counts.
    account = sorted(a for (a,) in store.db.execute("SELECT account FROM accounts"))[0]
    store.apply([(account, None)], {0: 10**6})
    assert kept(store) != kept(fresh)
    assert_counts_exact(store)
    store.close()
    fresh.close()
