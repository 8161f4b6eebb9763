"""Consumer lag: per consumer group, topic and partition, what it committed against the log end.

Who consumes what (the group ids are fixed by the code, ``rcmflow/runtime/kafka_access.py``):

- the workers: group ``<app_id>`` on rcm.events (Faust commits rcm.events offsets only);
- each ERP connector: group ``<app_id>-erp-<adapter>`` on rcm.postings;
- `rcmflow consume FORMAT --topic T`: group ``<app_id>-consume-<format>-<T>`` on T (or its
  ``--group``: name it with ``groups=``);
- the facade joins no group: its offsets live in its own SQLite store (the ``offsets`` table,
  in the same transaction as its rows), read here when the store is on this machine;
- `rcmflow audit --follow`, `reconcile`, the listings and `trace` join no group and keep no
  offsets: they have no lag to show.

A group that never committed on a partition shows ``committed: None``; the workers and the
ERP connectors then read from the earliest offset, so their lag is the whole partition.
Log ends are the true ends (``kafka_io.log_ends``: Tansu's ListOffsets answer is not).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    NotCoordinatorForGroupError,
)
from aiokafka.structs import TopicPartition

from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import log_ends, topic_partitions
from rcmflow.streams.topics import ACCOUNTS, EVENTS, POSTINGS

__all__ = ["PartitionLag", "GroupLag", "FacadeLag", "LagReport", "lag_report", "group_role",
           "rcmflow_groups", "listed_groups", "group_committed", "GROUPS_MAX", "TOPICS"]

#: The topics whose log ends a report reads (its READ ACLs; the groups need DESCRIBE).
TOPICS = (EVENTS, POSTINGS, ACCOUNTS)
#: Longest wait for a group's coordinator (a fresh cluster makes its offsets topic first).
COORDINATOR_WAIT_S = 15.0
_COORDINATOR_STARTING = (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError,
                         NotCoordinatorForGroupError)
#: Groups shown at most (a cluster shared with other applications may list thousands).
GROUPS_MAX = 200
#: Whose lag is the whole partition while they have committed nothing (they start at the
#: earliest offset); a consume group with no commit starts at the end unless
#: --from-beginning, so its lag is unknown.
_READS_FROM_EARLIEST = ("worker", "erp")


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    log_end: int
    lag: int | None

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "committed": self.committed,
                "log_end": self.log_end, "lag": self.lag}


@dataclass
class GroupLag:
    group: str
    #: worker, erp <adapter>, consume <format>, or other.
    role: str
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def committed_any(self) -> bool:
        return any(p.committed is not None for p in self.partitions)

    @property
    def total_lag(self) -> int | None:
        """Σ lag over the partitions; None when some partition's lag is unknown."""
        lags = [p.lag for p in self.partitions]
        return None if any(lag is None for lag in lags) else sum(lag or 0 for lag in lags)

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "role": self.role, "committed_any": self.committed_any,
                "total_lag": self.total_lag,
                "partitions": [p.to_json() for p in self.partitions]}


@dataclass
class FacadeLag:
    """The facade's own progress on rcm.accounts, from its store (it joins no group)."""

    store: str
    partitions: list[PartitionLag] = field(default_factory=list)
    note: str | None = None

    @property
    def total_lag(self) -> int | None:
        if self.note is not None or not self.partitions:
            return None
        return sum(p.lag or 0 for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "note": self.note, "total_lag": self.total_lag,
                "partitions": [p.to_json() for p in self.partitions]}


@dataclass
class LagReport:
    groups: list[GroupLag]
    facade: FacadeLag | None
    #: Groups the broker listed beyond GROUPS_MAX (not shown).
    groups_left_out: int = 0

    def group(self, name: str) -> GroupLag | None:
        return next((g for g in self.groups if g.group == name), None)

    def to_json(self) -> dict[str, Any]:
        return {"groups": [g.to_json() for g in self.groups],
                "facade": None if self.facade is None else self.facade.to_json(),
                "groups_left_out": self.groups_left_out}


def group_role(app_id: str, group: str) -> tuple[str, str | None]:
    """(role, the topic it reads or None when the name does not say) of a group id."""
    if group == app_id:
        return "worker", EVENTS
    erp = f"{app_id}-erp-"
    if group.startswith(erp):
        return f"erp {group[len(erp):]}", POSTINGS
    consume = f"{app_id}-consume-"
    if group.startswith(consume):
        fmt, _, topic = group[len(consume):].partition("-")
        return f"consume {fmt}", topic or None
    return "other", None


def rcmflow_groups(app_id: str, listed: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The groups to show: the workers' always (so "no commits yet" is shown), every listed
    group of this app id, and ``extra`` (groups named by hand, e.g. a consume --group)."""
    prefix = f"{app_id}-"
    chosen = {app_id, *extra}
    chosen.update(g for g in listed if g == app_id or g.startswith(prefix))
    return sorted(chosen)


async def listed_groups(kafka: KafkaConnection) -> list[str]:
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        return sorted({str(entry[0]) for entry in await admin.list_consumer_groups()})
    finally:
        await admin.close()


async def group_committed(kafka: KafkaConnection, group: str,
                     partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Committed offsets of ``group`` on these partitions (named: Tansu does not answer
    OffsetFetch for "all partitions"); a partition without a commit is absent."""
    if not partitions:
        return {}
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    try:
        while True:
            try:
                found = await admin.list_consumer_group_offsets(group, partitions=partitions)
                break
            except _COORDINATOR_STARTING:
                # A cluster on which no group ever committed makes __consumer_offsets on
                # this first question: its coordinator answers a moment later.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}


async def _beginnings(kafka: KafkaConnection, tps: list[TopicPartition]
                      ) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.beginning_offsets(tps))
    finally:
        await consumer.stop()


class _Topics:
    """Partitions, log ends and first offsets of topics, each asked once per report."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self.kafka = kafka
        self.partitions: dict[str, list[int]] = {}
        self.ends: dict[str, dict[int, int]] = {}
        self.starts: dict[str, dict[int, int]] = {}

    async def of(self, topic: str) -> list[int]:
        if topic not in self.partitions:
            self.partitions[topic] = await topic_partitions(self.kafka, topic)
        return self.partitions[topic]

    async def end(self, topic: str) -> dict[int, int]:
        if topic not in self.ends:
            parts = await self.of(topic)
            self.ends[topic] = await log_ends(self.kafka, topic, parts) if parts else {}
        return self.ends[topic]

    async def start(self, topic: str) -> dict[int, int]:
        if topic not in self.starts:
            tps = [TopicPartition(topic, p) for p in await self.of(topic)]
            found = await _beginnings(self.kafka, tps) if tps else {}
            self.starts[topic] = {tp.partition: offset for tp, offset in found.items()}
        return self.starts[topic]


async def _group_lag(topics: _Topics, app_id: str, group: str) -> GroupLag:
    role, topic = group_role(app_id, group)
    # A group whose name does not say its topic: asked about the topics rcmflow's
    # consumers read (a group on a topic of its own is named with its topic by consume).
    candidates = [topic] if topic else [EVENTS, POSTINGS, ACCOUNTS]
    tps = [TopicPartition(t, p) for t in candidates for p in await topics.of(t)]
    committed = await group_committed(topics.kafka, group, tps)
    if topic is None:  # show only the topics it committed on
        tps = [tp for tp in tps if any(c.topic == tp.topic for c in committed)]
    found = GroupLag(group, role)
    for tp in tps:
        end = (await topics.end(tp.topic))[tp.partition]
        at = committed.get(tp)
        if at is not None:
            lag: int | None = max(0, end - at)
        elif role.split(" ")[0] in _READS_FROM_EARLIEST:
            lag = max(0, end - (await topics.start(tp.topic)).get(tp.partition, 0))
        else:
            lag = None
        found.partitions.append(PartitionLag(tp.topic, tp.partition, at, end, lag))
    return found


async def facade_lag(topics: _Topics, store: Path) -> FacadeLag:
    """The facade's next offsets on rcm.accounts, read-only from its SQLite store."""
    found = FacadeLag(str(store))
    if not store.exists():
        found.note = ("no facade store on this machine (the facade keeps its offsets in its "
                      "own store, RCMFLOW_FACADE_STORE)")
        return found
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT partition, next_offset FROM offsets").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        found.note = f"the facade store could not be read: {exc}"
        return found
    offsets = {int(p): int(o) for p, o in rows}
    ends = await topics.end(ACCOUNTS)
    for partition in sorted(ends):
        at = offsets.get(partition)
        end = ends[partition]
        # The facade reads from the beginning where it has no offset yet.
        lag = max(0, end - (at if at is not None else
                            (await topics.start(ACCOUNTS)).get(partition, 0)))
        found.partitions.append(PartitionLag(ACCOUNTS, partition, at, end, lag))
    return found


async def lag_report(kafka: KafkaConnection, *, app_id: str, groups: Iterable[str] = (),
                     facade_store: Path | None = None) -> LagReport:
    """Every rcmflow consumer group's committed offsets against the log ends (the workers'
    group always, with "no commits" when it has none), ``groups`` too, and the facade's
    progress when ``facade_store`` is given."""
    topics = _Topics(kafka)
    names = rcmflow_groups(app_id, await listed_groups(kafka), groups)
    left_out = max(0, len(names) - GROUPS_MAX)
    report = LagReport([await _group_lag(topics, app_id, g) for g in names[:GROUPS_MAX]],
                       None, left_out)
    if facade_store is not None:
        report.facade = await facade_lag(topics, facade_store)
    return report
