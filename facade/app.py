"""The FastAPI app: FHIR R4 read, vread and search over the read model, as HAPI answers them.

Routes are generated per resource type from ``params.RESOURCES`` (so are the OpenAPI
parameters and the CapabilityStatement). Bodies are the stored JSON of each resource; a search
Bundle is assembled around them without decoding them again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response

from rcmflow.facade.auth import Action, Authenticator, Principal
from rcmflow.facade.docs import install_docs
from rcmflow.facade.errors import FHIR_JSON, install_handlers, outcome
from rcmflow.facade.exceptions import AuthError, FhirError, SearchError
from rcmflow.facade.feed import FeedStatus
from rcmflow.facade.params import RESOURCES, ResourceSpec, Search, SearchParam, parse_search
from rcmflow.facade.store import Row, Store
from rcmflow.runtime.metrics import (
    CONTENT_TYPE_LATEST,
    REQUEST_BUCKETS_S,
    Histogram,
    Metric,
    counter,
    gauge,
    histogram,
    new_registry,
    render,
)

__all__ = ["FacadeConfig", "create_app", "capability_statement", "FHIR_VERSION"]

log = logging.getLogger("rcmflow.facade")

FHIR_VERSION = "4.0.1"
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir",
                 "fhir+json"}
_ACCEPTABLE = _JSON_FORMATS | {"*/*", "application/*"}
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class FacadeConfig:
    #: The FHIR base clients reach, absolute (``https://portal.example.org/fhir``): every
    #: link, fullUrl and Content-Location is built from it, never from the request's Host
    #: or forwarded headers (a hostile Host would send clients, and their tokens, elsewhere).
    public_url: str
    base_path: str = "/fhir"
    count_default: int = 20
    count_max: int = 200
    request_bytes_max: int = 16 * 1024
    cors_origins: tuple[str, ...] = ("*",)


def create_app(store: Store, auth: Authenticator, config: FacadeConfig,
               feed: FeedStatus | None = None) -> FastAPI:
    base = config.base_path.rstrip("/")
    app = FastAPI(
        title="rcmflow FHIR facade",
        version="0.1.0",
        description="FHIR R4 (4.0.1) read API for patient portals: Account, Claim, "
        "ClaimResponse, PaymentReconciliation, built from rcmflow's account records.",
        openapi_url=f"{base}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    # A slash redirect's Location is built from the request's Host: none are made.
    app.router.redirect_slashes = False
    install_handlers(app)
    install_docs(app, base)
    # Bearer tokens travel in a header, never cookies: any origin may call, with no
    # credentials mode; the headers a portal needs for caching are exposed.
    app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                       allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Authorization", "Content-Type", "Accept", "Prefer",
                                      "If-None-Match"],
                       expose_headers=["ETag", "Last-Modified", "Location", "Content-Location"])
    api = _Api(store, auth, config)
    router = APIRouter(prefix=base)
    router.add_api_route("/metadata", api.metadata, methods=["GET"], tags=["conformance"],
                         summary="CapabilityStatement", openapi_extra=_extra(_FORMAT))
    for spec in RESOURCES.values():
        _add_routes(router, api, spec)
    app.include_router(router)
    app.add_api_route("/health", _health(store, feed, auth), methods=["GET"], tags=["ops"],
                      summary="Read model lag and size (JSON, not FHIR)")
    requests = Histogram(REQUEST_BUCKETS_S)
    app.add_middleware(_RequestTimer, requests=requests)
    app.add_api_route("/metrics", _metrics(store, feed, requests), methods=["GET"],
                      tags=["ops"], summary="Prometheus metrics")
    return app


class _RequestTimer:
    """Times every HTTP request by route template (``/fhir/Account/{id}``, never the raw
    path: ids are unbounded and an account number is PHI), method and status class. A
    request no route matched is ``unmatched``."""

    def __init__(self, app: Any, requests: Histogram) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.requests.observe(time.perf_counter() - started,
                                  (route, method, f"{status[0] // 100}xx"))


_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})


_FORMAT: list[dict[str, Any]] = [
    {"name": "_format", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "json (the only format served)"},
]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "FHIR resource or Bundle", "content": {FHIR_JSON: {}}},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    400: {"description": "OperationOutcome: a bad parameter value"},
    401: {"description": "OperationOutcome: no or invalid bearer token"},
    403: {"description": "OperationOutcome: the token grants no access to this type"},
    404: {"description": "OperationOutcome: unknown (or not yours) id"},
    406: {"description": "OperationOutcome: a format other than JSON was asked for"},
}


def _extra(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"parameters": parameters}


def _names(param: SearchParam) -> list[str]:
    """A parameter as a query names it: plain (unless it takes only a modifier) and with
    each modifier it takes."""
    plain = [] if param.identifier_system is not None else [param.name]
    return plain + [f"{param.name}:{m}" for m in param.modifiers]


def _search_parameters(spec: ResourceSpec) -> list[dict[str, Any]]:
    params = [{"name": name, "in": "query", "required": False, "schema": {"type": "string"},
               "description": f"{p.type}: {p.description}"} for p in spec.params
              for name in _names(p)]
    params += [
        {"name": "_count", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0}, "description": "page size (capped)"},
        {"name": "_after", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "page cursor (next link): matches after this id"},
        {"name": "_before", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "page cursor (previous link): matches before this id"},
        {"name": "_summary", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["count", "false"]}},
        {"name": "_total", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["none", "estimate", "accurate"]},
         "description": "Bundle.total: exact up to 10,000 matches unless accurate; none "
                        "leaves it out"},
    ]
    if spec.includes:
        params.append({"name": "_include", "in": "query", "required": False,
                       "schema": {"type": "string", "enum": list(spec.includes)}})
    params.append({"name": "Prefer", "in": "header", "required": False,
                   "schema": {"type": "string"}, "description": "handling=strict: unknown "
                   "parameters are a 400 instead of a warning"})
    return params + _FORMAT


def _add_routes(router: APIRouter, api: _Api, spec: ResourceSpec) -> None:
    t = spec.type
    tags: list[str | Enum] = [t]
    router.add_api_route(f"/{t}", api.search_get(spec), methods=["GET"],
                         summary=f"Search {t}", operation_id=f"search_{t}",
                         openapi_extra=_extra(_search_parameters(spec)), tags=tags,
                         responses=_RESPONSES)
    router.add_api_route(
        f"/{t}/_search", api.search_post(spec), methods=["POST"],
        summary=f"Search {t} (form body)", operation_id=f"search_post_{t}",
        openapi_extra={"parameters": _FORMAT, "requestBody": {"required": False, "content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
                name: {"type": "string"} for p in spec.params for name in _names(p)}}}}}},
        tags=tags, responses=_RESPONSES)
    router.add_api_route(f"/{t}/{{rid}}", api.read(spec), methods=["GET"],
                         summary=f"Read {t}", operation_id=f"read_{t}",
                         openapi_extra=_extra(_FORMAT), tags=tags, responses=_RESPONSES)
    router.add_api_route(f"/{t}/{{rid}}/_history/{{vid}}", api.vread(spec), methods=["GET"],
                         summary=f"Read {t} at a version (the current one is kept)",
                         operation_id=f"vread_{t}", openapi_extra=_extra(_FORMAT), tags=tags,
                         responses=_RESPONSES)


Handler = Callable[..., Awaitable[Response]]


class _Api:
    def __init__(self, store: Store, auth: Authenticator, config: FacadeConfig) -> None:
        self.store = store
        self.auth = auth
        self.config = config
        self.public_url = config.public_url.rstrip("/")

    # --- shared steps ---------------------------------------------------------------------

    def _negotiate(self, request: Request) -> None:
        fmt = request.query_params.get("_format")
        if fmt is not None and fmt.strip().lower() not in _JSON_FORMATS:
            raise FhirError(406, "only JSON is served (_format=json)")
        accept = request.headers.get("accept")
        if accept:
            types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
            if not types & _ACCEPTABLE:
                raise FhirError(406, "only application/fhir+json is served")

    def _principal(self, request: Request, action: Action, type_: str) -> Principal:
        try:
            principal = self.auth.principal(request.headers.get("authorization"))
        except AuthError as exc:
            # Who was refused, for an operator watching for token guessing: the peer as
            # uvicorn reports it (a trusted proxy's X-Forwarded-For, else the socket's).
            log.info("facade: %d for a request from %s: %s", exc.status,
                     request.client.host if request.client else "?", exc)
            headers = {"WWW-Authenticate": 'Bearer realm="fhir"'} if exc.status == 401 else {}
            raise FhirError(exc.status, str(exc), headers=headers) from exc
        if not principal.may(action, type_):
            raise FhirError(403, f"the token's scopes do not allow {action} of {type_}")
        return principal

    # --- interactions ---------------------------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        self._negotiate(request)
        doc = capability_statement(self.public_url, self.auth.enabled)
        return Response(orjson.dumps(doc), media_type=FHIR_JSON)

    def read(self, spec: ResourceSpec) -> Handler:
        async def read(request: Request, rid: str) -> Response:
            self._negotiate(request)
            principal = self._principal(request, "read", spec.type)
            return self._current(request, principal, spec.type, rid, None)
        return read

    def vread(self, spec: ResourceSpec) -> Handler:
        async def vread(request: Request, rid: str, vid: str) -> Response:
            self._negotiate(request)
            principal = self._principal(request, "read", spec.type)
            return self._current(request, principal, spec.type, rid, vid)
        return vread

    def _current(self, request: Request, principal: Principal, type_: str, rid: str,
                 vid: str | None) -> Response:
        row = self.store.read(type_, rid) if _is_id(rid) else None
        # Another patient's resource answers exactly as a missing one: ids can't be probed.
        if row is None or (principal.patient is not None and row.patient != principal.patient):
            raise FhirError(404, f"{type_}/{rid[:64]} is not known")
        if vid is not None and vid != str(row.version):
            raise FhirError(404, f"{type_}/{rid} has no version {vid[:20]} (only the current "
                            f"version, {row.version}, is kept)")
        etag = f'W/"{row.version}"'
        headers = {"ETag": etag}
        if row.last_updated:
            headers["Last-Modified"] = _http_date(row.last_updated)
        if _etag_matches(request.headers.get("if-none-match"), str(row.version)):
            return Response(status_code=304, headers=headers)
        headers["Content-Location"] = (
            f"{self.public_url}/{type_}/{rid}/_history/{row.version}")
        return Response(row.body, media_type=FHIR_JSON, headers=headers)

    def search_get(self, spec: ResourceSpec) -> Handler:
        async def search(request: Request) -> Response:
            return self._search(request, spec, list(request.query_params.multi_items()))
        return search

    def search_post(self, spec: ResourceSpec) -> Handler:
        async def search_post(request: Request) -> Response:
            kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            body = await _bounded_body(request, self.config.request_bytes_max)
            if body and kind != "application/x-www-form-urlencoded":
                raise FhirError(415, "_search takes application/x-www-form-urlencoded")
            try:
                form = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=64)
            except (UnicodeDecodeError, ValueError) as exc:
                raise FhirError(400, "the form body is not valid") from exc
            return self._search(request, spec, list(request.query_params.multi_items()) + form)
        return search_post

    def _search(self, request: Request, spec: ResourceSpec,
                items: list[tuple[str, str]]) -> Response:
        self._negotiate(request)
        principal = self._principal(request, "search", spec.type)
        strict = "handling=strict" in request.headers.get("prefer", "").replace(" ", "")
        try:
            search = parse_search(spec, items, strict=strict,
                                  count_default=self.config.count_default,
                                  count_max=self.config.count_max, patient=principal.patient)
        except SearchError as exc:
            raise FhirError(400, str(exc), exc.code) from exc
        total = None if search.total_max == 0 else self.store.count(search.query,
                                                                      search.total_max)
        rows: list[Row] = []
        more = False  # beyond this page, in the direction of travel
        if not search.summary_count:
            # One more than the page: whether a next (or previous) page exists.
            rows = self.store.search(search.query, limit=search.count + 1, after=search.after,
                                     before=search.before)
            more = len(rows) > search.count
            if more:
                rows = rows[1:] if search.before is not None else rows[:-1]
        included: list[Row] = []
        if search.include_request and rows and principal.may_see("Claim"):
            wanted = sorted({r.request for r in rows if r.request})
            included = [r for r in self.store.read_many("Claim", wanted)
                        if principal.patient is None or r.patient == principal.patient]
        return Response(self._bundle(spec, search, total, rows, included, more),
                        media_type=FHIR_JSON)

    def _bundle(self, spec: ResourceSpec, search: Search, total: int | None,
                rows: list[Row], included: list[Row], more: bool) -> bytes:
        base = self.public_url

        def link(relation: str, cursor: tuple[str, str] | None) -> dict[str, str]:
            query = [*search.used, ("_count", str(search.count))]
            if cursor is not None:
                query.append(cursor)
            return {"relation": relation, "url": f"{base}/{spec.type}?{urlencode(query)}"}

        here = (("_after", search.after) if search.after is not None
                else ("_before", search.before) if search.before is not None else None)
        links = [link("self", here)]
        if rows:
            # Paging back from a cursor, the pages after it exist; paging forward from one,
            # the pages before it do. ``more`` says whether the travel direction goes on.
            backwards = search.before is not None
            if backwards or more:
                links.append(link("next", ("_after", rows[-1].id)))
            if more if backwards else search.after is not None:
                links.append(link("previous", ("_before", rows[0].id)))
        head = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds")},
            "type": "searchset",
            "total": total,
            "link": links,
        }
        if total is None:  # more than Search.total_max: not counted
            del head["total"]
        entries = [_entry(base, row, b"match") for row in rows]
        entries += [_entry(base, row, b"include") for row in included]
        if search.ignored:
            warning = outcome(f"ignored unknown or unsupported parameters: "
                              f"{', '.join(search.ignored)}", "not-supported", "warning")
            # R4 wants a fullUrl on every searchset entry: the outcome has no server
            # identity, so a urn:uuid names it (HL7's validator errs on none).
            entries.append(b'{"fullUrl":"urn:uuid:' + str(uuid.uuid4()).encode()
                           + b'","resource":' + orjson.dumps(warning)
                           + b',"search":{"mode":"outcome"}}')
        doc = orjson.dumps(head)
        if not entries:
            return doc
        return doc[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def _entry(base: str, row: Row, mode: bytes) -> bytes:
    url = orjson.dumps(f"{base}/{row.type}/{row.id}")
    return (b'{"fullUrl":' + url + b',"resource":' + row.body + b',"search":{"mode":"'
            + mode + b'"}}')


def _is_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c in _ID_CHARS for c in value)


def _etag_matches(header: str | None, version: str) -> bool:
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == version:
            return True
    return False


def _http_date(instant: str) -> str:
    moment = datetime.strptime(instant, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise FhirError(413, f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FhirError(413, f"request body larger than {limit} bytes")
    return bytes(body)


def capability_statement(base_url: str, auth_enabled: bool) -> dict[str, Any]:
    """What this server does, generated from the same table the routes use."""
    resources = []
    for spec in RESOURCES.values():
        entry: dict[str, Any] = {
            "type": spec.type,
            "documentation": spec.documentation,
            "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
            "versioning": "versioned",
            "readHistory": False,
            "conditionalRead": "not-match",
            "searchParam": [{"name": p.name, "definition": p.definition, "type": p.type,
                             "documentation": p.description} for p in spec.params],
        }
        if spec.includes:
            entry["searchInclude"] = list(spec.includes)
        resources.append(entry)
    security: dict[str, Any] = {
        "cors": True,
        "description": (
            "Bearer JWT with SMART scopes (v1 .read, v2 .r to read by id, .s to search): "
            "system/* sees all; patient/* with a patient claim sees that patient's resources "
            "only (another patient's id answers 404). Other scopes grant nothing."
            if auth_enabled else "Authentication is OFF (development only)."),
    }
    if auth_enabled:
        security["service"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}]}]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-26",
        "publisher": "rcmflow",
        "kind": "instance",
        "software": {"name": "rcmflow FHIR facade", "version": "0.1.0"},
        "implementation": {"description": "rcmflow account state as FHIR R4",
                           "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", FHIR_JSON],
        "rest": [{
            "mode": "server",
            "security": security,
            "resource": resources,
            "searchParam": [
                {"name": "_count", "type": "number", "documentation": "page size"},
                {"name": "_after", "type": "string", "documentation": "page cursor (next)"},
                {"name": "_before", "type": "string", "documentation": "page cursor (previous)"},
                {"name": "_summary", "type": "token", "documentation": "count"},
                {"name": "_total", "type": "token", "documentation": "none | estimate "
                 "(exact up to 10,000 matches, else left out; the default) | accurate"},
            ],
        }],
    }


def _health(store: Store, feed: FeedStatus | None,
            auth: Authenticator) -> Callable[[], Awaitable[Response]]:
    async def health() -> Response:
        doc: dict[str, Any] = {"accounts": store.account_count(),
                               "invalid_snapshots": store.invalid_snapshots,
                               "auth": "jwt" if auth.enabled else "off"}
        status = 200
        if feed is None:
            doc["status"] = "static"
        else:
            lag = feed.lag()
            doc.update(lag_records=lag, positions=feed.positions_json(), error=feed.error,
                       seconds_since_apply=None if feed.last_applied_at_s is None
                       else round(time.time() - feed.last_applied_at_s, 3))
            if not feed.started or lag is None:
                doc["status"], status = "starting", 503
            else:
                doc["status"] = "ok" if lag == 0 else "catching_up"
        return Response(orjson.dumps(doc), status_code=status, media_type="application/json")
    return health


def _metrics(store: Store, feed: FeedStatus | None,
             requests: Histogram) -> Callable[[], Awaitable[Response]]:
    def families() -> list[Metric]:
        lag = feed.lag() if feed is not None else 0
        return [
            gauge("rcmflow_facade_lag_records", "rcm.accounts records not yet in the read "
                  "model (NaN: not yet known)", [({}, lag)]),
            gauge("rcmflow_facade_accounts", "accounts in the read model",
                  [({}, store.account_count())]),
            counter("rcmflow_facade_invalid_snapshots", "resources not served (invalid FHIR)",
                    [({}, store.invalid_snapshots)]),
            *store.metric_families(),
            histogram("rcmflow_facade_request_seconds", "HTTP requests by route template, "
                      "method and status class (2xx, 4xx, ...): how long the answer took",
                      ["route", "method", "code"], requests),
        ]

    registry = new_registry(families)

    async def metrics() -> Response:
        return Response(render(registry), media_type=CONTENT_TYPE_LATEST)
    return metrics
