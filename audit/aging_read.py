"""`rcmflow aging`'s reads: every account's claims, adjudications and statements from
rcm.accounts, then its AR-moving posting deltas from rcm.postings (``audit/aging.py`` ages
them).

rcm.accounts is read first: the worker writes an event's deltas before its head, so
rcm.postings read afterwards holds every delta of the heads read. A delta newer than its
account's head (in flight) is left out, so each account's aged AR is its head's buckets.

**Memory.** Per account: its head's version and AR, its claims (id, start, payer),
adjudications (id, claim), statement days; per delta that moves AR (charges, adjudications,
payments, refunds, write-offs): one small tuple, and its posting id (re-sends count once).
Charges, payments and refunds are skipped unparsed where the key tells; other transitions
are parsed and dropped.
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
from rcmflow.streams.layout import SEPARATOR, is_head_key, parse_key, read_record

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
    # Key -> what aging keeps of its newest record (None: a tombstone or nothing to keep):
    # each partition is read in offset order and an account's records share one.
    kept: dict[bytes, Any] = {}
    async for records in _each(kafka, ACCOUNTS, console, progress_every_s, _wanted):
        for record in records:
            assert record.key is not None
            kept[record.key] = None if record.value is None else _keep(record.key, record.value)
    heads: dict[str, tuple[int, int, int]] = {}  # account -> (version, insurance, patient)
    parts: dict[str, dict[str, Any]] = defaultdict(lambda: {"claims": {}, "transitions": []})
    for key, value in kept.items():
        if value is None:
            continue
        try:
            part = parse_key(key)
        except ValueError:
            continue  # not an account's record
        if part.item is None:
            heads[part.account] = value
        elif part.item[0] == "claim":
            parts[part.account]["claims"].setdefault(
                value["claim_id"], {"adjudications": []}).update(value)
        elif part.item[0] == "transition":
            parts[part.account]["transitions"].append(value)
    for key, value in kept.items():  # adjudications once their claims are in
        if value is None or is_head_key(key):
            continue
        part = parse_key(key)
        if part.item is not None and part.item[0] == "adjudication":
            claim = parts[part.account]["claims"].setdefault(
                value["claim_id"], {"claim_id": value["claim_id"], "adjudications": []})
            claim["adjudications"].append(value)
    del kept
    moves: dict[str, list[Movement]] = defaultdict(list)
    seen: set[str] = set()
    async for records in _each(kafka, POSTINGS, console, progress_every_s, None):
        for record in records:
            _take(record, heads, moves, seen)
    ledgers = []
    for account in sorted(heads):
        ledger = account_ledger({"account": account, **parts.get(account, {})}, ())
        ledger.movements = sorted(moves.get(account, ()), key=lambda m: m.version)
        ledger.head_ar = heads[account][1:]
        ledgers.append(ledger)
    return ledgers


def _keep(key: bytes, value: bytes) -> Any:
    """What aging needs of an rcm.accounts record: a head's version and AR buckets, a claim's
    header, an adjudication's claim, a statement's day (None for other transitions)."""
    doc = orjson.loads(value)
    try:
        part, doc = read_record(key, doc)
    except ValueError:
        return None
    if part.item is None:
        balances = doc.get("balances") or {}
        return (int(doc.get("version", 0)), int(balances.get("insurance_ar", 0)),
                int(balances.get("patient_ar", 0)))
    kind = part.item[0]
    if kind == "claim":
        return {k: doc.get(k) for k in ("claim_id", "submitted_at", "first_adjudicated_at",
                                        "payer", "payer_class")}
    if kind == "adjudication":
        return {k: doc.get(k) for k in ("claim_id", "event_id", "occurred_at", "payer")}
    if doc.get("state") == "patient_statement_issued":
        return {"state": doc["state"], "at": doc["at"]}
    return None


def _take(record: Record, heads: dict[str, tuple[int, int, int]],
          moves: dict[str, list[Movement]], seen: set[str]) -> None:
    if record.value is None or record.key is None:
        return
    account = record.key.decode(errors="replace")
    head = heads.get(account)
    if head is None:
        return  # no head yet (in flight) or removed
    delta = orjson.loads(record.value)
    if int(delta["account_version"]) > head[0]:
        return  # its head is not written yet
    found = ar_movements(delta)
    if found and delta["posting_id"] not in seen:  # a re-send counts once
        seen.add(delta["posting_id"])
        moves[account].extend(found)
