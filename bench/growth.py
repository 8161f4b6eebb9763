"""How rcmflow's costs grow: with an account's history, with the number of accounts, with time.

Three measurements in one run, on the real processor (``Processor.process``) and the records
the worker writes (no broker: every record is counted as the bytes the worker would send):

1. **history** — per-event cost vs the items one account holds (10 … 20,000): a mix of new
   charge, reversal of an old charge, claim submitted, claim adjudicated and patient payment,
   each its own batch, on RocksDB stores (rocksdict, the worker's options, keys and values)
   and on ``MemoryTables``. µs per event (process + encoding the records + the local store
   write) and bytes written per event (posting delta, DLQ, dedup record and next offset,
   rcm.accounts head and items). Layout 1 (before: the whole account in one record per event)
   is computed from the same account: ``layout.assemble`` of its head and items, serialised.
2. **accounts** — a worker's RSS and on-disk store size vs accounts (10k, 100k, 1M), each
   size filled in a fresh subprocess through the processor in batches of 1,000 messages.
3. **horizon** — dedup table keys and bytes vs simulated days, with and without the dedup
   horizon (``horizon_step``: the hook for the horizon's API).

``python -m bench.growth --help`` lists the options; ``--quick`` is a smoke run (< 1 min).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any, Protocol, cast

import orjson
import psutil
from faust.stores.rocksdb import RocksDBOptions
from rocksdict import Rdict, WriteBatch, WriteOptions

from bench.report import RUNS_DIR, render_growth_section, write_results_md
from rcmflow.runtime.settings import Settings
from rcmflow.streams.chart import ChartOfAccounts, load_chart
from rcmflow.streams.dedup import HORIZON_PREFIX, PURGED_BEFORE_KEY, DedupEntry, horizon_key
from rcmflow.streams.layout import (
    assemble,
    decode_head,
    head_key,
    item_key,
    parse_key,
)
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.outgoing import OutRecord
from rcmflow.streams.processor import BatchResult, Message, Processor
from rcmflow.streams.shell.run import GC_THRESHOLDS
from rcmflow.streams.state import AccountHead, Item, ItemRef
from rcmflow.streams.topics import DLQ, EVENTS, POSTINGS
from rcmflow.tables.account_tables import (
    NEXT_OFFSET_KEY,
    ROCKSDB_OPTIONS,
    AccountTables,
    HeadCache,
)

__all__ = ["main", "history_point", "accounts_step", "horizon_curve", "horizon_step",
           "RocksTables", "MemoryStore", "layout1_record"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
#: The dedup changelog's topic (its name only labels records here), and a label for its
#: tombstones (deleted keys: the dedup horizon's purge).
DEDUP_TOPIC = "rcmflow-dedup-changelog"
DEDUP_DELETE = "rcmflow-dedup-changelog (tombstone)"
BASE_MS = int(datetime(2026, 1, 5, 13, 0, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000
BATCH = 1000
#: The history sizes past the worker's ``account_items_max`` (10,000) need it lifted.
ITEMS_HEADROOM = 5_000
#: Flatness target: per-event cost from 10 to 10,000 items within this factor.
FLAT_TARGET = 1.5
FLAT_RANGE = (10, 10_000)


# --- Events --------------------------------------------------------------------------------

DIMS = {"entity": "01", "payer": "ACME", "payer_class": "COMMERCIAL"}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _doc(kind: str, account: str, event_id: str, ms: int, **fields: Any) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": event_id, "account": account, "kind": kind,
            "occurred_at": _iso(ms), "source": "bench", **fields}


def charge_doc(account: str, event_id: str, ms: int, amount_cents: int) -> dict[str, Any]:
    return _doc("charge_posted", account, event_id, ms, amount_cents=amount_cents,
                dimensions={**DIMS, "revenue_code": "0450", "procedure_code": "99284",
                            "encounter": f"V-{account}"})


def reversal_doc(account: str, event_id: str, ms: int, reverses: str,
                 amount_cents: int) -> dict[str, Any]:
    return _doc("charge_reversed", account, event_id, ms, amount_cents=amount_cents,
                reverses_event_id=reverses, dimensions={**DIMS, "revenue_code": "0450"})


def claim_doc(account: str, event_id: str, ms: int, claim_id: str,
              amounts: list[int]) -> dict[str, Any]:
    lines = [{"line_id": str(i + 1), "charge_cents": cents, "revenue_code": "0450",
              "procedure_code": "99284"} for i, cents in enumerate(amounts)]
    return _doc("claim_submitted", account, event_id, ms, claim_id=claim_id,
                total_charge_cents=sum(amounts), lines=lines,
                dimensions={**DIMS, "claim_id": claim_id})


def adjudication_doc(account: str, event_id: str, ms: int, claim_id: str,
                     total_cents: int) -> dict[str, Any]:
    """Processed: 60 % paid, 30 % CO-45, the rest PR-1 (charge − paid = adjustments)."""
    paid = total_cents * 60 // 100
    contractual = total_cents * 30 // 100
    patient = total_cents - paid - contractual
    adjustments = [{"group": "CO", "reason": "45", "amount_cents": contractual},
                   {"group": "PR", "reason": "1", "amount_cents": patient}]
    return _doc("claim_adjudicated", account, event_id, ms, claim_id=claim_id,
                outcome="processed", status_code="1", payer_claim_control_number=f"P{claim_id}",
                charge_cents=total_cents, paid_cents=paid, patient_responsibility_cents=patient,
                adjustments=adjustments, correlation_id=f"TRN-{claim_id}",
                dimensions={**DIMS, "claim_id": claim_id})


def payment_doc(account: str, event_id: str, ms: int, amount_cents: int) -> dict[str, Any]:
    return _doc("patient_payment", account, event_id, ms, amount_cents=amount_cents,
                channel="portal", reference=f"R-{event_id}")


def partition_of(account: str, partitions: int) -> int:
    return zlib.crc32(account.encode()) % partitions


@dataclass
class Feed:
    """rcm.events messages: consecutive offsets per partition, a simulated clock."""

    partitions: int = 1
    clock_ms: int = BASE_MS
    step_ms: int = 1000
    offsets: dict[int, int] = field(default_factory=dict)

    def tick(self) -> int:
        self.clock_ms += self.step_ms
        return self.clock_ms

    def message(self, doc: dict[str, Any]) -> Message:
        account = doc["account"]
        part = partition_of(account, self.partitions)
        offset = self.offsets.get(part, 0)
        self.offsets[part] = offset + 1
        return Message(EVENTS, part, offset, account.encode(), orjson.dumps(doc), self.clock_ms)


def cycle_docs(account: str, cycle: int, feed: Feed) -> list[dict[str, Any]]:
    """One billing cycle, five events, five new items: two charges, their claim, its 835,
    a patient payment."""
    tag = f"{cycle:06d}"
    amounts = [10_000 + cycle % 97 * 100, 25_000 + cycle % 89 * 100]
    total = sum(amounts)
    return [
        charge_doc(account, f"c{tag}a", feed.tick(), amounts[0]),
        charge_doc(account, f"c{tag}b", feed.tick(), amounts[1]),
        claim_doc(account, f"s{tag}", feed.tick(), f"CL{tag}", amounts),
        adjudication_doc(account, f"a{tag}", feed.tick(), f"CL{tag}", total),
        payment_doc(account, f"p{tag}", feed.tick(), (total - total * 90 // 100) // 2 + 1),
    ]


def mix_docs(account: str, round_: int, old_charge: str, feed: Feed) -> list[dict[str, Any]]:
    """The timed mix: a new charge, a partial reversal of an old one, a claim for the new
    charge, its 835, a patient payment."""
    tag = f"{round_:06d}"
    amount = 40_000 + round_ % 50 * 100
    return [
        charge_doc(account, f"tc{tag}", feed.tick(), amount),
        reversal_doc(account, f"tr{tag}", feed.tick(), old_charge, 100),
        claim_doc(account, f"ts{tag}", feed.tick(), f"TC{tag}", [amount]),
        adjudication_doc(account, f"ta{tag}", feed.tick(), f"TC{tag}", amount),
        payment_doc(account, f"tp{tag}", feed.tick(), 1_500),
    ]


def account_docs(account: str, feed: Feed) -> list[dict[str, Any]]:
    """An account of the accounts curve, one item per event: a charge, its claim, the 835,
    a patient payment, a second charge (the curve keeps the first ``--per-account``)."""
    return [
        charge_doc(account, "c1", feed.tick(), 12_000),
        claim_doc(account, "s1", feed.tick(), "CL1", [12_000]),
        adjudication_doc(account, "a1", feed.tick(), "CL1", 12_000),
        payment_doc(account, "p1", feed.tick(), 600),
        charge_doc(account, "c2", feed.tick(), 3_000),
    ]


MIX_KINDS = ("charge_posted", "charge_reversed", "claim_submitted", "claim_adjudicated",
             "patient_payment")


# --- Records and stores --------------------------------------------------------------------

def records_of(result: BatchResult, messages: list[Message]) -> list[OutRecord]:
    """Everything the worker sends for a batch: deltas, DLQ records, dedup records and the
    next offset of each partition (``AccountTables.dedup_records``), heads and items
    (``AccountTables.head_records``/``item_records``: the encoding is part of the cost)."""
    out = [OutRecord(POSTINGS, p, k, v) for p, k, v in result.postings]
    out += [OutRecord(DLQ, p, k, v) for p, k, v in result.dlq]
    # Dedup records and index keys, then the horizon's purge (None values are deletes).
    for dedup in (result.dedup_writes, result.purge_marks, result.purged_records,
                  result.purged_index):
        out += [OutRecord(DEDUP_TOPIC, p, k, v) if v is not None
                else OutRecord(DEDUP_DELETE, p, k, b"") for (p, k), v in dedup.items()]
    nexts = {m.partition: m.offset + 1 for m in messages}
    out += [OutRecord(DEDUP_TOPIC, p, NEXT_OFFSET_KEY, str(o).encode()) for p, o in nexts.items()]
    out += AccountTables.head_records(result.heads)
    out += AccountTables.item_records(result.transitions)
    out += AccountTables.item_records(result.items)
    return out


def bytes_by_topic(records: list[OutRecord]) -> dict[str, int]:
    """Key + value bytes per kind of record (``accounts`` = rcm.accounts heads and items)."""
    sizes = {"postings": 0, "dlq": 0, "dedup": 0, "accounts": 0}
    names = {POSTINGS: "postings", DLQ: "dlq", DEDUP_TOPIC: "dedup", DEDUP_DELETE: "dedup"}
    for r in records:
        sizes[names.get(r.topic, "accounts")] += len(r.key) + len(r.value)
    return sizes


class Store(Protocol):
    """The processor's ``Lookups`` plus the worker's local write of a batch's records."""

    def load_head(self, partition: int, account: str) -> AccountHead | None: ...

    def load_item(self, partition: int, account: str, ref: ItemRef) -> Item | None: ...

    def load_dedup(self, partition: int, key: bytes) -> DedupEntry | None: ...

    def put(self, records: list[OutRecord], result: BatchResult) -> None: ...

    def account_docs(self, partition: int, account: str
                     ) -> tuple[dict[str, Any], dict[ItemRef, dict[str, Any]]]: ...


class MemoryStore(MemoryTables):
    """``MemoryTables`` written with the batch's already encoded records."""

    def put(self, records: list[OutRecord], result: BatchResult) -> None:
        for r in records:
            if r.topic == DEDUP_TOPIC:
                self.dedup[(r.partition, r.key)] = r.value
            elif r.topic == DEDUP_DELETE:
                self.dedup.pop((r.partition, r.key), None)
            elif r.topic not in (POSTINGS, DLQ):
                self.accounts[(r.partition, r.key)] = r.value

    def account_docs(self, partition: int, account: str
                     ) -> tuple[dict[str, Any], dict[ItemRef, dict[str, Any]]]:
        head = orjson.loads(self.accounts[(partition, head_key(account))])
        prefix = head_key(account) + b"/"
        items: dict[ItemRef, dict[str, Any]] = {}
        for (p, key), value in self.accounts.items():
            if p == partition and key.startswith(prefix):
                ref = parse_key(key).item
                assert ref is not None
                items[ref] = orjson.loads(value)
        return head, items


class RocksTables:
    """The worker's ``AccountTables`` without Faust: per partition one accounts and one dedup
    RocksDB store, opened by Faust's own ``RocksDBOptions(**ROCKSDB_OPTIONS).open`` (the call
    its rocksdb store makes: rocksdict ``Options``, a 16 MiB block cache per store, 2 × 8 MiB
    memtables, 10-bit bloom filters), written a batch at a time without the WAL (``TableIO``),
    heads kept decoded in an LRU cache of ``state_cache_max``."""

    def __init__(self, root: Path, partitions: int, state_cache_max: int) -> None:
        options = RocksDBOptions(**ROCKSDB_OPTIONS, use_rocksdict=True)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.accounts: list[Rdict] = [options.open(root / f"accounts-{p}.db")
                                      for p in range(partitions)]
        self.dedup: list[Rdict] = [options.open(root / f"dedup-{p}.db")
                                   for p in range(partitions)]
        self._write = WriteOptions()
        self._write.disable_wal = True  # type: ignore[method-assign,assignment]
        self.heads = HeadCache(state_cache_max)  # the worker's

    def load_head(self, partition: int, account: str) -> AccountHead | None:
        head = self.heads.get(partition, account)
        if head is not None:
            return head
        raw = self.accounts[partition].get(head_key(account))
        if raw is None:
            return None
        loaded = decode_head(raw)
        self.heads.put(partition, account, loaded)
        return loaded

    def load_item(self, partition: int, account: str, ref: ItemRef) -> Item | None:
        raw = self.accounts[partition].get(item_key(account, ref))
        return orjson.loads(raw) if raw is not None else None

    def load_dedup(self, partition: int, key: bytes) -> DedupEntry | None:
        raw = self.dedup[partition].get(key)
        return DedupEntry.read(raw) if raw is not None else None

    def load_purge_mark(self, partition: int) -> int:
        raw = self.dedup[partition].get(PURGED_BEFORE_KEY)
        return int(raw) if raw is not None else 0

    def expired(self, partition: int, before_day: int, limit: int) -> list[bytes]:
        """Dedup index keys filed before ``before_day``, oldest first."""
        end = horizon_key(before_day, b"")
        found: list[bytes] = []
        for key in self.dedup[partition].keys(from_key=HORIZON_PREFIX):
            if not isinstance(key, bytes) or not key.startswith(HORIZON_PREFIX) \
                    or key >= end or len(found) >= limit:
                break
            found.append(key)
        return found

    def put(self, records: list[OutRecord], result: BatchResult) -> None:
        batches: dict[tuple[bool, int], WriteBatch] = {}
        for r in records:
            if r.topic in (POSTINGS, DLQ):
                continue
            where = (r.topic in (DEDUP_TOPIC, DEDUP_DELETE), r.partition)
            batch = batches.get(where)
            if batch is None:
                batch = batches[where] = WriteBatch(raw_mode=True)
            if r.topic == DEDUP_DELETE:
                batch.delete(r.key)
            else:
                batch.put(r.key, r.value)
        for (is_dedup, part), batch in batches.items():
            db = self.dedup[part] if is_dedup else self.accounts[part]
            db.write(batch, write_opt=self._write)
        for (partition, account), head in result.heads.items():
            self.heads.put(partition, account, head)

    def account_docs(self, partition: int, account: str
                     ) -> tuple[dict[str, Any], dict[ItemRef, dict[str, Any]]]:
        db = self.accounts[partition]
        head = orjson.loads(cast(bytes, db[head_key(account)]))
        prefix = head_key(account) + b"/"
        items: dict[ItemRef, dict[str, Any]] = {}
        for key, value in db.items(from_key=prefix):
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            ref = parse_key(key).item
            assert ref is not None
            items[ref] = orjson.loads(cast(bytes, value))
        return head, items

    def flush(self) -> None:
        for db in (*self.accounts, *self.dedup):
            db.flush()

    def close(self) -> None:
        for db in (*self.accounts, *self.dedup):
            db.close()

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    def rocksdb_memory(self) -> dict[str, int]:
        """RocksDB's own memory counters summed over the stores."""
        names = {"memtables": "rocksdb.cur-size-all-mem-tables",
                 "block_cache": "rocksdb.block-cache-usage",
                 "table_readers": "rocksdb.estimate-table-readers-mem"}
        return {label: sum(db.property_int_value(prop) or 0
                           for db in (*self.accounts, *self.dedup))
                for label, prop in names.items()}


@dataclass
class Timed:
    result: BatchResult
    records: list[OutRecord]
    #: Wall ns to process and encode the records, and in all (with the store write).
    core_ns: int
    all_ns: int
    #: This thread's CPU ns in all: unlike wall time, not lengthened when the OS runs another
    #: process meanwhile (RocksDB's memtable insert runs in this thread too).
    cpu_ns: int


def run_batch(processor: Processor, store: Store, messages: list[Message]) -> Timed:
    """Process, encode and write one batch (as the worker does, without the broker)."""
    c0 = time.thread_time_ns()
    t0 = time.perf_counter_ns()
    result = processor.process(messages, store)
    records = records_of(result, messages)
    t1 = time.perf_counter_ns()
    store.put(records, result)
    t2 = time.perf_counter_ns()
    c2 = time.thread_time_ns()
    return Timed(result, records, t1 - t0, t2 - t0, c2 - c0)


def _check(result: BatchResult) -> None:
    if result.dlq:
        raise RuntimeError(f"bench event refused: {orjson.loads(result.dlq[0][2])['reason']}")


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.499999))
    return ordered[min(rank, len(ordered)) - 1]


def _progress(text: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- 1. Per-event cost vs account history -------------------------------------------------

def layout1_record(head: dict[str, Any], items: dict[ItemRef, dict[str, Any]]) -> bytes:
    """The account as layout 1 kept it, one record of its whole history: ``layout.assemble``
    of head and items without layout 2's own fields (``layout``, ``items``, item versions)."""
    doc = assemble(head, items)
    doc.pop("layout", None)
    doc.pop("items", None)
    for charge in doc["charges"]:
        charge.pop("version", None)
    for payment in doc["payments"]:
        payment.pop("version", None)
    for claim in doc["claims"].values():
        claim.pop("version", None)
        for adj in claim["adjudications"]:
            adj.pop("version", None)
            adj.pop("claim_id", None)
    return orjson.dumps(doc)


def _accounts_for(items: int, rounds: int) -> int:
    """Accounts that share the timed rounds, so that the mix (4 new items a round) grows
    none of them by more than ~10 % of its history (at least one round each)."""
    return max(1, min(rounds, -(-40 * rounds // max(items, 1))))


class History:
    """Accounts pre-filled to ``items`` items through the processor (``fill``), then timed
    rounds of the mix (``round``), every event its own batch. Rounds of several histories
    can be interleaved, so a change of load on a shared machine falls on every size alike."""

    def __init__(self, items: int, backend: str, rounds: int, root: Path,
                 chart: ChartOfAccounts, items_max: int, seed: int = 11) -> None:
        self.items = items
        self.backend = backend
        self.store: Store
        if backend == "rocksdb":
            self.store = RocksTables(root / f"history-{items}", 1, Settings().state_cache_max)
        else:
            self.store = MemoryStore()
        self.processor = Processor(chart, account_items_max=items_max)
        self.feed = Feed()
        self.accounts = [f"H{items}-{i:04d}" for i in range(_accounts_for(items, rounds))]
        self.cycles = -(-items // 5)
        self.rng = random.Random(seed)
        self.total_us: list[float] = []
        self.core_us: list[float] = []
        self.cpu_us: list[float] = []
        self.sizes: list[int] = []
        self.parts = {"postings": 0, "dlq": 0, "dedup": 0, "accounts": 0}
        self.by_kind: dict[str, list[int]] = {kind: [] for kind in MIX_KINDS}

    def fill(self) -> None:
        pending: list[Message] = []
        for account in self.accounts:
            for cycle in range(self.cycles):
                pending += [self.feed.message(d) for d in cycle_docs(account, cycle, self.feed)]
                if len(pending) >= BATCH:
                    _check(run_batch(self.processor, self.store, pending).result)
                    pending = []
        if pending:
            _check(run_batch(self.processor, self.store, pending).result)

    def round(self, round_: int) -> None:
        account = self.accounts[round_ % len(self.accounts)]
        old_charge = f"c{self.rng.randrange(self.cycles):06d}{self.rng.choice('ab')}"
        for kind, doc in zip(MIX_KINDS, mix_docs(account, round_, old_charge, self.feed),
                             strict=True):
            timed = run_batch(self.processor, self.store, [self.feed.message(doc)])
            _check(timed.result)
            self.core_us.append(timed.core_ns / 1000)
            self.total_us.append(timed.all_ns / 1000)
            self.cpu_us.append(timed.cpu_ns / 1000)
            sized = bytes_by_topic(timed.records)
            for name, n in sized.items():
                self.parts[name] += n
            self.sizes.append(sum(sized.values()))
            self.by_kind[kind].append(sum(sized.values()))

    def summary(self) -> dict[str, Any]:
        """The numbers, with layout 1's for the same account; closes the store."""
        held = [self.store.load_head(0, a) for a in self.accounts]
        counts = [h.item_count() for h in held if isinstance(h, AccountHead)]
        first = self.accounts[0]
        head, found = self.store.account_docs(0, first)
        legacy = layout1_record(head, found)
        doc = orjson.loads(legacy)
        encode_ns = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            orjson.dumps(doc)
            encode_ns.append(time.perf_counter_ns() - t0)
        events = len(self.sizes)
        parts = self.parts
        others = (parts["postings"] + parts["dlq"] + parts["dedup"]) / events
        if isinstance(self.store, RocksTables):
            self.store.close()
        return {
            "backend": self.backend,
            "items": self.items,
            "accounts": len(self.accounts),
            "items_min": min(counts),
            "items_max": max(counts),
            "events": events,
            "us_median": round(statistics.median(self.total_us), 1),
            "us_p99": round(percentile(self.total_us, 99), 1),
            "core_us_median": round(statistics.median(self.core_us), 1),
            "core_us_p99": round(percentile(self.core_us, 99), 1),
            "cpu_us_median": round(statistics.median(self.cpu_us), 1),
            "cpu_us_p99": round(percentile(self.cpu_us, 99), 1),
            "bytes_per_event": round(sum(self.sizes) / events),
            "bytes_parts_per_event": {k: round(v / events) for k, v in parts.items()},
            "bytes_by_kind": {k: round(sum(v) / len(v)) for k, v in self.by_kind.items() if v},
            "layout1_record_bytes": len(head_key(first)) + len(legacy),
            "layout1_items": len(found),
            "layout1_bytes_per_event": round(others + len(head_key(first)) + len(legacy)),
            "layout1_encode_us": round(min(encode_ns) / 1000, 1),
        }


def history_point(items: int, backend: str, rounds: int, root: Path, chart: ChartOfAccounts,
                  items_max: int) -> dict[str, Any]:
    """One history on its own: filled, ``rounds`` rounds, summed up."""
    run = History(items, backend, rounds, root, chart, items_max)
    run.fill()
    gc.collect()
    for round_ in range(rounds):
        run.round(round_)
    return run.summary()


def _ratio(points: list[dict[str, Any]], name: str, low: int, high: int) -> float | None:
    values: list[float] = [p[name] for p in points if low <= p["items"] <= high]
    if len(values) < 2 or not min(values):
        return None
    return round(max(values) / min(values), 2)


def history(sizes: list[int], rounds: int, root: Path) -> dict[str, Any]:
    """Every (store, size) filled first, then their rounds interleaved."""
    chart = load_chart(None)
    items_max = max(sizes) + ITEMS_HEADROOM
    runs: list[History] = []
    for backend in ("rocksdb", "memory"):
        for items in sizes:
            started = time.monotonic()
            run = History(items, backend, rounds, root, chart, items_max)
            run.fill()
            runs.append(run)
            _progress(f"history {backend} {items:,} items: {len(run.accounts)} account(s) "
                      f"filled [{time.monotonic() - started:.1f} s]")
    gc.collect()
    started = time.monotonic()
    for round_ in range(rounds):
        for run in runs:
            run.round(round_)
        if (round_ + 1) % max(1, rounds // 4) == 0:
            _progress(f"history: {round_ + 1} of {rounds} rounds of every size "
                      f"[{time.monotonic() - started:.1f} s]")
    points = [run.summary() for run in runs]
    for point in points:
        _progress(f"history {point['backend']} {point['items']:,} items: "
                  f"{point['us_median']:,.0f} µs p50 (CPU {point['cpu_us_median']:,.0f}), "
                  f"{point['bytes_per_event']:,} B/event (layout 1: "
                  f"{point['layout1_bytes_per_event']:,} B)")
    low, high = FLAT_RANGE
    ratios = {}
    for backend in ("rocksdb", "memory"):
        mine = [p for p in points if p["backend"] == backend]
        ratios[backend] = {
            "us_median": _ratio(mine, "us_median", low, high),
            "cpu_us_median": _ratio(mine, "cpu_us_median", low, high),
            "us_p99": _ratio(mine, "us_p99", low, high),
            "bytes_per_event": _ratio(mine, "bytes_per_event", low, high),
            "us_median_all": _ratio(mine, "us_median", 0, 10**9),
            "bytes_per_event_all": _ratio(mine, "bytes_per_event", 0, 10**9),
            "layout1_bytes_per_event": _ratio(mine, "layout1_bytes_per_event", low, high),
        }
    return {"sizes": sizes, "rounds": rounds, "account_items_max": items_max,
            "flat_target": FLAT_TARGET, "flat_range": list(FLAT_RANGE), "points": points,
            "ratios": ratios}


# --- 2. Worker RSS and store size vs accounts ---------------------------------------------

def _vm_hwm_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def _deep_bytes(roots: list[object]) -> int:
    """Bytes of ``roots`` and everything they reference (each object once; classes,
    modules and functions not counted)."""
    seen: set[int] = set()
    total = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, ModuleType, FunctionType)):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def _head_bytes(cache: dict[tuple[int, str], AccountHead]) -> int:
    """Bytes one entry of the head cache holds: key and head, deep, over a sample of up to
    2,000 entries spread through the cache, plus the dict's own slot (~30 B)."""
    entries = list(cache.items())
    if not entries:
        return 0
    sample = entries[:: max(1, len(entries) // 2000)]
    return _deep_bytes([part for entry in sample for part in entry]) // len(sample) + 30


class GcClock:
    """Time spent in the cyclic garbage collector, and its collections of the oldest
    generation, since ``reset``."""

    def __init__(self) -> None:
        self.ns = self.full = 0
        self._started = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
            return
        self.ns += time.perf_counter_ns() - self._started
        self.full += info["generation"] == 2

    def reset(self) -> tuple[float, int]:
        """Seconds and full collections so far; starts again from zero."""
        taken = (round(self.ns / 1e9, 2), self.full)
        self.ns = self.full = 0
        return taken


def _fill(processor: Processor, store: RocksTables, messages: list[Message], wall_ns: int,
          cpu_ns: int) -> tuple[int, int]:
    timed = run_batch(processor, store, messages)
    _check(timed.result)
    return wall_ns + timed.all_ns, cpu_ns + timed.cpu_ns


def accounts_step(n_accounts: int, partitions: int, cache_max: int, per_account: int,
                  timed_events: int, root: Path) -> dict[str, Any]:
    """Fill fresh stores with ``n_accounts`` accounts (``per_account`` events each, batches
    of 1,000 messages, accounts spread over ``partitions``), then time fresh events to random
    existing accounts. Meant to run alone in its process (RSS)."""
    chart = load_chart(None)
    processor = Processor(chart)
    store = RocksTables(root, partitions, cache_max)
    gc.collect()
    rss_start = _rss_mib()
    gc_clock = GcClock()
    feed = Feed(partitions=partitions)
    started = time.monotonic()
    pending: list[Message] = []
    events = 0
    fill_ns = fill_cpu_ns = 0
    report_every = max(1, n_accounts // 10)
    for index in range(n_accounts):
        account = f"A{index:08d}"
        pending += [feed.message(d) for d in account_docs(account, feed)[:per_account]]
        if len(pending) >= BATCH:
            fill_ns, fill_cpu_ns = _fill(processor, store, pending, fill_ns, fill_cpu_ns)
            events += len(pending)
            pending = []
        if (index + 1) % report_every == 0:
            elapsed = time.monotonic() - started
            _progress(f"accounts {n_accounts:,}: {index + 1:,} filled, {events:,} events, "
                      f"{elapsed:.0f} s, RSS {_rss_mib():,.0f} MiB")
    if pending:
        fill_ns, fill_cpu_ns = _fill(processor, store, pending, fill_ns, fill_cpu_ns)
        events += len(pending)
    fill_s = time.monotonic() - started
    gc_fill_s, gc_fill_full = gc_clock.reset()
    store.flush()
    gc.collect()
    rss_filled = _rss_mib()
    # Per-event time at this size: fresh payments and charges to random accounts.
    rng = random.Random(7)
    store.heads.hits = store.heads.misses = 0
    batch_us: list[float] = []
    batch_cpu_us: list[float] = []
    single_us: list[float] = []
    single_cpu_us: list[float] = []
    for start in range(0, timed_events, BATCH):
        docs = []
        for i in range(start, min(start + BATCH, timed_events)):
            account = f"A{rng.randrange(n_accounts):08d}"
            feed.tick()
            docs.append(payment_doc(account, f"x{i:07d}", feed.clock_ms, 1_000) if i % 2
                        else charge_doc(account, f"x{i:07d}", feed.clock_ms, 5_000))
        messages = [feed.message(d) for d in docs]
        timed = run_batch(processor, store, messages)
        _check(timed.result)
        batch_us.append(timed.all_ns / 1000 / len(messages))
        batch_cpu_us.append(timed.cpu_ns / 1000 / len(messages))
    for i in range(min(1000, timed_events)):
        account = f"A{rng.randrange(n_accounts):08d}"
        msg = feed.message(payment_doc(account, f"y{i:07d}", feed.tick(), 1_000))
        timed = run_batch(processor, store, [msg])
        _check(timed.result)
        single_us.append(timed.all_ns / 1000)
        single_cpu_us.append(timed.cpu_ns / 1000)
    gc_timed_s, gc_timed_full = gc_clock.reset()
    gc.collect()
    rss_end = _rss_mib()
    head_bytes = _head_bytes(store.heads.entries)
    memory = store.rocksdb_memory()
    store.flush()
    disk = store.disk_bytes()
    budget = 2 * partitions * (ROCKSDB_OPTIONS["block_cache_size"]
                               + ROCKSDB_OPTIONS["write_buffer_size"]
                               * ROCKSDB_OPTIONS["max_write_buffer_number"])
    cache_mib = len(store.heads.entries) * head_bytes / 2**20
    store.close()
    return {
        "accounts": n_accounts,
        "events": events,
        "fill_s": round(fill_s, 1),
        "fill_us_per_event": round(fill_ns / 1000 / max(events, 1), 1),
        "fill_cpu_us_per_event": round(fill_cpu_ns / 1000 / max(events, 1), 1),
        "gc_fill_s": gc_fill_s,
        "gc_fill_full_collections": gc_fill_full,
        "gc_timed_s": gc_timed_s,
        "rss_start_mib": round(rss_start, 1),
        "rss_filled_mib": round(rss_filled, 1),
        "rss_end_mib": round(rss_end, 1),
        "peak_rss_mib": round(_vm_hwm_mib() or 0.0, 1),
        "head_cache_entries": len(store.heads.entries),
        "head_cache_bytes_each": head_bytes,
        "head_cache_mib": round(cache_mib, 1),
        "rss_minus_cache_mib": round(rss_end - rss_start - cache_mib, 1),
        "rocksdb_budget_mib": round(budget / 2**20, 1),
        "rocksdb_memtables_mib": round(memory["memtables"] / 2**20, 1),
        "rocksdb_block_cache_mib": round(memory["block_cache"] / 2**20, 1),
        "rocksdb_table_readers_mib": round(memory["table_readers"] / 2**20, 1),
        "disk_mib": round(disk / 2**20, 1),
        "disk_bytes_per_account": round(disk / n_accounts),
        "batched_us_per_event": round(statistics.median(batch_us), 1),
        "batched_cpu_us_per_event": round(statistics.median(batch_cpu_us), 1),
        "timed_head_cache_hit_ratio": round(
            store.heads.hits / max(1, store.heads.hits + store.heads.misses), 3),
        "single_us_median": round(statistics.median(single_us), 1),
        "single_us_p99": round(percentile(single_us, 99), 1),
        "single_cpu_us_p99": round(percentile(single_cpu_us, 99), 1),
    }


def accounts_curve(steps: list[int], partitions: int, cache_max: int, per_account: int,
                   timed_events: int, root: Path) -> dict[str, Any]:
    """Each size in its own process (a clean RSS), one after another."""
    points = []
    for n in steps:
        out = root / f"accounts-{n}.json"
        command = [sys.executable, "-m", "bench.growth", "--accounts-step", str(n),
                   "--partitions", str(partitions), "--state-cache-max", str(cache_max),
                   "--per-account", str(per_account), "--timed-events", str(timed_events),
                   "--step-dir", str(root / f"accounts-{n}"), "--step-json", str(out)]
        _progress(f"accounts {n:,}: filling in a subprocess")
        subprocess.run(command, check=True, cwd=BENCH_DIR.parent)
        point = json.loads(out.read_text())
        shutil.rmtree(root / f"accounts-{n}", ignore_errors=True)
        _progress(f"accounts {n:,}: RSS {point['rss_end_mib']:,.0f} MiB (cache "
                  f"{point['head_cache_mib']:,.0f} MiB), disk {point['disk_mib']:,.0f} MiB, "
                  f"{point['batched_us_per_event']:,.0f} µs/event batched")
        points.append(point)
    return {"steps": steps, "partitions": partitions, "state_cache_max": cache_max,
            "events_per_account": per_account, "timed_events": timed_events,
            "rocksdb_options": dict(ROCKSDB_OPTIONS), "points": points}


# --- 3. Dedup storage vs events over a simulated horizon ----------------------------------

Step = Callable[[list[Message], MemoryTables], BatchResult]


def horizon_step(chart: ChartOfAccounts, horizon_days: int) -> Step | None:
    """One batch with the dedup horizon set to ``horizon_days``, writing everything the
    batch wrote and deleted (``MemoryTables.write``: the purge's mark, records and index keys)
    as the worker would. The clock is the messages' ``timestamp_ms``: the processor's own
    clock is set far ahead so that simulated days past today still move it."""
    processor = Processor(chart, dedup_horizon_days=horizon_days, clock=lambda: 4e9)

    def step(messages: list[Message], tables: MemoryTables) -> BatchResult:
        result = processor.process(messages, tables)
        tables.write(result)
        return result
    return step


def plain_step(chart: ChartOfAccounts) -> Step:
    processor = Processor(chart)

    def step(messages: list[Message], tables: MemoryTables) -> BatchResult:
        result = processor.process(messages, tables)
        tables.write(result)
        return result
    return step


def _dedup_size(tables: MemoryTables) -> dict[str, int]:
    records = reserved = size = 0
    for (_, key), value in tables.dedup.items():
        size += len(key) + len(value)
        if key.startswith(b"\x00"):
            reserved += 1
        else:
            records += 1
    return {"records": records, "reserved_keys": reserved, "bytes": size}


def horizon_run(step: Step, days: int, events_per_day: int, accounts: int,
                checkpoints_per_day: int) -> list[dict[str, Any]]:
    """Charges and payments to ``accounts`` accounts, spread evenly over ``days`` simulated
    days (event time = message timestamp); dedup table size at each checkpoint."""
    tables = MemoryTables()
    feed = Feed(step_ms=DAY_MS // events_per_day)
    rng = random.Random(3)
    total = days * events_per_day
    every = events_per_day // checkpoints_per_day
    curve: list[dict[str, Any]] = []
    pending: list[Message] = []
    for i in range(total):
        account = f"D{rng.randrange(accounts):05d}"
        ms = feed.tick()
        doc = (charge_doc(account, f"h{i:08d}", ms, 5_000) if i % 2 == 0
               else payment_doc(account, f"h{i:08d}", ms, 1_000))
        pending.append(feed.message(doc))
        if len(pending) >= BATCH or (i + 1) % every == 0:
            _check(step(pending, tables))
            pending = []
        if (i + 1) % every == 0:
            curve.append({"day": round((feed.clock_ms - BASE_MS) / DAY_MS, 2),
                          "events": i + 1, **_dedup_size(tables)})
    return curve


def horizon_curve(horizon_days: int, days: int, events_per_day: int, accounts: int,
                  checkpoints_per_day: int = 2) -> dict[str, Any]:
    chart = load_chart(None)
    base = horizon_run(plain_step(chart), days, events_per_day, accounts, checkpoints_per_day)
    _progress(f"horizon: without: {base[-1]['records']:,} dedup records after "
              f"{base[-1]['events']:,} events")
    step = horizon_step(chart, horizon_days)
    with_horizon = None
    if step is not None:
        with_horizon = horizon_run(step, days, events_per_day, accounts, checkpoints_per_day)
        _progress(f"horizon: with {horizon_days} d: {with_horizon[-1]['records']:,} records")
    return {"horizon_days": horizon_days, "days": days, "events_per_day": events_per_day,
            "accounts": accounts, "wired": step is not None, "without": base,
            "with": with_horizon}


# --- Machine, run, output ------------------------------------------------------------------

def _git_commit() -> str:
    repo = BENCH_DIR.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", ".",
                                ":!bench"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (+ uncommitted changes)" if dirty.strip() else "")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    import rocksdict

    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rocksdict": getattr(rocksdict, "__version__", None) or _dist_version("rocksdict"),
        "rcmflow_commit": _git_commit(),
    }


def _dist_version(name: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Plan:
    sizes: list[int]
    rounds: int
    accounts: list[int]
    per_account: int
    timed_events: int
    horizon_days: int
    horizon_span: int
    events_per_day: int


QUICK = Plan(sizes=[10, 100, 1_000, 10_000], rounds=40, accounts=[10_000, 100_000],
             per_account=3, timed_events=2_000, horizon_days=1, horizon_span=3,
             events_per_day=2_000)
FULL = Plan(sizes=[10, 100, 1_000, 10_000, 20_000], rounds=400,
            accounts=[10_000, 100_000, 1_000_000], per_account=3, timed_events=10_000,
            horizon_days=2, horizon_span=3, events_per_day=10_000)


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.growth",
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(
            __doc__.split("\n\n")[1:-1]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="A full run (no --quick, default sizes) writes bench/results/<stamp>-growth.json, "
        "copies it to bench/runs/growth.json and renders the growth section of "
        "bench/RESULTS.md; --quick and partial runs write only bench/results/.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (< 1 min): histories to 10,000 items, 40 rounds, "
                        "accounts 10k and 100k, a 1-day horizon over 3 days")
    parser.add_argument("--parts", default="history,accounts,horizon",
                        help="comma-separated subset of history,accounts,horizon")
    parser.add_argument("--sizes", type=_ints, help="history: items per account "
                        "(default 10,100,1000,10000,20000)")
    parser.add_argument("--rounds", type=int, help="history: timed rounds of the 5-event mix "
                        "per size and store (default 400)")
    parser.add_argument("--accounts", type=_ints, help="accounts: sizes, each in its own "
                        "process (default 10000,100000,1000000)")
    parser.add_argument("--per-account", type=int, choices=range(1, 6), metavar="1-5",
                        help="accounts: events (items) per account: charge, charge, claim, "
                        "835, payment, the first N (default 3)")
    parser.add_argument("--timed-events", type=int,
                        help="accounts: fresh events timed at each size (default 10,000)")
    parser.add_argument("--partitions", type=int, default=Settings().partitions,
                        help="accounts: partitions (a store pair each), as RCMFLOW_PARTITIONS "
                        "(default %(default)s)")
    parser.add_argument("--state-cache-max", type=int, default=Settings().state_cache_max,
                        help="accounts: heads kept decoded, as RCMFLOW_STATE_CACHE_MAX "
                        "(default %(default)s)")
    parser.add_argument("--horizon-days", type=int, help="horizon: the dedup horizon "
                        "(default 2 days)")
    parser.add_argument("--events-per-day", type=int,
                        help="horizon: simulated events per day (default 10,000)")
    parser.add_argument("--no-results-md", action="store_true",
                        help="a full run writes no bench/runs/growth.json and RESULTS.md")
    parser.add_argument("--tmp", type=Path, help="where the stores go (default: a temp dir)")
    # Internal: one accounts step in this process.
    parser.add_argument("--accounts-step", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--step-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--step-json", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker_gc() -> None:
    """The worker's garbage collector settings (``rcmflow.streams.shell.run``): what is
    loaded so far frozen, full collections rare."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    worker_gc()
    base = QUICK if args.quick else FULL
    if args.accounts_step is not None:
        point = accounts_step(args.accounts_step, args.partitions, args.state_cache_max,
                              args.per_account or base.per_account,
                              args.timed_events or base.timed_events, args.step_dir)
        args.step_json.write_text(json.dumps(point))
        return 0
    plan = Plan(sizes=args.sizes or base.sizes, rounds=args.rounds or base.rounds,
                accounts=args.accounts or base.accounts,
                per_account=args.per_account or base.per_account,
                timed_events=args.timed_events or base.timed_events,
                horizon_days=args.horizon_days or base.horizon_days,
                horizon_span=base.horizon_span,
                events_per_day=args.events_per_day or base.events_per_day)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"history", "accounts", "horizon"}
    if unknown:
        raise SystemExit(f"unknown --parts: {', '.join(sorted(unknown))}")
    full = not args.quick and plan == FULL and parts == {"history", "accounts", "horizon"}
    started_at = datetime.now(UTC)
    wall = time.monotonic()
    raw: dict[str, Any] = {
        "bench": "growth",
        "command": "python -m bench.growth " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": started_at.isoformat(timespec="seconds"),
        "quick": args.quick,
        "full": full,
        "machine": machine(),
        "load_before": _load(),
    }
    print(f"bench.growth on {raw['machine']['cpu_model']}, {raw['machine']['cores']} cores, "
          f"Python {raw['machine']['python']}, load {raw['load_before']}", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="rcmflow-growth-", dir=args.tmp))
    try:
        if "history" in parts:
            raw["history"] = history(plan.sizes, plan.rounds, tmp)
        if "accounts" in parts:
            raw["accounts"] = accounts_curve(plan.accounts, args.partitions,
                                             args.state_cache_max, plan.per_account,
                                             plan.timed_events, tmp)
        if "horizon" in parts:
            raw["horizon"] = horizon_curve(plan.horizon_days,
                                           plan.horizon_days * plan.horizon_span,
                                           plan.events_per_day, accounts=1_000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw["load_after"] = _load()
    raw["wall_s"] = round(time.monotonic() - wall, 1)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    kind = "full" if full else ("quick" if args.quick else "partial")
    out = RESULTS_DIR / f"{stamp}-growth-{kind}.json"
    out.write_text(json.dumps(raw, indent=1) + "\n")
    print("\n".join(render_growth_section(raw, str(out.relative_to(BENCH_DIR.parent)))))
    print(f"\nraw numbers: {out}")
    if full and not args.no_results_md:
        RUNS_DIR.mkdir(exist_ok=True)
        kept = RUNS_DIR / "growth.json"
        kept.write_text(out.read_text())
        write_results_md(BENCH_DIR / "RESULTS.md")
        print(f"kept as {kept}; wrote {BENCH_DIR / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
