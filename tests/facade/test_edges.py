"""The facade at the network's edge: links from the configured public URL whatever the Host
and forwarded headers say, proxy headers believed only from trusted proxies, docs pages that
load nothing from elsewhere, and a facade that will not start half-configured."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import orjson
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from rcmflow.cli import app as rcmflow_cli
from rcmflow.facade.server import check_settings, public_url, server_config
from rcmflow.facade.store import Store
from rcmflow.runtime.settings import Settings
from tests.facade.conftest import (
    JWT_AUDIENCE,
    JWT_KEY,
    PUBLIC_URL,
    Served,
    bearer,
    free_port,
    make_app,
)

HOSTILE = {
    "Host": "evil.example.com",
    "X-Forwarded-Host": "evil-forwarded.example.com",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Prefix": "/evil-prefix",
    "Forwarded": "for=198.51.100.1;host=evil-rfc7239.example.com;proto=http",
}

#: Every kind of response the facade makes: bundles (self/next/previous, fullUrl), reads
#: (Content-Location), the CapabilityStatement (implementation.url), errors of each kind,
#: a trailing slash (once a redirect whose Location came from Host), docs and ops pages.
REQUESTS = [
    ("GET", "/fhir/metadata"),
    ("GET", "/fhir/Account?_count=1"),
    ("GET", "/fhir/Account?_count=1&_after=A1001"),
    ("GET", "/fhir/Account?_count=1&_before=A1005"),
    ("GET", "/fhir/ClaimResponse?_include=ClaimResponse:request&_count=2&bogus=1"),
    ("POST", "/fhir/Claim/_search"),
    ("GET", "/fhir/Account/A1001"),
    ("GET", "/fhir/Account/A1001/_history/999"),
    ("GET", "/fhir/Account/"),
    ("GET", "/fhir/"),
    ("GET", "/fhir/Nowhere"),
    ("GET", "/fhir/Claim?created=yesterday"),
    ("GET", "/fhir/Account?_format=xml"),
    ("DELETE", "/fhir/Account/A1001"),
    ("GET", "/fhir/openapi.json"),
    ("GET", "/fhir/docs"),
    ("GET", "/fhir/redoc"),
    ("GET", "/health"),
    ("GET", "/metrics"),
]


def _settings(port: int, **overrides: Any) -> Settings:
    return Settings(**{"facade_host": "127.0.0.1", "facade_port": port,
                       "facade_auth": "off", **overrides})


@pytest.fixture(scope="module", params=["auth-on", "auth-off"])
def behind_proxy(request: pytest.FixtureRequest, store: Store) -> Iterator[Served]:
    """The facade under uvicorn as `rcmflow facade` configures it, with this test's
    client (127.0.0.1) a trusted proxy: forwarded headers reach the app."""
    port = free_port()
    app = make_app(store, auth=request.param == "auth-on")
    config = server_config(app, _settings(port, facade_trusted_proxies="127.0.0.1"))
    with Served(app, config=config) as running:
        yield running


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_a_hostile_host_changes_no_link(behind_proxy: Served, method: str, path: str) -> None:
    url = f"http://127.0.0.1:{behind_proxy.port}{path}"
    with httpx.Client(headers={**bearer(), **HOSTILE}, timeout=10) as client:
        response = client.request(method, url)
        for header in (None, {"Authorization": ""}):  # and once without a token
            if header is not None:
                response = client.request(method, url, headers=header)
            assert response.status_code < 500 and not 300 <= response.status_code < 400, (
                path, response.status_code, response.headers.get("location"))
            shown = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
            assert "evil" not in shown.lower(), (path, shown[:2000])
            if response.headers.get("content-type", "").startswith("application/fhir+json"):
                _links_are_public(orjson.loads(response.content))
            location = response.headers.get("content-location")
            if location is not None:
                assert location.startswith(PUBLIC_URL + "/Account/A1001/_history/")


def _links_are_public(doc: dict[str, Any]) -> None:
    urls = [link["url"] for link in doc.get("link", [])]
    # An OperationOutcome entry has no server identity: its fullUrl is a urn:uuid, no link.
    urls += [entry["fullUrl"] for entry in doc.get("entry", []) if "fullUrl" in entry
             and not entry["fullUrl"].startswith("urn:uuid:")]
    if doc.get("resourceType") == "CapabilityStatement":
        urls.append(doc["implementation"]["url"])
        assert doc["implementation"]["url"] == PUBLIC_URL
    assert all(url.startswith(PUBLIC_URL + "/") or url == PUBLIC_URL for url in urls), urls


def test_search_links_are_built_from_the_public_url(behind_proxy: Served) -> None:
    with httpx.Client(headers={**bearer(), **HOSTILE}, timeout=10) as client:
        bundle = client.get(f"http://127.0.0.1:{behind_proxy.port}/fhir/Account",
                            params={"_count": 1, "_after": "A1001"}).json()
    relations = {link["relation"]: link["url"] for link in bundle["link"]}
    assert set(relations) == {"self", "next", "previous"}
    assert relations["next"].startswith(f"{PUBLIC_URL}/Account?")
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{PUBLIC_URL}/Account/{entry['resource']['id']}"


# --- no page loads anything from another host -------------------------------------------

_REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']*)["']|url:\s*["']([^"']*)["']""")


@pytest.mark.parametrize("page", ["/fhir/docs", "/fhir/redoc"])
async def test_docs_pages_load_nothing_from_another_host(anon: httpx.AsyncClient,
                                                         page: str) -> None:
    response = await anon.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # Not one absolute URL: no CDN, no fonts, no validator badge, no favicon from elsewhere.
    assert not re.search(r"(?:https?:)?//[A-Za-z0-9]", html), html
    assert '"validatorUrl": null' in html or page.endswith("redoc")
    references = [a or b for a, b in _REFERENCE.findall(html)]
    assert len(references) >= 3, references  # script, stylesheet or spec, favicon
    for reference in references:
        asset = await anon.get(urljoin(f"http://facade.test{page}", reference))
        assert asset.status_code == 200, reference
        assert len(asset.content) > 100, reference


# --- proxy headers: believed from trusted proxies only ----------------------------------


@pytest.mark.parametrize(("trusted", "client_seen"), [
    ("127.0.0.1", "203.0.113.7"),
    ("127.0.0.0/8,::1", "203.0.113.7"),
    ("", "127.0.0.1"),  # none trusted (and uvicorn's FORWARDED_ALLOW_IPS=* is not read)
    ("10.0.0.0/8", "127.0.0.1"),  # the peer is no proxy of ours
])
def test_forwarded_for_is_believed_only_from_trusted_proxies(
        store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        trusted: str, client_seen: str) -> None:
    """The facade logs who was refused a token; behind a proxy that is the client the
    proxy names, unless the peer is not a proxy it was told to trust."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    port = free_port()
    app = make_app(store)
    config = server_config(app, _settings(port, facade_trusted_proxies=trusted))
    with Served(app, config=config), caplog.at_level(logging.INFO, "rcmflow.facade"):
        response = httpx.get(f"http://127.0.0.1:{port}/fhir/Account", timeout=10,
                             headers={"X-Forwarded-For": "203.0.113.7",
                                      "Authorization": "Bearer forged"})
        assert response.status_code == 401
    refusals = [r.getMessage() for r in caplog.records if "for a request from" in r.getMessage()]
    assert refusals == [f"facade: 401 for a request from {client_seen}: invalid token: "
                        "DecodeError"], caplog.text


def test_trusted_proxies_must_be_addresses() -> None:
    assert Settings(facade_trusted_proxies=" 10.0.0.1 , 192.168.0.0/16 ,").\
        facade_trusted_proxies == "10.0.0.1,192.168.0.0/16"
    with pytest.raises(ValidationError, match="not an address"):
        Settings(facade_trusted_proxies="proxy.internal")


# --- the facade refuses to start half-configured ----------------------------------------

_SECURE = {"facade_auth": "jwt", "facade_jwt_key": JWT_KEY, "facade_jwt_audience": JWT_AUDIENCE,
           "facade_public_url": PUBLIC_URL}


@pytest.mark.parametrize(("missing", "named"), [
    ("facade_public_url", "RCMFLOW_FACADE_PUBLIC_URL"),
    ("facade_jwt_audience", "RCMFLOW_FACADE_JWT_AUDIENCE"),
    ("facade_jwt_key", "RCMFLOW_FACADE_JWT_KEY"),
])
def test_auth_on_refuses_to_start_without(missing: str, named: str) -> None:
    check_settings(Settings(**_SECURE))
    with pytest.raises(ValueError, match=named):
        check_settings(Settings(**{**_SECURE, missing: None}))


@pytest.mark.parametrize(("env", "said"), [
    ({"RCMFLOW_FACADE_JWT_KEY": JWT_KEY, "RCMFLOW_FACADE_JWT_AUDIENCE": JWT_AUDIENCE},
     "RCMFLOW_FACADE_PUBLIC_URL is required when facade auth is on"),
    ({"RCMFLOW_FACADE_JWT_KEY": "7-bytes", "RCMFLOW_FACADE_JWT_AUDIENCE": JWT_AUDIENCE,
      "RCMFLOW_FACADE_PUBLIC_URL": PUBLIC_URL}, "HS256 needs at least 32"),
])
def test_rcmflow_facade_says_which_setting_is_missing(tmp_path: Path, env: dict[str, str],
                                                      said: str) -> None:
    """Exit 2 with the setting's name, before any broker is looked for."""
    result = CliRunner().invoke(rcmflow_cli, ["facade"], env={
        "RCMFLOW_DATA_DIR": str(tmp_path), "RCMFLOW_FACADE_AUTH": "jwt", "COLUMNS": "300",
        **env})
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_dev_links_default_to_the_facades_own_address() -> None:
    assert public_url(Settings(facade_auth="off", facade_port=9123)) == (
        "http://127.0.0.1:9123/fhir")
    assert public_url(Settings(facade_auth="off", facade_host="0.0.0.0",
                               facade_port=9123)) == "http://127.0.0.1:9123/fhir"
    assert public_url(Settings(facade_auth="off", facade_host="::1", facade_port=9123,
                               facade_base_path="/r4")) == "http://[::1]:9123/r4"
    assert public_url(Settings(facade_auth="off", facade_public_url=PUBLIC_URL)) == PUBLIC_URL


@pytest.mark.parametrize(("given", "kept"), [
    ("https://portal.example.org/fhir/", "https://portal.example.org/fhir"),
    ("http://10.0.0.5:8080/fhir", "http://10.0.0.5:8080/fhir"),
    ("portal.example.org/fhir", None),
    ("ftp://portal.example.org/fhir", None),
    ("https://user@portal.example.org/fhir", None),
    ("https://portal.example.org/fhir?x=1", None),
])
def test_the_public_url_is_an_absolute_http_url(given: str, kept: str | None) -> None:
    if kept is None:
        with pytest.raises(ValidationError, match="facade_public_url"):
            Settings(facade_public_url=given)
    else:
        assert Settings(facade_public_url=given).facade_public_url == kept
