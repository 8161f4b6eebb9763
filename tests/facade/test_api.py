"""REST behaviour as a FHIR client sees it: read, vread, search, paging, errors, formats."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rcmflow.facade.params import RESOURCES
from rcmflow.facade.resources import (
    BALANCE_EXTENSION,
    LIFECYCLE_EXTENSION,
    LIFECYCLE_SYSTEM,
    fhir_id,
    patient_id_for,
    utc_instant,
)
from tests.facade.conftest import bearer, dollars, exact, fhir_body


async def test_capability_statement_is_r4_and_lists_what_the_routes_accept(
        client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata")
    assert response.status_code == 200
    cap = fhir_body(response)
    assert cap["fhirVersion"] == "4.0.1"
    listed = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert set(listed) == {"Account", "Claim", "ClaimResponse", "PaymentReconciliation"}
    assert listed["ClaimResponse"]["searchInclude"] == ["ClaimResponse:request"]
    for type_, resource in listed.items():
        names = {p["name"] for p in resource["searchParam"]}
        assert {"_id", "_lastUpdated", "identifier", "status"} <= names
        # Every advertised parameter is accepted by the route, even in strict handling (an
        # Organization known only by identifier: with :identifier, as its documentation says).
        for param in resource["searchParam"]:
            value = {"date": "ge2026-01-01", "reference": "x", "token": "x", "string": "x"}[
                param["type"]]
            by_identifier = ":identifier=" in param["documentation"]
            name = param["name"] + (":identifier" if by_identifier else "")
            r = await client.get(f"/fhir/{type_}", params={name: value},
                                 headers={"Prefer": "handling=strict"})
            assert r.status_code == 200, (type_, param["name"], r.text)
    assert {p["name"] for p in listed["ClaimResponse"]["searchParam"]} >= {
        "patient", "created", "request", "outcome"}


async def test_account_carries_balances_as_exact_money_and_its_version(
        client: httpx.AsyncClient, snapshots: dict[str, dict[str, Any]]) -> None:
    snap = snapshots["A1002"]
    response = await client.get("/fhir/Account/A1002")
    assert response.status_code == 200
    account = fhir_body(response)
    assert account["meta"]["versionId"] == str(snap["version"])
    assert response.headers["etag"] == f'W/"{snap["version"]}"'
    assert account["subject"] == [{"reference": f"Patient/{patient_id_for(snap)}"}]
    balances = {}
    for ext in exact(response)["extension"]:
        if ext["url"] == LIFECYCLE_EXTENSION:
            continue  # test_account_shows_its_lifecycle_state
        assert ext["url"] == BALANCE_EXTENSION
        parts = {p["url"]: p for p in ext["extension"]}
        aggregate = parts.get("aggregate", {}).get("valueCodeableConcept", {})
        code = aggregate["coding"][0]["code"] if aggregate else "total"
        balances[code] = parts["amount"]["valueMoney"]["value"]
    b = snap["balances"]
    assert balances == {"insurance": dollars(b["insurance_ar"]),
                        "patient": dollars(b["patient_ar"]), "total": dollars(b["balance"])}
    # Two decimal places on the wire (Money from cents), never a float's shortest form.
    assert b'"value":' + str(dollars(b["balance"])).encode() in response.content
    assert all(str(v).count(".") == 1 and len(str(v).split(".")[1]) == 2
               for v in balances.values())


async def test_account_shows_its_lifecycle_state(
        client: httpx.AsyncClient, snapshots: dict[str, dict[str, Any]]) -> None:
    """The lifecycle state and since when, as the head holds it (docs/lifecycle.md)."""
    lifecycle = snapshots["A1002"]["lifecycle"]
    account = fhir_body(await client.get("/fhir/Account/A1002"))
    (ext,) = [e for e in account["extension"] if e["url"] == LIFECYCLE_EXTENSION]
    parts = {p["url"]: p for p in ext["extension"]}
    assert parts["state"]["valueCoding"]["system"] == LIFECYCLE_SYSTEM
    assert parts["state"]["valueCoding"]["code"] == lifecycle["state"]
    assert parts["since"]["valueDateTime"] == utc_instant(lifecycle["since"])
    assert parts["expected"]["valueBoolean"] is lifecycle["expected"]


async def test_claim_and_claim_response_show_the_adjudication(
        client: httpx.AsyncClient, snapshots: dict[str, dict[str, Any]]) -> None:
    claim = fhir_body(await client.get(f"/fhir/Claim/{fhir_id('A1001', 'CLM1001')}"))
    assert [i["net"]["value"] for i in exact(
        await client.get(f"/fhir/Claim/{fhir_id('A1001', 'CLM1001')}"))["item"]] == [
        dollars(120_000), dollars(35_000)]
    assert claim["patient"]["reference"] == f"Patient/{patient_id_for(snapshots['A1001'])}"
    rid = fhir_id("A1001", "835-TRN9001-CLM1001")
    response = await client.get(f"/fhir/ClaimResponse/{rid}")
    cr = exact(response)
    fhir_body(response)
    assert cr["request"] == {"reference": f"Claim/{claim['id']}"}
    assert cr["payment"]["amount"]["value"] == dollars(90_000)
    carcs = {(a["category"]["coding"][0]["code"], a["reason"]["coding"][0]["code"]):
             a["amount"]["value"] for a in cr["adjudication"] if "reason" in a}
    assert carcs == {("CO", "45"): dollars(40_000), ("PR", "1"): dollars(15_000),
                     ("PR", "2"): dollars(10_000)}
    liability = [t for t in cr["total"] if t["category"]["coding"][0]["code"] == "memberliability"]
    assert liability[0]["amount"]["value"] == dollars(25_000)


async def test_payment_reconciliations_per_check_and_per_patient_payment(
        client: httpx.AsyncClient) -> None:
    # TRN9001 paid A1001's claim and denied A1004's: one part per account.
    response = await client.get("/fhir/PaymentReconciliation",
                                params={"identifier": "urn:rcmflow:payment-trace|TRN9001"})
    bundle = fhir_body(response)
    amounts = {e["resource"]["id"]: e["resource"]["paymentAmount"]["value"]
               for e in exact(response)["entry"]}
    assert bundle["total"] == 2
    assert amounts == {fhir_id("trn", "A1001", "TRN9001"): dollars(90_000),
                       fhir_id("trn", "A1004", "TRN9001"): dollars(0)}
    refund = exact(await client.get(
        f"/fhir/PaymentReconciliation/{fhir_id('pay', 'A1002', 'RFD-1002-1')}"))
    assert refund["paymentAmount"]["value"] == dollars(-10_000)


async def test_provider_keys_are_not_accounts(client: httpx.AsyncClient) -> None:
    bundle = fhir_body(await client.get("/fhir/Account", params={"_count": 50}))
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert "A1001" in ids and not any("provider" in i for i in ids)
    assert bundle["total"] == 5 + 23


async def test_etag_if_none_match_and_vread(client: httpx.AsyncClient,
                                           snapshots: dict[str, dict[str, Any]]) -> None:
    version = snapshots["A1001"]["version"]
    first = await client.get("/fhir/Account/A1001")
    assert first.headers["etag"] == f'W/"{version}"'
    again = await client.get("/fhir/Account/A1001", headers={"If-None-Match": first.headers[
        "etag"]})
    assert again.status_code == 304 and again.content == b""
    stale = await client.get("/fhir/Account/A1001", headers={"If-None-Match": 'W/"1"'})
    assert stale.status_code == 200
    current = await client.get(f"/fhir/Account/A1001/_history/{version}")
    assert current.status_code == 200 and fhir_body(current)["id"] == "A1001"
    old = await client.get("/fhir/Account/A1001/_history/1")
    assert old.status_code == 404
    assert fhir_body(old)["issue"][0]["code"] == "not-found"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/fhir/Account/NOPE", 404, "not-found"),
    ("GET", "/fhir/Account/bad%20id%24", 404, "not-found"),
    ("GET", "/fhir/Patient/x", 404, "not-found"),
    ("GET", "/elsewhere", 404, "not-found"),
    ("DELETE", "/fhir/Account/A1001", 405, "not-supported"),
    ("PUT", "/fhir/Claim/A1001.CLM1001", 405, "not-supported"),
    ("GET", "/fhir/Claim?created=2026-13-45", 400, "invalid"),
    ("GET", "/fhir/Claim?created=yesterday", 400, "invalid"),
    ("GET", "/fhir/Claim?created=2026-11-01T10:00", 400, "invalid"),
    ("GET", "/fhir/Claim?_count=many", 400, "invalid"),
    ("GET", "/fhir/Claim?_summary=text", 400, "not-supported"),
    ("GET", "/fhir/ClaimResponse?request=Patient/x", 400, "invalid"),
    ("GET", "/fhir/Account?_format=xml", 406, "not-supported"),
])
async def test_errors_are_operation_outcomes(client: httpx.AsyncClient, method: str, path: str,
                                             status: int, code: str) -> None:
    response = await client.request(method, path)
    assert response.status_code == status, response.text
    outcome = fhir_body(response)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


async def test_accept_header_other_than_json_is_406(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Account/A1001",
                                headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406
    ok = await client.get("/fhir/Account/A1001",
                          headers={"Accept": "application/fhir+json;q=0.9, */*;q=0.1"})
    assert ok.status_code == 200


async def test_unknown_parameter_lenient_warns_strict_refuses(client: httpx.AsyncClient) -> None:
    lenient = await client.get("/fhir/Claim", params={"bogus": "1", "status": "active"})
    bundle = fhir_body(lenient)
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "bogus" not in self_link and "status=active" in self_link
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0]["resource"]["issue"][0]["severity"] == "warning"
    assert "bogus" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    strict = await client.get("/fhir/Claim", params={"bogus": "1"},
                              headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert fhir_body(strict)["issue"][0]["code"] == "not-supported"


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


async def test_paging_follows_next_to_the_end_without_duplicates(
        client: httpx.AsyncClient) -> None:
    everything = fhir_body(await client.get("/fhir/ClaimResponse", params={"_count": 50}))
    total = everything["total"]
    assert total == len(_ids(everything)) > 14
    seen: list[str] = []
    url: str | None = "/fhir/ClaimResponse?_count=7"
    pages = 0
    while url is not None:
        page = fhir_body(await client.get(url))
        assert page["total"] == total
        seen += _ids(page)
        links = {link["relation"]: link["url"] for link in page["link"]}
        if pages:
            assert "previous" in links
        url = links.get("next")
        pages += 1
        assert pages < 20
    assert len(seen) == len(set(seen)) == total
    assert sorted(seen) == sorted(_ids(everything))
    assert pages == -(-total // 7)
    # And back from the last page through the previous links to the first.
    back: list[str] = []
    url = _link(page, "self")
    while url is not None:
        page = fhir_body(await client.get(url))
        back = _ids(page) + back
        url = _link(page, "previous")
    assert back == seen


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == relation), None)


async def test_paging_while_resources_arrive_sees_none_twice(tmp_path: Any) -> None:
    from tests.facade.conftest import build_tables, filled_store, make_app, records
    from tests.factories import charge

    store = filled_store(tmp_path / "read.sqlite",
                         build_tables([charge(100, account=f"M{n}") for n in range(2, 9)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(store)),
                                 base_url="http://facade.test", headers=bearer()) as c:
        page = fhir_body(await c.get("/fhir/Account", params={"_count": 3}))
        seen = _ids(page)
        assert seen == ["M2", "M3", "M4"]
        # New accounts land before and after the cursor between two pages.
        late = build_tables([charge(100, account="M1"), charge(100, account="M5a")])
        store.apply(records(late), {0: 99})
        url = _link(page, "next")
        while url is not None:
            page = fhir_body(await c.get(url))
            seen += _ids(page)
            url = _link(page, "next")
    assert len(seen) == len(set(seen))
    assert seen == ["M2", "M3", "M4", "M5", "M5a", "M6", "M7", "M8"]
    store.close()


async def test_count_is_capped_and_summary_count_gives_total_only(
        client: httpx.AsyncClient) -> None:
    capped = fhir_body(await client.get("/fhir/PaymentReconciliation",
                                        params={"_count": 100000}))
    assert len(_ids(capped)) == 50 < capped["total"]
    count = fhir_body(await client.get("/fhir/PaymentReconciliation",
                                       params={"_summary": "count"}))
    assert count["total"] == capped["total"] and "entry" not in count


async def test_search_by_patient_identifier_status_and_id(
        client: httpx.AsyncClient, snapshots: dict[str, dict[str, Any]]) -> None:
    patient = patient_id_for(snapshots["A1005"])
    for value in (patient, f"Patient/{patient}"):
        bundle = fhir_body(await client.get("/fhir/ClaimResponse", params={"patient": value}))
        assert len(_ids(bundle)) == 3  # processed, reversal, re-processed
    by_identifier = fhir_body(await client.get(
        "/fhir/Account", params={"identifier": "urn:rcmflow:account|B07"}))
    assert _ids(by_identifier) == ["B07"]
    bare = fhir_body(await client.get("/fhir/Account", params={"identifier": "B07,B08"}))
    assert _ids(bare) == ["B07", "B08"]
    wrong_system = fhir_body(await client.get(
        "/fhir/Account", params={"identifier": "urn:other|B07"}))
    assert wrong_system["total"] == 0
    closed = fhir_body(await client.get("/fhir/Account", params={"status": "inactive"}))
    assert closed["total"] == 0
    by_id = fhir_body(await client.get("/fhir/Claim",
                                       params={"_id": f"{fhir_id('A1004', 'CLM1004')},nope"}))
    assert _ids(by_id) == [fhir_id("A1004", "CLM1004")]


async def test_created_and_last_updated_prefixes(
        client: httpx.AsyncClient, snapshots: dict[str, dict[str, Any]]) -> None:
    everything = fhir_body(await client.get("/fhir/ClaimResponse", params={"_count": 50}))
    created = {e["resource"]["id"]: e["resource"]["created"] for e in everything["entry"]}
    after = fhir_body(await client.get("/fhir/ClaimResponse", params=[
        ("created", "ge2026-11-14"), ("created", "le2026-11-20"), ("_count", "50")]))
    expected = sorted(i for i, c in created.items() if "2026-11-14" <= c[:10] <= "2026-11-20")
    assert sorted(_ids(after)) == expected and expected
    day = fhir_body(await client.get("/fhir/ClaimResponse",
                                     params={"created": "2026-11-12", "_count": 50}))
    assert sorted(_ids(day)) == sorted(i for i, c in created.items() if c[:10] == "2026-11-12")
    # An offset moves the day: 2026-11-12T14:00Z is 09:00 at -05:00.
    local = fhir_body(await client.get("/fhir/ClaimResponse", params={
        "created": "eq2026-11-12T09:00:00-05:00", "_count": 50}))
    assert fhir_id("A1001", "835-TRN9001-CLM1001") in _ids(local)
    recent = fhir_body(await client.get("/fhir/Account", params={
        "_lastUpdated": "gt2026-11-25", "_count": 50}))
    expected_accounts = sorted(a for a, s in snapshots.items() if not a.startswith("provider:")
                               and s["last_event_at"] >= "2026-11-26")
    assert sorted(_ids(recent)) == expected_accounts


async def test_include_claim_response_request(client: httpx.AsyncClient) -> None:
    bundle = fhir_body(await client.get("/fhir/ClaimResponse", params={
        "patient": "pat.A1005", "_include": "ClaimResponse:request"}))
    assert len(_ids(bundle)) == 3
    assert _ids(bundle, "include") == [fhir_id("A1005", "CLM1005")]
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert parse_qs(urlsplit(links["self"]).query)["_include"] == ["ClaimResponse:request"]


async def test_post_search_equals_get(client: httpx.AsyncClient) -> None:
    got = fhir_body(await client.get("/fhir/Claim", params={"patient": "pat.B03"}))
    posted = await client.post("/fhir/Claim/_search", data={"patient": "pat.B03"})
    assert posted.status_code == 200
    assert _ids(fhir_body(posted)) == _ids(got) == [fhir_id("B03", "K3")]
    as_json = await client.post("/fhir/Claim/_search", json={"patient": "pat.B03"})
    assert as_json.status_code == 415
    huge = await client.post("/fhir/Claim/_search", data={"patient": "x" * 40_000})
    assert huge.status_code == 413
    assert fhir_body(huge)["resourceType"] == "OperationOutcome"


async def test_cors_preflight_and_exposed_etag(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/fhir/Account/A1001", headers={
        "Origin": "https://portal.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "Authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in ("*", "https://portal.example")
    read = await client.get("/fhir/Account/A1001", headers={"Origin": "https://portal.example"})
    assert "etag" in read.headers["access-control-expose-headers"].lower()


async def test_openapi_is_published(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/fhir/openapi.json")).json()
    for type_ in RESOURCES:
        assert f"/fhir/{type_}" in spec["paths"]
        params = {p["name"] for p in spec["paths"][f"/fhir/{type_}"]["get"]["parameters"]}
        # name:modifier for the modifiers each takes (the Organizations: :identifier only).
        assert {p.name for p in RESOURCES[type_].params} <= {
            n.partition(":")[0] for n in params}


async def test_claim_response_by_request_and_outcome(client: httpx.AsyncClient) -> None:
    claim = fhir_id("A1005", "CLM1005")
    for value in (claim, f"Claim/{claim}"):
        bundle = fhir_body(await client.get("/fhir/ClaimResponse", params={"request": value}))
        assert bundle["total"] == 3
    complete = fhir_body(await client.get("/fhir/ClaimResponse",
                                          params={"outcome": "complete", "_summary": "count"}))
    everything = fhir_body(await client.get("/fhir/ClaimResponse",
                                            params={"_summary": "count"}))
    assert complete["total"] == everything["total"] > 0
    queued = fhir_body(await client.get("/fhir/ClaimResponse", params={"outcome": "queued"}))
    assert queued["total"] == 0


async def test_health_and_metrics_without_a_feed(anon: httpx.AsyncClient) -> None:
    health = await anon.get("/health")
    assert health.status_code == 200
    assert health.json() == {"accounts": 29, "invalid_snapshots": 0, "auth": "jwt",
                             "status": "static"}
    response = await anon.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {s.name: s.value for f in text_string_to_metric_families(response.text)
               for s in f.samples}
    assert samples["rcmflow_facade_lag_records"] == 0
    assert samples["rcmflow_facade_accounts"] == 29
    assert samples["rcmflow_facade_invalid_snapshots_total"] == 0
    assert samples["process_resident_memory_bytes"] > 0
