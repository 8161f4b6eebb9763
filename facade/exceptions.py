"""Errors of the FHIR facade (each answers as an OperationOutcome)."""

from __future__ import annotations

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["SearchError", "FhirError", "AuthError", "StoreLocked", "ISSUE_CODES"]

#: OperationOutcome.issue.code by HTTP status, where the route does not say.
ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
               405: "not-supported", 406: "not-supported", 410: "deleted", 413: "too-long",
               415: "not-supported", 500: "exception", 503: "transient"}


class SearchError(RcmflowError, ValueError):
    """A parameter value the server cannot use: 400 with an OperationOutcome."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


class FhirError(RcmflowError):
    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or ISSUE_CODES.get(status, "processing")
        self.headers = headers or {}


class AuthError(RcmflowError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class StoreLocked(RcmflowError, RuntimeError):
    """Another process (another `rcmflow facade`) holds this read model."""
