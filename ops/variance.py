"""Contract variance for people: the worker's ``contract`` records, with totals per payer and
period (`rcmflow variance list`).

The items are rcm.dlq records of stage ``contract`` (``streams/variance.py`` makes them): an
``underpaid`` or ``overpaid`` record per 835 line paid other than the fee schedule says, an
``unpriced`` record per claim with lines the schedule in effect does not price. They are
worked in the exception queue like any other (`rcmflow dlq list --stage contract`, `dlq
resolve`); this module only reads them (and their work-queue states) and adds them up.
Lines of payers with no schedule at all are not recorded: the worker's metric counts them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from rcmflow.ops.items import is_done
from rcmflow.ops.workqueue import read_states
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.topics import DLQ

__all__ = ["Period", "VarianceFilters", "every_variance", "totals", "period_of", "STAGE",
           "VARIANCES"]

STAGE = "contract"
VARIANCES = ("underpaid", "overpaid")
Period = Literal["day", "month", "year"]


@dataclass(frozen=True)
class VarianceFilters:
    payer: str | None = None
    #: Paid (the 835's payment date) on or after this day.
    since: date | None = None
    #: todo (open or replayed without an outcome), done, or all.
    state: Literal["todo", "done", "all"] = "all"


def period_of(day: str, period: Period) -> str:
    """The period a payment date (YYYY-MM-DD) falls in: the day, YYYY-MM or YYYY."""
    return {"day": day, "month": day[:7], "year": day[:4]}[period]


async def every_variance(kafka: KafkaConnection, filters: VarianceFilters
                         ) -> list[dict[str, Any]]:
    """The contract items ``filters`` keeps (newest record of each), oldest payment first:
    one flat row each, with its work-queue state."""
    newest: dict[str, dict[str, Any]] = {}
    for record in sorted(await read_topic(kafka, DLQ), key=lambda r: (r.timestamp_ms, r.offset)):
        if record.value is None or b'"stage":"contract"' not in record.value:
            continue  # the other exceptions are skipped unparsed
        try:
            doc = json.loads(record.value)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("stage") == STAGE:
            newest[str(doc["dlq_id"])] = doc
    states = await read_states(kafka)
    rows = []
    for doc in newest.values():
        row = _row(doc)
        state = states.get(row["dlq_id"])
        row["state"] = "open" if state is None else state.state
        done = is_done(state)
        if filters.state != "all" and done != (filters.state == "done"):
            continue
        if filters.payer is not None and row["payer"] != filters.payer:
            continue
        if filters.since is not None and row["paid_on"] < filters.since.isoformat():
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: (r["paid_on"], str(r["account"]), str(r["claim_id"]),
                                       str(r.get("line_id"))))


def _row(doc: dict[str, Any]) -> dict[str, Any]:
    context = doc.get("context") or {}
    row: dict[str, Any] = {
        "dlq_id": doc["dlq_id"], "kind": doc.get("reason_code"),
        "payer": context.get("payer") or "", "payer_class": context.get("payer_class"),
        "entity": context.get("entity"), "account": context.get("account"),
        "claim_id": context.get("claim_id"), "paid_on": str(context.get("paid_on") or ""),
        "schedule_version": context.get("schedule_version"),
    }
    if row["kind"] == "unpriced":
        row["unpriced_lines"] = int(context.get("unpriced_lines") or 0)
        row["lines"] = context.get("lines") or []
        return row
    for name in ("line_id", "procedure_code", "revenue_code", "service_date",
                 "expected_cents", "allowed_cents", "difference_cents"):
        row[name] = context.get(name)
    row["paid_cents"] = context.get("line_paid_cents")
    return row


def totals(rows: Iterable[dict[str, Any]], period: Period) -> list[dict[str, Any]]:
    """Per payer and period: underpaid and overpaid (count, cents, both positive) and the
    unpriced lines; ordered by payer, then period."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["payer"], period_of(row["paid_on"], period))
        total = out.setdefault(key, {
            "payer": key[0], "period": key[1], "underpaid_count": 0, "underpaid_cents": 0,
            "overpaid_count": 0, "overpaid_cents": 0, "unpriced_lines": 0})
        if row["kind"] == "unpriced":
            total["unpriced_lines"] += row["unpriced_lines"]
        elif row["kind"] in VARIANCES:
            total[f"{row['kind']}_count"] += 1
            total[f"{row['kind']}_cents"] += abs(int(row["difference_cents"] or 0))
    return [out[k] for k in sorted(out)]
