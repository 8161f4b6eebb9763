"""The ``tryton`` adapter: Tryton (the ERP under GNU Health) over JSON-RPC with httpx.

Each delta becomes one posted ``account.move`` whose ``external_id`` is the posting id. The
server needs our module ``rcmflow_ext`` (``tryton_module``): a UNIQUE (company, external_id)
constraint and ``post_external``, which finds or creates and posts the moves in ONE database
transaction. So a crash anywhere, a lost answer or two senders at once still give one move.

- GL accounts: a line's GL code must be in the chart-of-accounts file for the delta's entity
  (else ``unmapped_gl_account``) and exist as an ``account.account`` code in the company
  (else ``tryton_account_missing``); both permanent, both DLQ'd with the text.
- Entity -> company: ``RCMFLOW_ERP_TRYTON_COMPANIES`` (JSON), unset entities: the user's
  company. The period is the company's standard period containing the effective date.
- Errors: JSON-RPC errors arrive with HTTP 200: the body is read. ``UserError`` is permanent
  (the ERP's message goes to the DLQ), except the unique-key message, which means another
  sender won a race: retried, and the retry answers "already there". A batch is
  all-or-nothing in Tryton, so a batch with a rejection is split and sent one by one.
  ``ConcurrencyException``, 5xx, 429, timeouts and connection errors are transient. 401: the
  session expired (Tryton deletes it after a refused fresh-session call): log in again.
  ``LoginException``, 403 (``post_external`` not exposed: module missing) and 422 are
  configuration errors.
- Amounts: int cents -> ``Decimal`` with 2 places, tagged ``{"__class__": "Decimal"}``.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError, TrytonError
from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.money import cents_decimal, number_cents
from rcmflow.streams.postings import PostingDelta

from .base import AlreadyThere, JournalEntry, JournalLine, Outcome, Posted, Rejected, entry_text
from .mapping import check_mapped

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["TrytonAdapter", "encode", "decode", "build", "BATCH_MAX"]

#: Moves per post_external call (the module refuses more than 1000).
BATCH_MAX = 200
#: Moves per page when reading the journal back.
READ_PAGE = 500
UNIQUE_MESSAGE = "already exists for the company"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month,
                "day": value.day}
    raise TypeError(f"cannot send {type(value).__name__} to Tryton")


def encode(doc: Any) -> bytes:
    """JSON with Tryton's tagged Decimal and date; a float is refused (money is exact)."""
    def check(value: Any) -> Any:
        if isinstance(value, float):
            raise TypeError("float sent to Tryton")
        if isinstance(value, dict):
            return {k: check(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [check(v) for v in value]
        return value

    return json.dumps(check(doc), default=_default).encode()


def _hook(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return date(obj["year"], obj["month"], obj["day"])
    return obj


def decode(raw: bytes) -> Any:
    return json.loads(raw, object_hook=_hook, parse_float=Decimal)


class TrytonAdapter:
    name = "tryton"
    batch_max = BATCH_MAX

    def __init__(self, *, url: str, db: str, user: str, password: str,
                 chart: ChartOfAccounts, journal_code: str = "MISC",
                 companies: dict[str, int] | None = None, timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.db = db
        self.user = user
        self.password = password
        self.chart = chart
        self.journal_code = journal_code
        self.companies = dict(companies or {})
        self.timeout_s = timeout_s
        self.transport = transport
        self.client: httpx.AsyncClient | None = None
        self._session: str | None = None
        self.context: dict[str, Any] = {}
        self._ids = itertools.count(1)
        # Caches, per company: GL code -> account id, periods, the journal id.
        self._accounts: dict[int, dict[str, int]] = {}
        self._periods: dict[int, list[tuple[date, date, int]]] = {}
        self._journal: int | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """No call to Tryton here: a Tryton that is down at start only stalls the loop."""
        self.client = httpx.AsyncClient(base_url=self.url, timeout=self.timeout_s,
                                        transport=self.transport)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    # -- JSON-RPC -------------------------------------------------------------------------
    async def _post(self, method: str, params: list[Any]) -> httpx.Response:
        assert self.client is not None, "open() first"
        headers = {"Content-Type": "application/json"}
        if self._session:
            headers["Authorization"] = "Session " + self._session
        body = encode({"id": next(self._ids), "method": method, "params": params})
        try:
            return await self.client.post(f"/{self.db}/rpc/", content=body, headers=headers)
        except httpx.TransportError as exc:  # connect, read, timeouts
            raise TransientError(f"tryton {method}: {type(exc).__name__} {exc}") from exc

    async def rpc(self, method: str, params: list[Any], *, relogin: bool = True) -> Any:
        response = await self._post(method, params)
        status = response.status_code
        if status == 401 and relogin and not method.startswith("common."):
            await self._login()
            return await self.rpc(method, params, relogin=False)
        if status >= 500 or status in (401, 408, 429):
            raise TransientError(f"tryton {method}: HTTP {status}")
        if status != 200:
            raise AdapterConfigError(f"tryton {method}: HTTP {status} (403: rcmflow_ext "
                                     "not activated on this database? 422: bad call)")
        try:
            doc = decode(response.content)
        except ValueError as exc:
            raise TransientError(f"tryton {method}: unreadable answer") from exc
        error = doc.get("error")
        if error is None:
            return doc.get("result")
        kind = str(error[0]) if error else "?"
        detail = error[1] if len(error) > 1 else ""
        message = str(detail[0]) if isinstance(detail, list) and detail else str(detail)
        if kind == "LoginException":
            raise AdapterConfigError(f"tryton login: {message}")
        if kind in ("UserError", "UserWarning", "AccessError"):
            raise TrytonError(kind, message)
        # ConcurrencyException, and any non-Tryton server exception: try again later.
        raise TransientError(f"tryton {method}: {kind} {message}".strip())

    async def _login(self) -> None:
        self._session = None
        result = await self.rpc("common.db.login",
                                [self.user, {"password": self.password}, "en"],
                                relogin=False)
        if not isinstance(result, list) or len(result) < 2:
            raise AdapterConfigError(f"tryton login refused for {self.user!r}")
        user_id, key = result[0], result[1]
        self._session = base64.b64encode(f"{self.user}:{user_id}:{key}".encode()).decode()
        self.context = await self.rpc("model.res.user.get_preferences", [True, {}])
        if not self.context.get("company"):
            raise AdapterConfigError(f"tryton user {self.user!r} has no company")

    async def _model(self, model: str, method: str, *args: Any,
                     company: int | None = None) -> Any:
        if self._session is None:
            await self._login()
        context = dict(self.context)
        if company is not None:
            context |= {"company": company}
        return await self.rpc(f"model.{model}.{method}", [*args, context])

    # -- lookups --------------------------------------------------------------------------
    def _company(self, entity: str) -> int:
        return self.companies.get(entity) or int(self.context["company"])

    async def _load(self, company: int) -> None:
        rows = await self._model("account.account", "search_read",
                                 [("company", "=", company), ("code", "!=", None)],
                                 0, None, None, ["code", "type"], company=company)
        self._accounts[company] = {r["code"]: r["id"] for r in rows if r.get("type")}
        periods = await self._model("account.period", "search_read",
                                    [("company", "=", company), ("type", "=", "standard")],
                                    0, None, None, ["start_date", "end_date"],
                                    company=company)
        self._periods[company] = [(p["start_date"], p["end_date"], p["id"]) for p in periods]
        if self._journal is None:
            journals = await self._model("account.journal", "search",
                                         [("code", "=", self.journal_code)], 0, 1, None)
            if not journals:
                raise AdapterConfigError(f"no Tryton journal with code {self.journal_code!r}")
            self._journal = journals[0]

    async def _values(self, delta: PostingDelta) -> dict[str, Any] | Rejected:
        company = self._company(delta.entity)
        accounts = self._accounts.get(company)
        missing = [x.gl_account for x in delta.lines if x.gl_account not in (accounts or {})]
        period = self._period(company, delta.effective_date)
        if accounts is None or missing or period is None:  # new accounts or periods? reload
            await self._load(company)
            accounts = self._accounts[company]
            missing = [x.gl_account for x in delta.lines if x.gl_account not in accounts]
            period = self._period(company, delta.effective_date)
        if missing:
            return Rejected(delta.posting_id, "tryton_account_missing",
                            f"Tryton company {company} has no account with code(s) "
                            f"{', '.join(sorted(set(missing)))}")
        if period is None:
            return Rejected(delta.posting_id, "tryton_no_period",
                            f"Tryton company {company} has no period containing "
                            f"{delta.effective_date.isoformat()}")
        assert sum(x.debit_cents for x in delta.lines) == sum(
            x.credit_cents for x in delta.lines), "unbalanced delta reached the ERP"
        lines = [{
            "account": accounts[x.gl_account], "debit": cents_decimal(x.debit_cents),
            "credit": cents_decimal(x.credit_cents),
            "description": " ".join(filter(None, [x.memo, x.department, x.payer_class])),
        } for x in delta.lines]
        return {
            "company": company, "journal": self._journal, "period": period,
            "date": delta.effective_date, "external_id": delta.posting_id,
            "description": entry_text(delta),
            # Our module's field: the approval as data, for a report or an auditor's search.
            "rcmflow_approval": (delta.approval.model_dump_json()
                                 if delta.approval is not None else None),
            "lines": [["create", lines]],
        }

    def _period(self, company: int, day: date) -> int | None:
        for start, end, period in self._periods.get(company, []):
            if start <= day <= end:
                return period
        return None

    # -- posting --------------------------------------------------------------------------
    async def post_batch(self, deltas: Sequence[PostingDelta]) -> list[Outcome]:
        assert len(deltas) <= self.batch_max
        if self._session is None:
            await self._login()
        outcomes: dict[str, Outcome] = dict(check_mapped(self.chart, deltas))
        by_company: dict[int, list[tuple[PostingDelta, dict[str, Any]]]] = {}
        queued: set[str] = set()
        for delta in deltas:
            if delta.posting_id in outcomes or delta.posting_id in queued:
                continue  # a re-send inside one batch is answered below
            values = await self._values(delta)
            if isinstance(values, Rejected):
                outcomes[delta.posting_id] = values
            else:
                queued.add(delta.posting_id)
                by_company.setdefault(values["company"], []).append((delta, values))
        for company, items in by_company.items():
            outcomes |= await self._post_external(company, items)
        out: list[Outcome] = []
        answered: set[str] = set()
        for delta in deltas:
            outcome = outcomes[delta.posting_id]
            if delta.posting_id in answered and not isinstance(outcome, Rejected):
                outcome = AlreadyThere(delta.posting_id, outcome.erp_ref)
            answered.add(delta.posting_id)
            out.append(outcome)
        return out

    async def _post_external(self, company: int,
                             items: list[tuple[PostingDelta, dict[str, Any]]]
                             ) -> dict[str, Outcome]:
        try:
            results = await self._model("account.move", "post_external",
                                        [values for _, values in items], company=company)
        except TrytonError as exc:
            if UNIQUE_MESSAGE in exc.message:
                # Another sender created one of these moves between our search and insert;
                # the transaction rolled back. A retry finds it: "already there".
                raise TransientError(f"tryton: concurrent insert ({exc.message})") from exc
            if len(items) > 1:  # all-or-nothing: find the culprit(s) one by one
                out: dict[str, Outcome] = {}
                for item in items:
                    out |= await self._post_external(company, [item])
                return out
            delta = items[0][0]
            return {delta.posting_id: Rejected(delta.posting_id, "erp_rejected", exc.message)}
        out = {}
        for (delta, _), result in zip(items, results, strict=True):
            assert result["external_id"] == delta.posting_id, "post_external answered out of order"
            if result["state"] != "posted":
                raise TransientError(f"tryton left move {result['id']} in {result['state']}")
            ref = str(result.get("number") or result["id"])
            out[delta.posting_id] = (Posted(delta.posting_id, ref) if result["created"]
                                     else AlreadyThere(delta.posting_id, ref))
        return out

    # -- reading back ---------------------------------------------------------------------
    async def read_journal(self, *, day_from: date | None = None,
                           day_to: date | None = None) -> AsyncIterator[JournalEntry]:
        """Moves with an external id, paged by id; lines as GL codes and cents."""
        if self._session is None:
            await self._login()
        entities = {company: entity for entity, company in self.companies.items()}
        domain: list[Any] = [("external_id", "!=", None)]
        if day_from is not None:
            domain.append(("date", ">=", day_from))
        if day_to is not None:
            domain.append(("date", "<=", day_to))
        last_id = 0
        fields = ["external_id", "number", "date", "state", "company",
                  "lines.account.code", "lines.debit", "lines.credit"]
        while True:
            page = await self._model("account.move", "search_read",
                                     [*domain, ("id", ">", last_id)], 0, READ_PAGE,
                                     [("id", "ASC")], fields)
            for move in page:
                yield JournalEntry(
                    posting_id=move["external_id"],
                    erp_ref=str(move.get("number") or move["id"]),
                    effective_date=move["date"],
                    entity=entities.get(move["company"]),
                    lines=tuple(JournalLine(line["account."]["code"],
                                            number_cents(line["debit"], "Tryton debit"),
                                            number_cents(line["credit"], "Tryton credit"))
                                for line in move.get("lines.", [])),
                    posted=move["state"] == "posted")
            if len(page) < READ_PAGE:
                return
            last_id = page[-1]["id"]


def build(settings: Settings, chart: ChartOfAccounts) -> TrytonAdapter:
    if settings.erp_tryton_password is None:
        raise ValueError("RCMFLOW_ERP_TRYTON_PASSWORD is not set")
    return TrytonAdapter(
        url=settings.erp_tryton_url, db=settings.erp_tryton_db, user=settings.erp_tryton_user,
        password=settings.erp_tryton_password.get_secret_value(), chart=chart,
        journal_code=settings.erp_tryton_journal, companies=settings.erp_tryton_companies,
        timeout_s=settings.erp_timeout_s)
