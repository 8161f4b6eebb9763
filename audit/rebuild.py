"""`rcmflow rebuild`: the account state again, from rcm.events alone, and its digest.

rcm.events is replayed from its first offset, one partition after another in offset order,
in batches of ``RCMFLOW_BATCH_MAX`` events (as the worker), through the pure core
(``Processor``, built from the same settings and chart as the worker's), into fresh tables
in a directory of its own. Nothing of the live system is touched: the reads join no consumer
group and commit nothing, nothing is written to any rcm.* topic (the postings and DLQ
records the core makes are dropped), and the workers' RocksDB stores are not opened. Then it
prints the state's digest, defined in ``audit/digest.py`` exactly as `rcmflow digest`
computes it from rcm.accounts, so the two compare directly: equal digests say the live state
is what the log implies, not drifted.

**The tables.** By default RocksDB stores (rocksdict) in the directory: ``accounts`` and
``dedup`` as the worker keeps them (keys prefixed by the partition, two bytes big-endian),
and ``heads`` (account -> its head, for the digest in key order). Written without a
write-ahead log: a rebuild that crashes is simply run again into a new directory. Memory
stays that of one batch, RocksDB's buffers (``digest.store_options``: two 16 MiB memtables
per store), ``HEADS_CACHED_MAX`` decoded heads and the OS page cache, whatever the topic's
length or the number of accounts. ``memory=True`` holds the tables in memory instead, as
`rcmflow reconcile` replays (``reconcile.ReplayTables``, one partition's tables at a time:
~0.5 KB per event of the largest partition, plus ~1 KB per account for its digest line):
about 20 % faster, ~1.7 GB (estimated) at a million accounts (bench/RESULTS.md).

**Determinism.** The core depends only on the records (their values, keys, partitions,
offsets and timestamps) and the settings, so two rebuilds of one topic give one digest. The
live state gives the same one when its workers have applied exactly the records the rebuild
read, with the same chart and ``RCMFLOW_*`` limits: ``--compare`` says how far the workers'
committed offsets are from the ends it read, so a difference from work in flight is told
from drift. One thing can differ without drift: replays of events older than the dedup
horizon (``RCMFLOW_DEDUP_HORIZON_DAYS``, four years by default) are judged against purge
marks that move with each batch's earliest record, so batches cut elsewhere may judge such
a replay differently.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
from aiokafka.errors import KafkaError
from rich.console import Console
from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions

from rcmflow.audit.digest import (
    AccountState,
    HeadStore,
    StateDigest,
    differing_accounts,
    digest_of,
    read_live,
    scratch_dir,
    state_of,
    store_options,
)
from rcmflow.audit.exceptions import NotFresh
from rcmflow.audit.reconcile import REPLAY_BATCH, ReplayTables, log_starts
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import committed_offsets, iter_topic, log_ends, topic_partitions
from rcmflow.runtime.progress import LOG_EVERY_S, progress
from rcmflow.streams.dedup import (
    HORIZON_PREFIX,
    PURGED_BEFORE_KEY,
    DedupEntry,
    horizon_key,
    is_retry,
)
from rcmflow.streams.layout import decode_head, head_key, is_head_key, item_key
from rcmflow.streams.memory_tables import head_records, item_records
from rcmflow.streams.processor import BatchResult, Counts, Lookups, Message, Processor
from rcmflow.streams.state import AccountHead, Item, ItemRef
from rcmflow.streams.topics import EVENTS

__all__ = ["rebuild", "Rebuilt", "Comparison", "RocksTables", "fresh_directory", "HEADS_CACHED_MAX"]

#: Partition prefix of the accounts and dedup keys (the worker keeps a store per partition).
_PARTITION = struct.Struct(">H")
#: Decoded heads kept between batches (~1 KB each): an account's next event skips decoding
#: its head.
HEADS_CACHED_MAX = 20_000


def fresh_directory(into: Path | None, data_dir: Path) -> tuple[Path, bool]:
    """(the directory to rebuild into, whether it is a temporary one): ``into`` if it is
    missing or empty, else a new directory under ``<data dir>/rebuilds``."""
    if into is None:
        return scratch_dir(data_dir / "rebuilds", "rebuild-"), True
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise NotFresh(f"{into} is not an empty directory: a rebuild starts from fresh "
                       "tables (name a new or empty one)")
    into.mkdir(parents=True, exist_ok=True)
    return into, False


def _options(*, bloom: bool = False) -> Options:
    """Small buffers (``store_options``) and, for the dedup store, a bloom filter."""
    options = store_options()
    if bloom:  # most dedup lookups are for keys that do not exist
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
    return options


class _Tables(Lookups, Protocol):
    def write(self, result: BatchResult) -> None: ...


class _Store(Protocol):
    def tables_for(self, partition: int) -> _Tables: ...

    def states(self) -> Iterator[AccountState]: ...

    def close(self) -> None: ...


class RocksTables:
    """The accounts and dedup tables (``Lookups``) as RocksDB stores in ``directory``, and
    the heads in key order for the digest (``HeadStore``)."""

    def __init__(self, directory: Path) -> None:
        self.accounts = Rdict(str(directory / "accounts"), options=_options())
        self.dedup = Rdict(str(directory / "dedup"), options=_options(bloom=True))
        self.heads = HeadStore(directory / "heads")
        self._write = WriteOptions()
        # rocksdict exposes this as a property (its stub says method); see tables/faust_store.
        self._write.disable_wal = True  # type: ignore[method-assign,assignment]
        self._cache: dict[tuple[int, str], AccountHead] = {}

    def tables_for(self, partition: int) -> RocksTables:
        return self

    def load_head(self, partition: int, account: str) -> AccountHead | None:
        cached = self._cache.get((partition, account))
        if cached is not None:
            return cached
        raw = self.accounts.get(_PARTITION.pack(partition) + head_key(account))
        return decode_head(raw) if raw is not None else None

    def load_item(self, partition: int, account: str, ref: ItemRef) -> Item | None:
        raw = self.accounts.get(_PARTITION.pack(partition) + item_key(account, ref))
        return orjson.loads(raw) if raw is not None else None

    def load_dedup(self, partition: int, key: bytes) -> DedupEntry | None:
        raw = self.dedup.get(_PARTITION.pack(partition) + key)
        return DedupEntry.model_validate_json(raw) if raw is not None else None

    def load_purge_mark(self, partition: int) -> int:
        raw = self.dedup.get(_PARTITION.pack(partition) + PURGED_BEFORE_KEY)
        return int(raw) if raw is not None else 0

    def expired(self, partition: int, before_day: int, limit: int) -> list[bytes]:
        prefix = _PARTITION.pack(partition)
        end = prefix + horizon_key(before_day, b"")
        found: list[bytes] = []
        it = self.dedup.iter()
        it.seek(prefix + HORIZON_PREFIX)
        while it.valid() and len(found) < limit:
            key: bytes = it.key()
            if key >= end:
                break
            found.append(key[_PARTITION.size:])
            it.next()
        return found

    def write(self, result: BatchResult) -> None:
        """Everything the batch wrote, in one RocksDB batch per store (no crash to survive:
        a rebuild that stops is run again from nothing)."""
        dedup = WriteBatch(raw_mode=True)
        for phase in (result.dedup_writes, result.purge_marks, result.purged_records,
                      result.purged_index):
            for (p, key), value in phase.items():
                if value is None:
                    dedup.delete(_PARTITION.pack(p) + key)
                else:
                    dedup.put(_PARTITION.pack(p) + key, value)
        self.dedup.write(dedup, write_opt=self._write)
        heads = head_records(result)
        accounts = WriteBatch(raw_mode=True)
        for (p, key), value in (heads | item_records(result)).items():
            accounts.put(_PARTITION.pack(p) + key, value)
        self.accounts.write(accounts, write_opt=self._write)
        self.heads.put_many((key, value) for (_, key), value in heads.items())
        for (p, account), head in result.heads.items():
            self._cache.pop((p, account), None)
            self._cache[(p, account)] = head
        while len(self._cache) > HEADS_CACHED_MAX:
            del self._cache[next(iter(self._cache))]

    def states(self) -> Iterator[AccountState]:
        return self.heads.states()

    def close(self) -> None:
        self.accounts.close()
        self.dedup.close()
        self.heads.close()


class MemoryReplay:
    """The tables in memory, as `rcmflow reconcile` replays: one partition's tables
    (``ReplayTables``) at a time; a finished partition leaves only its accounts' digest
    states."""

    def __init__(self) -> None:
        self.partition: int | None = None
        self.tables = ReplayTables()
        self.kept: dict[str, AccountState] = {}

    def tables_for(self, partition: int) -> ReplayTables:
        if partition != self.partition:
            self._keep()
            self.partition, self.tables = partition, ReplayTables()
        return self.tables

    def _keep(self) -> None:
        for (_, key), value in self.tables.accounts.items():
            if is_head_key(key):
                account = key.decode()
                self.kept[account] = state_of(account, orjson.loads(value))

    def states(self) -> Iterator[AccountState]:
        self._keep()
        self.tables = ReplayTables()
        for account in sorted(self.kept, key=str.encode):
            yield self.kept[account]

    def close(self) -> None:
        self.tables = ReplayTables()
        self.kept.clear()


@dataclass
class Comparison:
    """The rebuilt state against the live one (rcm.accounts)."""

    live: StateDigest
    #: The first accounts (key order) whose lines differ, and how many differ in all.
    differing: list[str]
    differing_count: int
    #: Partition -> (rcm.events end when the rebuild started, when it ended, the workers'
    #: committed offset or None): tells work in flight from drift.
    offsets: dict[int, tuple[int, int, int | None]]

    @property
    def equal(self) -> bool:
        return not self.differing_count

    @property
    def quiet(self) -> bool:
        """The workers had committed exactly what the rebuild read, and nothing came."""
        return all(before == after == committed
                   for before, after, committed in self.offsets.values())


@dataclass
class Rebuilt:
    digest: StateDigest
    events: int
    seconds: float
    directory: Path
    counts: Counts = field(default_factory=Counts)
    #: Partition -> its first offset where retention deleted the ones before (not all of
    #: rcm.events could be replayed).
    trimmed: dict[int, int] = field(default_factory=dict)
    comparison: Comparison | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            **self.digest.to_json(), "events": self.events, "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s), "directory": str(self.directory),
            "applied": self.counts.applied, "replays": self.counts.replays,
            "conflicts": self.counts.conflicts, "rejected": self.counts.rejected,
            "trimmed": self.trimmed}
        if self.comparison is not None:
            c = self.comparison
            doc["compare"] = {"live": c.live.to_json(), "equal": c.equal, "quiet": c.quiet,
                              "differing_accounts": c.differing,
                              "differing_count": c.differing_count,
                              "offsets": {p: {"events_end_before": b, "events_end_after": a,
                                              "workers_committed": w}
                                          for p, (b, a, w) in sorted(c.offsets.items())}}
        return doc


async def _replay(kafka: KafkaConnection, processor: Processor, store: _Store, batch: int,
                  console: Console, progress_every_s: float
                  ) -> tuple[int, Counts, dict[int, int], dict[int, int]]:
    """(events read, the core's counts, the ends as the replay started, the log starts
    retention moved) after replaying every partition of rcm.events into ``store``."""
    partitions = await topic_partitions(kafka, EVENTS)
    ends = await log_ends(kafka, EVENTS, partitions) if partitions else {}
    starts = await log_starts(kafka, EVENTS, partitions) if partitions else {}
    counts = Counts()
    events = 0
    total = sum(max(0, end - starts.get(p, 0)) for p, end in ends.items())
    with progress(console, f"replaying {EVENTS}", total=total or None, unit="events",
                  every_s=progress_every_s) as advance:
        for p in partitions:
            if ends.get(p, 0) <= starts.get(p, 0):
                continue
            tables = store.tables_for(p)
            async for records in iter_topic(kafka, EVENTS, start={p: starts.get(p, 0)},
                                            batch_records=batch):
                result = processor.process(
                    [Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms,
                             is_retry(r.headers))
                     for r in records], tables)
                tables.write(result)
                counts.add(result.counts)
                events += len(records)
                advance(len(records))
    return events, counts, ends, {p: s for p, s in starts.items() if s > 0}


async def _committed(kafka: KafkaConnection, group: str, partitions: list[int]
                     ) -> dict[int, int]:
    """The workers' committed offsets on rcm.events ({} when they cannot be read, e.g. no
    ACL to describe their group): read through the admin API, their group not joined."""
    try:
        return await committed_offsets(kafka, group, EVENTS, partitions)
    except KafkaError:
        return {}


async def rebuild(kafka: KafkaConnection, processor: Processor, directory: Path, *,
                  memory: bool = False, compare: bool = False, group: str = "rcmflow",
                  batch: int = REPLAY_BATCH, console: Console | None = None,
                  progress_every_s: float = LOG_EVERY_S) -> Rebuilt:
    """Replay rcm.events into fresh tables in ``directory`` and digest the result; with
    ``compare``, also the live digest (rcm.accounts, read into ``directory/live``) and the
    accounts that differ. ``group``: the workers' consumer group (their committed offsets
    are read, not moved). ``batch``: events per core batch (the worker's ``batch_max``)."""
    console = console or Console(file=io.StringIO())
    store: _Store = MemoryReplay() if memory else RocksTables(directory)
    try:
        started = time.monotonic()
        events, counts, ends, trimmed = await _replay(kafka, processor, store, batch,
                                                      console, progress_every_s)
        seconds = time.monotonic() - started
        if not compare:
            return Rebuilt(digest_of(store.states()), events, seconds, directory, counts,
                           trimmed)
        with HeadStore(directory / "live") as live:
            await read_live(kafka, live, console=console, progress_every_s=progress_every_s)
            after = await log_ends(kafka, EVENTS, sorted(ends)) if ends else {}
            committed = await _committed(kafka, group, sorted(ends))
            rebuilt = digest_of(store.states())
            live_digest = live.digest()
            differing, count = ([], 0) if rebuilt.sha256 == live_digest.sha256 else \
                differing_accounts(store.states(), live.states())
        offsets = {p: (ends[p], after.get(p, ends[p]), committed.get(p)) for p in ends}
        return Rebuilt(rebuilt, events, seconds, directory, counts, trimmed,
                       Comparison(live_digest, differing, count, offsets))
    finally:
        store.close()


def render(rebuilt: Rebuilt, console: Console, *, kept: bool) -> None:
    """The rebuilt digest and rate; with a comparison, the live digest and the verdict."""
    c = rebuilt.counts
    console.print(f"replayed {rebuilt.events:,} events in {rebuilt.seconds:.1f} s: "
                  f"{rebuilt.events_per_s:,.0f} events/s ({c.applied:,} applied, "
                  f"{c.replays:,} replays, {c.conflicts:,} conflicts, {c.rejected:,} refused)",
                  highlight=False)
    if rebuilt.trimmed:
        console.print("[yellow]rcm.events does not start at offset 0 (retention deleted the "
                      "first records: the rebuild cannot hold their effects): "
                      + ", ".join(f"partition {p} starts at {s}"
                                  for p, s in sorted(rebuilt.trimmed.items())) + "[/yellow]")
    rebuilt.digest.render(console, "rebuilt digest")
    if kept:
        console.print(f"tables kept in {rebuilt.directory}", highlight=False)
    comparison = rebuilt.comparison
    if comparison is None:
        return
    console.print(f"live digest (rcm.accounts): [bold]{comparison.live.sha256}[/bold] "
                  f"({comparison.live.accounts} accounts)", soft_wrap=True)
    if comparison.equal:
        console.print("[green]equal: the live state is the one rcm.events implies[/green]")
    else:
        n, more = comparison.differing_count, comparison.differing_count - len(
            comparison.differing)
        console.print(f"[red]they differ: {n} account{'s' if n != 1 else ''}[/red] "
                      f"({', '.join(comparison.differing)}{f' and {more} more' if more else ''})",
                      soft_wrap=True)
    if not comparison.quiet:
        console.print("[yellow]not quiet while compared: rcm.events end / workers' committed "
                      "offset per partition: "
                      + ", ".join(f"{p}: {after} / {'?' if w is None else w}"
                                  for p, (_, after, w) in sorted(comparison.offsets.items()))
                      + " (events in flight differ until the workers catch up; run again "
                        "when they are equal)[/yellow]", soft_wrap=True)
