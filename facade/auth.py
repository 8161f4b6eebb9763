"""Bearer-token access control (SMART on FHIR scopes in a signed JWT).

- ``system/*.read`` (or ``system/<Type>.read``, SMART v2 ``.rs``): an operator or back-end
  system; sees every resource.
- ``patient/*.read`` (or per type) with a ``patient`` claim: sees only that patient's
  resources. Searches are narrowed to them; reading another patient's resource answers 404,
  exactly as for an id that does not exist, so ids cannot be probed.
- No token, a bad signature, an expired token: 401. A valid token without a scope for the
  type asked: 403.

The signature is checked with the configured key: an HMAC secret (HS256) or a PEM public key
(RS256/ES256). ``exp`` is required. ``RCMFLOW_FACADE_AUTH=off`` (dev only) lets every
request through as a system caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt

__all__ = ["Principal", "AuthError", "Authenticator", "SYSTEM"]


@dataclass(frozen=True)
class Principal:
    #: None: a system caller (all patients); else the only patient it may see.
    patient: str | None
    #: Resource types it may read ("*": all).
    types: frozenset[str]

    def may_read(self, type_: str) -> bool:
        return "*" in self.types or type_ in self.types


SYSTEM = Principal(None, frozenset({"*"}))


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _scope_types(scopes: list[str], context: str) -> frozenset[str]:
    """Types the ``context/<Type>.read`` scopes (v1 ``.read``, v2 ``.r``/``.rs``) grant."""
    types = set()
    for scope in scopes:
        ctx, _, rest = scope.partition("/")
        type_, _, access = rest.partition(".")
        if ctx == context and type_ and (access == "read" or access.startswith("r")):
            types.add(type_)
    return frozenset(types)


class Authenticator:
    def __init__(self, *, enabled: bool, key: str | None, algorithm: str,
                 audience: str | None = None, leeway_s: float = 30.0) -> None:
        if enabled and not key:
            raise ValueError("RCMFLOW_FACADE_JWT_KEY is required when facade auth is on")
        self.enabled = enabled
        self.key = key or ""
        self.algorithm = algorithm
        self.audience = audience
        self.leeway_s = leeway_s

    def principal(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return SYSTEM
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError(401, "a Bearer token is required")
        token = authorization[7:].strip()
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[self.algorithm], audience=self.audience,
                leeway=self.leeway_s,
                options={"require": ["exp"], "verify_aud": self.audience is not None})
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"invalid token: {type(exc).__name__}") from exc
        raw_scope = claims.get("scope", "")
        scopes = raw_scope.split() if isinstance(raw_scope, str) else []
        system = _scope_types(scopes, "system")
        if system:
            return Principal(None, system)
        patient_types = _scope_types(scopes, "patient")
        patient = claims.get("patient")
        if patient_types and isinstance(patient, str) and patient:
            return Principal(patient, patient_types)
        raise AuthError(403, "the token grants no system/*.read, nor patient/*.read with a "
                             "patient claim")
