"""Operator views: account snapshots, posting history and the DLQ, read from their topics.

This is the operators' side (full detail); the patient-facing view is the FHIR facade.
"""

from __future__ import annotations

import json
from typing import Any

from rcmflow.kafka_connection import KafkaConnection
from rcmflow.kafka_io import read_topic
from rcmflow.streams.topics import ACCOUNTS, DLQ, POSTINGS

__all__ = ["latest_snapshots", "posting_history", "dlq_records", "format_cents"]


async def latest_snapshots(kafka: KafkaConnection, account: str | None = None) -> dict[str, Any]:
    """Account -> its newest snapshot (the compacted rcm.accounts topic, newest wins)."""
    wanted = account.encode() if account is not None else None
    records = await read_topic(
        kafka, ACCOUNTS, keep=(lambda key: key == wanted) if wanted is not None else None
    )
    latest: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.key is None:
            continue
        if record.value is None:
            latest.pop(record.key.decode(), None)  # tombstone
        else:
            latest[record.key.decode()] = json.loads(record.value)
    return latest


async def posting_history(kafka: KafkaConnection, account: str) -> list[dict[str, Any]]:
    """The account's posting deltas in account-version order, re-sends folded by posting id."""
    wanted = account.encode()
    records = await read_topic(kafka, POSTINGS, keep=lambda key: key == wanted)
    by_id: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.value is not None:
            delta = json.loads(record.value)
            by_id.setdefault(delta["posting_id"], delta)
    return sorted(by_id.values(), key=lambda d: int(d["account_version"]))


async def dlq_records(kafka: KafkaConnection) -> list[dict[str, Any]]:
    """Every DLQ record, once per dlq_id, oldest first."""
    records = await read_topic(kafka, DLQ)
    by_id: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.timestamp_ms):
        if record.value is None:
            continue
        try:
            doc = json.loads(record.value)
        except ValueError:
            continue
        by_id.setdefault(doc.get("dlq_id", f"{record.partition}:{record.offset}"), doc)
    return list(by_id.values())


def format_cents(cents: object) -> str:
    """Integer cents as dollars for people: 123456 -> '1,234.56' (no float on the way)."""
    assert isinstance(cents, int), f"money must be integer cents, got {cents!r}"
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"
