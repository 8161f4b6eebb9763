"""`rcmflow ops`: the operators' site — server-rendered pages over the same functions as the
CLI (ops/accounts.py, ops/workqueue.py, ops/trace.py, ops/lag.py), separate from the patient
facade and its tokens.

Access: a login (ops/users.py) puts a signed session in an HttpOnly, SameSite=Strict cookie
(a JWT: name, role, expiry, and the token every form must carry back, so another site cannot
post as the user). A **viewer** reads; an **operator** also sees payloads and replays and
resolves items. The server checks the role of every action (a viewer's POST is 403, however it
was made), and logs each action with the user (logger ``rcmflow.ops``).
"""

from __future__ import annotations

import hmac
import html
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jwt
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from rcmflow.ops.users import User, Users
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.money import cents_for_people

__all__ = ["SiteConfig", "create_site", "COOKIE"]

log = logging.getLogger("rcmflow.ops")

COOKIE = "rcmflow_ops"
_FORM_BYTES_MAX = 16 * 1024  # a login or an action's note; more is refused (413)
_TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_TEMPLATES.env.filters["money"] = cents_for_people


@dataclass(frozen=True)
class SiteConfig:
    kafka: KafkaConnection
    users: Users
    session_key: bytes
    session_s: int
    app_id: str  # the worker's application id (its topics' names and dedup)
    #: The processes' /metrics URLs the Health view reads (name -> URL).
    metrics: dict[str, str]


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str


def create_site(config: SiteConfig) -> FastAPI:
    site = FastAPI(title="rcmflow operations", docs_url=None, redoc_url=None,
                   openapi_url=None)
    site.state.config = config

    @site.middleware("http")
    async def no_cache(request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        # Operator pages hold account data: never in a shared cache, never framed.
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @site.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request) -> Response:
        return _page(request, "login.html", None, error=None)

    @site.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        name, password = form.get("username", ""), form.get("password", "")
        user = config.users.login(name, password)
        if user is None:
            log.info("ops: failed login from %s", _client(request))
            return _page(request, "login.html", None, error="Wrong name or password.",
                         status_code=401)
        log.info("ops: %s (%s) logged in from %s", user.name, user.role, _client(request))
        response = RedirectResponse("/", status_code=303)
        token = jwt.encode({"sub": user.name, "role": user.role, "csrf": secrets.token_hex(16),
                            "exp": int(time.time()) + config.session_s},
                           config.session_key, algorithm="HS256")
        response.set_cookie(COOKIE, token, max_age=config.session_s, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @site.post("/logout")
    async def logout(request: Request) -> Response:
        session = _session(request)
        if session is not None:
            await _checked_form(request, session)
            log.info("ops: %s logged out", session.user.name)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @site.get("/", response_class=HTMLResponse)
    async def health(request: Request) -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.health import health_view

        view = await health_view(config.kafka, config.metrics)
        return _page(request, "health.html", session, view=view)

    @site.get("/accounts", response_class=HTMLResponse)
    async def account(request: Request, account: str = "") -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.accounts import account_view

        view = await account_view(config.kafka, account.strip()) if account.strip() else None
        status = 404 if account.strip() and view is None else 200
        return _page(request, "account.html", session, account=account.strip(), view=view,
                     status_code=status)

    @site.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> Response:
        return HTMLResponse(f"<!doctype html><title>refused</title><p>{exc.status}: "
                            f"{html.escape(exc.reason)}</p>", status_code=exc.status)

    return site


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def _session(request: Request) -> Session | None:
    config: SiteConfig = request.app.state.config
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        claims = jwt.decode(token, config.session_key, algorithms=["HS256"],
                            options={"require": ["exp", "sub", "role", "csrf"]})
    except jwt.PyJWTError:
        return None
    # The role is read from the users file at each request: a user removed or made a viewer
    # loses their rights at once, not when the cookie expires.
    role = config.users.names().get(str(claims["sub"]))
    if role is None:
        return None
    return Session(User(str(claims["sub"]), role), str(claims["csrf"]))


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _FORM_BYTES_MAX:
        raise _Refused(413, f"a form is at most {_FORM_BYTES_MAX} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


async def _checked_form(request: Request, session: Session) -> dict[str, str]:
    """The form, if it carries the session's token (else 403: another site's post)."""
    form = await _form(request)
    if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
        raise _Refused(403, "the form's token does not match the session: reload the page")
    return form


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _to_login(request: Request) -> Response:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def _page(request: Request, template: str, session: Session | None, *,
          status_code: int = 200, **context: Any) -> Response:
    return _TEMPLATES.TemplateResponse(request, template, {
        "session": session, "user": session.user if session else None, **context},
        status_code=status_code)
