"""Bearer-token access control (SMART on FHIR scopes in a signed JWT).

- ``system/*.read`` (or ``system/<Type>.read``, SMART v2 ``.rs``): an operator or back-end
  system; sees every resource.
- ``patient/*.read`` (or per type) with a ``patient`` claim: sees only that patient's
  resources. Searches are narrowed to them; reading another patient's resource answers 404,
  exactly as for an id that does not exist, so ids cannot be probed.
- No token, a bad signature, an expired token: 401. A valid token without a scope for the
  type asked: 403.

Scopes are parsed exactly (``parse_scope``), SMART App Launch v1 and v2:

- v1 ``<context>/<Type|*>.<read|write|*>``; ``read`` and ``*`` grant read and search.
- v2 ``<context>/<Type|*>.<c?r?u?d?s?>`` (letters in that order, at least one): ``r`` grants
  read and vread by id, ``s`` grants search; ``c``/``u``/``d`` grant nothing (read-only API).
- ``<context>`` is ``system`` or ``patient``; ``user/`` scopes are valid but grant nothing
  here (the facade has no per-user rules to apply).
- v2 granular scopes (``patient/Observation.rs?category=...``) narrow access in ways the
  facade does not apply: they grant nothing rather than the whole type.
- Any other string (``openid``, ``launch/patient``, ``system/*.rubbish``, ``System/*.read``,
  ``patient/*.sr``) is ignored, as SMART asks of scopes a server does not understand: it never
  grants access, and a token with nothing else is refused (403).

Tokens (``Authenticator``): the signature is checked with the configured key, an HMAC secret
(HS256/384/512, at least as long as the hash: RFC 7518 §3.2) or a PEM public key
(RS256/ES256). ``exp`` and ``aud`` (the configured audience) are required; a token may live at
most ``lifetime_max_s`` (``exp - iat``, or ``exp - now`` without ``iat``), plus the leeway;
``exp``/``nbf``/``iat`` are checked with ``leeway_s`` of clock skew (at most 300 s).
``RCMFLOW_FACADE_AUTH=off`` (dev only) lets every request through as a system caller.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from rcmflow.facade.exceptions import AuthError

__all__ = ["Principal", "Authenticator", "Scope", "parse_scope", "SYSTEM",
           "LEEWAY_MAX_S", "HMAC_KEY_BYTES_MIN"]

#: Clock skew tolerated on exp/nbf/iat at most: more would keep a revoked session alive.
LEEWAY_MAX_S = 300.0
#: RFC 7518 §3.2: an HMAC key at least as long as the hash output.
HMAC_KEY_BYTES_MIN = {"HS256": 32, "HS384": 48, "HS512": 64}

Action = Literal["read", "search"]

# SMART App Launch scopes: context, resource type (or *), then v1 or v2 permissions.
# A granular v2 scope (?param=value) is matched so it can be refused, not widened.
_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})\."
    r"(?:(?P<v1>read|write|\*)|(?P<v2>(?=[cruds])c?r?u?d?s?))(?P<query>\?\S*)?")


@dataclass(frozen=True)
class Scope:
    context: Literal["patient", "user", "system"]
    type: str
    #: Read and vread by id (v1 read/*, v2 r).
    read: bool
    #: Search (v1 read/*, v2 s).
    search: bool


def parse_scope(text: str) -> Scope | None:
    """The scope ``text`` grants on this read-only API, or None: not a SMART resource scope
    (ignored), or one that narrows what it grants in a way the facade does not apply."""
    m = _SCOPE.fullmatch(text)
    if m is None or m["query"] is not None:
        return None
    context: Any = m["context"]
    if m["v1"] is not None:
        grants = m["v1"] in ("read", "*")
        return Scope(context, m["type"], grants, grants)
    letters = m["v2"]
    return Scope(context, m["type"], "r" in letters, "s" in letters)


@dataclass(frozen=True)
class Principal:
    #: None: a system caller (all patients); else the only patient it may see.
    patient: str | None
    #: Resource types it may read by id ("*": all).
    read_types: frozenset[str]
    #: Resource types it may search ("*": all).
    search_types: frozenset[str]

    def may(self, action: Action, type_: str) -> bool:
        types = self.read_types if action == "read" else self.search_types
        return "*" in types or type_ in types

    def may_see(self, type_: str) -> bool:
        """Either action: what an ``_include`` of this type needs."""
        return self.may("read", type_) or self.may("search", type_)


SYSTEM = Principal(None, frozenset({"*"}), frozenset({"*"}))


def _grants(scopes: list[str], context: str) -> tuple[frozenset[str], frozenset[str]]:
    """(types readable, types searchable) by the scopes of ``context``."""
    read, search = set(), set()
    for text in scopes:
        scope = parse_scope(text)
        if scope is None or scope.context != context:
            continue
        if scope.read:
            read.add(scope.type)
        if scope.search:
            search.add(scope.type)
    return frozenset(read), frozenset(search)


class Authenticator:
    """Checks bearer tokens. Raises ValueError at construction for a setting that would
    accept forged or foreign tokens (auth on without a key, an audience, or with a short
    HMAC key or a leeway past ``LEEWAY_MAX_S``): the facade refuses to start."""

    def __init__(self, *, enabled: bool, key: str | None, algorithm: str,
                 audience: str | None = None, leeway_s: float = 30.0,
                 lifetime_max_s: float = 3600.0) -> None:
        if not 0 <= leeway_s <= LEEWAY_MAX_S:
            raise ValueError(f"RCMFLOW_FACADE_JWT_LEEWAY_S must be 0 to {LEEWAY_MAX_S:g} s, "
                             f"not {leeway_s:g}")
        if lifetime_max_s <= 0:
            raise ValueError("RCMFLOW_FACADE_JWT_LIFETIME_MAX_S must be positive")
        if enabled:
            if not key:
                raise ValueError("RCMFLOW_FACADE_JWT_KEY is required when facade auth is on")
            if not audience:
                raise ValueError(
                    "RCMFLOW_FACADE_JWT_AUDIENCE is required when facade auth is on: tokens "
                    "must name this facade in `aud` (else a token the identity provider "
                    "issued for another service would be accepted)")
            shortest = HMAC_KEY_BYTES_MIN.get(algorithm)
            if shortest is not None and len(key.encode()) < shortest:
                raise ValueError(
                    f"RCMFLOW_FACADE_JWT_KEY is {len(key.encode())} bytes: {algorithm} needs "
                    f"at least {shortest} (RFC 7518 §3.2); e.g. `openssl rand -hex 32`")
        self.enabled = enabled
        self.key = key or ""
        self.algorithm = algorithm
        self.audience = audience
        self.leeway_s = leeway_s
        self.lifetime_max_s = lifetime_max_s

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
                options={"require": ["exp", "aud"], "verify_aud": True})
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"invalid token: {type(exc).__name__}") from exc
        except (OverflowError, ValueError, TypeError) as exc:
            # PyJWT lets int() of an infinite or absurd exp/iat through (1e400 parses as inf).
            raise AuthError(401, "invalid token: an unusable exp, nbf or iat") from exc
        self._check_lifetime(claims)
        raw_scope = claims.get("scope", "")
        scopes = raw_scope.split() if isinstance(raw_scope, str) else []
        read, search = _grants(scopes, "system")
        if read or search:
            return Principal(None, read, search)
        read, search = _grants(scopes, "patient")
        patient = claims.get("patient")
        if (read or search) and isinstance(patient, str) and patient:
            return Principal(patient, read, search)
        raise AuthError(403, "the token grants no system/*.read, nor patient/*.read with a "
                             "patient claim")

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """A token valid for longer than the longest lifetime is refused: a leaked one
        would open the portal for that long (``exp`` 1e30: for ever)."""
        exp, iat = claims["exp"], claims.get("iat")
        start = iat if isinstance(iat, int | float) and not isinstance(iat, bool) \
            else time.time()
        if not isinstance(exp, int | float) or isinstance(exp, bool) \
                or exp - start > self.lifetime_max_s + self.leeway_s:
            raise AuthError(401, f"invalid token: it lives longer than "
                                 f"{self.lifetime_max_s:g} s (exp - iat)")
