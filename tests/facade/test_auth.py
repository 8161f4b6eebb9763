"""Access control: bearer JWTs, system vs patient scopes, patient isolation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rcmflow.facade.app import create_app
from rcmflow.facade.auth import Authenticator
from rcmflow.facade.resources import fhir_id
from tests.facade.conftest import bearer, fhir_body

MINE = "pat.A1005"
OTHERS_ACCOUNT = "A1001"


def _ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


@pytest.mark.parametrize(("headers", "status"), [
    (lambda: {}, 401),
    (lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    (lambda: {"Authorization": "Bearer not-a-jwt"}, 401),
    (lambda: bearer(key="another-key-of-enough-length-for-hs256!"), 401),
    (lambda: bearer(exp_s=-3600), 401),
    (lambda: bearer(scope="openid profile"), 403),
    (lambda: bearer(scope="patient/*.read"), 403),  # no patient claim
    (lambda: bearer(scope="patient/Account.read", patient=MINE), 403),  # not Claim
])
async def test_refused_tokens(anon: httpx.AsyncClient, headers: Callable[[], dict[str, str]],
                              status: int) -> None:
    # Minted when the test runs: a token minted at collection expires before a long suite
    # reaches it (then 401, not the 403 under test).
    response = await anon.get("/fhir/Claim", headers=headers())
    assert response.status_code == status
    assert fhir_body(response)["resourceType"] == "OperationOutcome"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_metadata_needs_no_token(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/fhir/metadata")).status_code == 200


async def test_system_token_sees_everyone(anon: httpx.AsyncClient) -> None:
    bundle = fhir_body(await anon.get("/fhir/Account", headers=bearer(scope="system/*.read"),
                                      params={"_summary": "count"}))
    assert bundle["total"] == 28


@pytest.fixture
async def patient(app: Any) -> Any:
    async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://facade.test",
            headers=bearer(scope="patient/*.read", patient=MINE)) as c:
        yield c


async def test_patient_reads_own_and_not_others(patient: httpx.AsyncClient) -> None:
    assert (await patient.get("/fhir/Account/A1005")).status_code == 200
    for path in (f"/fhir/Account/{OTHERS_ACCOUNT}",
                 f"/fhir/Account/{OTHERS_ACCOUNT}/_history/5",
                 f"/fhir/Claim/{fhir_id('A1001', 'CLM1001')}",
                 f"/fhir/ClaimResponse/{fhir_id('A1001', '835-TRN9001-CLM1001')}",
                 f"/fhir/PaymentReconciliation/{fhir_id('trn', 'A1001', 'TRN9001')}"):
        response = await patient.get(path)
        # Exactly what an unknown id gets: existence is not revealed.
        assert response.status_code == 404, path
        unknown = await patient.get(path.rsplit("/", 1)[0] + "/ZZZ-unknown")
        assert fhir_body(response)["issue"][0]["code"] == fhir_body(unknown)["issue"][0]["code"]


@pytest.mark.parametrize("type_", ["Account", "Claim", "ClaimResponse", "PaymentReconciliation"])
async def test_patient_search_is_narrowed(patient: httpx.AsyncClient, client: httpx.AsyncClient,
                                          type_: str) -> None:
    everyone = fhir_body(await client.get(f"/fhir/{type_}", params={"_count": 50}))
    mine = fhir_body(await patient.get(f"/fhir/{type_}", params={"_count": 50}))
    assert 0 < mine["total"] < everyone["total"]
    assert all("A1005" in i.split(".") for i in _ids(mine)), _ids(mine)
    # Guessing: asking for other ids or another patient's identifier finds nothing.
    others = sorted(_ids(everyone) - _ids(mine))
    guessed = fhir_body(await patient.get(f"/fhir/{type_}", params={"_id": ",".join(others[:10])}))
    assert guessed["total"] == 0


async def test_patient_cannot_search_another_patient(patient: httpx.AsyncClient) -> None:
    for params in ({"patient": "pat.A1001"}, {"patient": "Patient/pat.A1001"}):
        bundle = fhir_body(await patient.get("/fhir/Claim", params=params))
        assert bundle["total"] == 0
    by_identifier = fhir_body(await patient.get(
        "/fhir/PaymentReconciliation", params={"identifier": "TRN9001"}))
    assert by_identifier["total"] == 0


async def test_patient_include_stays_in_compartment(patient: httpx.AsyncClient) -> None:
    bundle = fhir_body(await patient.get("/fhir/ClaimResponse", params={
        "_include": "ClaimResponse:request", "_count": 50}))
    assert _ids(bundle, "include") == {fhir_id("A1005", "CLM1005")}
    # A request reference to another patient's claim, with include: still nothing of theirs.
    foreign = fhir_body(await patient.get("/fhir/ClaimResponse", params={
        "request": fhir_id("A1001", "CLM1001"), "_include": "ClaimResponse:request"}))
    assert foreign.get("entry", []) == [] and foreign["total"] == 0


async def test_rs256_tokens_from_an_identity_provider(store: Any) -> None:
    """A PEM public key checks tokens an identity provider signed with its private key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    app = create_app(store, Authenticator(enabled=True, key=public_pem, algorithm="RS256",
                                          audience="rcmflow-fhir"))
    claims = {"scope": "patient/*.read", "patient": MINE, "aud": "rcmflow-fhir",
              "exp": int(time.time()) + 60}
    good = jwt.encode(claims, private, algorithm="RS256")
    other_aud = jwt.encode({**claims, "aud": "elsewhere"}, private, algorithm="RS256")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://facade.test") as c:
        ok = await c.get("/fhir/Account", headers={"Authorization": f"Bearer {good}"})
        assert {e["resource"]["id"] for e in fhir_body(ok)["entry"]} == {"A1005"}
        refused = await c.get("/fhir/Account",
                              headers={"Authorization": f"Bearer {other_aud}"})
        assert refused.status_code == 401
        # Only the configured algorithm is accepted: an HS256 token is refused.
        forged = jwt.encode(claims, "x" * 64, algorithm="HS256")
        assert (await c.get("/fhir/Account",
                            headers={"Authorization": f"Bearer {forged}"})).status_code == 401
