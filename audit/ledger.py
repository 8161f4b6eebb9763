"""`rcmflow audit`: does every account's head equal the sum of its posting deltas?

**The check.** For each account, the twelve ledger buckets of its newest head on
``rcm.accounts`` (``audit/digest.py`` reads them) must equal the sum of its posting deltas on
``rcm.postings``, each line moving its bucket as the core moves it (``bucket_effects``:
debit-normal buckets grow with debits, the others with credits). A difference is a
**mismatch**, named by account number and bucket, in cents (head minus deltas).

**Order of arrival.** The worker writes an event's deltas, then its dedup record, then the
heads, each after the broker acknowledged the one before. So a head read from rcm.accounts
has all its deltas on rcm.postings already, and rcm.postings read *after* it (to ends taken
after the head was read) holds them. A delta carries ``account_version``, the account's
version after it: only deltas with ``account_version <=`` the head's ``version`` count
against that head. A delta of a newer version (its head not written yet), or of an account
with no head yet, is **in flight**: counted, not a mismatch. ``--follow`` holds such deltas
until their head arrives.

**Re-sent deltas.** A posting id names one delta (``streams/postings.py``): a worker that
crashed between writing a delta and committing sends it again, byte-identical. Each posting
id counts once; the same id with other bytes is a **conflict** (the account is named, its
first delta is the one summed). A reversal is a delta of its own (its own posting id, the
lines negated, ``reverses_posting_id`` naming the original): it is summed like any other.

**Memory.** Per account: its number (a dict key to an index), its head version and twelve
running sums, integers in ``array('q')``: 406 MiB peak RSS at a million accounts and three
million deltas (``python -m bench.audit_memory``, bench/RESULTS.md). The heads are held in
the digest's RocksDB scratch store, the posting ids seen (id -> 16-byte hash of the delta) in
another, so neither grows the heap with the history. Deltas are read one batch at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import shutil
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from rich.console import Console
from rocksdict import Rdict

from rcmflow.audit.digest import BUCKETS, HeadStore, read_live, scratch_dir, store_options
from rcmflow.audit.tallies import (
    AccountsByState,
    DenialTally,
    DlqTally,
    EntityBalances,
    RefundTally,
)
from rcmflow.ops.items import ItemState, is_done
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record, iter_topic, log_ends, publish, topic_partitions
from rcmflow.runtime.metrics import Metric, counter, gauge
from rcmflow.runtime.progress import LOG_EVERY_S, progress
from rcmflow.streams.denial_routing import DenialRouting
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.layout import is_head_key
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.rules import bucket_effects
from rcmflow.streams.topics import ACCOUNTS, DLQ, DLQ_STATE, POSTINGS, POSTINGS_DLQ

__all__ = ["Mismatch", "AuditReport", "LedgerSums", "audit", "follow", "Follower",
           "mismatch_record", "REASON_CODE", "MISMATCHES_SHOWN"]

log = logging.getLogger("rcmflow.audit")

REASON_CODE = "ledger_mismatch"
#: Mismatching accounts a report names (the first in key order); the rest are counted.
MISMATCHES_SHOWN = 100
#: rcm.postings records one read holds at once.
READ_BATCH = 10_000
_INDEX = {bucket: i for i, bucket in enumerate(BUCKETS)}
_WIDTH = len(BUCKETS)


class Mismatch(NamedTuple):
    """An account whose head differs from its deltas: head minus deltas per bucket (cents,
    only the buckets that differ), and how many posting ids came with two contents."""

    account: str
    version: int
    differences: dict[str, int]
    conflicts: int = 0

    def describe(self) -> str:
        parts = [f"{bucket} {cents:+d} cents" for bucket, cents in self.differences.items()]
        if self.conflicts:
            parts.append(f"{self.conflicts} posting id(s) sent with two contents")
        return (f"account {self.account} (head version {self.version}): head minus deltas: "
                + ", ".join(parts))

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "version": self.version,
                "differences_cents": self.differences, "conflicts": self.conflicts}


@dataclass
class AuditReport:
    """What one audit found."""

    accounts: int = 0
    mismatching: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)  # the first MISMATCHES_SHOWN
    deltas: int = 0  # distinct posting ids
    duplicates: int = 0  # re-sent deltas (same id, same bytes), counted once
    in_flight: int = 0  # deltas newer than their account's head, or with no head yet

    @property
    def agrees(self) -> bool:
        return self.mismatching == 0

    def to_json(self) -> dict[str, Any]:
        return {"agrees": self.agrees, "accounts": self.accounts,
                "mismatching": self.mismatching,
                "mismatches": [m.to_json() for m in self.mismatches],
                "deltas": self.deltas, "duplicates": self.duplicates,
                "in_flight": self.in_flight}

    def render(self, console: Console) -> None:
        from rich.table import Table

        console.print(f"{self.accounts} accounts, {self.deltas} deltas ({self.duplicates} "
                      f"re-sent, counted once; {self.in_flight} in flight)")
        if self.agrees:
            console.print("[green]every account's head equals the sum of its deltas[/green]")
            return
        table = Table("account", "head version", "bucket", "head − deltas (cents)",
                      title=f"{self.mismatching} accounts differ from their deltas")
        for m in self.mismatches:
            for bucket, cents in m.differences.items():
                table.add_row(m.account, str(m.version), bucket, f"{cents:+d}")
            if m.conflicts:
                table.add_row(m.account, str(m.version), "(conflicts)",
                              f"{m.conflicts} posting id(s) with two contents")
        console.print(table)
        if self.mismatching > len(self.mismatches):
            console.print(f"... and {self.mismatching - len(self.mismatches)} more accounts")


class LedgerSums:
    """Per account: its head version and the running sums of its counted deltas.

    ``hold`` (``--follow``): a delta newer than the account's head is kept until that head
    arrives (the worker writes it next); else it is only counted as in flight."""

    def __init__(self, ids_directory: Path, *, hold: bool = False) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.versions = array("q")
        self.sums = array("q")
        self.conflicts: dict[int, int] = {}
        self.held: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        self.hold = hold
        self.deltas = self.duplicates = self.in_flight = 0
        self._directory = ids_directory
        ids_directory.mkdir(parents=True, exist_ok=True)
        self.ids = Rdict(str(ids_directory), options=store_options())

    def close(self) -> None:
        self.ids.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def slot(self, account: str) -> int:
        i = self.index.get(account)
        if i is None:
            i = self.index[account] = len(self.names)
            self.names.append(account)
            self.versions.append(-1)  # no head yet
            self.sums.extend((0,) * _WIDTH)
        return i

    def head(self, account: str, version: int) -> int:
        """The account's head is at ``version`` now: held deltas up to it count."""
        i = self.slot(account)
        if version > self.versions[i]:
            self.versions[i] = version
        held = self.held.get(i)
        if held:
            keep = []
            for delta_version, effects in held:
                if delta_version <= version:
                    self._add(i, effects)
                    self.in_flight -= 1
                else:
                    keep.append((delta_version, effects))
            if keep:
                self.held[i] = keep
            else:
                del self.held[i]
        return i

    def delta(self, value: bytes) -> int | None:
        """One rcm.postings record; the account's index when it changed its sums or its
        conflicts (None: a re-send, or not a delta)."""
        doc = orjson.loads(value)
        pid = doc.get("posting_id")
        if not pid or "account" not in doc:
            return None
        digest = hashlib.blake2b(value, digest_size=16).digest()
        key = pid.encode()
        seen = self.ids.get(key)
        i = self.slot(doc["account"])
        if seen is not None:
            if seen == digest:
                self.duplicates += 1
                return None
            self.conflicts[i] = self.conflicts.get(i, 0) + 1
            return i
        self.ids[key] = digest
        self.deltas += 1
        moved = bucket_effects((line["bucket"], int(line["debit_cents"])
                                - int(line["credit_cents"])) for line in doc["lines"])
        effects = tuple(moved.get(bucket, 0) for bucket in BUCKETS)
        version = int(doc["account_version"])
        if version <= self.versions[i]:
            self._add(i, effects)
        else:
            self.in_flight += 1
            if self.hold:
                self.held.setdefault(i, []).append((version, effects))
        return i

    def _add(self, i: int, effects: tuple[int, ...]) -> None:
        base = i * _WIDTH
        for j, cents in enumerate(effects):
            if cents:
                self.sums[base + j] += cents

    def check(self, account: str, head: Mapping[str, Any]) -> Mismatch | None:
        """The account's head record (its newest) against its counted deltas."""
        i = self.slot(account)
        balances = head.get("balances") or {}
        base = i * _WIDTH
        differences = {bucket: int(balances.get(bucket, 0)) - self.sums[base + j]
                       for j, bucket in enumerate(BUCKETS)}
        differences = {b: c for b, c in differences.items() if c}
        conflicts = self.conflicts.get(i, 0)
        if not differences and not conflicts:
            return None
        return Mismatch(account, int(head.get("version", 0)), differences, conflicts)


def _note(report: AuditReport, mismatch: Mismatch | None) -> None:
    if mismatch is None:
        return
    report.mismatching += 1
    if len(report.mismatches) < MISMATCHES_SHOWN:
        report.mismatches.append(mismatch)


async def audit(kafka: KafkaConnection, scratch_parent: Path, *, console: Console | None = None,
                progress_every_s: float = LOG_EVERY_S) -> AuditReport:
    """Every account once: heads first (to their ends now), then rcm.postings to its ends
    taken after, so every head read has its deltas read too."""
    console = console or Console(file=io.StringIO())
    report = AuditReport()
    with HeadStore.scratch(scratch_parent) as heads:
        sums = LedgerSums(scratch_dir(scratch_parent, "audit-ids-"))
        try:
            await read_live(kafka, heads, console=console, progress_every_s=progress_every_s)
            for state in heads.states():
                sums.head(state.account, state.version)
            partitions = await topic_partitions(kafka, POSTINGS)
            ends = await log_ends(kafka, POSTINGS, partitions) if partitions else {}
            with progress(console, f"reading {POSTINGS}", total=sum(ends.values()) or None,
                          every_s=progress_every_s) as advance:
                start = {p: 0 for p, end in ends.items() if end}
                if start:
                    async for records in iter_topic(kafka, POSTINGS, start=start,
                                                    batch_records=READ_BATCH,
                                                    on_read=advance):
                        for record in records:
                            if record.value is not None:
                                sums.delta(record.value)
            with progress(console, "comparing", total=len(sums.names), unit="accounts",
                          every_s=progress_every_s) as advance:
                for key, value in heads.db.items():
                    assert isinstance(key, bytes)  # raw mode
                    report.accounts += 1
                    _note(report, sums.check(key.decode(), orjson.loads(value)))
                    advance(1)
            report.deltas, report.duplicates = sums.deltas, sums.duplicates
            report.in_flight = sums.in_flight
        finally:
            sums.close()
    return report


def mismatch_record(mismatch: Mismatch, head: bytes, *, partition: int = -1,
                    offset: int = -1) -> tuple[bytes, bytes]:
    """The rcm.dlq record (key, value) of a mismatch. Its id depends on the account, the
    head version and the differences only: the same mismatch found again (a restart, a
    second auditor) is the same record."""
    differences = ",".join(f"{b}={c}" for b, c in mismatch.differences.items())
    record = dlq_record(
        Rejection(stage="posting", reason_code=REASON_CODE,
                  detail=mismatch.describe() + ": the account's buckets are not the sum of "
                  "its posting deltas (a delta lost, altered or written behind rcmflow's "
                  "back, or a state written without its delta)"),
        origin=Origin(topic=ACCOUNTS, partition=partition, offset=offset,
                      key=mismatch.account),
        payload=head, received_at=datetime.now(UTC), context=mismatch.to_json(),
        identity=f"{mismatch.account}|{mismatch.version}|{differences}|"
                 f"{mismatch.conflicts}")
    return mismatch.account.encode(), record.model_dump_json().encode()


class Follower:
    """`rcmflow audit --follow`: reads both topics from their start and keeps reading; each
    account seen changing (a head or a delta) is checked once rcm.postings was read to the
    ends it had after the change, so the change's deltas are in.

    The changes are grouped in generations: ``take`` marks an account changed in the open
    generation, ``snapshot`` closes it with the rcm.postings ends taken then, ``ready``
    checks the generations whose ends were reached. An account that changed again in a later
    generation is left to that one: its newest head may have deltas past the earlier ends."""

    def __init__(self, kafka: KafkaConnection, scratch_parent: Path, *,
                 poll_s: float = 0.2, progress_every_s: float = LOG_EVERY_S,
                 routing: DenialRouting | None = None) -> None:
        self.kafka = kafka
        self.heads = HeadStore.scratch(scratch_parent)
        self.sums = LedgerSums(scratch_dir(scratch_parent, "audit-ids-"), hold=True)
        self.poll_s = poll_s
        self.progress_every_s = progress_every_s
        self.stopping = asyncio.Event()
        self.checked = 0
        self.mismatches = 0
        self.dlq_records = 0
        self._reported: dict[int, str] = {}  # account index -> its last mismatch, once
        self._generation = 0
        self._latest: dict[int, int] = {}  # changed account -> its newest generation
        self._changed: set[int] = set()  # in the open generation
        self._waiting: list[tuple[dict[int, int], int, set[int]]] = []  # (ends, gen, accounts)
        #: For the metrics: the exception items of rcm.dlq and rcm.postings.dlq, and each
        #: entity's unapplied credit and suspense (``audit/tallies.py``).
        self.dlq = DlqTally()
        self.balances = EntityBalances()
        self.refunds = RefundTally()
        self.states = AccountsByState()
        #: Denials by payer, category (``routing``: the denial routing table) and state.
        self.denials = DenialTally(routing)

    def families(self) -> list[Metric]:
        return [
            *self.dlq.families(),
            *self.balances.families(),
            *self.refunds.families(),
            *self.denials.families(),
            *self.states.families(),
            counter("rcmflow_audit_mismatches", "Accounts found whose ledger buckets differ "
                    "from the sum of their posting deltas (each mismatch once).",
                    [({}, self.mismatches)]),
            counter("rcmflow_audit_accounts_checked", "Account checks made (an account is "
                    "checked each time it changes).", [({}, self.checked)]),
            counter("rcmflow_audit_dlq_records", "Mismatch records written to rcm.dlq.",
                    [({}, self.dlq_records)]),
            gauge("rcmflow_audit_accounts", "Accounts known (a head or a delta seen).",
                  [({}, len(self.sums.names))]),
            gauge("rcmflow_audit_deltas_in_flight", "Deltas newer than their account's head.",
                  [({}, self.sums.in_flight)]),
        ]

    async def run(self) -> None:
        accounts = await topic_partitions(self.kafka, ACCOUNTS)
        postings = await topic_partitions(self.kafka, POSTINGS)
        tps = ([TopicPartition(ACCOUNTS, p) for p in accounts]
               + [TopicPartition(POSTINGS, p) for p in postings])
        for queue in (DLQ, POSTINGS_DLQ, DLQ_STATE):  # for the metrics only (``DlqTally``)
            tps += [TopicPartition(queue, p) for p in await topic_partitions(self.kafka, queue)]
        consumer = AIOKafkaConsumer(**self.kafka.client_options(), group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=100,
                                    isolation_level="read_committed")
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            postings_tps = [tp for tp in tps if tp.topic == POSTINGS]
            last_ends = 0.0
            next_line = time.monotonic() + self.progress_every_s
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=int(self.poll_s * 1000),
                                               max_records=READ_BATCH)
                for messages in batch.values():
                    for m in messages:
                        self.take(Record(m.topic, m.partition, m.offset, m.key, m.value,
                                         m.timestamp))
                now = time.monotonic()
                if self._changed and now - last_ends >= self.poll_s:
                    # Ends taken now, after the changes were read: their deltas are below.
                    self.snapshot(await log_ends(self.kafka, POSTINGS, postings))
                    last_ends = now
                if self._waiting:
                    records = self.ready({tp.partition: await consumer.position(tp)
                                          for tp in postings_tps})
                    if records:
                        await publish(self.kafka, records)
                        self.dlq_records += len(records)
                if now >= next_line:
                    next_line = now + self.progress_every_s
                    log.info("%d accounts, %d checks, %d mismatches, %d deltas in flight",
                             len(self.sums.names), self.checked, self.mismatches,
                             self.sums.in_flight)
        finally:
            await consumer.stop()

    def take(self, record: Record) -> None:
        """One record of rcm.accounts, rcm.postings, rcm.dlq or rcm.postings.dlq, in offset
        order per partition."""
        if record.topic in (DLQ, POSTINGS_DLQ):
            self.dlq.take(record.topic, record.value, record.timestamp_ms)
            return
        if record.topic == DLQ_STATE:
            if record.key is not None and record.value is not None:
                try:
                    done = is_done(ItemState.model_validate_json(record.value))
                except ValueError:
                    return  # not a state record this version can read
                self.dlq.state(record.key.decode(), done)
            return
        if record.key is None:
            return
        if record.topic == ACCOUNTS:
            if not is_head_key(record.key):
                self.refunds.take(record.key, record.value)  # the pending refunds' metrics
                self.denials.take(record.key, record.value)  # the denials' metrics
                return  # an item record
            self.states.take(self.heads.db.get(record.key), record.value)
            self.heads.put(record.key, record.value)
            if record.value is None:
                return  # a tombstone: nothing to check
            doc = orjson.loads(record.value)
            self._change(self.sums.head(record.key.decode(), int(doc.get("version", 0))))
        elif record.value is not None:
            new = self.sums.deltas
            changed = self.sums.delta(record.value)
            if self.sums.deltas > new:  # a new posting id (not a re-send, not a conflict)
                self.balances.take(orjson.loads(record.value))
            if changed is not None:
                self._change(changed)

    def _change(self, i: int) -> None:
        self._changed.add(i)
        self._latest[i] = self._generation

    def snapshot(self, ends: dict[int, int]) -> None:
        """Close the open generation: its accounts are checked once rcm.postings was read to
        ``ends`` (partition -> end offset, taken after the changes were read)."""
        self._waiting.append((ends, self._generation, self._changed))
        self._changed = set()
        self._generation += 1

    def ready(self, positions: dict[int, int]) -> list[tuple[str, bytes, bytes]]:
        """Check the generations rcm.postings was read past (``positions``: partition ->
        next offset); the rcm.dlq records (topic, key, value) of new mismatches."""
        records: list[tuple[str, bytes, bytes]] = []
        while self._waiting and all(positions.get(p, 0) >= end
                                    for p, end in self._waiting[0][0].items()):
            _, generation, accounts = self._waiting.pop(0)
            for i in sorted(accounts):
                if self._latest.get(i) != generation:
                    continue  # changed again since: a later generation checks it
                del self._latest[i]
                account = self.sums.names[i]
                head = self.heads.db.get(account.encode())
                if head is None:
                    continue  # no head yet: its deltas are in flight
                self.checked += 1
                mismatch = self.sums.check(account, orjson.loads(head))
                if mismatch is None:
                    self._reported.pop(i, None)
                    continue
                key = orjson.dumps(mismatch.to_json()).decode()
                if self._reported.get(i) == key:
                    continue  # the same mismatch, already counted and recorded
                self._reported[i] = key
                self.mismatches += 1
                log.warning("%s", mismatch.describe())
                records.append((DLQ, *mismatch_record(mismatch, head)))
        return records

    def close(self) -> None:
        self.heads.close()
        self.sums.close()


async def follow(kafka: KafkaConnection, scratch_parent: Path, *, metrics_host: str,
                 metrics_port: int, poll_s: float = 0.2,
                 routing: DenialRouting | None = None) -> ExitCode:
    """`rcmflow audit --follow` until SIGTERM/SIGINT (exit 0); REFUSED when the metrics
    port is taken."""
    import signal

    from rcmflow.runtime.metrics import new_registry, serve, url

    follower = Follower(kafka, scratch_parent, poll_s=poll_s, routing=routing)
    try:
        if metrics_port:
            try:
                bound = serve(new_registry(follower.families), metrics_host, metrics_port)
            except OSError as exc:
                log.error("%s", exc)
                return ExitCode.REFUSED
            log.info("audit: metrics on %s", url(metrics_host, bound))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, follower.stopping.set)
        log.info("audit: following %s and %s", ACCOUNTS, POSTINGS)
        await follower.run()
        log.info("audit: stopped (signal); %d checks, %d mismatches", follower.checked,
                 follower.mismatches)
        return ExitCode.OK
    finally:
        follower.close()
