"""Every error is an OperationOutcome with the right status, FastAPI's own ones included.

One exception type (``FhirError``) for the routes; handlers turn Starlette's 404/405,
request validation (422 in FastAPI, 400 in FHIR) and any unexpected exception into
OperationOutcomes too. Messages never carry request values beyond short parameter names:
patient data stays out of error bodies and logs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from rcmflow.facade.exceptions import ISSUE_CODES, FhirError

__all__ = ["FHIR_JSON", "outcome", "outcome_response", "install_handlers"]

log = logging.getLogger("rcmflow.facade")

FHIR_JSON = "application/fhir+json"


def outcome(message: str, code: str, severity: str = "error") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": message}]}


def outcome_response(status: int, message: str, code: str | None = None,
                     headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps(outcome(message, code or ISSUE_CODES.get(status, "processing")))
    return Response(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def install_handlers(app: FastAPI) -> None:
    async def fhir_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FhirError)
        return outcome_response(exc.status, str(exc), exc.code, exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = {404: "no such endpoint", 405: "method not allowed here"}.get(
            exc.status_code, str(exc.detail))
        return outcome_response(exc.status_code, message, headers=exc.headers)

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        where = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
        return outcome_response(400, f"invalid request: {', '.join(where)[:200]}")

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("facade: unexpected error on %s %s", request.method, request.url.path)
        return outcome_response(500, "internal error")

    app.add_exception_handler(FhirError, fhir_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected)
