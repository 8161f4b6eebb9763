"""What the cloud ERP adapters (netsuite, odoo, erpnext) share at the HTTP boundary.

- **Exact money on the wire.** ``dumps`` writes ``Decimal`` values as JSON number literals
  from their digits (``"1250.00"`` → ``1250.00``), never through float; responses are parsed
  with ``parse_float=Decimal``; the adapters convert with ``rcmflow.streams.money``
  (``cents_decimal`` out, ``number_cents`` in: exact, a fraction of a cent refused).
- **One sorting of HTTP trouble** (``check``): connect/read/write timeouts and connection
  errors, 5xx, 408, 425 and 429 are ``TransientError`` (retried by the runner); 401 and 403
  are ``AdapterConfigError`` (the connector exits 4, ``ExitCode.ERP_CONFIG``: retrying cannot
  fix a key); other 4xx
  are returned to the adapter, which reads the ERP's own error text and decides between a
  duplicate (look it up) and ``Rejected``.
- **Bounded**: every request has the client's timeout; a response body over
  ``RESPONSE_BYTES_MAX`` is refused (a misbehaving proxy cannot fill memory).
- **No PHI in logs**: the helpers log nothing; adapters log posting ids and codes only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import httpx

from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError
from rcmflow.streams.postings import PostingDelta

from .base import Outcome, post_each

__all__ = ["dumps", "loads", "check", "request_json", "make_client", "HttpErp",
           "RESPONSE_BYTES_MAX", "TRANSIENT_STATUS"]

#: Largest ERP answer read (a page of journal entries is far smaller).
RESPONSE_BYTES_MAX = 16 * 1024 * 1024
#: Statuses worth retrying: the ERP or a proxy in front of it is busy or down.
TRANSIENT_STATUS = frozenset({408, 425, 429})


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("non-finite Decimal")
        out.append(format(value, "f"))
    elif isinstance(value, bool) or value is None or isinstance(value, int | str):
        out.append(json.dumps(value))
    elif isinstance(value, float):
        raise TypeError("float in an ERP request: money is int cents or Decimal")
    elif isinstance(value, date):
        out.append(json.dumps(value.isoformat()))
    elif isinstance(value, Mapping):
        out.append("{")
        for n, (key, item) in enumerate(value.items()):
            if n:
                out.append(",")
            out.append(json.dumps(str(key)))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, Sequence):
        out.append("[")
        for n, item in enumerate(value):
            if n:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """JSON with Decimal as exact number literals; floats are refused."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def loads(data: bytes) -> Any:
    return json.loads(data, parse_float=Decimal) if data else None


def make_client(base_url: str, *, headers: dict[str, str], timeout_s: float,
                transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """One client per adapter: explicit timeout and pool bounds, no redirects followed."""
    return httpx.AsyncClient(
        base_url=base_url, headers={"Accept": "application/json", **headers},
        timeout=httpx.Timeout(timeout_s), transport=transport, follow_redirects=False,
        limits=httpx.Limits(max_connections=8, max_keepalive_connections=4))


class HttpErp:
    """The adapter life cycle the cloud ERPs share: ``open`` makes the HTTP client and does no
    I/O; what the ERP must provide (chart, journal, duplicate-guard field) is read by
    ``_ready`` on first use, inside the runner's retries (an ERP down when the connector
    starts is an outage, not a crash); ``post_batch`` posts one entry per call."""

    batch_max: int

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        self._client_args = (base_url, headers, timeout_s, transport)
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        base_url, headers, timeout_s, transport = self._client_args
        self.client = make_client(base_url, headers=headers, timeout_s=timeout_s,
                                  transport=transport)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def post_batch(self, deltas: Sequence[PostingDelta]) -> list[Outcome]:
        assert len(deltas) <= self.batch_max
        await self._ready()
        return await post_each(self, deltas)

    async def _ready(self) -> None:
        raise NotImplementedError

    async def post(self, delta: PostingDelta) -> Outcome:
        raise NotImplementedError


def check(response: httpx.Response, what: str) -> httpx.Response:
    """Raise for statuses no adapter handles itself; return the others (2xx and 4xx)."""
    status = response.status_code
    if status in (401, 403):
        raise AdapterConfigError(f"{what}: HTTP {status}: the ERP refused the credentials "
                                 f"or their permissions ({_short(response)})")
    if status >= 500 or status in TRANSIENT_STATUS:
        raise TransientError(f"{what}: HTTP {status} ({_short(response)})")
    if len(response.content) > RESPONSE_BYTES_MAX:
        raise TransientError(f"{what}: answer over {RESPONSE_BYTES_MAX} bytes")
    return response


def _short(response: httpx.Response) -> str:
    text = response.text[:200].replace("\n", " ")
    return text or response.reason_phrase


async def request_json(client: httpx.AsyncClient, method: str, url: str, what: str, *,
                       body: Any = None, params: Mapping[str, str | int] | None = None,
                       headers: Mapping[str, str] | None = None
                       ) -> tuple[httpx.Response, Any]:
    """Send (Decimal-exact JSON body), sort transport trouble; returns (response, parsed)."""
    content = dumps(body) if body is not None else None
    send_headers = dict(headers or {})
    if content is not None:
        send_headers["Content-Type"] = "application/json; charset=utf-8"
    try:
        response = await client.request(method, url, content=content, params=params,
                                        headers=send_headers)
    except httpx.TimeoutException as exc:
        raise TransientError(f"{what}: timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    check(response, what)
    try:
        parsed = loads(response.content)
    except ValueError:
        parsed = None  # HTML error pages from proxies; callers use the status
    return response, parsed
