"""`rcmflow upgrade`: rewrite, once, the table records an older rcmflow wrote.

This module is the only place that knows their shapes; every reader refuses them
(``streams.exceptions.UpgradeNeeded``), so a deployment that skipped this step stops with a line
naming the command instead of reading them wrongly. Run it with every worker stopped (they
write the same topics), before starting this version's workers and facade.

Two kinds of record:

- **Layout-1 heads** in rcm.accounts: the whole account in one record under ``<account>``,
  with ``charges``, ``claims`` (each with its ``adjudications``) and ``payments``, and no
  ``layout`` field. Each becomes its layout-2 records (``streams/layout.py``): one record per
  item, then the head over the old record. rcm.accounts is compacted, so an account no event
  touched since keeps its layout-1 record for ever until this rewrites it. Items get the
  record's version (layout 1 did not keep when each one last changed).
- **Dedup records without a day** in the dedup table's changelog (``<app>-dedup-changelog``),
  written before the dedup horizon existed. Each gets ``horizon_day`` and its index key. The
  day chosen is ``KEPT_FOR_EVER_DAY`` (9999-12-31), so the record is never purged, as before.
  Why not the upgrade day: the horizon promises that a purged record's event is dated before
  the purge mark, so that its replay is refused (``streams/dedup.py``). A record does not know
  its event's date, and events applied then could be dated after any day the upgrade picks
  (up to RCMFLOW_DATE_FUTURE_DAYS ahead, and without any bound before the date window
  existed): filed by the upgrade day, such a record would be purged too early and a replay of
  its event posted twice. The cost is what it was: those records stay (~200 bytes each).

Records are written to the partition they were read from, as the worker writes them (an
account's records all live in its rcm.events partition; Kafka's partitioner would put an item
key elsewhere). Items before heads, and index keys before dedup records, each acknowledged
before the next: a run that stops half-way leaves the old record in place, and running again
finishes it. A second run finds nothing to do and says so.

Memory: a first pass keeps the key and offset of each record to rewrite; a second reads
those again and writes them a chunk at a time (``PUBLISH_IN_FLIGHT_MAX`` records).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console

from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import PUBLISH_IN_FLIGHT_MAX, iter_topic
from rcmflow.runtime.progress import progress
from rcmflow.streams.dedup import DedupEntry, horizon_key
from rcmflow.streams.layout import LAYOUT, head_key, item_key, parse_key
from rcmflow.streams.state import ITEM_KINDS, AccountHead, ItemRef, head_json
from rcmflow.streams.topics import ACCOUNTS, dedup_changelog, record_bytes_max

__all__ = ["upgrade", "UpgradeReport", "split_layout_1", "dated", "KEPT_FOR_EVER_DAY"]

#: The day undated dedup records are filed under: past any clock, so never purged.
KEPT_FOR_EVER_DAY = date.max.toordinal()

#: (partition, key, value) to produce.
_Outs = list[tuple[int, bytes, bytes]]


@dataclass
class UpgradeReport:
    accounts_read: int = 0
    heads_rewritten: int = 0
    items_written: int = 0
    dedup_read: int = 0
    dedup_dated: int = 0
    #: Keys of records that are neither today's shape nor an old one this knows (left as
    #: they are; the readers will refuse them).
    unreadable: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.heads_rewritten or self.dedup_dated or self.unreadable)

    def lines(self) -> list[str]:
        if self.nothing_to_do:
            return [f"nothing to upgrade: {self.accounts_read:,} rcm.accounts records and "
                    f"{self.dedup_read:,} dedup records read, all of this version's shape"]
        out = [f"rcm.accounts: {self.accounts_read:,} records read, {self.heads_rewritten:,} "
               f"layout-1 accounts rewritten as layout 2 ({self.items_written:,} item records "
               "written)",
               f"dedup changelog: {self.dedup_read:,} records read, {self.dedup_dated:,} "
               "records without a day given one (kept for ever, as before)"]
        if self.unreadable:
            shown = ", ".join(self.unreadable[:5])
            out.append(f"{len(self.unreadable)} records of no known shape left as they are "
                       f"(e.g. {shown}): the worker and facade will refuse them")
        return out


def split_layout_1(snapshot: Mapping[str, Any]
                   ) -> tuple[dict[str, Any], dict[ItemRef, dict[str, Any]]]:
    """A layout-1 account record (JSON dict) as a layout-2 head and items (JSON dicts)."""
    version = int(snapshot["version"])
    items: dict[ItemRef, dict[str, Any]] = {}
    for charge in snapshot.get("charges", ()):
        items[("charge", charge["event_id"])] = {"version": version, **charge}
    for claim_id, claim in snapshot.get("claims", {}).items():
        adjudications = claim.get("adjudications", [])
        items[("claim", claim_id)] = {
            "version": version,
            **{k: v for k, v in claim.items() if k != "adjudications"},
            "first_adjudicated_at": adjudications[0]["occurred_at"] if adjudications else None,
        }
        for adj in adjudications:
            items[("adjudication", adj["event_id"])] = {"version": version,
                                                        "claim_id": claim_id, **adj}
    for payment in snapshot.get("payments", ()):
        items[("payment", payment["event_id"])] = {"version": version, **payment}
    counts = {kind: 0 for kind in ITEM_KINDS}
    for kind, _ in items:
        counts[kind] += 1
    head = {k: v for k, v in snapshot.items() if k not in ("charges", "claims", "payments")}
    head |= {"layout": LAYOUT, "items": counts}
    # A record this cannot make whole is not rewritten; one it can is written as the worker
    # writes a head (every field of this version, with its default where layout 1 had none).
    head = orjson.loads(head_json(AccountHead.model_validate(head)))
    return head, items


def dated(record: Mapping[str, Any]) -> dict[str, Any]:
    """An undated dedup record (JSON dict) with its day (``KEPT_FOR_EVER_DAY``)."""
    doc = {**record, "horizon_day": KEPT_FOR_EVER_DAY}
    DedupEntry.model_validate(doc)
    return doc


async def upgrade(kafka: KafkaConnection, app_id: str, console: Console) -> UpgradeReport:
    """Read rcm.accounts and the dedup changelog to their ends and rewrite what an older
    rcmflow wrote; ``console`` shows progress. Broker errors (KafkaError, TimeoutError)
    propagate: nothing already acknowledged is undone, and running again is safe."""
    report = UpgradeReport()
    changelog = dedup_changelog(app_id)
    heads = await _newest(kafka, ACCOUNTS, _old_head, console, report, "accounts_read")
    undated = await _newest(kafka, changelog, _old_dedup, console, report, "dedup_read")

    def account_records(partition: int, key: bytes, value: bytes) -> tuple[_Outs, _Outs]:
        account = parse_key(key).account
        head, items = split_layout_1(orjson.loads(value))
        report.heads_rewritten += 1
        report.items_written += len(items)
        return ([(partition, item_key(account, ref), orjson.dumps(item))
                 for ref, item in items.items()],
                [(partition, head_key(account), orjson.dumps(head))])

    def dedup_records(partition: int, key: bytes, value: bytes) -> tuple[_Outs, _Outs]:
        doc = dated(orjson.loads(value))
        report.dedup_dated += 1
        return ([(partition, horizon_key(KEPT_FOR_EVER_DAY, key), b"")],
                [(partition, key, orjson.dumps(doc))])

    if heads:
        await _rewrite(kafka, ACCOUNTS, heads, account_records, console, report)
    if undated:
        await _rewrite(kafka, changelog, undated, dedup_records, console, report)
    return report


def _old_head(key: bytes, value: bytes) -> bool:
    """A layout-1 head: a head record whose value has no ``layout``."""
    try:
        if parse_key(key).item is not None:
            return False
    except ValueError:
        return False  # not an account's record
    return b'"layout"' not in value or "layout" not in _json(value)


def _old_dedup(key: bytes, value: bytes) -> bool:
    """A dedup record without a day (reserved keys start with NUL and are not records)."""
    if key.startswith(b"\x00"):
        return False
    return b'"horizon_day"' not in value or "horizon_day" not in _json(value)


def _json(value: bytes) -> Any:
    """A record's JSON value; {} when it is none (then it is reported as unreadable)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


async def _newest(kafka: KafkaConnection, topic: str, old: Callable[[bytes, bytes], bool],
                  console: Console, report: UpgradeReport, counter: str
                  ) -> dict[tuple[int, bytes], int]:
    """(partition, key) -> offset of the records whose key's newest value ``old`` takes (a
    compacted topic still holds older values until it is compacted)."""
    found: dict[tuple[int, bytes], int] = {}
    with progress(console, f"reading {topic}") as advance:
        def on_read(n: int) -> None:
            setattr(report, counter, getattr(report, counter) + n)
            advance(n)
        async for batch in iter_topic(kafka, topic, on_read=on_read):
            for record in batch:
                if record.key is None:
                    continue
                where = (record.partition, record.key)
                if record.value is not None and old(record.key, record.value):
                    found[where] = record.offset
                else:
                    found.pop(where, None)  # rewritten since, or deleted
    return found


async def _rewrite(kafka: KafkaConnection, topic: str, old: dict[tuple[int, bytes], int],
                   convert: Callable[[int, bytes, bytes], tuple[_Outs, _Outs]],
                   console: Console, report: UpgradeReport) -> None:
    """Read the ``old`` records again and write what ``convert`` makes of each: its first
    records, acknowledged, then its second ones, a chunk of records at a time (memory: one
    chunk, whatever the topic's size). A record ``convert`` cannot read is named and left."""
    keys = {key for _, key in old}
    producer = AIOKafkaProducer(**kafka.client_options(), acks="all", linger_ms=5,
                                max_request_size=record_bytes_max(topic))
    await producer.start()
    try:
        first: _Outs = []
        then: _Outs = []

        async def flush() -> None:
            for step in (first, then):  # each acknowledged before the next is sent
                await asyncio.gather(*[await producer.send(topic, key=k, value=v, partition=p)
                                       for p, k, v in step])
                step.clear()

        with progress(console, f"rewriting {topic}", total=len(old)) as advance:
            async for batch in iter_topic(kafka, topic, keep=lambda k: k in keys):
                for record in batch:
                    assert record.key is not None
                    if old.get((record.partition, record.key)) != record.offset:
                        continue  # an older value of the key
                    assert record.value is not None
                    try:
                        records = convert(record.partition, record.key, record.value)
                    except (ValueError, KeyError, TypeError, AttributeError):
                        report.unreadable.append(
                            f"{topic} {record.key.decode(errors='replace')[:80]!r}")
                        continue
                    first.extend(records[0])
                    then.extend(records[1])
                    advance(1)
                    if len(first) + len(then) >= PUBLISH_IN_FLIGHT_MAX:
                        await flush()
            await flush()
    finally:
        await producer.stop()
