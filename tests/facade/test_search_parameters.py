"""The CapabilityStatement declares R4's own search parameters, and each one declared works.

Checked against the SearchParameter definitions in the validator's R4 package
(hapi-fhir-validation-resources-r4, fetched by tests/fhir_validator/fetch.py): each declared
parameter is R4's (same code, type and resource), every R4 parameter of the four types is
either declared or listed below with the reason it is not, and every declared parameter
narrows a strict search (removing one from the table or from the parser turns a test red).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rcmflow.facade.params import RESOURCES, _clause
from rcmflow.facade.store import text_key
from tests.fhir_validator.validator import r4_search_parameters, validator_or_skip

TYPES = ("Account", "Claim", "ClaimResponse", "PaymentReconciliation")
#: Parameters every resource has in R4 that the facade does not search on.
NOT_FOR_ANY = {"_text", "_content", "_query", "_list", "_has", "_type", "_profile",
               "_security", "_source", "_tag"}
#: R4 parameters of the four types that are not declared, and why.
NOT_SUPPORTED: dict[tuple[str, str], str] = {
    ("Account", "period"): "no servicePeriod in the account state",
    ("Claim", "care-team"): "not in the data",
    ("Claim", "detail-udi"): "not in the data",
    ("Claim", "encounter"): "Claim.item.encounter: a claim's service lines carry no encounter "
                            "(charges do, and no charge is linked to a claim line); no "
                            "Encounter resource is served",
    ("Claim", "enterer"): "not in the data",
    ("Claim", "facility"): "not in the data",
    ("Claim", "item-udi"): "not in the data",
    ("Claim", "payee"): "not in the data",
    ("Claim", "procedure-udi"): "not in the data",
    ("Claim", "subdetail-udi"): "not in the data",
    ("ClaimResponse", "requestor"): "not in the data",
    ("PaymentReconciliation", "request"): "not in the data (a Task)",
    ("PaymentReconciliation", "requestor"): "not in the data",
}
#: (type, parameter[:modifier]) -> (a value some served resource matches, a value none does).
#: The Organization references (insurer, provider, owner, payment-issuer) are searched with
#: :identifier only: rcmflow knows those organisations by code, with no Organization id.
VALUES: dict[tuple[str, str], tuple[str, str]] = {
    **{(t, "_lastUpdated"): ("ge2026-01-01", "lt2000-01-01") for t in TYPES},
    **{(t, "status"): ("active", "entered-in-error") for t in TYPES},
    ("Account", "_id"): ("A1001", "none-such"),
    ("Account", "identifier"): ("urn:rcmflow:account|A1001", "urn:rcmflow:account|none"),
    ("Account", "patient"): ("pat.A1001", "pat.none"),
    ("Account", "subject"): ("Patient/pat.A1001", "Patient/pat.none"),
    ("Account", "type"): ("http://terminology.hl7.org/CodeSystem/v3-ActCode|PBILLACCT",
                          "http://terminology.hl7.org/CodeSystem/v3-ActCode|PERSACCT"),
    ("Account", "name"): ("PATIENT account a100", "account"),
    ("Account", "name:exact"): ("Patient account A1001", "patient account a1001"),
    ("Account", "name:contains"): ("COUNT A100", "account A9"),
    ("Account", "owner:identifier"): ("urn:rcmflow:entity|01", "urn:rcmflow:entity|99"),
    ("Claim", "_id"): ("A1001.CLM1001", "none-such"),
    ("Claim", "identifier"): ("CLM1001", "none-such"),
    ("Claim", "patient"): ("Patient/pat.A1001", "Patient/pat.none"),
    ("Claim", "created"): ("2026", "1999"),
    ("Claim", "use"): ("claim", "preauthorization"),
    ("Claim", "priority"): ("normal", "stat"),
    ("Claim", "insurer:identifier"): ("urn:rcmflow:payer|ACME-HEALTH", "urn:rcmflow:payer|X"),
    ("Claim", "provider:identifier"): ("01", "urn:rcmflow:payer|01"),
    ("ClaimResponse", "_id"): ("A1001.835-TRN9001-CLM1001", "none-such"),
    ("ClaimResponse", "identifier"): ("835-TRN9001-CLM1001", "none-such"),
    ("ClaimResponse", "patient"): ("pat.A1001", "pat.none"),
    ("ClaimResponse", "created"): ("2026", "1999"),
    ("ClaimResponse", "request"): ("Claim/A1001.CLM1001", "Claim/none-such"),
    ("ClaimResponse", "outcome"): ("complete", "queued"),
    ("ClaimResponse", "use"): ("claim", "preauthorization"),
    ("ClaimResponse", "disposition"): ("claim denied", "claim approved"),
    ("ClaimResponse", "payment-date"): ("2026", "1999"),
    ("ClaimResponse", "insurer:identifier"): ("MEDICARE-A", "|MEDICARE-A"),
    ("PaymentReconciliation", "_id"): ("trn.A1001.TRN9001", "none-such"),
    ("PaymentReconciliation", "identifier"): ("TRN9001", "none-such"),
    ("PaymentReconciliation", "created"): ("2026", "1999"),
    ("PaymentReconciliation", "outcome"): ("complete", "queued"),
    ("PaymentReconciliation", "disposition"): ("Patient payment", "Invoice"),
    ("PaymentReconciliation", "payment-issuer:identifier"): ("urn:rcmflow:payer|ACME",
                                                             "urn:rcmflow:payer|NONE"),
}


async def declared(client: httpx.AsyncClient) -> dict[tuple[str, str], dict[str, Any]]:
    statement = (await client.get("/fhir/metadata")).json()
    return {(r["type"], p["name"]): p for r in statement["rest"][0]["resource"]
            for p in r["searchParam"]}


async def test_declared_parameters_are_r4s_own_and_the_rest_are_accounted_for(
        client: httpx.AsyncClient) -> None:
    _, jars = validator_or_skip()
    r4 = r4_search_parameters(jars)
    params = await declared(client)
    for (type_, name), param in params.items():
        definition = r4.get(param["definition"])
        assert definition is not None, (type_, name, param["definition"])
        assert definition["code"] == name, (type_, name, definition["code"])
        assert definition["type"] == param["type"], (type_, name, definition["type"])
        assert {type_, "Resource"} & set(definition["base"]), (type_, name, definition["base"])
    defined = {(t, d["code"]) for d in r4.values() for t in TYPES
               if set(d["base"]) & {t, "Resource", "DomainResource"}
               and d["code"] not in NOT_FOR_ANY}
    assert set(params) | set(NOT_SUPPORTED) == defined, sorted(
        defined ^ (set(params) | set(NOT_SUPPORTED)))
    assert not set(params) & set(NOT_SUPPORTED), sorted(set(params) & set(NOT_SUPPORTED))


async def test_every_declared_parameter_narrows_a_strict_search(
        client: httpx.AsyncClient) -> None:
    params = await declared(client)
    searched = {(t, name.partition(":")[0]) for t, name in VALUES}
    assert set(params) == searched, sorted(set(params) ^ searched)
    strict = {"Prefer": "handling=strict"}
    for (type_, name), (hit, miss) in sorted(VALUES.items()):
        totals = []
        for value in (hit, miss):
            response = await client.get(f"/fhir/{type_}", headers=strict,
                                        params={name: value, "_summary": "count"})
            assert response.status_code == 200, (type_, name, value, response.text)
            totals.append(response.json()["total"])
        everything = (await client.get(f"/fhir/{type_}", params={"_summary": "count"})
                      ).json()["total"]
        assert totals[0] >= 1 and totals[1] == 0, (type_, name, totals)
        assert totals[0] <= everything


async def _ids(client: httpx.AsyncClient, type_: str, *items: tuple[str, str]) -> list[str]:
    response = await client.get(f"/fhir/{type_}", params=[*items, ("_count", "200")],
                                headers={"Prefer": "handling=strict"})
    assert response.status_code == 200, (items, response.text)
    return [e["resource"]["id"] for e in response.json().get("entry", [])
            if e["search"]["mode"] == "match"]


async def test_string_search_is_r4s_starts_with_exact_and_contains(
        client: httpx.AsyncClient) -> None:
    """R4 string: by default the text starts with the value, case and accents aside;
    :exact is the whole text as written; :contains anywhere; commas separate values
    (any of), "\\," is a comma in one."""
    assert await _ids(client, "Account", ("name", "PÂTIENT account a1001")) == ["A1001"]
    assert await _ids(client, "Account", ("name", "account A1001")) == []  # not a prefix
    assert await _ids(client, "Account", ("name:contains", "ACCOUNT A1001")) == ["A1001"]
    assert await _ids(client, "Account", ("name:exact", "Patient account A1001")) == ["A1001"]
    assert await _ids(client, "Account", ("name:exact", "Patient account A100")) == []
    assert await _ids(client, "Account", ("name:exact", "patient account A1001")) == []
    assert await _ids(client, "Account", ("name", "Patient account A1001,patient account "
                                          "a1002")) == ["A1001", "A1002"]
    assert await _ids(client, "Account", ("name", "Patient account A1001\\,a1002")) == []
    portal = await _ids(client, "PaymentReconciliation", ("disposition", "patient payment (PORT"))
    assert "pay.A1001.PAY-77001" in portal and "pay.A1002.LBX-5501" not in portal
    denied = await _ids(client, "ClaimResponse", ("disposition", "Claim denied"))
    assert denied and "A1004.835-TRN9001-CLM1004" in denied
    assert not set(denied) & set(await _ids(client, "ClaimResponse",
                                            ("disposition:contains", "processed")))


async def test_payment_date_compares_the_whole_day_as_r4_does(
        client: httpx.AsyncClient) -> None:
    """payment-date is a date (a day): "eq" needs the value's range to hold the whole day,
    so an instant of that day holds none; gt/lt compare the day's own bounds."""
    day = await _ids(client, "ClaimResponse", ("payment-date", "2026-11-12"))
    assert "A1001.835-TRN9001-CLM1001" in day
    assert day == await _ids(client, "ClaimResponse", ("payment-date", "ge2026-11-12"),
                             ("payment-date", "lt2026-11-13"))
    assert await _ids(client, "ClaimResponse", ("payment-date", "2026-11-12T14:00:00Z")) == []
    assert not set(day) & set(await _ids(client, "ClaimResponse",
                                         ("payment-date", "gt2026-11-12")))
    assert not set(day) & set(await _ids(client, "ClaimResponse",
                                         ("payment-date", "lt2026-11-12")))
    assert set(day) <= set(await _ids(client, "ClaimResponse", ("payment-date", "le2026-11-12")))
    assert set(day) <= set(await _ids(client, "ClaimResponse", ("payment-date", "2026-11")))


async def test_organizations_are_searched_by_identifier_only(client: httpx.AsyncClient) -> None:
    """The payer and the billing entity are known by code, with no Organization id: R4's
    :identifier modifier finds them; a reference by id cannot match anything, so it is
    refused (strict: 400 OperationOutcome) or ignored and said (lenient), like a modifier
    the parameter does not take."""
    acme = await _ids(client, "Claim", ("insurer:identifier", "urn:rcmflow:payer|ACME-HEALTH"))
    medicare = await _ids(client, "Claim", ("insurer:identifier", "MEDICARE-A"))
    assert acme and medicare and not set(acme) & set(medicare)
    assert await _ids(client, "Claim", ("insurer:identifier", "urn:other|ACME-HEALTH")) == []
    assert sorted(acme + medicare) == await _ids(
        client, "Claim", ("insurer:identifier", "ACME-HEALTH,urn:rcmflow:payer|MEDICARE-A"))
    for query in ({"insurer": "Organization/ACME-HEALTH"}, {"insurer": "ACME-HEALTH"},
                  {"insurer:missing": "false"}, {"status:not": "active"}):
        strict = await client.get("/fhir/Claim", params=query,
                                  headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400, (query, strict.text)
        outcome = strict.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "not-supported", outcome
        lenient = (await client.get("/fhir/Claim", params={**query, "_count": "200"})).json()
        warning = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
        assert warning and next(iter(query)) in str(warning), lenient
        assert lenient["total"] == (await client.get(
            "/fhir/Claim", params={"_summary": "count"})).json()["total"]


def _escaped(text: str) -> str:
    return "".join("\\" + c if c in "\\,|$" else c for c in text)


@settings(max_examples=300, deadline=None)
@given(stored=st.text(max_size=30), query=st.text(min_size=1, max_size=10),
       cut=st.integers(min_value=0, max_value=30))
def test_string_matching_is_folded_starts_with_exact_and_contains(
        stored: str, query: str, cut: int) -> None:
    """Property: in SQL, over any text (any code point, U+10FFFF included), a value matches
    as R4 says of the folded forms: starts-with by default, contains, and exact as written;
    an escaped value is one value, whatever commas it holds."""
    assume(text_key(query))
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (text TEXT, text_key TEXT)")
    db.execute("INSERT INTO t VALUES (?, ?)", (stored, text_key(stored)))
    param = RESOURCES["Account"].param("name")
    assert param is not None

    def matches(value: str, modifier: str) -> bool:
        sql, args = _clause(param, _escaped(value), "Account", modifier)
        return bool(db.execute(f"SELECT count(*) FROM t AS r WHERE {sql}", args).fetchone()[0])

    key, folded = text_key(stored), text_key(query)
    assert matches(query, "") == key.startswith(folded)
    assert matches(query, "contains") == (folded in key)
    assert matches(query, "exact") == (query == stored)
    if text_key(stored[:cut]):
        assert matches(stored[:cut], "") and matches(stored[:cut], "contains")
    if key:
        assert matches(stored, "exact")
