"""Every search parameter is answered through an index that narrows by it: never a walk of
all the resources of a type (~1 s at a million; bench/RESULTS.md, "Facade at scale").

Not timed: SQLite's own query plan (EXPLAIN QUERY PLAN) for each parameter's count and page
says which index it uses, on the read model of the demo world with fresh statistics."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from rcmflow.facade import params
from rcmflow.facade.params import RESOURCES, SearchParam, parse_search
from rcmflow.facade.store import Store
from rcmflow.streams.memory_tables import MemoryTables
from tests.facade.conftest import filled_store

#: A value per parameter name; dates both as a day (a closed range) and as "ge" (open).
VALUES = {
    "_id": ["A1001", "A1001,A1002"],
    "identifier": ["A1001", "urn:rcmflow:account|A1001", "T1,urn:rcmflow:event|E1"],
    "status": ["active", "active,inactive"],
    "patient": ["pat.A1001", "Patient/pat.A1001"],
    "subject": ["Patient/pat.A1001"],
    "request": ["Claim/A1001.C1"],
    "outcome": ["complete"],
    "created": ["2026-11-12", "ge2026-11-01", "lt2026-10-02"],
    "_lastUpdated": ["2026-11-12", "gt2026-11-01"],
    "payment-date": ["2026-11-12", "ge2026-11-01", "lt2026-10-02"],
    # Strings: a prefix is a range of the folded text's index, :exact an equality in it.
    # :contains is the exception (test_contains_walks_the_ids_in_order).
    "name": ["patient account a10", "name:exact=Patient account A1001"],
    "disposition": ["claim", "disposition:exact=Claim denied by the payer"],
    # Organizations known by identifier: only :identifier is searched.
    "insurer": ["insurer:identifier=urn:rcmflow:payer|ACME-HEALTH"],
    "payment-issuer": ["payment-issuer:identifier=ACME"],
    "provider": ["provider:identifier=urn:rcmflow:entity|01"],
    "owner": ["owner:identifier=01"],
}
#: Parameters every resource of a type answers with one value (Claim?use=claim): they match
#: all or none, so no index narrows them (R4's, declared for portals that send them).
FIXED = {p.name for spec in RESOURCES.values() for p in spec.params if p.fixed is not None}
CASES = [(spec.type, param, value) for spec in RESOURCES.values() for param in spec.params
         if param.fixed is None for value in VALUES[param.name]]


def _item(param: SearchParam, value: str) -> tuple[str, str]:
    """A VALUES entry as a query item: "name:modifier=value" carries its own name."""
    name, sep, modified = value.partition("=")
    return (name, modified) if sep and name.startswith(f"{param.name}:") else (param.name, value)


def _narrowed_by(param: SearchParam) -> re.Pattern[str]:
    """The index condition a plan line shows for the parameter: "(type=? AND status=?)"."""
    column = {"identifier": "value", "_id": "id"}.get(param.name, param.column)
    return re.compile(rf"\(type=\? AND {column}[=<>]")


def test_every_parameter_has_a_value_here() -> None:
    assert {p.name for spec in RESOURCES.values() for p in spec.params} - FIXED == set(VALUES)


@pytest.mark.parametrize(("type_", "param", "value"), CASES,
                         ids=[f"{t}-{p.name}={v}" for t, p, v in CASES])
def test_each_search_is_narrowed_by_an_index_of_its_parameter(
        store: Store, type_: str, param: SearchParam, value: str) -> None:
    store.db.execute("ANALYZE")
    search = parse_search(RESOURCES[type_], [_item(param, value)], strict=True,
                          count_default=20, count_max=200, patient=None)
    for after in (None, "A1001"):  # the first page, and a next page from a cursor
        plans = store.plans(search.query, after=after)
        for step, lines in plans.items():
            where = f"{step} of {type_}?{param.name}={value}: {lines}"
            # A walk of a table (SCAN r, SCAN i), not of the bounded count's own rows.
            assert not any(re.match(r"SCAN [ri]\b", line) for line in lines), where
            if step == "page" and any(
                    "sqlite_autoindex_resources_1 (type=? AND id>?)" in line for line in lines):
                # A broad range or several codes of few (status): many match, so the ids in
                # order give a page in a few rows (the store counts first; bench).
                assert param.type in ("date", "string") or "," in value, where
                continue
            assert any(_narrowed_by(param).search(line) for line in lines), where


def test_a_patient_token_narrows_by_the_patient_whatever_else_is_asked(store: Store) -> None:
    store.db.execute("ANALYZE")
    for type_, item in (("ClaimResponse", ("created", "ge2000")),
                        ("PaymentReconciliation", ("created", "ge2000")),
                        ("ClaimResponse", ("payment-date", "ge2000")),
                        ("ClaimResponse", ("disposition", "c")),
                        ("Account", ("name", "p"))):
        search = parse_search(RESOURCES[type_], [item], strict=True,
                              count_default=20, count_max=200, patient="pat.A1001")
        for lines in store.plans(search.query).values():
            assert any("(type=? AND patient=?" in line for line in lines), (item, lines)


@pytest.mark.parametrize(("type_", "name"), [("Account", "name"),
                                             ("ClaimResponse", "disposition"),
                                             ("PaymentReconciliation", "disposition")])
def test_contains_walks_the_ids_in_order(store: Store, type_: str, name: str) -> None:
    """The exception: ``:contains`` (a substring anywhere) has no index that narrows it. A
    page walks the type's ids in order until it is full (no sort of the matches); a count,
    or a search that matches few, walks the whole type (~1 s at a million resources)."""
    store.db.execute("ANALYZE")
    search = parse_search(RESOURCES[type_], [(f"{name}:contains", "a")], strict=True,
                          count_default=20, count_max=200, patient=None)
    plans = store.plans(search.query)
    for step, lines in plans.items():
        assert not any(re.match(r"SCAN [ri]\b", line) or "TEMP B-TREE" in line
                       for line in lines), (step, lines)
    assert any("sqlite_autoindex_resources_1 (type=?)" in line for line in plans["page"]), plans
    # The count reads the folded texts from their index (covering): the type, no narrowing.
    assert any("COVERING INDEX resources_text_id (type=?)" in line
               for line in plans["count"]), plans


async def test_a_total_past_the_exact_bound_is_left_out_unless_asked(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting a million matches takes ~0.3 s: past TOTAL_EXACT_MAX (here 3) a searchset
    has no total (FHIR allows it), ``_total=accurate`` and ``_summary=count`` count them all,
    ``_total=none`` counts nothing."""
    everything = (await client.get("/fhir/Account", params={"_total": "accurate"})).json()
    assert everything["total"] > 3
    monkeypatch.setattr(params, "TOTAL_EXACT_MAX", 3)
    broad = (await client.get("/fhir/Account", params={"_count": "2"})).json()
    assert "total" not in broad and len(broad["entry"]) == 2
    assert any(link["relation"] == "next" for link in broad["link"])
    assert (await client.get("/fhir/Account", params={"_total": "accurate"})).json()[
        "total"] == everything["total"]
    assert (await client.get("/fhir/Account", params={"_summary": "count"})).json()[
        "total"] == everything["total"]
    narrow = (await client.get("/fhir/Account", params={"_id": "A1001,A1002"})).json()
    assert narrow["total"] == 2
    assert "total" not in (await client.get("/fhir/Account", params={
        "_id": "A1001", "_total": "none"})).json()


def test_an_identifier_system_alone_pages_through_its_own_index(store: Store) -> None:
    """``identifier=system|``: walking the type's ids and probing each for the system costs
    type / matches rows a match, the whole type (~0.1 s at 700k) when few or none match.
    Its page reads the system's ids in order from the cursor instead, its count one row."""
    store.db.execute("ANALYZE")
    search = parse_search(RESOURCES["ClaimResponse"],
                          [("identifier", "urn:rcmflow:payer-claim-control-number|")],
                          strict=True, count_default=20, count_max=200, patient=None)
    assert search.query.counted == ("identifier", ("urn:rcmflow:payer-claim-control-number",))
    for after in (None, "A1001"):
        page = store.plans(search.query, after=after)["page"]
        assert any("identifiers_system (type=? AND system=?" in line for line in page), page
        assert not any("TEMP B-TREE" in line or "(type=?)" in line for line in page), page


@pytest.mark.parametrize("items", [[], [("identifier", "urn:rcmflow:event|")]],
                         ids=["none", "system|"])
def test_a_broad_search_never_sorts_the_whole_type(tmp_path: Path, tables: MemoryTables,
                                                   items: list[tuple[str, str]]) -> None:
    """A page of a search that matches most of a type comes from walking the ids in order,
    whatever the statistics say (an index added to an existing store has none at first:
    SQLite took it for a narrow one and sorted the whole type, ~2 s at 700k). Here the
    statistics say outright that a type has one resource in that index."""
    store = filled_store(tmp_path / "read.sqlite", tables)
    store.db.execute("ANALYZE")
    store.db.execute("UPDATE sqlite_stat1 SET stat = '1000000 1 1 1' "
                     "WHERE idx = 'resources_updated_id'")
    store.close()
    store = Store(tmp_path / "read.sqlite")
    search = parse_search(RESOURCES["PaymentReconciliation"], items, strict=True,
                          count_default=20, count_max=200, patient=None)
    page = store.plans(search.query)["page"]
    assert not any("TEMP B-TREE" in line for line in page), page
    store.close()
