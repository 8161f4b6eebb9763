"""Payment-file rows -> canonical events: lockbox / portal payments, refunds, write-offs.

One row is one money movement. Columns (CSV header, any order, case-insensitive; the same
keys in JSON lines):

====================  =========================================================================
``type``              ``payment``, ``refund`` or ``write_off`` (required)
``account``           patient account number (required)
``amount``            decimal string, more than 0, whole cents: ``125``, ``125.5``, ``125.50``
``date``              ``YYYY-MM-DD`` (read as UTC midnight) or ISO 8601 with an offset (required)
``reference``         the source's unique id for the row: lockbox item, portal transaction,
                      refund check, write-off id (required; the idempotency key)
``channel``           payment only: ``lockbox``, ``portal``, ``pos``, ``mail``, ``phone``
                      (default: the command's ``--channel``, ``lockbox`` unless given)
``reason``            write-off only (required): ``price_concession``, ``bad_debt``,
                      ``charity``, ``small_balance``, ``administrative``, ``denial``
``to``                refund only: ``patient`` (default) or ``payer``
``from_ar``           write-off only, optional: ``patient`` or ``insurance``
``entity``            facility / legal entity code (default ``01``)
``batch``             deposit or batch id, kept as the correlation id (optional)
``currency``          ISO 4217 code (default ``USD``)
====================  =========================================================================

Idempotency keys are ``payment:<channel>:<reference>``, ``refund:<reference>`` and
``write_off:<reference>``, so a re-sent file changes nothing. ``row_totals`` reads an applied
row's money again from its own columns (type, account, amount, date) for `rcmflow reconcile`
(connectors/inbound/totals.py: ``payments``, ``refunds``, ``write_offs``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, BinaryIO, TypeAlias

from pydantic import ValidationError

from rcmflow.connectors.inbound.exceptions import FileError
from rcmflow.connectors.inbound.totals import SourceTotals
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, DEFAULT_WINDOW, DateWindow
from rcmflow.streams.events import EventKind, PatientPayment, Refund, WriteOff
from rcmflow.streams.exceptions import MoneyError
from rcmflow.streams.money import parse_cents
from rcmflow.streams.rejections import Problem

__all__ = ["COLUMNS", "REQUIRED", "RawRow", "read_rows", "row_event", "row_problem",
           "row_number", "row_totals", "PaymentEvent",]

COLUMNS = ("type", "account", "amount", "date", "reference", "channel", "reason", "to",
           "from_ar", "entity", "batch", "currency")
REQUIRED = ("type", "account", "amount", "date", "reference")
#: Longest row kept (a bound on one line, and on what one DLQ record carries).
ROW_CHARS_MAX = 8192
#: Longest physical line read at all: a longer one is skipped in pieces (``row_too_large``),
#: so one line without an end cannot take the file into memory.
LINE_CHARS_MAX = 64 * 1024
#: What stands for such a line (a blank line: the CSV reader skips it).
TOO_LONG = "\n"

PaymentEvent: TypeAlias = PatientPayment | Refund | WriteOff
MEASURE_BY_TYPE = {"payment": "payments", "refund": "refunds", "write_off": "write_offs"}


@dataclass(frozen=True)
class RawRow:
    number: int  # spreadsheet row: the CSV header is row 1; JSON lines count from 1
    fields: dict[str, str]
    text: str


def row_problem(number: int, code: str, detail: str) -> Problem:
    """Why row ``number`` is no event, placed at it ('row 7'; the rows count as a
    spreadsheet's: the CSV header is row 1)."""
    return Problem(reason_code=code, detail=detail, place=f"row {number}")


def row_number(problem: Problem) -> int:
    """The row a ``row_problem`` is placed at; 0 for the file as a whole."""
    number = problem.place.removeprefix("row ")
    return int(number) if problem.place.startswith("row ") and number.isdigit() else 0


def read_rows(stream: BinaryIO, *, name: str) -> tuple[list[str], Iterator[RawRow | Problem]]:
    """Warnings about the file and its rows, CSV or JSON lines (by name, or by content), read
    from ``stream`` as the rows are taken: one row (at most ``LINE_CHARS_MAX``) in memory."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    lines = _bounded_lines(text)
    first: list[str] = []
    for line in lines:  # the first line with something on it says which kind of file
        first.append(line)
        if line.strip():
            break
    head = "".join(first)
    is_json = name.lower().endswith((".jsonl", ".ndjson", ".json")) or head.lstrip()[:1] == "{"
    ahead = itertools.chain(first, lines)
    if is_json:
        return [], _json_rows(ahead, lines.too_long)
    try:
        return _csv_rows(ahead, lines.too_long)
    except FileError:
        text.detach()  # the caller may read the file's start again for the DLQ record
        raise


class _bounded_lines:  # noqa: N801 - used as a generator
    """The lines of ``text`` (with their ends), each at most ``LINE_CHARS_MAX`` characters:
    a longer line is read past in pieces and comes out as ``TOO_LONG`` (its number kept in
    ``too_long``), so no line of a file, however long, is ever whole in memory."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._text = text
        self.number = 0
        self.too_long: list[int] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._text.readline(LINE_CHARS_MAX + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) <= LINE_CHARS_MAX or line.endswith(("\n", "\r")):
            return line
        while line and not line.endswith(("\n", "\r")):
            line = self._text.readline(LINE_CHARS_MAX)
        self.too_long.append(self.number)
        return TOO_LONG


def _csv_rows(lines: Iterator[str], too_long: list[int]) -> tuple[list[str],
                                                                    Iterator[RawRow | Problem]]:
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise FileError("the file is empty: a header row naming the columns comes first") from None
    except csv.Error as exc:
        raise FileError(f"the header row is not CSV: {exc}") from None
    if too_long:
        raise FileError(f"the header row is longer than {LINE_CHARS_MAX} characters")
    names = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise FileError(f"the header has no {', '.join(missing)} column"
                        f"{'s' if len(missing) > 1 else ''} (required: {', '.join(REQUIRED)})")
    unknown = sorted({n for n in names if n and n not in COLUMNS})
    warnings = [f"columns ignored: {', '.join(u[:30] for u in unknown)}"] if unknown else []

    def too_long_rows() -> Iterator[Problem]:
        for number in too_long:
            yield row_problem(number, "row_too_large", f"row {number} is longer than "
                              f"{LINE_CHARS_MAX} characters: not read")
        too_long.clear()

    def rows() -> Iterator[RawRow | Problem]:
        number = reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a quote never closed: the rest cannot be split
                yield from too_long_rows()
                yield row_problem(number + 1, "row_invalid_csv", f"row {number + 1} is not CSV "
                                  f"({exc}): it and the rows after it were not read")
                return
            at = number + 1
            number = reader.line_num
            yield from too_long_rows()
            if not any(v.strip() for v in values):
                continue
            raw = ",".join(values)
            if len(values) != len(names):
                yield row_problem(at, "row_columns", f"row {at} has {len(values)} fields, the "
                                  f"header {len(names)}")
                continue
            fields = {n: v.strip() for n, v in zip(names, values, strict=True) if n in COLUMNS}
            yield RawRow(at, fields, raw[:ROW_CHARS_MAX])
        yield from too_long_rows()

    return warnings, rows()


def _json_rows(lines: Iterator[str], too_long: list[int]) -> Iterator[RawRow | Problem]:
    for number, line in enumerate(lines, start=1):
        skipped = bool(too_long) and too_long[0] == number
        if skipped:
            too_long.pop(0)
        line = line.rstrip("\r\n")
        if skipped or len(line) > ROW_CHARS_MAX:
            size = f"over {LINE_CHARS_MAX}" if skipped else str(len(line))
            yield row_problem(number, "row_too_large", f"row {number} is {size} characters, at "
                              f"most {ROW_CHARS_MAX}")
            continue
        if not line.strip():
            continue
        try:
            # Numbers as Decimal: a JSON amount 10.10 stays exact, never a float.
            doc = json.loads(line, parse_float=Decimal)
        except ValueError as exc:
            yield row_problem(number, "row_invalid_json",
                              f"row {number} is not JSON: {exc.args[0][:80]}")
            continue
        if not isinstance(doc, dict):
            yield row_problem(number, "row_invalid_json", f"row {number} is not a JSON object")
            continue
        fields = {str(k).lower(): ("" if v is None else str(v)) for k, v in doc.items()
                  if str(k).lower() in COLUMNS and not isinstance(v, (dict, list, bool))}
        yield RawRow(number, fields, line)


def _when(text: str) -> datetime:
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("a date-time needs an offset, e.g. 2026-03-01T10:00:00+00:00")
    return when


def row_event(row: RawRow, *, channel: str,
              date_window: DateWindow = DEFAULT_WINDOW) -> PaymentEvent | Problem:
    """The event a row stands for, or why the row cannot be one."""
    f = row.fields

    def refused(code: str, detail: str) -> Problem:
        return row_problem(row.number, code, f"row {row.number}: {detail}")

    missing = [c for c in REQUIRED if not f.get(c)]
    if missing:
        return refused("row_missing_field", f"no {', '.join(missing)}")
    kind = f["type"].lower()
    if kind not in ("payment", "refund", "write_off"):
        return refused("row_unknown_type", f"type {f['type'][:20]!r} is not payment, refund "
                       "or write_off")
    try:
        amount = parse_cents(f["amount"])
    except MoneyError as exc:
        return refused("row_invalid_amount", str(exc))
    if amount <= 0:
        return refused("row_invalid_amount", f"amount {f['amount']} is not more than 0")
    try:
        occurred = _when(f["date"])
    except ValueError as exc:
        return refused("row_invalid_date", f"date {f['date'][:30]!r}: {exc}")
    if (implausible := date_window.problem(occurred, "date")) is not None:
        return refused(DATE_OUT_OF_RANGE, implausible)
    common: dict[str, Any] = {
        "account": f["account"], "amount_cents": amount, "occurred_at": occurred,
        "correlation_id": f.get("batch") or None, "currency": f.get("currency") or "USD",
        "dimensions": {"entity": f.get("entity") or "01"},
    }
    reference = f["reference"]
    # The row's words (channel, to, reason, from_ar) are unchecked text, lower-cased: the
    # models' Literal fields check them, so the events are built with model_validate.
    try:
        if kind == "payment":
            via = (f.get("channel") or channel).lower()
            return PatientPayment.model_validate(common | {
                "kind": EventKind.PATIENT_PAYMENT, "event_id": f"payment:{via}:{reference}",
                "source": via, "channel": via, "reference": reference})
        if kind == "refund":
            return Refund.model_validate(common | {
                "kind": EventKind.REFUND, "event_id": f"refund:{reference}",
                "source": "payments-file", "to": (f.get("to") or "patient").lower(),
                "reference": reference})
        if not f.get("reason"):
            return refused("row_missing_field", "a write_off needs a reason")
        return WriteOff.model_validate(common | {
            "kind": EventKind.WRITE_OFF, "event_id": f"write_off:{reference}",
            "source": "payments-file", "reason": f["reason"].lower(),
            "from_ar": (f.get("from_ar") or "").lower() or None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "row"
        return refused("row_invalid", f"{where}: {err['msg']}")


def row_totals(row: RawRow, event: PaymentEvent) -> SourceTotals:
    """What an applied row says in money (its ``amount`` on its ``date``), attributed to its
    event."""
    f = row.fields
    totals = SourceTotals(event_ids=[(event.account, event.event_id)])
    totals.add(f["account"], _when(f["date"]).date(), MEASURE_BY_TYPE[f["type"].lower()],
               parse_cents(f["amount"]), event.event_id)
    return totals
