"""The ``netsuite`` adapter: Oracle NetSuite journal entries over SuiteTalk REST.

Wire shapes (Oracle's NetSuite help):

- Record API, record id ``journalentry``: ``POST /services/rest/record/v1/journalentry`` with
  ``subsidiary``, ``tranDate``, ``memo``, ``externalId`` and ``line.items[]`` of
  ``{account: {id}, debit | credit, memo}``; NetSuite answers ``204 No Content`` with a
  ``Location`` header naming the new record's internal id.
  https://docs.oracle.com/en/cloud/saas/netsuite/ns-online-help/section_159886587653.html
- External ids: unique per record type, letters, digits, ``_`` and ``-`` only; a record can
  be read as ``GET .../journalentry/eid:<externalId>``.
  https://docs.oracle.com/en/cloud/saas/netsuite/ns-online-help/section_156334828635.html
- Errors are JSON ``{"type", "title", "status", "o:errorDetails": [{"detail",
  "o:errorCode"}]}``. https://docs.oracle.com/en/cloud/saas/netsuite/ns-online-help/subsect_164494900632.html
- SuiteQL (``POST /services/rest/query/v1/suiteql``, ``Prefer: transient``, paged with
  ``limit``/``offset``, answer ``{"items", "hasMore", ...}``) reads the chart and the journal.
- Auth: an OAuth 2.0 access token as ``Authorization: Bearer`` (settings); 401/403 stop the
  connector (exit 4). Token-based auth (OAuth 1.0a signatures) is not implemented.

**Duplicate guard.** ``externalId`` = the posting id (``pst_`` + hex: within NetSuite's
charset). NetSuite enforces its uniqueness per record type, so a plain ``POST`` is race-free:
of two concurrent or repeated sends one creates the entry and the other gets an error. Any
4xx on the create is followed by ``GET .../journalentry/eid:<posting id>``: if the entry is
there it is ``AlreadyThere`` (a lost answer, a replay, a concurrent sender), otherwise the
4xx is ``Rejected`` with NetSuite's own text (closed period, inactive account, ...). The
upsert form (``PUT .../eid:``) is deliberately not used: it would *update* an entry that
exists, and a posted journal must never be rewritten by a replay.

A journal entry posts on save, unless the account routes journal entries through approval
(then it waits for approval; reconciliation shows it as unposted).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import date
from typing import TYPE_CHECKING, Any

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

__all__ = ["NetSuite", "build", "RECORD", "SUITEQL", "ACCOUNTS_QUERY", "journal_query"]

log = logging.getLogger("rcmflow.erp")

RECORD = "/services/rest/record/v1/journalentry"
SUITEQL = "/services/rest/query/v1/suiteql"
#: GL code (NetSuite "account number") -> internal id, read once at open().
ACCOUNTS_QUERY = "SELECT id, acctnumber FROM account WHERE isinactive = 'F'"


def journal_query(day_from: date | None, day_to: date | None) -> str:
    """Journal entries rcmflow wrote (external id ``pst_*``), one row per accounting line.

    Dates only ever come from ``date`` objects (isoformat), so nothing user-typed reaches
    the query text.
    """
    where = ["t.type = 'Journal'", "t.externalid LIKE 'pst\\_%' ESCAPE '\\'"]
    if day_from is not None:
        where.append(f"t.trandate >= TO_DATE('{day_from.isoformat()}', 'YYYY-MM-DD')")
    if day_to is not None:
        where.append(f"t.trandate <= TO_DATE('{day_to.isoformat()}', 'YYYY-MM-DD')")
    return ("SELECT t.id, t.externalid, t.tranid, TO_CHAR(t.trandate, 'YYYY-MM-DD') AS trandate,"
            " t.posting, tal.debit, tal.credit, a.acctnumber, t.subsidiary"
            " FROM transaction t"
            " JOIN transactionaccountingline tal ON tal.transaction = t.id"
            " JOIN account a ON a.id = tal.account"
            f" WHERE {' AND '.join(where)} ORDER BY t.id, tal.transactionline")


def error_text(parsed: Any, response: httpx.Response) -> str:
    """NetSuite's own words: the details of its error object, else its title, else the body."""
    if isinstance(parsed, dict):
        details = [str(d.get("detail", "")) for d in parsed.get("o:errorDetails", [])
                   if isinstance(d, dict)]
        codes = [str(d.get("o:errorCode", "")) for d in parsed.get("o:errorDetails", [])
                 if isinstance(d, dict)]
        text = "; ".join(x for x in details if x) or str(parsed.get("title", ""))
        if codes and any(codes):
            text = f"{text} [{', '.join(c for c in codes if c)}]"
        if text:
            return text
    return f"HTTP {response.status_code}: {response.text[:500]}"


#: NetSuite's journal entry memo is a free-form text field of at most 999 characters.
MEMO_CHARS_MAX = 999

class NetSuite(HttpErp):
    name = "netsuite"

    def __init__(self, chart: ChartOfAccounts, *, base_url: str, token: str,
                 subsidiaries: dict[str, str] | None = None, subsidiary: str = "1",
                 timeout_s: float = 30.0, page_size: int = 200, batch_max: int = 50,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not base_url or not token:
            raise AdapterConfigError("netsuite: RCMFLOW_ERP_NETSUITE_URL and "
                                     "RCMFLOW_ERP_NETSUITE_TOKEN must be set")
        self.chart = chart
        self.subsidiaries = subsidiaries or {}
        self.subsidiary = subsidiary
        self.page_size = page_size
        self.batch_max = batch_max
        super().__init__(base_url, {"Authorization": f"Bearer {token}"}, timeout_s, transport)
        self.account_ids: dict[str, str] = {}
        self.account_codes: dict[str, str] = {}

    async def _ready(self) -> None:
        if self.account_ids:
            return
        found: dict[str, str] = {}  # all pages or nothing: a failed page leaves no half chart
        async for row in self._suiteql(ACCOUNTS_QUERY):
            if row.get("acctnumber"):
                found[str(row["acctnumber"])] = str(row["id"])
        self.account_ids = found
        self.account_codes = {v: k for k, v in found.items()}
        if not found:
            raise AdapterConfigError("netsuite: the chart of accounts read back empty "
                                     "(no active account with a number)")

    # -- one entry ------------------------------------------------------------------------
    def body(self, delta: PostingDelta) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        for line in delta.lines:
            item: dict[str, Any] = {"account": {"id": self.account_ids[line.gl_account]},
                                    "memo": line.memo}
            if line.debit_cents:
                item["debit"] = cents_decimal(line.debit_cents)
            else:
                item["credit"] = cents_decimal(line.credit_cents)
            items.append(item)
        return {
            "externalId": delta.posting_id,
            "subsidiary": {"id": self.subsidiaries.get(delta.entity, self.subsidiary)},
            "tranDate": delta.effective_date.isoformat(),
            "memo": entry_text(delta, MEMO_CHARS_MAX),
            "currency": {"refName": delta.currency},
            "line": {"items": items},
        }

    async def post(self, delta: PostingDelta) -> Outcome:
        assert delta.total_cents == sum(x.credit_cents for x in delta.lines), "unbalanced"
        unmapped = check_mapped(self.chart, [delta])
        if unmapped:
            return unmapped[delta.posting_id]
        missing = sorted({x.gl_account for x in delta.lines} - self.account_ids.keys())
        if missing:
            return Rejected(delta.posting_id, "unmapped_gl_account",
                            f"GL account(s) {', '.join(missing)} not in NetSuite's chart")
        assert self.client is not None, "open() first"
        response, parsed = await request_json(self.client, "POST", RECORD, "netsuite create",
                                              body=self.body(delta))
        if response.is_success:
            location = response.headers.get("Location", "")
            return Posted(delta.posting_id, location.rsplit("/", 1)[-1] or delta.posting_id)
        existing = await self.lookup(delta.posting_id)
        if existing is not None:
            log.info("erp netsuite: %s already there as %s", delta.posting_id, existing)
            return AlreadyThere(delta.posting_id, existing)
        return Rejected(delta.posting_id, "erp_rejected", error_text(parsed, response))

    async def lookup(self, posting_id: str) -> str | None:
        """The internal id of the journal entry with this external id, or None."""
        assert self.client is not None
        response, parsed = await request_json(
            self.client, "GET", f"{RECORD}/eid:{posting_id}", "netsuite lookup")
        if response.status_code == 404:
            return None
        if not response.is_success or not isinstance(parsed, dict):
            raise TransientError(f"netsuite lookup of {posting_id}: HTTP "
                                 f"{response.status_code}")
        return str(parsed.get("id", posting_id))

    # -- reading back ---------------------------------------------------------------------
    async def _suiteql(self, query: str) -> AsyncIterator[dict[str, Any]]:
        assert self.client is not None
        offset = 0
        while True:
            response, parsed = await request_json(
                self.client, "POST", SUITEQL, "netsuite suiteql", body={"q": query},
                params={"limit": self.page_size, "offset": offset},
                headers={"Prefer": "transient"})
            if not response.is_success or not isinstance(parsed, dict):
                raise AdapterConfigError(f"netsuite suiteql: HTTP {response.status_code}: "
                                         f"{error_text(parsed, response)}")
            items = parsed.get("items", [])
            for item in items:
                yield item
            if not parsed.get("hasMore") or not items:
                return
            offset += len(items)

    async def read_journal(self, *, day_from: date | None = None,
                           day_to: date | None = None) -> AsyncIterator[JournalEntry]:
        """Entries rcmflow wrote, lines grouped per transaction (rows come ordered by id)."""
        await self._ready()
        current: list[dict[str, Any]] = []
        async for row in self._suiteql(journal_query(day_from, day_to)):
            if current and current[0]["id"] != row["id"]:
                yield self._entry(current)
                current = []
            current.append(row)
        if current:
            yield self._entry(current)

    def _entry(self, rows: list[dict[str, Any]]) -> JournalEntry:
        first = rows[0]
        entity = next((e for e, s in self.subsidiaries.items()
                       if s == str(first.get("subsidiary"))), None)
        return JournalEntry(
            posting_id=str(first["externalid"]), erp_ref=str(first.get("tranid") or first["id"]),
            effective_date=date.fromisoformat(str(first["trandate"])), entity=entity,
            # SuiteQL sends amounts as JSON strings ("12.5").
            lines=tuple(JournalLine(str(r["acctnumber"]),
                                    number_cents(r.get("debit") or 0, "NetSuite debit",
                                                 text_too=True),
                                    number_cents(r.get("credit") or 0, "NetSuite credit",
                                                 text_too=True)) for r in rows),
            posted=str(first.get("posting", "T")) == "T")


def build(settings: Settings, chart: ChartOfAccounts, *,
          transport: httpx.AsyncBaseTransport | None = None) -> NetSuite:
    s = settings
    token = s.erp_netsuite_token.get_secret_value() if s.erp_netsuite_token else ""
    return NetSuite(chart, base_url=s.erp_netsuite_url, token=token,
                    subsidiaries=s.erp_netsuite_subsidiaries,
                    subsidiary=s.erp_netsuite_subsidiary, timeout_s=s.erp_timeout_s,
                    page_size=s.erp_cloud_page_size, batch_max=s.erp_cloud_batch_max,
                    transport=transport)
