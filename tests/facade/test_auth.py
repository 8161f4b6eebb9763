"""Access control: bearer JWTs, system vs patient scopes, patient isolation."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import combinations
from string import ascii_letters, ascii_uppercase
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rcmflow.facade.app import FacadeConfig, create_app
from rcmflow.facade.auth import Authenticator, parse_scope
from rcmflow.facade.exceptions import AuthError
from rcmflow.facade.resources import fhir_id
from rcmflow.runtime.settings import Settings
from tests.facade.conftest import JWT_AUDIENCE, JWT_KEY, PUBLIC_URL, bearer, fhir_body, token

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
                                          audience="rcmflow-fhir"),
                     FacadeConfig(public_url=PUBLIC_URL))
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


# --- SMART scopes, parsed exactly ---------------------------------------------------------

#: (scope, may read Claim by id, may search Claim) for a system token.
VALID_SCOPES = [
    ("system/*.read", True, True),
    ("system/Claim.read", True, True),
    ("system/*.*", True, True),
    ("system/Claim.*", True, True),
    ("system/*.write", False, False),
    ("system/*.rs", True, True),
    ("system/Claim.rs", True, True),
    ("system/*.r", True, False),
    ("system/*.s", False, True),
    ("system/*.cruds", True, True),
    ("system/*.cud", False, False),
    ("system/*.c", False, False),
    ("system/*.rd", True, False),
    ("system/Account.rs", False, False),  # another type
    ("user/*.read", False, False),  # valid, but the facade has no per-user rules
    ("system/Claim.rs?status=active", False, False),  # granular: not applied, so not granted
]


@pytest.mark.parametrize(("scope", "reads", "searches"), VALID_SCOPES)
async def test_valid_scopes_grant_what_they_say(anon: httpx.AsyncClient, scope: str,
                                               reads: bool, searches: bool) -> None:
    headers = bearer(scope=scope)
    read = await anon.get(f"/fhir/Claim/{fhir_id('A1001', 'CLM1001')}", headers=headers)
    search = await anon.get("/fhir/Claim", headers=headers)
    assert (read.status_code, search.status_code) == (200 if reads else 403,
                                                      200 if searches else 403)


@pytest.mark.parametrize("scope", [
    "system/*.rubbish", "system/*.rx", "system/*.sr", "system/*.rr", "system/*.readx",
    "system/*.Read", "System/*.read", "system/*read", "system/*.", "system/.read",
    "system/claim.read", "system/Cl-aim.read", "system//*.read", "system/*.read/",
    "systemx/*.read", "openid", "launch/patient", "system", "*.read",
    "system/*.read;", "system/**.read", "system/*.*s",
])
async def test_malformed_scopes_grant_nothing(anon: httpx.AsyncClient, scope: str) -> None:
    """`system/*.rubbish` used to grant everything (any action starting with r)."""
    for path in ("/fhir/Account", "/fhir/Account/A1001"):
        response = await anon.get(path, headers=bearer(scope=scope))
        assert response.status_code == 403, (scope, path)


def test_patient_scopes_need_the_patient_claim_and_stay_narrowed() -> None:
    auth = Authenticator(enabled=True, key=JWT_KEY, algorithm="HS256", audience=JWT_AUDIENCE)
    principal = auth.principal("Bearer " + token(scope="patient/Claim.s openid", patient=MINE))
    assert principal.patient == MINE
    assert principal.may("search", "Claim") and not principal.may("read", "Claim")
    assert not principal.may("search", "Account")


_V2 = {"".join(letters) for n in range(1, 6) for letters in combinations("cruds", n)}


def _reference_grants(scope: str) -> tuple[bool, bool]:
    """The grammar spelled out independently: (read, search) granted to a system caller."""
    context, slash, rest = scope.partition("/")
    type_, dot, permissions = rest.partition(".")
    type_ok = type_ == "*" or (0 < len(type_) <= 64 and type_[0] in ascii_uppercase
                               and all(c in ascii_letters for c in type_))
    if context != "system" or not slash or not dot or not type_ok:
        return False, False
    if permissions in ("read", "*"):
        return True, True
    if permissions in _V2:
        return "r" in permissions, "s" in permissions
    return False, False


_near_scopes = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(["system", "patient", "user", "System", "systemx", "", "sys"]),
    st.sampled_from(["/", "", "//", "."]),
    st.sampled_from(["*", "Claim", "Account", "claim", "", "**", "Cl4im", "C"]),
    st.sampled_from([".", "", "..", "/"]),
    st.one_of(st.sampled_from(["read", "write", "*", "rubbish", "Read", "readx", "re"]),
              st.text(alphabet="crudsx*", max_size=6)),
    st.sampled_from(["", "?", "?x=1", "/", ";", " "]))


@settings(max_examples=400, deadline=None)
@given(scope=st.one_of(_near_scopes, st.text(max_size=30)))
def test_no_scope_outside_the_grammar_grants_anything(scope: str) -> None:
    parsed = parse_scope(scope)
    granted = (False, False) if parsed is None or parsed.context != "system" else (
        parsed.read, parsed.search)
    assert granted == _reference_grants(scope)
    # And through a real token: a scope granting neither is a 403, whatever it looks like.
    if not any(granted) and scope.split() == [scope]:
        auth = Authenticator(enabled=True, key=JWT_KEY, algorithm="HS256",
                             audience=JWT_AUDIENCE)
        with pytest.raises(AuthError) as refused:
            auth.principal("Bearer " + token(scope=scope))
        assert refused.value.status == 403


# --- token hygiene ------------------------------------------------------------------------


def _auth(**options: Any) -> Authenticator:
    return Authenticator(**{"enabled": True, "key": JWT_KEY, "algorithm": "HS256",
                            "audience": JWT_AUDIENCE, **options})


def _status(auth: Authenticator, encoded: str) -> int:
    try:
        auth.principal(f"Bearer {encoded}")
    except AuthError as exc:
        return exc.status
    return 200


def test_auth_on_needs_an_audience() -> None:
    with pytest.raises(ValueError, match="RCMFLOW_FACADE_JWT_AUDIENCE"):
        _auth(audience=None)


@pytest.mark.parametrize(("aud", "status"), [
    (JWT_AUDIENCE, 200), ([JWT_AUDIENCE, "other"], 200), ("another-service", 401),
    (None, 401),  # no aud at all
])
def test_the_audience_is_always_checked(aud: Any, status: int) -> None:
    assert _status(_auth(), token(aud=aud)) == status


@pytest.mark.parametrize(("claims", "status"), [
    ({"exp_s": 3600}, 200),
    ({"exp_s": 3600 + 25}, 200),  # within the leeway
    ({"exp_s": 2 * 3600}, 401),
    ({"exp_s": 1e30}, 401),
    ({"exp": 1e30}, 401),
    ({"exp": 10**30, "iat": 10**30 - 60}, 401),  # iat in the future
    ({"iat": None, "exp_s": 2 * 3600}, 401),  # no iat: exp - now
    ({"iat": None, "exp_s": 600}, 200),
    ({"iat": int(time.time()) - 3 * 3600, "exp_s": 600}, 401),  # issued for 3h10m
    ({"exp": None}, 401),
    ({"exp": "soon"}, 401),
])
def test_tokens_live_at_most_the_longest_lifetime(claims: dict[str, Any], status: int) -> None:
    assert _status(_auth(), token(**claims)) == status


def test_the_longest_lifetime_is_a_setting() -> None:
    assert _status(_auth(lifetime_max_s=300), token(exp_s=600)) == 401
    assert _status(_auth(lifetime_max_s=7200), token(exp_s=2 * 3600)) == 200


@pytest.mark.parametrize(("algorithm", "key_bytes", "accepted"), [
    ("HS256", 7, False), ("HS256", 31, False), ("HS256", 32, True),
    ("HS384", 47, False), ("HS384", 48, True), ("HS512", 32, False), ("HS512", 64, True),
])
def test_short_hmac_keys_are_refused_at_start(algorithm: str, key_bytes: int,
                                              accepted: bool) -> None:
    key = "k" * key_bytes
    if accepted:
        _auth(key=key, algorithm=algorithm)
    else:
        with pytest.raises(ValueError, match=f"{algorithm} needs at least"):
            _auth(key=key, algorithm=algorithm)


@pytest.mark.parametrize(("leeway_s", "expired_s", "status"), [
    (30, 20, 200), (30, 40, 401), (0, 5, 401), (300, 290, 200),
])
def test_expiry_leeway(leeway_s: float, expired_s: int, status: int) -> None:
    assert _status(_auth(leeway_s=leeway_s), token(exp_s=-expired_s)) == status


def test_leeway_is_bounded() -> None:
    with pytest.raises(ValueError, match="LEEWAY"):
        _auth(leeway_s=301)
    with pytest.raises(ValidationError):
        Settings(facade_jwt_leeway_s=301)
