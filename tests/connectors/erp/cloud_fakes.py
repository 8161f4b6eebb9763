"""Stateful little fakes of NetSuite, Odoo and ERPNext at the HTTP boundary (httpx MockTransport).

Each keeps its entries in dicts and enforces the ERP's own duplicate guard (NetSuite's unique
externalId, Odoo's UNIQUE(module, name) on ir.model.data, a Frappe Custom Field marked Unique),
so a test fails when an adapter double-posts. Request and error shapes follow the ERPs' docs
(cited in the adapter modules). Faults are queued per request:

- ``"timeout"`` / ``"connect"``: the request never reaches the ERP;
- ``"lost"``: the ERP does the work, then the answer is lost (a read timeout);
- ``"500"`` / ``"503"`` / ``"401"`` / ``"403"``: that status, nothing done.

Amounts are parsed with ``parse_float=Decimal`` and stored as Decimal; a float anywhere in
a request body is an assertion error.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import httpx

from rcmflow.connectors.erp.cloud_http import dumps

__all__ = ["Fake", "NetSuiteFake", "OdooFake", "ErpNextFake"]


def _no_float(value: Any) -> None:
    assert not isinstance(value, float), f"float on the wire: {value!r}"
    if isinstance(value, dict):
        for item in value.values():
            _no_float(item)
    elif isinstance(value, list):
        for item in value:
            _no_float(item)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=dumps(body) if body is not None else b"",
                          headers={"Content-Type": "application/json", **(headers or {})})


class Fake:
    """Fault queue, auth check, request log; subclasses implement ``handle``."""

    auth_header = ""

    def __init__(self) -> None:
        self.faults: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.ids = itertools.count(101)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._serve)

    async def _serve(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)  # let concurrent senders interleave, as on a real network
        self.requests.append((request.method, unquote(request.url.path)))
        fault = self.faults.pop(0) if self.faults else None
        if fault == "timeout":
            raise httpx.ConnectTimeout("fake: timed out", request=request)
        if fault == "connect":
            raise httpx.ConnectError("fake: connection refused", request=request)
        if fault and fault.isdigit():
            return httpx.Response(int(fault), text=f"<html>{fault}</html>")
        if request.headers.get("Authorization") != self.auth_header:
            return self.unauthorized()
        body = json.loads(request.content, parse_float=Decimal) if request.content else None
        _no_float(body)
        response = self.handle(request, body)
        if fault == "lost":
            raise httpx.ReadTimeout("fake: answer lost", request=request)
        return response

    def unauthorized(self) -> httpx.Response:
        return _json(401, {"error": "unauthorized"})

    def handle(self, request: httpx.Request, body: Any) -> httpx.Response:
        raise NotImplementedError


# -- NetSuite -----------------------------------------------------------------------------
class NetSuiteFake(Fake):
    auth_header = "Bearer good-token"

    def __init__(self, gl_codes: set[str], closed_before: date | None = None) -> None:
        super().__init__()
        self.accounts = {code: str(n) for n, code in enumerate(sorted(gl_codes), 1)}
        self.codes = {v: k for k, v in self.accounts.items()}
        self.closed_before = closed_before
        self.entries: dict[str, dict[str, Any]] = {}  # externalId -> record

    @staticmethod
    def error(status: int, detail: str, code: str) -> httpx.Response:
        return _json(status, {"type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
                              "title": "Bad Request", "status": status,
                              "o:errorDetails": [{"detail": detail, "o:errorCode": code}]})

    def unauthorized(self) -> httpx.Response:
        return self.error(401, "Invalid login attempt.", "INVALID_LOGIN")

    def handle(self, request: httpx.Request, body: Any) -> httpx.Response:
        path = unquote(request.url.path)
        if request.method == "POST" and path.endswith("/record/v1/journalentry"):
            return self.create(body)
        if request.method == "GET" and "/journalentry/eid:" in path:
            record = self.entries.get(path.rsplit("eid:", 1)[1])
            if record is None:
                return self.error(404, "The record instance does not exist.", "NONEXISTENT_ID")
            return _json(200, {"id": record["id"], "externalId": record["externalId"],
                               "tranDate": record["tranDate"]})
        if request.method == "POST" and path.endswith("/query/v1/suiteql"):
            assert request.headers.get("Prefer") == "transient"
            return self.suiteql(body["q"], int(request.url.params["limit"]),
                                int(request.url.params["offset"]))
        return self.error(404, f"no route {path}", "INVALID_URL")

    def create(self, body: dict[str, Any]) -> httpx.Response:
        eid = body["externalId"]
        if eid in self.entries:
            return self.error(400, "A record with this external ID already exists.",
                              "DUP_RCRD")
        if self.closed_before and date.fromisoformat(body["tranDate"]) < self.closed_before:
            return self.error(400, "The transaction date you specified is within a closed "
                                   "period.", "USER_ERROR")
        lines = body["line"]["items"]
        for item in lines:
            if item["account"]["id"] not in self.codes:
                return self.error(400, f"Invalid account reference key "
                                       f"{item['account']['id']}.", "INVALID_KEY_OR_REF")
        debit = sum(Decimal(x.get("debit", 0)) for x in lines)
        credit = sum(Decimal(x.get("credit", 0)) for x in lines)
        if debit != credit:
            return self.error(400, "The total of debit lines must equal the total of credit "
                                   "lines.", "USER_ERROR")
        record = {"id": str(next(self.ids)), "externalId": eid, "tranDate": body["tranDate"],
                  "subsidiary": body["subsidiary"]["id"], "lines": lines,
                  "memo": body.get("memo")}
        self.entries[eid] = record
        return httpx.Response(204, headers={
            "Location": f"https://fake.suitetalk.api.netsuite.com/services/rest/record/v1/"
                        f"journalentry/{record['id']}"})

    def suiteql(self, query: str, limit: int, offset: int) -> httpx.Response:
        if "FROM account" in query:
            rows: list[dict[str, Any]] = [{"id": i, "acctnumber": c}
                                          for c, i in self.accounts.items()]
        elif "FROM transaction" in query:
            assert "t.externalid LIKE 'pst" in query
            rows = []
            for record in self.entries.values():
                for item in record["lines"]:
                    rows.append({"id": record["id"], "externalid": record["externalId"],
                                 "tranid": f"JE{record['id']}", "trandate": record["tranDate"],
                                 "posting": "T", "subsidiary": record["subsidiary"],
                                 "acctnumber": self.codes[item["account"]["id"]],
                                 # SuiteQL answers values as strings
                                 "debit": str(item["debit"]) if "debit" in item else None,
                                 "credit": str(item["credit"]) if "credit" in item else None})
        else:
            return self.error(400, "Invalid search query.", "INVALID_PARAMETER")
        page = rows[offset:offset + limit]
        return _json(200, {"links": [], "count": len(page), "offset": offset,
                           "totalResults": len(rows), "hasMore": offset + limit < len(rows),
                           "items": page})


# -- Odoo ---------------------------------------------------------------------------------
def _test(have: Any, op: str, value: Any) -> bool:
    if isinstance(have, list):  # many2one as [id, name]
        have = have[0]
    if op == "=":
        return bool(have == value)
    if op == "in":
        return have in value
    if op == "is":
        return bool(have) == (value == "set")
    if have is None:
        return False
    return bool(have >= value) if op == ">=" else bool(have <= value)


def _match(record: dict[str, Any], domain: list[list[Any]]) -> bool:
    return all(_test(record.get(field), op, value) for field, op, value in domain)


class OdooFake(Fake):
    auth_header = "bearer good-key"

    def __init__(self, gl_codes: set[str], lock_date: date | None = None) -> None:
        super().__init__()
        self.accounts = {code: n for n, code in enumerate(sorted(gl_codes), 1)}
        self.journals = [{"id": 7, "code": "MISC"}]
        self.lock_date = lock_date
        self.moves: dict[int, dict[str, Any]] = {}
        self.xmlids: dict[tuple[str, str], dict[str, Any]] = {}

    @staticmethod
    def error(status: int, name: str, message: str) -> httpx.Response:
        return _json(status, {"name": name, "message": message, "arguments": [message],
                              "context": {}, "debug": "Traceback (most recent call last): ..."})

    def unauthorized(self) -> httpx.Response:
        return self.error(401, "werkzeug.exceptions.Unauthorized", "Invalid apikey")

    def posted(self) -> list[dict[str, Any]]:
        return [m for m in self.moves.values() if m["state"] == "posted"]

    def handle(self, request: httpx.Request, body: Any) -> httpx.Response:
        model, method = unquote(request.url.path).split("/")[-2:]
        handler: Callable[[dict[str, Any]], httpx.Response] | None = getattr(
            self, f"{model.replace('.', '_')}__{method}", None)
        if handler is None:
            return self.error(404, "werkzeug.exceptions.NotFound", f"{model}.{method}")
        return handler(body or {})

    @staticmethod
    def _page(rows: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
        rows = [r for r in rows if _match(r, body.get("domain", []))]
        offset = body.get("offset", 0)
        rows = rows[offset:offset + body["limit"]] if body.get("limit") else rows[offset:]
        return [{k: r.get(k) for k in body.get("fields", r)} | {"id": r["id"]} for r in rows]

    def account_journal__search_read(self, body: dict[str, Any]) -> httpx.Response:
        return _json(200, self._page(self.journals, body))

    def account_account__search_read(self, body: dict[str, Any]) -> httpx.Response:
        return _json(200, self._page([{"id": i, "code": c} for c, i in self.accounts.items()],
                                     body))

    def ir_model_data__search_read(self, body: dict[str, Any]) -> httpx.Response:
        return _json(200, self._page(list(self.xmlids.values()), body))

    def ir_model_data__create(self, body: dict[str, Any]) -> httpx.Response:
        created = []
        for vals in body["vals_list"]:
            key = (vals["module"], vals["name"])
            if key in self.xmlids:  # the UNIQUE (module, name) index
                return self.error(422, "odoo.exceptions.ValidationError",
                                  'duplicate key value violates unique constraint '
                                  '"ir_model_data_module_name_uniq_index"')
            record = {"id": next(self.ids), **vals}
            self.xmlids[key] = record
            created.append(record["id"])
        return _json(200, created)

    def account_move__search_read(self, body: dict[str, Any]) -> httpx.Response:
        return _json(200, self._page(list(self.moves.values()), body))

    def account_move__read(self, body: dict[str, Any]) -> httpx.Response:
        rows = [self.moves[i] for i in body["ids"] if i in self.moves]
        return _json(200, [{k: r[k] for k in body["fields"]} | {"id": r["id"]} for r in rows])

    def account_move__create(self, body: dict[str, Any]) -> httpx.Response:
        created = []
        for vals in body["vals_list"]:
            lines = []
            for command, _, line in vals["line_ids"]:
                assert command == 0
                if line["account_id"] not in self.accounts.values():
                    return self.error(422, "odoo.exceptions.ValidationError",
                                      f"Record does not exist or has been deleted. "
                                      f"(Record: account.account({line['account_id']},))")
                lines.append(line)
            move_id = next(self.ids)
            self.moves[move_id] = {"id": move_id, "name": "/", "state": "draft",
                                   "ref": vals["ref"], "date": vals["date"],
                                   "journal_id": vals["journal_id"], "lines": lines,
                                   "narration": vals.get("narration")}
            created.append(move_id)
        return _json(200, created)

    def account_move__unlink(self, body: dict[str, Any]) -> httpx.Response:
        for move_id in body["ids"]:
            if self.moves[move_id]["state"] != "draft":
                return self.error(422, "odoo.exceptions.UserError",
                                  "You cannot delete an entry which has been posted once.")
        for move_id in body["ids"]:
            del self.moves[move_id]
        return _json(200, True)

    def account_move__action_post(self, body: dict[str, Any]) -> httpx.Response:
        for move_id in body["ids"]:
            move = self.moves[move_id]
            if move["state"] == "posted":
                return self.error(422, "odoo.exceptions.UserError",
                                  f"The entry {move['name']} (id {move_id}) is already posted.")
            if self.lock_date and date.fromisoformat(move["date"]) <= self.lock_date:
                return self.error(422, "odoo.exceptions.UserError",
                                  f"You cannot add/modify entries prior to and inclusive of "
                                  f"the lock date {self.lock_date.isoformat()}.")
            debit = sum(Decimal(x["debit"]) for x in move["lines"])
            credit = sum(Decimal(x["credit"]) for x in move["lines"])
            if debit != credit:
                return self.error(422, "odoo.exceptions.UserError",
                                  "The move is not balanced.")
        for move_id in body["ids"]:
            self.moves[move_id] |= {"state": "posted", "name": f"MISC/2026/{move_id:05d}"}
        return _json(200, None)

    def account_move_line__search_read(self, body: dict[str, Any]) -> httpx.Response:
        codes = {i: c for c, i in self.accounts.items()}
        rows = [{"id": n, "move_id": [m["id"], m["name"]],
                 "account_id": [x["account_id"], f"{codes[x['account_id']]} Account"],
                 "debit": x["debit"], "credit": x["credit"]}
                for m in self.moves.values() for n, x in enumerate(m["lines"])]
        return _json(200, self._page(rows, body))


# -- ERPNext ------------------------------------------------------------------------------
class ErpNextFake(Fake):
    auth_header = "token key1:secret1"
    field = "rcm_posting_id"

    def __init__(self, gl_codes: set[str], company: str = "General Hospital",
                 closed_before: date | None = None, unique_field: bool = True) -> None:
        super().__init__()
        self.company = company
        self.abbr = "GH"
        self.accounts = {f"{code} - Ledger {code} - {self.abbr}": code for code in gl_codes}
        self.closed_before = closed_before
        self.unique_field = unique_field
        self.entries: dict[str, dict[str, Any]] = {}  # name -> doc
        self.series = itertools.count(1)

    @staticmethod
    def error(status: int, exc_type: str, message: str) -> httpx.Response:
        return _json(status, {
            "exc_type": exc_type,
            "exception": f"frappe.exceptions.{exc_type}: {message}",
            "exc": "[\"Traceback (most recent call last): ...\"]",
            "_server_messages": json.dumps([json.dumps({"message": message,
                                                        "title": "Message",
                                                        "indicator": "red"})])})

    def unauthorized(self) -> httpx.Response:
        return self.error(401, "AuthenticationError", "Invalid Credentials")

    def handle(self, request: httpx.Request, body: Any) -> httpx.Response:
        path = unquote(request.url.path)
        params = request.url.params
        if request.method == "GET" and path == "/api/resource/Custom Field":
            rows = [{"fieldname": self.field, "unique": 1 if self.unique_field else 0,
                     "dt": "Journal Entry"}]
            return _json(200, {"data": self._list(rows, params)})
        if request.method == "GET" and path == "/api/resource/Account":
            rows = [{"name": n, "account_number": c, "company": self.company, "is_group": 0}
                    for n, c in self.accounts.items()]
            return _json(200, {"data": self._list(rows, params)})
        if request.method == "POST" and path == "/api/resource/Journal Entry":
            return self.insert(body)
        if request.method == "GET" and path == "/api/resource/Journal Entry":
            return _json(200, {"data": self._list(list(self.entries.values()), params)})
        if request.method == "GET" and path.startswith("/api/resource/Journal Entry/"):
            doc = self.entries.get(path.rsplit("/", 1)[1])
            if doc is None:
                return self.error(404, "DoesNotExistError", "Journal Entry not found")
            return _json(200, {"data": doc})
        return self.error(404, "DoesNotExistError", f"no route {path}")

    @staticmethod
    def _list(rows: list[dict[str, Any]], params: httpx.QueryParams) -> list[dict[str, Any]]:
        filters = json.loads(params.get("filters", "[]"))
        fields = json.loads(params.get("fields", '["name"]'))
        rows = [r for r in rows if _match(r, filters)]
        start = int(params.get("limit_start", 0))
        length = int(params.get("limit_page_length", 20))
        rows = rows[start:start + length] if length else rows[start:]
        return [{k: r.get(k) for k in fields} for r in rows]

    def insert(self, doc: dict[str, Any]) -> httpx.Response:
        """Insert and (docstatus 1) submit in one transaction: all or nothing."""
        if doc.get("company") != self.company:
            return self.error(417, "LinkValidationError",
                              f"Could not find Company: {doc.get('company')}")
        for n, row in enumerate(doc["accounts"], 1):
            if row["account"] not in self.accounts:
                return self.error(417, "LinkValidationError",
                                  f"Could not find Row #{n}: Account: {row['account']}")
        if self.closed_before and date.fromisoformat(doc["posting_date"]) < self.closed_before:
            return self.error(417, "ValidationError",
                              f"You cannot create or cancel any accounting entries with in "
                              f"the closed Accounting Period {self.closed_before.year - 1}")
        debit = sum(Decimal(r["debit_in_account_currency"]) for r in doc["accounts"])
        credit = sum(Decimal(r["credit_in_account_currency"]) for r in doc["accounts"])
        if debit != credit:
            return self.error(417, "ValidationError",
                              f"Total Debit must be equal to Total Credit. The difference is "
                              f"{debit - credit}")
        key = doc.get(self.field)
        if self.unique_field and any(e[self.field] == key for e in self.entries.values()):
            return self.error(417, "UniqueValidationError", "Rcm Posting Id must be unique")
        name = f"ACC-JV-2026-{next(self.series):05d}"
        saved = {**doc, "name": name, "docstatus": doc.get("docstatus", 0),
                 "accounts": [{**r, "debit": r["debit_in_account_currency"],
                               "credit": r["credit_in_account_currency"]}
                              for r in doc["accounts"]]}
        self.entries[name] = saved
        return _json(200, {"data": saved})
