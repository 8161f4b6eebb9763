"""Event factories with defaults: tests say only what matters to them."""

from __future__ import annotations

import itertools
import json
from typing import Any

from rcmflow.streams.events import EVENT_ADAPTER, Event
from rcmflow.streams.processor import Message
from rcmflow.streams.topics import EVENTS

_ids = itertools.count(1)

COMMERCIAL = {"entity": "01", "payer": "ACME", "payer_class": "COMMERCIAL"}


def event_doc(kind: str, account: str = "A1", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "event_id": fields.pop("event_id", f"E{next(_ids)}"),
        "account": account,
        "kind": kind,
        "occurred_at": fields.pop("occurred_at", "2026-11-20T10:00:00-05:00"),
        "source": fields.pop("source", "test"),
    }
    doc.update(fields)
    return doc


def charge(amount_cents: int = 10_000, account: str = "A1", revenue_code: str = "0450",
           **fields: Any) -> dict[str, Any]:
    dims = {"entity": "01", "revenue_code": revenue_code, **fields.pop("dimensions", {})}
    return event_doc("charge_posted", account, amount_cents=amount_cents, dimensions=dims,
                     **fields)


def adjudication(charge_cents: int, paid_cents: int, adjustments: list[tuple[str, str, int]],
                 account: str = "A1", claim_id: str = "C1", outcome: str = "processed",
                 **fields: Any) -> dict[str, Any]:
    return event_doc(
        "claim_adjudicated", account, claim_id=claim_id, outcome=outcome,
        charge_cents=charge_cents, paid_cents=paid_cents,
        adjustments=[{"group": g, "reason": r, "amount_cents": a} for g, r, a in adjustments],
        dimensions=fields.pop("dimensions", COMMERCIAL), **fields)


def payment(amount_cents: int, account: str = "A1", **fields: Any) -> dict[str, Any]:
    return event_doc("patient_payment", account, amount_cents=amount_cents, **fields)


def parse(doc: dict[str, Any]) -> Event:
    return EVENT_ADAPTER.validate_python(doc)


def messages(docs: list[dict[str, Any] | tuple[str, bytes]], partition: int = 0,
             first_offset: int = 0) -> list[Message]:
    """rcm.events messages with consecutive offsets: docs keyed by their account, or raw
    (key, value) pairs for input that is not a valid event."""
    out = []
    for offset, doc in enumerate(docs, start=first_offset):
        if isinstance(doc, tuple):
            key, value = doc
        else:
            key, value = doc["account"], json.dumps(doc).encode()
        out.append(Message(EVENTS, partition, offset, key.encode(), value, 1_795_000_000_000))
    return out
