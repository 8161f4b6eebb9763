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

import asyncio
import hmac
import html
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jwt
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from rcmflow.ops.durations import moment
from rcmflow.ops.exceptions import NoSuchItem, RefundRefused, ReplayRefused
from rcmflow.ops.items import STATE_FILTERS, Filters
from rcmflow.ops.users import User, Users
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.denial_routing import DenialRouting, load_denial_routing
from rcmflow.streams.money import cents_for_people
from rcmflow.streams.refund_policy import RefundPolicy, load_refund_policy

__all__ = ["SiteConfig", "create_site", "COOKIE"]

log = logging.getLogger("rcmflow.ops")

COOKIE = "rcmflow_ops"
_FORM_BYTES_MAX = 16 * 1024  # a login or an action's note; more is refused (413)
_PAGE_ROWS = 50
#: How long a replay from the page waits for the worker's outcome (then: pending, shown
#: when the item is next opened).
_REPLAY_WAIT_S = 10.0
_ACTIONS = ("assign", "replay", "resolve")
_TRACE_ID_CHARS_MAX = 200
#: Denials listed on the page (the figures count them all; `rcmflow denials` lists all).
_DENIAL_ROWS_MAX = 500
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
    #: Prometheus' HTTP API for the Health view's charts (None: current values only).
    prometheus_url: str | None = None
    #: The last reconcile's metrics file (`rcmflow reconcile` writes it).
    reconcile_file: Path | None = None
    #: The refund approval policy (None: the one shipped with rcmflow).
    refund_policy: RefundPolicy | None = None
    #: The denial routing table (None: the one shipped with rcmflow).
    denial_routing: DenialRouting | None = None


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
    async def health(request: Request, window: str = "1h") -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.charts import WINDOWS, applied_events, charts
        from rcmflow.ops.health import health_view

        if window not in WINDOWS:
            raise _Refused(400, f"window: one of {', '.join(WINDOWS)}")
        view = await health_view(config.kafka, config.metrics, app_id=config.app_id)
        drawn, applied = ([], None) if config.prometheus_url is None else await asyncio.gather(
            charts(config.prometheus_url, window), applied_events(config.prometheus_url))
        from rcmflow.audit.reconcile_metrics import read_last_run

        last = read_last_run(config.reconcile_file) if config.reconcile_file else None
        return _page(request, "health.html", session, view=view, charts=drawn,
                     applied=applied, window=window, windows=list(WINDOWS),
                     prometheus=config.prometheus_url, reconcile=last)

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

    @site.get("/trace", response_class=HTMLResponse)
    async def trace_page(request: Request, id: str = "", since: str = "7d") -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.trace import parse_since, trace

        query = id.strip()[:_TRACE_ID_CHARS_MAX]
        try:
            start = parse_since(since)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        found = await trace(config.kafka, query, app_id=config.app_id, since=start) \
            if query else None
        return _page(request, "trace.html", session, query=query, since=since, found=found,
                     status_code=404 if found is not None and not found.found else 200)

    @site.get("/queue", response_class=HTMLResponse)
    async def queue(request: Request) -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.workqueue import QueueCursor, page

        asked = _asked(request)
        try:
            filters = _filters(asked)
            after = QueueCursor.decode(asked["after"]) if "after" in asked else None
        except ValueError as exc:  # BadMoment, BadCursor
            raise _Refused(400, str(exc)) from None
        items, following = await page(config.kafka, filters, limit=_PAGE_ROWS, after=after)
        more = {k: v for k, v in asked.items() if k != "after"}
        return _page(request, "queue.html", session, items=items, asked=asked,
                     states=STATE_FILTERS, next_after=following.encode() if following else None,
                     more=more)

    @site.get("/queue/summary", response_class=HTMLResponse)
    async def queue_summary(request: Request) -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.workqueue import every_item

        asked = _asked(request)
        try:
            filters = _filters(asked)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        summary = summarize(await every_item(config.kafka, filters))
        return _page(request, "summary.html", session, summary=summary, asked=asked)

    @site.get("/queue/{dlq_id}", response_class=HTMLResponse)
    async def queue_item(request: Request, dlq_id: str) -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.workqueue import show

        try:
            item = await show(config.kafka, dlq_id)
        except NoSuchItem as exc:
            raise _Refused(404, str(exc)) from None
        if not session.user.can_act:  # a viewer reads what failed, not the input (PHI)
            item = {k: v for k, v in item.items() if k != "payload"}
        return _page(request, "item.html", session, item=item)

    @site.post("/queue/{dlq_id}/{action}")
    async def act(request: Request, dlq_id: str, action: str) -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        form = await _checked_form(request, session)
        user = session.user
        if action not in _ACTIONS:
            raise _Refused(404, f"no action {action!r}")
        if not user.can_act:
            log.warning("ops: %s (%s) refused: %s %s", user.name, user.role, action, dlq_id)
            raise _Refused(403, f"{action} needs the operator role")
        from rcmflow.ops import workqueue

        note = form.get("note", "").strip()
        log.info("ops: %s (%s) %s %s", user.name, user.role, action, dlq_id)
        try:
            if action == "replay":
                await workqueue.replay(config.kafka, dlq_id, user=user.name,
                                       app_id=config.app_id, note=note, wait_s=_REPLAY_WAIT_S)
            elif action == "resolve":
                await workqueue.resolve(config.kafka, dlq_id, user=user.name, note=note,
                                        app_id=config.app_id, wait_s=_REPLAY_WAIT_S)
            else:
                await workqueue.assign(config.kafka, dlq_id, user=user.name,
                                       assignee=user.name, note=note)
        except NoSuchItem as exc:
            raise _Refused(404, str(exc)) from None
        except ReplayRefused as exc:
            raise _Refused(409, str(exc)) from None
        return RedirectResponse(f"/queue/{quote(dlq_id)}", status_code=303)

    @site.get("/refunds", response_class=HTMLResponse)
    async def refunds(request: Request, state: str = "pending") -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.refunds import age, every_request, is_overdue

        if state not in ("pending", "posted", "rejected", "all"):
            raise _Refused(400, f"state {state!r}: one of pending, posted, rejected, all")
        policy = config.refund_policy or load_refund_policy()
        rows = [{**r, "age": str(age(r)).split(".")[0], "overdue": is_overdue(r, policy)}
                for r in await every_request(config.kafka)
                if state == "all" or r["state"] == state]
        return _page(request, "refunds.html", session, rows=rows, state=state)

    @site.get("/denials", response_class=HTMLResponse)
    async def denials(request: Request, state: str = "open", payer: str = "",
                      category: str = "") -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.denials import STATES, every_denial, matches, routed, summary

        if state not in ("open", "all", *STATES):
            raise _Refused(400, f"state {state!r}: one of open, all, {', '.join(STATES)}")
        routing = config.denial_routing or load_denial_routing()
        every = routed(await every_denial(config.kafka), routing)
        rows = [r for r in every if matches(r, state=state, payer=payer or None,
                                            category=category or None)]
        return _page(request, "denials.html", session, rows=rows[:_DENIAL_ROWS_MAX],
                     shown_max=_DENIAL_ROWS_MAX, total=len(rows), figures=summary(rows),
                     state=state, states=("open", *STATES, "all"), payer=payer,
                     category=category, categories=list(routing.categories),
                     routing_version=routing.version)

    @site.get("/refunds/{account}/{request_id:path}", response_class=HTMLResponse)
    async def refund(request: Request, account: str, request_id: str) -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        from rcmflow.ops.refunds import find_request

        try:
            found = await find_request(config.kafka, request_id, account)
        except NoSuchItem as exc:
            raise _Refused(404, str(exc)) from None
        allowed = [*found["roles"], *found["over_credit_roles"]]
        name = session.user.name
        can_decide = (found["state"] == "pending"
                      and bool(set(allowed) & set(session.user.roles)))
        # The requester may withdraw (reject) but never approve; nobody approves twice.
        can_approve = can_decide and found["requested_by"] != name and all(
            a["by"] != name for a in found["approvals"])
        return _page(request, "refund.html", session, r=found, can_decide=can_decide,
                     can_approve=can_approve,
                     outcome=_asked(request).get("outcome"))

    @site.post("/refunds/{account}/request")
    async def request_a_refund(request: Request, account: str) -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        form = await _checked_form(request, session)
        user = session.user
        if not user.can_act:
            raise _Refused(403, "asking for a refund needs the operator role")
        from rcmflow.ops.accounts import latest_snapshots
        from rcmflow.ops.refunds import request_refund

        snapshot = (await latest_snapshots(config.kafka, account)).get(account)
        if snapshot is None:
            raise _Refused(404, f"no account {account!r}")
        to = form.get("to", "patient")
        try:
            amount = Decimal(form.get("amount", ""))
            if to not in ("patient", "payer"):
                raise ValueError("to: patient or payer")
            result = await request_refund(
                config.kafka, user, account=account, amount=amount, to=to,  # type: ignore[arg-type]
                entity=str(snapshot.get("entity") or "01"),
                reason=form.get("reason", "").strip() or None, wait_s=_REPLAY_WAIT_S)
        except (InvalidOperation, ValueError, RefundRefused) as exc:
            raise _Refused(400, f"not a refund request: {exc}") from None
        log.info("ops: %s (%s) asked for a refund on account %s", user.name, user.role,
                 account)
        filed = result.get("request") or {}
        outcome = quote(f"{result['outcome']}: {result['detail']}")
        if not filed:
            return RedirectResponse(f"/accounts?account={quote(account)}", status_code=303)
        return RedirectResponse(f"/refunds/{quote(account)}/{quote(filed['event_id'])}"
                                f"?outcome={outcome}", status_code=303)

    @site.post("/refunds/{account}/{request_id:path}/{decision}")
    async def decide_refund(request: Request, account: str, request_id: str,
                            decision: str) -> Response:
        session = _session(request)
        if session is None:
            return _to_login(request)
        form = await _checked_form(request, session)
        user = session.user
        if decision not in ("approve", "reject"):
            raise _Refused(404, f"no decision {decision!r}")
        from rcmflow.ops.refunds import decide, find_request

        log.info("ops: %s (%s) %s refund %s of account %s", user.name, ", ".join(user.roles),
                 decision, request_id, account)
        try:
            found = await find_request(config.kafka, request_id, account)
            result = await decide(config.kafka, user, found, decision,  # type: ignore[arg-type]
                                  text=form.get("text", "").strip() or None,
                                  wait_s=_REPLAY_WAIT_S)
        except NoSuchItem as exc:
            raise _Refused(404, str(exc)) from None
        except RefundRefused as exc:
            log.warning("ops: %s refused: %s", user.name, exc)
            raise _Refused(403, str(exc)) from None
        outcome = quote(f"{result['outcome']}: {result['detail']}")
        return RedirectResponse(f"/refunds/{quote(account)}/{quote(request_id)}"
                                f"?outcome={outcome}", status_code=303)

    @site.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> Response:
        return HTMLResponse(f"<!doctype html><title>refused</title><p>{exc.status}: "
                            f"{html.escape(exc.reason)}</p>", status_code=exc.status)

    return site


def summarize(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of work-queue items by reason, entity and age, and the oldest one."""
    by_reason: Counter[str] = Counter()
    by_entity: Counter[str] = Counter()
    by_age: Counter[str] = Counter()
    oldest: dict[str, Any] | None = None
    for item in items:
        by_reason[str(item.get("reason_code") or "-")] += 1
        by_entity[str((item.get("context") or {}).get("entity") or "-")] += 1
        age_s = int(item["queue"]["age_s"])
        by_age[next(label for label, top in AGE_BUCKETS if age_s < top)] += 1
        if oldest is None or age_s > int(oldest["queue"]["age_s"]):
            oldest = item
    return {"total": len(items), "by_reason": by_reason.most_common(),
            "by_entity": by_entity.most_common(),
            "by_age": [(label, by_age[label]) for label, _ in AGE_BUCKETS], "oldest": oldest}


#: Age buckets of the queue's summary: (label, upper bound in seconds).
AGE_BUCKETS = [("under 1 hour", 3600), ("1 hour to 1 day", 86_400),
               ("1 to 7 days", 7 * 86_400), ("7 to 30 days", 30 * 86_400),
               ("30 days or more", 2**62)]


def _asked(request: Request) -> dict[str, str]:
    """The query's non-empty parameters (a filter form sends every field, most empty)."""
    return {k: v.strip() for k, v in request.query_params.items() if v.strip()}


def _filters(asked: dict[str, str]) -> Filters:
    """The queue page's filters, as `rcmflow dlq list` takes them (raises ValueError)."""
    state = asked.get("state", "todo")
    if state not in STATE_FILTERS:
        raise ValueError(f"state {state[:20]!r}: one of {', '.join(STATE_FILTERS)}")
    now = datetime.now(UTC)
    return Filters(stage=asked.get("stage"), reason=asked.get("reason"),
                   source=asked.get("source"), entity=asked.get("entity"),
                   account=asked.get("account"), state=state,
                   since=moment(asked["since"], now) if "since" in asked else None,
                   before=moment(asked["older_than"], now) if "older_than" in asked else None)


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
    # The role and grants are read from the users file at each request: a user removed or
    # made a viewer loses their rights at once, not when the cookie expires.
    user = config.users.user(str(claims["sub"]))
    if user is None:
        return None
    return Session(user, str(claims["csrf"]))


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
