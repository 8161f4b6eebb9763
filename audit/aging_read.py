"""`rcmflow aging`'s reads: every account's claims, adjudications and statements from
rcm.accounts, then its AR-moving posting deltas from rcm.postings (``audit/aging.py`` ages
them).

rcm.accounts is read first: the worker writes an event's deltas before its head, so
rcm.postings read afterwards holds every delta of the heads read. A delta newer than its
account's head (in flight) is left out, so each account's aged AR is its head's buckets.

**Memory.** Per account: its claims (id, start, payer), adjudication ids, statement dates;
per delta that moves AR (charges, adjudications, payments, refunds, write-offs): one small
tuple. Other deltas and item kinds are skipped unparsed where the key tells.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import orjson
from rich.console import Console

from rcmflow.audit.aging import AccountLedger, Movement, account_ledger, ar_movements
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record, iter_topic, log_ends, topic_partitions
from rcmflow.runtime.progress import LOG_EVERY_S, progress
from rcmflow.streams.layout import SEPARATOR, read_record

__all__ = ["read_ledgers", "READ_BATCH"]

READ_BATCH = 10_000
#: The item kinds aging reads (charges, payments and refunds are known from the deltas).
_KINDS = (b"claim", b"adjudication", b"transition")
_SEP = SEPARATOR.encode()


def _wanted(key: bytes | None) -> bool:
    if key is None:
        return False
    parts = key.split(_SEP, 2)
    return len(parts) == 1 or parts[1] in _KINDS


async def _each(kafka: KafkaConnection, topic: str, console: Console, every_s: float,
                keep: Any) -> Any:
    partitions = await topic_partitions(kafka, topic)
    ends = await log_ends(kafka, topic, partitions) if partitions else {}
    with progress(console, f"reading {topic}", total=sum(ends.values()) or None,
                  every_s=every_s) as advance:
        for p in partitions:
            if not ends.get(p):
                continue
            async for records in iter_topic(kafka, topic, start={p: 0}, keep=keep,
                                            batch_records=READ_BATCH, on_read=advance):
                yield records


async def read_ledgers(kafka: KafkaConnection, *, console: Console | None = None,
                       progress_every_s: float = LOG_EVERY_S) -> list[AccountLedger]:
    """Every account's ``AccountLedger``, in account order (provider keys too: their AR is
    always zero, so they bring no rows)."""
    from rcmflow.streams.topics import ACCOUNTS, POSTINGS

    console = console or Console(file=io.StringIO())
    newest: dict[bytes, bytes | None] = {}
    async for records in _each(kafka, ACCOUNTS, console, progress_every_s, _wanted):
        for record in records:  # one partition at a time, in offset order: newest wins
            assert record.key is not None
            newest[record.key] = record.value
    heads: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[Any, dict[str, Any]]] = defaultdict(dict)
    for key, value in newest.items():
        if value is None:
            continue
        try:
            part, doc = read_record(key, orjson.loads(value))
        except ValueError:
            continue  # not an account's record
        if part.item is None:
            heads[part.account] = doc
        else:
            items[part.account][part.item] = doc
    del newest
    moves: dict[str, list[Movement]] = defaultdict(list)
    seen: set[str] = set()
    async for records in _each(kafka, POSTINGS, console, progress_every_s, None):
        for record in records:
            _take(record, heads, moves, seen)
    ledgers = []
    for account in sorted(heads):
        snapshot = _snapshot(heads[account], items.get(account, {}))
        ledger = account_ledger(snapshot, ())
        ledger.movements = sorted(moves.get(account, ()), key=lambda m: m.version)
        balances = heads[account].get("balances") or {}
        ledger.head_ar = (int(balances.get("insurance_ar", 0)), int(balances.get("patient_ar", 0)))
        ledgers.append(ledger)
    return ledgers


def _take(record: Record, heads: dict[str, dict[str, Any]],
          moves: dict[str, list[Movement]], seen: set[str]) -> None:
    if record.value is None or record.key is None:
        return
    account = record.key.decode(errors="replace")
    head = heads.get(account)
    if head is None:
        return  # no head yet (in flight) or removed
    delta = orjson.loads(record.value)
    if int(delta["account_version"]) > int(head.get("version", 0)):
        return  # its head is not written yet
    found = ar_movements(delta)
    if found and delta["posting_id"] not in seen:  # a re-send counts once
        seen.add(delta["posting_id"])
        moves[account].extend(found)


def _snapshot(head: dict[str, Any], items: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    claims: dict[str, dict[str, Any]] = {}
    for (kind, _), item in items.items():
        if kind == "claim":
            claims.setdefault(item["claim_id"], {"adjudications": []}).update(item)
    for (kind, _), item in items.items():
        if kind == "adjudication":
            claims.setdefault(item["claim_id"], {"claim_id": item["claim_id"],
                                                 "adjudications": []})["adjudications"].append(item)
    transitions = [item for (kind, _), item in items.items() if kind == "transition"]
    return {"account": head["account"], "claims": claims, "transitions": transitions}

