"""Operator views: accounts, posting history and the DLQ's records, read from their topics
(the exception work queue itself: ``ops/workqueue.py``).

This is the operators' side (full detail); the patient-facing view is the FHIR facade.
rcm.accounts holds an account as its head (key ``<account>``) and one record per item (keys
``<account>/<kind>/<id>``, ``streams/layout.py``), read through ``layout.read_record``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rcmflow.ops.log_pages import Cursor, picked_between, read_page
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record, read_topic
from rcmflow.streams.layout import SEPARATOR, assemble, is_head_key, parse_key, read_record
from rcmflow.streams.state import ItemRef
from rcmflow.streams.topics import ACCOUNTS, DLQ, POSTINGS

__all__ = ["latest_heads", "latest_snapshots", "posting_history", "account_view", "dlq_records",
           "heads_page", "LISTING_LIMIT"]

#: Records on one page of `accounts list` / `dlq list` unless --limit says otherwise.
LISTING_LIMIT = 50

_Heads = dict[str, dict[str, Any]]
_Items = dict[str, dict[ItemRef, dict[str, Any]]]


async def _latest(kafka: KafkaConnection, keep: Callable[[bytes | None], bool]
                  ) -> tuple[_Heads, _Items]:
    """The newest head and items of the accounts whose keys ``keep`` takes (compacted:
    newest wins; a head's tombstone removes the account with its items)."""
    records = await read_topic(kafka, ACCOUNTS, keep=keep)
    heads: _Heads = {}
    items: _Items = defaultdict(dict)
    # An account's records share a partition: its offsets order them. Only a key's newest
    # record is read: an older one may be of a shape `rcmflow upgrade` has since replaced.
    newest = {r.key: r.offset for r in records}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.key is None or newest[record.key] != record.offset:
            continue
        try:
            key = parse_key(record.key)
        except ValueError:
            continue  # not an account's record
        if record.value is None:
            if key.item is None:
                heads.pop(key.account, None)
                items.pop(key.account, None)
            else:
                items[key.account].pop(key.item, None)
            continue
        part, doc = read_record(record.key, json.loads(record.value))
        if part.item is None:
            heads[part.account] = doc
        else:
            items[part.account][part.item] = doc
    return heads, items


async def latest_heads(kafka: KafkaConnection) -> dict[str, Any]:
    """Account -> its newest head (status, version, balances): item records are skipped."""
    heads, _ = await _latest(kafka, is_head_key)
    return heads


async def latest_snapshots(kafka: KafkaConnection, account: str | None = None) -> dict[str, Any]:
    """Account -> its newest head and items as one document (``layout.assemble``: balances,
    charges, claims with their adjudications, payments), for one account or every one."""
    # Every partition is read (the worker's changelog places an account's records in its
    # rcm.events partition), only this account's keys kept.
    wanted = None if account is None else account.encode()
    prefix = f"{account}{SEPARATOR}".encode()

    def keep(key: bytes | None) -> bool:
        return wanted is None or key == wanted or (key or b"").startswith(prefix)

    heads, items = await _latest(kafka, keep)
    return {a: assemble(head, items.get(a, {})) for a, head in heads.items()}


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


async def heads_page(kafka: KafkaConnection, *, limit: int, after: Cursor | None
                     ) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page of account heads, most recently changed first, and the next page's cursor.

    rcm.accounts is compacted but holds older heads of an account until compaction: a head
    is shown only where it is the account's newest record, so each account is on exactly one
    page. A later page first reads the keys the earlier pages covered (keys only), so pages
    deeper in the list cost more than the first.
    """
    seen: set[bytes] = set() if after is None else await picked_between(
        kafka, ACCOUNTS, after, lambda r: r.key if r.key is not None and is_head_key(r.key)
        else None)

    def shown(record: Record) -> bool:
        assert record.key is not None
        if record.key in seen:
            return False  # an older head of an account already listed (or deleted)
        seen.add(record.key)
        return record.value is not None  # a tombstone: the account was removed

    page = await read_page(kafka, ACCOUNTS, limit=limit, after=after,
                           keep=lambda r: is_head_key(r.key), shown=shown)
    heads = []
    for record in page.records:
        assert record.key is not None and record.value is not None
        part, doc = read_record(record.key, json.loads(record.value))
        if part.item is None:
            heads.append(doc)
    return heads, page.next


async def account_view(kafka: KafkaConnection, account: str) -> dict[str, Any] | None:
    """An account as the ops site shows it: its snapshot (buckets, claims, payments) and its
    posting deltas; None for an account rcm.accounts does not hold."""
    snapshot = (await latest_snapshots(kafka, account)).get(account)
    if snapshot is None:
        return None
    return {"snapshot": snapshot, "history": await posting_history(kafka, account)}
