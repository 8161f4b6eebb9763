"""End to end: events on the real broker -> a real worker -> rcm.accounts -> the facade."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from rcmflow.facade.server import build_app
from rcmflow.runtime.kafka_io import publish
from rcmflow.runtime.settings import Settings
from rcmflow.streams.topics import EVENTS
from tests.conftest import Broker, Workers, wait_until
from tests.facade.conftest import JWT_AUDIENCE, PUBLIC_URL, Served, bearer, check_resource, token
from tests.factories import charge, payment

pytestmark = pytest.mark.broker

#: The read-your-writes delay docs/facade.md documents once the worker is running: the worker's
#: batch wait + its produce, the facade's fetch wait (100 ms) and one store transaction.
READ_YOUR_WRITES_S = 5.0
#: The worker's first group join takes ~5 s (half the session timeout) on top of start-up.
FIRST_EVENT_S = 60.0


def _account(client: httpx.Client, account: str) -> dict[str, Any] | None:
    response = client.get(f"/Account/{account}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = json.loads(response.content, parse_float=Decimal)
    check_resource(json.loads(response.content))
    return doc


def _total(doc: dict[str, Any]) -> Decimal:
    for ext in doc["extension"]:
        parts = {p["url"]: p for p in ext["extension"]}
        if "aggregate" not in parts:
            return parts["amount"]["valueMoney"]["value"]  # type: ignore[no-any-return]
    raise AssertionError("no total balance")


def test_events_through_worker_show_in_facade(broker: Broker, workers: Workers,
                                              tmp_path: Path) -> None:
    worker = workers.start("w1")
    settings = Settings(broker=broker.url, data_dir=tmp_path / "facade-data",
                        facade_jwt_key="e2e-key-of-enough-length-for-hs256-signing",
                        facade_jwt_audience=JWT_AUDIENCE, facade_public_url=PUBLIC_URL)
    # The JWT key of the served app differs from the fixtures' key: sign with it.
    app = build_app(settings, broker.connection, source="e2e")
    key = "e2e-key-of-enough-length-for-hs256-signing"
    with Served(app) as served, httpx.Client(
            base_url=served.base, timeout=5,
            headers={"Authorization": f"Bearer {token(key=key)}"}) as client:
        assert client.get("/Account/E2E1",
                          headers=bearer()).status_code == 401  # the fixtures' key is wrong
        asyncio.run(publish(broker.connection, [
            (EVENTS, b"E2E1", json.dumps(charge(12_345, account="E2E1")).encode())]))
        wait_until(lambda: _account(client, "E2E1") is not None, FIRST_EVENT_S,
                   "the first snapshot in the facade", worker.log_tail)
        first = _account(client, "E2E1")
        assert first is not None
        assert first["meta"]["versionId"] == "1" and _total(first) == Decimal("123.45")

        sent_at = time.monotonic()
        asyncio.run(publish(broker.connection, [
            (EVENTS, b"E2E1", json.dumps(payment(2_000, account="E2E1")).encode())]))

        def updated() -> bool:
            doc = _account(client, "E2E1")
            return doc is not None and doc["meta"]["versionId"] == "2"

        wait_until(updated, 30, "version 2 in the facade", worker.log_tail)
        delay_s = time.monotonic() - sent_at
        second = _account(client, "E2E1")
        assert second is not None and _total(second) == Decimal("103.45")
        assert client.get("/Account/E2E1", headers={"If-None-Match": 'W/"1"'}).status_code == 200
        health = httpx.get(served.base.rsplit("/fhir", 1)[0] + "/health").json()
        assert health["status"] == "ok" and health["lag_records"] == 0, health
        print(f"read-your-writes delay {delay_s:.2f} s")
        assert delay_s < READ_YOUR_WRITES_S
