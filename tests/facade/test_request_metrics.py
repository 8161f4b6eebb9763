"""The facade's request latency by route: the route's template, never the raw path."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from rcmflow.facade.store import Store
from tests.facade.conftest import bearer, make_app


def _counts(text: str) -> dict[tuple[str, str, str], float]:
    return {(s.labels["route"], s.labels["method"], s.labels["code"]): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "rcmflow_facade_request_seconds_count"}


async def test_requests_are_timed_by_route_template(store: Store) -> None:
    app: FastAPI = make_app(store)  # its own app: the counts start at zero
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://facade.test", headers=bearer()) as client:
        before = _counts((await client.get("/metrics")).text)
        assert before == {}
        for account in ("B01", "B02", "NOPE-1"):
            await client.get(f"/fhir/Account/{account}")
        await client.get("/fhir/Account", params={"_count": 2})
        await client.get("/no/such/path/B03")
        text = (await client.get("/metrics")).text
    counts = _counts(text)
    assert counts[("/fhir/Account/{rid}", "GET", "2xx")] == 2
    assert counts[("/fhir/Account/{rid}", "GET", "4xx")] == 1
    assert counts[("/fhir/Account", "GET", "2xx")] == 1
    assert counts[("unmatched", "GET", "4xx")] == 1
    # No account number (PHI, unbounded) reaches a label.
    assert not any(a in text for a in ("B01", "B02", "NOPE-1", "B03"))
