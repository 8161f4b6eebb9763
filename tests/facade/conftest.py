"""Facade fixtures: a read model filled from real records, the app in-process and on a port.

Records come from the real core (``Processor`` over the demo events and factory events, on
``MemoryTables``): the heads and items, as bytes, exactly what rcm.accounts carries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome

from rcmflow.cli.demo import demo_events
from rcmflow.facade.app import FacadeConfig, create_app
from rcmflow.facade.auth import Authenticator
from rcmflow.facade.resources import validate
from rcmflow.facade.store import Store
from rcmflow.runtime.broker import free_port
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS
from tests.factories import adjudication, charge, event_doc, payment

JWT_KEY = "test-signing-key-of-enough-length-for-hs256"
JWT_AUDIENCE = "https://portal.example.org/fhir"
#: The configured public base of the in-process app: unlike the client's base_url
#: (http://facade.test), so a link built from the request would show.
PUBLIC_URL = "https://portal.example.org/fhir"
#: Extra accounts beyond the demo's, so paging has several pages.
EXTRA_ACCOUNTS = 23


def build_tables(docs: list[dict[str, Any]], tables: MemoryTables | None = None
                 ) -> MemoryTables:
    """The accounts table after ``docs`` (each applied, none refused), one event a batch
    as a worker may see them (each batch writes its head and the items it touched)."""
    tables = tables if tables is not None else MemoryTables()
    processor = Processor(load_chart())
    for n, doc in enumerate(docs):
        message = Message(EVENTS, 0, n, doc["account"].encode(), orjson.dumps(doc))
        result = processor.process([message], tables)
        assert result.counts.applied == 1, (doc, result.dlq)
        tables.write(result)
    return tables


def records(tables: MemoryTables) -> list[tuple[str, bytes | None]]:
    """The table's records as the feed hands them to the store: (key, value)."""
    return [(key.decode(), value) for (_, key), value in tables.accounts.items()]


def world_events() -> list[dict[str, Any]]:
    """The demo day, plus accounts B01.. with a charge, a submitted claim, a payer payment
    (with a PR adjustment) and a patient payment each, on different days."""
    docs = list(demo_events())
    for n in range(1, EXTRA_ACCOUNTS + 1):
        account = f"B{n:02d}"
        day = 1 + n % 25
        at = f"2026-10-{day:02d}T08:30:00-04:00"
        docs.append(charge(10_000 + n, account=account, occurred_at=at))
        docs.append(event_doc("claim_submitted", account, claim_id=f"K{n}",
                              total_charge_cents=10_000 + n, occurred_at=at,
                              dimensions={"entity": "01", "payer": "ACME",
                                          "payer_class": "COMMERCIAL"}))
        docs.append(adjudication(10_000 + n, 7_000, [("CO", "45", 2_000), ("PR", "2", 1_000 + n)],
                                 account=account, claim_id=f"K{n}", correlation_id=f"T{n}",
                                 occurred_at=f"2026-11-{day:02d}T10:00:00Z"))
        docs.append(payment(500 + n, account=account, occurred_at=f"2026-11-{day:02d}T12:00:00Z"))
    return docs


@pytest.fixture(scope="session")
def tables() -> MemoryTables:
    return build_tables(world_events())


@pytest.fixture(scope="session")
def snapshots(tables: MemoryTables) -> dict[str, dict[str, Any]]:
    """Account -> its head and items as one document (``layout.assemble``)."""
    return tables.views()


def filled_store(path: Path, tables: MemoryTables, **options: Any) -> Store:
    filled = Store(path, **options)
    held = records(tables)
    assert filled.apply(held, {0: len(held)}) == len(held)
    assert filled.invalid_snapshots == 0
    return filled


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory, tables: MemoryTables) -> Iterator[Store]:
    filled = filled_store(tmp_path_factory.mktemp("facade") / "read.sqlite", tables)
    yield filled
    filled.close()


def make_app(store: Store, *, auth: bool = True, public_url: str = PUBLIC_URL) -> FastAPI:
    authenticator = Authenticator(enabled=auth, key=JWT_KEY if auth else None,
                                  algorithm="HS256", audience=JWT_AUDIENCE)
    return create_app(store, authenticator, FacadeConfig(public_url=public_url, count_max=50))


@pytest.fixture(scope="session")
def app(store: Store) -> FastAPI:
    return make_app(store)


def token(*, scope: str = "system/*.read", patient: str | None = None, exp_s: float = 600,
          key: str = JWT_KEY, aud: str | None = JWT_AUDIENCE, **claims: Any) -> str:
    """A token as an identity provider issues it (``claims`` add or override; a claim
    given as None is left out)."""
    now = int(time.time())
    doc: dict[str, Any] = {"sub": "test", "scope": scope, "aud": aud, "iat": now,
                           "exp": now + exp_s, "patient": patient, **claims}
    return jwt.encode({k: v for k, v in doc.items() if v is not None}, key, algorithm="HS256")


def bearer(**kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**kwargs)}"}


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A system caller, in-process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://facade.test", headers=bearer()) as c:
        yield c


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """No token at all."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://facade.test") as c:
        yield c


class Served:
    """An app under a real uvicorn server on a loopback port, in a thread (``config``:
    uvicorn's settings as the facade makes them, instead of the plain ones)."""

    def __init__(self, app: FastAPI, *, port: int | None = None,
                 config: uvicorn.Config | None = None) -> None:
        self.port = config.port if config is not None else port or free_port()
        self.server = uvicorn.Server(config or uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start in 20 s"
            assert self.thread.is_alive(), "uvicorn exited at start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture(scope="session")
def served(store: Store) -> Iterator[Served]:
    """Real clients follow the links: the public URL is the server's own address."""
    port = free_port()
    app = make_app(store, public_url=f"http://127.0.0.1:{port}/fhir")
    with Served(app, port=port) as running:
        yield running


def fhir_body(response: httpx.Response) -> dict[str, Any]:
    """The body, checked: FHIR JSON content type and a valid R4 resource of its type.

    Bundles are checked entry by entry too (their resources and OperationOutcomes)."""
    assert response.headers["content-type"].startswith("application/fhir+json"), \
        response.headers.get("content-type")
    doc: dict[str, Any] = orjson.loads(response.content)
    check_resource(doc)
    return doc


def check_resource(doc: dict[str, Any]) -> None:
    kind = doc["resourceType"]
    if kind == "Bundle":
        Bundle.model_validate(doc)
        for entry in doc.get("entry", []):
            check_resource(entry["resource"])
    elif kind == "OperationOutcome":
        OperationOutcome.model_validate(doc)
    elif kind == "CapabilityStatement":
        CapabilityStatement.model_validate(doc)
    else:
        validate(doc)


def exact(response: httpx.Response) -> Any:
    """The body with JSON numbers as Decimal: money compared exactly, never as float."""
    import json

    return json.loads(response.content, parse_float=Decimal)


def dollars(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)
