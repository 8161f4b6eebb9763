"""The ``odoo`` adapter: Odoo ``account.move`` journal entries over the JSON-2 API (Odoo 19+).

Wire shapes (Odoo's external API reference,
https://www.odoo.com/documentation/19.0/developer/reference/external_api.html):
``POST /json/2/<model>/<method>`` with ``Authorization: bearer <API key>``, optional
``X-Odoo-Database``, and a JSON object of the method's named parameters (``ids``,
``context``, ``domain``, ``fields``, ``vals_list``, ...). Success is ``200`` with the
method's return value; an error is ``4xx``/``5xx`` with ``{"name", "message", "arguments",
"context", "debug"}`` (``name`` = the Python exception, e.g. ``odoo.exceptions.UserError``).
**Every call is its own database transaction**; calls cannot be chained into one.

**Duplicate guard, and why it is race-free.** ``account.move`` has no unique external key
(``ref`` is free text), and search-by-``ref``-then-create is racy. Odoo does offer one
unique key usable over the API without a custom module: the external identifier
(``ir.model.data``, PostgreSQL ``UNIQUE (module, name)``). The adapter uses it as the
commit point of each posting id:

1. look the key up (``ir.model.data/search_read``, module ``rcmflow``, name = posting id);
   found: the move it points at is the entry (posted now if a crash left it draft) →
   ``AlreadyThere``;
2. otherwise create the move as a **draft** (``account.move/create``, ``ref`` = posting id;
   a draft left by an earlier crash with that ``ref`` and no key is reused instead);
3. claim the key (``ir.model.data/create`` pointing at that draft). The unique index lets
   exactly one sender win; a loser (its create fails, a re-read shows the key on another
   move) deletes its own draft and answers ``AlreadyThere``;
4. post (``account.move/action_post``) only the move the key points at → ``Posted``.

So at most one move per posting id is ever posted, whatever interleaving or crash happens
between calls. Residual, documented honestly: a crash between 2 and 3 can leave a *draft*
(never in the ledger; reused by the retry on the same connector), and a claim answer lost
in transit is re-read, never re-claimed. Posting needs the key's move to pass Odoo's checks:
a lock date or closed period is a ``UserError`` on ``action_post`` → ``Rejected`` with
Odoo's message (the draft stays, keyed, for an accountant to post or delete).

The API user needs accounting rights plus read and create on ``ir.model.data``. Which
group grants create on it in a given Odoo version was not checked here (no Odoo to test
against; the fake follows the documented shapes): give the bot user the narrowest group that
does. An access error is a 403 and stops the connector (exit 4), never a silent skip.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import date
from typing import TYPE_CHECKING, Any

import httpx

from rcmflow.connectors.erp.exceptions import AdapterConfigError, OdooError, TransientError
from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.money import cents_decimal, number_cents
from rcmflow.streams.postings import PostingDelta

from .base import AlreadyThere, JournalEntry, JournalLine, Outcome, Posted, Rejected, entry_text
from .cloud_http import HttpErp, request_json
from .mapping import check_mapped

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["Odoo", "build"]

log = logging.getLogger("rcmflow.erp")

MOVE = "account.move"
XMLID = "ir.model.data"
_LINE_FIELDS = ["move_id", "account_id", "debit", "credit"]


class Odoo(HttpErp):
    name = "odoo"

    def __init__(self, chart: ChartOfAccounts, *, base_url: str, api_key: str,
                 database: str = "", journal: str = "MISC", module: str = "rcmflow",
                 timeout_s: float = 30.0, page_size: int = 200, batch_max: int = 50,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not base_url or not api_key:
            raise AdapterConfigError("odoo: RCMFLOW_ERP_ODOO_URL and RCMFLOW_ERP_ODOO_API_KEY "
                                     "must be set")
        self.chart = chart
        self.journal_code = journal
        self.module = module
        self.page_size = page_size
        self.batch_max = batch_max
        headers = {"Authorization": f"bearer {api_key}", "User-Agent": "rcmflow"}
        if database:
            headers["X-Odoo-Database"] = database
        super().__init__(base_url, headers, timeout_s, transport)
        self.journal_id = 0
        self.account_ids: dict[str, int] = {}
        self.account_codes: dict[int, str] = {}

    # -- transport ------------------------------------------------------------------------
    async def call(self, model: str, method: str, **params: Any) -> Any:
        assert self.client is not None, "open() first"
        what = f"odoo {model}.{method}"
        response, parsed = await request_json(self.client, "POST", f"/json/2/{model}/{method}",
                                              what, body=params)
        if response.is_success:
            return parsed
        if isinstance(parsed, dict):
            raise OdooError(response.status_code, str(parsed.get("name", "")),
                            str(parsed.get("message", "")))
        raise OdooError(response.status_code, f"HTTP {response.status_code}",
                        response.text[:500])

    async def _ready(self) -> None:
        if self.journal_id:
            return
        try:
            journals = await self.call("account.journal", "search_read",
                                       domain=[["code", "=", self.journal_code]],
                                       fields=["id", "code"])
            accounts = await self.call("account.account", "search_read", domain=[],
                                       fields=["id", "code"])
        except OdooError as exc:
            raise AdapterConfigError(f"odoo: reading the journal and chart failed: {exc}"
                                     ) from exc
        if not journals:
            raise AdapterConfigError(f"odoo: no journal with code {self.journal_code!r}")
        self.journal_id = int(journals[0]["id"])
        self.account_ids = {str(a["code"]): int(a["id"]) for a in accounts if a.get("code")}
        self.account_codes = {v: k for k, v in self.account_ids.items()}

    # -- one entry ------------------------------------------------------------------------
    def values(self, delta: PostingDelta) -> dict[str, Any]:
        lines = [[0, 0, {"account_id": self.account_ids[x.gl_account], "name": x.memo,
                         "debit": cents_decimal(x.debit_cents),
                         "credit": cents_decimal(x.credit_cents)}] for x in delta.lines]
        entry = {"move_type": "entry", "journal_id": self.journal_id, "ref": delta.posting_id,
                 "date": delta.effective_date.isoformat(), "line_ids": lines}
        if delta.approval is not None:  # the refund's approval, in the entry's internal note
            entry["narration"] = entry_text(delta)
        return entry

    async def key_target(self, posting_id: str) -> int | None:
        rows = await self.call(XMLID, "search_read",
                               domain=[["module", "=", self.module], ["name", "=", posting_id],
                                       ["model", "=", MOVE]], fields=["res_id"])
        return int(rows[0]["res_id"]) if rows else None

    async def post(self, delta: PostingDelta) -> Outcome:
        assert delta.total_cents == sum(x.credit_cents for x in delta.lines), "unbalanced"
        unmapped = check_mapped(self.chart, [delta])
        if unmapped:
            return unmapped[delta.posting_id]
        missing = sorted({x.gl_account for x in delta.lines} - self.account_ids.keys())
        if missing:
            return Rejected(delta.posting_id, "unmapped_gl_account",
                            f"GL account(s) {', '.join(missing)} not in Odoo's chart")
        pid = delta.posting_id
        try:
            target = await self.key_target(pid)
            if target is not None:
                await self._post_if_draft(target)
                return AlreadyThere(pid, str(target))
            move_id = await self._draft(delta)
            winner, created = await self._claim(pid, move_id)
            if winner != move_id:
                log.info("erp odoo: %s claimed by move %s; dropping draft %s", pid, winner,
                         move_id)
                await self.call(MOVE, "unlink", ids=[move_id])
            if not created:
                await self._post_if_draft(winner)
                return AlreadyThere(pid, str(winner))
            await self._post_move(move_id)
            return Posted(pid, str(move_id))
        except OdooError as exc:
            # 4xx: Odoo's validation (UserError, ValidationError, AccessError on a record)
            return Rejected(pid, "erp_rejected", exc.message or str(exc))

    async def _draft(self, delta: PostingDelta) -> int:
        """A draft for this posting id: one an earlier crash left unclaimed, else a new one."""
        orphans = await self.call(MOVE, "search_read",
                                  domain=[["ref", "=", delta.posting_id], ["state", "=", "draft"],
                                          ["journal_id", "=", self.journal_id]],
                                  fields=["id"], order="id")
        if orphans:
            return int(orphans[0]["id"])
        created = await self.call(MOVE, "create", vals_list=[self.values(delta)])
        return int(created[0])

    async def _claim(self, posting_id: str, move_id: int) -> tuple[int, bool]:
        """Create the unique key for ``move_id``: (the move the key points at, created now).

        ``created`` is False when another sender (or our own earlier, unanswered call) holds
        the key, even on this very draft: then whoever else holds it may be posting it too.
        """
        try:
            await self.call(XMLID, "create", vals_list=[{
                "module": self.module, "name": posting_id, "model": MOVE, "res_id": move_id,
                "noupdate": True}])
            return move_id, True
        except (OdooError, TransientError):
            # Lost the race (unique violation), or the answer was lost: read what holds.
            target = await self.key_target(posting_id)
            if target is None:
                raise
            return target, False

    async def _state(self, move_id: int) -> str | None:
        rows = await self.call(MOVE, "read", ids=[move_id], fields=["state"])
        return str(rows[0]["state"]) if rows else None

    async def _post_move(self, move_id: int) -> None:
        """action_post; a concurrent sender posting the same move first is not an error."""
        try:
            await self.call(MOVE, "action_post", ids=[move_id])
        except OdooError:
            if await self._state(move_id) != "posted":
                raise

    async def _post_if_draft(self, move_id: int) -> None:
        if await self._state(move_id) == "draft":
            await self._post_move(move_id)

    # -- reading back ---------------------------------------------------------------------
    async def read_journal(self, *, day_from: date | None = None,
                           day_to: date | None = None) -> AsyncIterator[JournalEntry]:
        """Moves that hold a posting-id key, page by page (keys, then moves, then lines)."""
        await self._ready()
        offset = 0
        while True:
            keys = await self.call(XMLID, "search_read",
                                   domain=[["module", "=", self.module], ["model", "=", MOVE]],
                                   fields=["name", "res_id"], offset=offset,
                                   limit=self.page_size, order="id")
            if not keys:
                return
            offset += len(keys)
            by_move = {int(k["res_id"]): str(k["name"]) for k in keys}
            domain: list[Any] = [["id", "in", sorted(by_move)]]
            if day_from is not None:
                domain.append(["date", ">=", day_from.isoformat()])
            if day_to is not None:
                domain.append(["date", "<=", day_to.isoformat()])
            moves = await self.call(MOVE, "search_read", domain=domain,
                                    fields=["id", "name", "date", "state"])
            lines = await self.call("account.move.line", "search_read",
                                    domain=[["move_id", "in", [m["id"] for m in moves]]],
                                    fields=_LINE_FIELDS, order="id")
            per_move: dict[int, list[JournalLine]] = {}
            for line in lines:
                move = line["move_id"][0] if isinstance(line["move_id"], list) else line[
                    "move_id"]
                account = line["account_id"][0] if isinstance(line["account_id"], list) else \
                    line["account_id"]
                per_move.setdefault(int(move), []).append(JournalLine(
                    self.account_codes.get(int(account), f"odoo:{account}"),
                    number_cents(line["debit"], "Odoo debit"),
                    number_cents(line["credit"], "Odoo credit")))
            for move in moves:
                yield JournalEntry(
                    posting_id=by_move[int(move["id"])], erp_ref=str(move["name"]),
                    effective_date=date.fromisoformat(str(move["date"])), entity=None,
                    lines=tuple(per_move.get(int(move["id"]), ())),
                    posted=move["state"] == "posted")
            if len(keys) < self.page_size:
                return


def build(settings: Settings, chart: ChartOfAccounts, *,
          transport: httpx.AsyncBaseTransport | None = None) -> Odoo:
    s = settings
    key = s.erp_odoo_api_key.get_secret_value() if s.erp_odoo_api_key else ""
    return Odoo(chart, base_url=s.erp_odoo_url, api_key=key, database=s.erp_odoo_db,
                journal=s.erp_odoo_journal, module=s.erp_odoo_xmlid_module,
                timeout_s=s.erp_timeout_s, page_size=s.erp_cloud_page_size,
                batch_max=s.erp_cloud_batch_max, transport=transport)
