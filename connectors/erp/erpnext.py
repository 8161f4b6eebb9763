"""The ``erpnext`` adapter: ERPNext ``Journal Entry`` documents over Frappe's REST API.

Wire shapes (Frappe's REST API docs,
https://docs.frappe.io/framework/user/en/api/rest and
https://docs.frappe.io/framework/user/en/guides/integration/rest_api):
``Authorization: token <api_key>:<api_secret>``; ``POST /api/resource/Journal Entry`` with
the document as JSON answers ``{"data": {...the saved document...}}``;
``GET /api/resource/<doctype>?filters=[...]&fields=[...]&limit_start=&limit_page_length=``
lists, ``GET /api/resource/<doctype>/<name>`` reads one with its child rows. Errors carry
the HTTP status of the Frappe exception class (``frappe/exceptions.py``:
``ValidationError`` 417 — closed period, unbalanced, unknown or frozen account —,
``UniqueValidationError`` 417, ``DuplicateEntryError`` 409, ``PermissionError`` 403,
``AuthenticationError`` 401) and a body with ``exc_type``, ``exception`` and
``_server_messages`` (a JSON list of JSON-encoded ``{"message": ...}``).

**Insert and submit in one request.** ``"docstatus": 1`` in the POST inserts *and submits*
the entry (GL entries made) in the request's single database transaction: there is no
window where a draft exists, so a crash leaves either nothing or a submitted entry.

**Duplicate guard: a Custom Field marked Unique.** A Journal Entry's ``name`` comes from its
naming series, so the client cannot choose it. ``cheque_no`` ("Reference Number") and
``user_remark`` are plain columns with no unique index: a lookup by them before inserting is
crash-safe on one connector but not race-free between two (both look, both insert). Frappe's
Custom Field has a *Unique* option that adds a database unique index; a second insert with
the same value fails with ``UniqueValidationError`` (417). So the adapter requires a Custom
Field (default ``rcm_posting_id``, Data, Unique) on Journal Entry, checks at start that it
exists and is unique (Frappe silently drops unknown fields on insert, which would remove the
guard), sends the posting id in it, and answers a 417 ``UniqueValidationError`` or a 409 with
a lookup by that field → ``AlreadyThere``. The posting id is also put in ``user_remark`` for
people reading the entry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError
from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.money import cents_decimal, number_cents
from rcmflow.streams.postings import PostingDelta

from .base import AlreadyThere, JournalEntry, JournalLine, Outcome, Posted, Rejected, entry_text
from .cloud_http import HttpErp, request_json
from .mapping import check_mapped

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["ErpNext", "build", "JE", "server_message"]

log = logging.getLogger("rcmflow.erp")

JE = "/api/resource/" + quote("Journal Entry")
ACCOUNT = "/api/resource/Account"
CUSTOM_FIELD = "/api/resource/" + quote("Custom Field")
#: Frappe exceptions that mean "try again later" even when sent with a 4xx status.
TRANSIENT_EXC = frozenset({"QueryDeadlockError", "QueryTimeoutError", "TooManyRequestsError",
                           "TimestampMismatchError"})
DUPLICATE_EXC = frozenset({"UniqueValidationError", "DuplicateEntryError"})


def server_message(parsed: Any, response: httpx.Response) -> str:
    """Frappe's own message: ``_server_messages`` first, then ``exception``, then the body."""
    if isinstance(parsed, dict):
        texts: list[str] = []
        raw = parsed.get("_server_messages")
        if isinstance(raw, str):
            try:
                for item in json.loads(raw):
                    doc = json.loads(item) if isinstance(item, str) else item
                    message = doc.get("message") if isinstance(doc, dict) else None
                    if message:
                        texts.append(str(message))
            except ValueError:
                texts.append(raw)
        if texts:
            return "; ".join(texts)
        if parsed.get("exception"):
            return str(parsed["exception"])
        if parsed.get("message"):
            return str(parsed["message"])
    return f"HTTP {response.status_code}: {response.text[:500]}"


class ErpNext(HttpErp):
    name = "erpnext"

    def __init__(self, chart: ChartOfAccounts, *, base_url: str, api_key: str,
                 api_secret: str, company: str, companies: dict[str, str] | None = None,
                 posting_field: str = "rcm_posting_id", timeout_s: float = 30.0,
                 page_size: int = 200, batch_max: int = 50,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not base_url or not api_key or not api_secret or not (company or companies):
            raise AdapterConfigError("erpnext: RCMFLOW_ERP_ERPNEXT_URL, _API_KEY, _API_SECRET "
                                     "and _COMPANY (or _COMPANIES) must be set")
        self.chart = chart
        self.company = company
        self.companies = companies or {}
        self.field = posting_field
        self.page_size = page_size
        self.batch_max = batch_max
        super().__init__(base_url, {"Authorization": f"token {api_key}:{api_secret}"},
                         timeout_s, transport)
        #: (company, GL code = ERPNext account_number) -> Account name, and back.
        self.accounts: dict[tuple[str, str], str] = {}
        self.codes: dict[str, str] = {}

    def company_of(self, entity: str) -> str:
        return self.companies.get(entity, self.company)

    async def _list(self, path: str, *, filters: list[list[Any]], fields: list[str],
                    what: str) -> AsyncIterator[dict[str, Any]]:
        assert self.client is not None, "open() first"
        start = 0
        while True:
            response, parsed = await request_json(
                self.client, "GET", path, what,
                params={"filters": json.dumps(filters), "fields": json.dumps(fields),
                        "limit_start": start, "limit_page_length": self.page_size,
                        "order_by": "creation asc"})
            if not response.is_success or not isinstance(parsed, dict):
                raise AdapterConfigError(f"{what}: HTTP {response.status_code}: "
                                         f"{server_message(parsed, response)}")
            rows = parsed.get("data") or []
            for row in rows:
                yield row
            if len(rows) < self.page_size:
                return
            start += len(rows)

    async def _ready(self) -> None:
        if self.accounts:
            return
        fields = [f async for f in self._list(
            CUSTOM_FIELD, filters=[["dt", "=", "Journal Entry"], ["fieldname", "=", self.field]],
            fields=["fieldname", "unique"], what="erpnext custom field")]
        if not fields or not int(fields[0].get("unique") or 0):
            raise AdapterConfigError(
                f"erpnext: Journal Entry needs a Custom Field {self.field!r} marked Unique "
                "(the posting-id duplicate guard); found none")
        companies = sorted({self.company, *self.companies.values()} - {""})
        found: dict[tuple[str, str], str] = {}  # all pages or nothing (no half chart)
        async for row in self._list(ACCOUNT, filters=[["company", "in", companies],
                                                      ["is_group", "=", 0]],
                                    fields=["name", "account_number", "company"],
                                    what="erpnext accounts"):
            if row.get("account_number"):
                found[(str(row["company"]), str(row["account_number"]))] = str(row["name"])
        self.accounts = found
        self.codes = {name: code for (_, code), name in found.items()}
        if not found:
            raise AdapterConfigError(f"erpnext: no ledger account with a number in {companies}")

    # -- one entry ------------------------------------------------------------------------
    def document(self, delta: PostingDelta) -> dict[str, Any]:
        company = self.company_of(delta.entity)
        rows = [{"account": self.accounts[(company, x.gl_account)],
                 "debit_in_account_currency": cents_decimal(x.debit_cents),
                 "credit_in_account_currency": cents_decimal(x.credit_cents),
                 "user_remark": x.memo} for x in delta.lines]
        return {"voucher_type": "Journal Entry", "company": company,
                "posting_date": delta.effective_date.isoformat(), self.field: delta.posting_id,
                "user_remark": entry_text(delta),
                "docstatus": 1, "accounts": rows}

    async def post(self, delta: PostingDelta) -> Outcome:
        assert delta.total_cents == sum(x.credit_cents for x in delta.lines), "unbalanced"
        unmapped = check_mapped(self.chart, [delta])
        if unmapped:
            return unmapped[delta.posting_id]
        company = self.company_of(delta.entity)
        missing = sorted({x.gl_account for x in delta.lines
                          if (company, x.gl_account) not in self.accounts})
        if missing:
            return Rejected(delta.posting_id, "unmapped_gl_account",
                            f"GL account(s) {', '.join(missing)} not in ERPNext company "
                            f"{company!r}")
        assert self.client is not None, "open() first"
        response, parsed = await request_json(self.client, "POST", JE, "erpnext insert",
                                              body=self.document(delta))
        if response.is_success and isinstance(parsed, dict):
            return Posted(delta.posting_id, str(parsed.get("data", {}).get("name", "")))
        exc_type = str(parsed.get("exc_type", "")) if isinstance(parsed, dict) else ""
        if exc_type in TRANSIENT_EXC:
            raise TransientError(f"erpnext insert: {exc_type}")
        if response.status_code == 409 or exc_type in DUPLICATE_EXC:
            existing = await self.lookup(delta.posting_id)
            if existing is not None:
                log.info("erp erpnext: %s already there as %s", delta.posting_id, existing)
                return AlreadyThere(delta.posting_id, existing)
        return Rejected(delta.posting_id, "erp_rejected", server_message(parsed, response))

    async def lookup(self, posting_id: str) -> str | None:
        rows = [r async for r in self._list(JE, filters=[[self.field, "=", posting_id]],
                                            fields=["name"], what="erpnext lookup")]
        return str(rows[0]["name"]) if rows else None

    # -- reading back ---------------------------------------------------------------------
    async def read_journal(self, *, day_from: date | None = None,
                           day_to: date | None = None) -> AsyncIterator[JournalEntry]:
        """Entries holding a posting id: listed a page at a time, each read with its rows."""
        await self._ready()
        assert self.client is not None, "open() first"
        filters: list[list[Any]] = [[self.field, "is", "set"]]
        if day_from is not None:
            filters.append(["posting_date", ">=", day_from.isoformat()])
        if day_to is not None:
            filters.append(["posting_date", "<=", day_to.isoformat()])
        entity_of = {c: e for e, c in self.companies.items()}
        async for row in self._list(JE, filters=filters, fields=["name"],
                                    what="erpnext journal"):
            response, parsed = await request_json(
                self.client, "GET", f"{JE}/{quote(str(row['name']))}", "erpnext read")
            if not response.is_success or not isinstance(parsed, dict):
                raise TransientError(f"erpnext read {row['name']}: HTTP {response.status_code}")
            doc = parsed["data"]
            yield JournalEntry(
                posting_id=str(doc[self.field]), erp_ref=str(doc["name"]),
                effective_date=date.fromisoformat(str(doc["posting_date"])),
                entity=entity_of.get(str(doc.get("company"))),
                lines=tuple(JournalLine(self.codes.get(str(a["account"]), str(a["account"])),
                                        number_cents(a.get("debit") or 0, "ERPNext debit"),
                                        number_cents(a.get("credit") or 0, "ERPNext credit"))
                            for a in doc.get("accounts", [])),
                posted=int(doc.get("docstatus", 0)) == 1)


def build(settings: Settings, chart: ChartOfAccounts, *,
          transport: httpx.AsyncBaseTransport | None = None) -> ErpNext:
    s = settings
    return ErpNext(
        chart, base_url=s.erp_erpnext_url,
        api_key=s.erp_erpnext_api_key.get_secret_value() if s.erp_erpnext_api_key else "",
        api_secret=(s.erp_erpnext_api_secret.get_secret_value()
                    if s.erp_erpnext_api_secret else ""),
        company=s.erp_erpnext_company, companies=s.erp_erpnext_companies,
        posting_field=s.erp_erpnext_posting_field, timeout_s=s.erp_timeout_s,
        page_size=s.erp_cloud_page_size, batch_max=s.erp_cloud_batch_max, transport=transport)
