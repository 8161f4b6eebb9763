"""The CapabilityStatement declares R4's own search parameters, and each one declared works.

Checked against the SearchParameter definitions in the validator's R4 package
(hapi-fhir-validation-resources-r4, fetched by tests/fhir_validator/fetch.py): each declared
parameter is R4's (same code, type and resource), every R4 parameter of the four types is
either declared or listed below with the reason it is not, and every declared parameter
narrows a strict search (removing one from the table or from the parser turns a test red).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.fhir_validator.validator import r4_search_parameters, validator_or_skip

TYPES = ("Account", "Claim", "ClaimResponse", "PaymentReconciliation")
#: Parameters every resource has in R4 that the facade does not search on.
NOT_FOR_ANY = {"_text", "_content", "_query", "_list", "_has", "_type", "_profile",
               "_security", "_source", "_tag"}
#: R4 parameters of the four types that are not declared, and why.
NOT_SUPPORTED: dict[tuple[str, str], str] = {
    ("Account", "name"): "string search on 'Patient account <n>': not indexed yet",
    ("Account", "owner"): "the entity is an Organization known by identifier only, no id",
    ("Account", "period"): "no servicePeriod in the account state",
    ("Claim", "insurer"): "payer: an Organization known by identifier only, no id",
    ("Claim", "provider"): "entity: an Organization known by identifier only, no id",
    ("Claim", "care-team"): "not in the data",
    ("Claim", "detail-udi"): "not in the data",
    ("Claim", "encounter"): "encounter id is in charge dimensions, not on the claim yet",
    ("Claim", "enterer"): "not in the data",
    ("Claim", "facility"): "not in the data",
    ("Claim", "item-udi"): "not in the data",
    ("Claim", "payee"): "not in the data",
    ("Claim", "procedure-udi"): "not in the data",
    ("Claim", "subdetail-udi"): "not in the data",
    ("ClaimResponse", "insurer"): "payer: an Organization known by identifier only, no id",
    ("ClaimResponse", "requestor"): "not in the data",
    ("ClaimResponse", "disposition"): "string search: not indexed yet",
    ("ClaimResponse", "payment-date"): "date of payment: not indexed yet (created is the same "
                                       "day)",
    ("PaymentReconciliation", "disposition"): "string search: not indexed yet",
    ("PaymentReconciliation", "payment-issuer"): "payer: an Organization known by identifier "
                                                 "only, no id",
    ("PaymentReconciliation", "request"): "not in the data (a Task)",
    ("PaymentReconciliation", "requestor"): "not in the data",
}
#: (type, parameter) -> (a value some served resource matches, a value none does).
VALUES: dict[tuple[str, str], tuple[str, str]] = {
    **{(t, "_lastUpdated"): ("ge2026-01-01", "lt2000-01-01") for t in TYPES},
    **{(t, "status"): ("active", "entered-in-error") for t in TYPES},
    ("Account", "_id"): ("A1001", "none-such"),
    ("Account", "identifier"): ("urn:rcmflow:account|A1001", "urn:rcmflow:account|none"),
    ("Account", "patient"): ("pat.A1001", "pat.none"),
    ("Account", "subject"): ("Patient/pat.A1001", "Patient/pat.none"),
    ("Account", "type"): ("http://terminology.hl7.org/CodeSystem/v3-ActCode|PBILLACCT",
                          "http://terminology.hl7.org/CodeSystem/v3-ActCode|PERSACCT"),
    ("Claim", "_id"): ("A1001.CLM1001", "none-such"),
    ("Claim", "identifier"): ("CLM1001", "none-such"),
    ("Claim", "patient"): ("Patient/pat.A1001", "Patient/pat.none"),
    ("Claim", "created"): ("2026", "1999"),
    ("Claim", "use"): ("claim", "preauthorization"),
    ("Claim", "priority"): ("normal", "stat"),
    ("ClaimResponse", "_id"): ("A1001.835-TRN9001-CLM1001", "none-such"),
    ("ClaimResponse", "identifier"): ("835-TRN9001-CLM1001", "none-such"),
    ("ClaimResponse", "patient"): ("pat.A1001", "pat.none"),
    ("ClaimResponse", "created"): ("2026", "1999"),
    ("ClaimResponse", "request"): ("Claim/A1001.CLM1001", "Claim/none-such"),
    ("ClaimResponse", "outcome"): ("complete", "queued"),
    ("ClaimResponse", "use"): ("claim", "preauthorization"),
    ("PaymentReconciliation", "_id"): ("trn.A1001.TRN9001", "none-such"),
    ("PaymentReconciliation", "identifier"): ("TRN9001", "none-such"),
    ("PaymentReconciliation", "created"): ("2026", "1999"),
    ("PaymentReconciliation", "outcome"): ("complete", "queued"),
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
    assert set(params) == set(VALUES), sorted(set(params) ^ set(VALUES))
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
