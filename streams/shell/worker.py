"""The Faust app: one agent applies ``rcm.events`` to the account tables, a batch at a time.

The agent is a thin shell around the pure ``Processor`` and the write order
(``streams/write_order.py``: ``Batches``, which the crash property test runs too; this module
gives it the broker and the stores). Per batch, in this order:

1. decode, dedup and apply every event (no I/O but table reads);
2. send the posting deltas to ``rcm.postings`` and rejections to ``rcm.dlq``; wait for acks;
3. write the dedup records (local store + changelog); wait for acks;
4. write the account heads (local store + ``rcm.accounts``); wait for acks;
5. write the items the batch created or changed (the same way); wait for acks;
6. when the dedup horizon's purge is due: its mark, the expired records, their index keys
   (``BatchResult.purge_marks``), each waited for;
7. return, so the batch's offsets become committable (``commit_limit``) and Faust's periodic
   commit may commit them.

Records reach the agent a fetch at a time (``BulkFeed``, ``streams/shell/faust_internals.py``), not
one Faust event each: Faust's per-record path cost as much CPU as the worker's own work.

A crash anywhere before 7 leaves the offsets uncommitted and the batch is read again. A dedup
record on the broker implies its outputs are there (2 before 3); a head implies its dedup
record (3 before 4); a head not there implies its items are not either (4 before 5). Events
without a dedup record are applied again and post byte-identical deltas (deterministic ids and
contents); events with one are redeliveries (``dedup.py``, ``Processor._redeliver``).

Under ``exactly_once`` (Apache Kafka) steps 2-6 are one Kafka transaction per source partition
that also commits the consumer offset (``outbox.py``), and the local stores are written only
after it committed: a crash before the commit aborts everything the batch sent, a crash after
it leaves a store that recovery brings up to its changelog. Readers of rcm.postings that read
``read_committed`` then see every posting id exactly once, never a re-send.

Metrics (``worker_families``) are read from ``Progress`` at scrape time: the counters grow
once per durable batch, so the hot path pays nothing for them.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import faust
from aiokafka.errors import KafkaError
from faust.types import TP
from mode import CrashingSupervisor

from rcmflow.runtime.faults import NO_FAULTS, Faults, SkipRecords, kill_this_process
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import committed_offsets, log_ends
from rcmflow.runtime.metrics import (
    DAYS_BUCKETS,
    BoundedLabel,
    Histogram,
    Metric,
    counter,
    gauge,
    histogram,
)
from rcmflow.runtime.settings import Settings
from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.date_window import DateWindow
from rcmflow.streams.dedup import is_retry
from rcmflow.streams.fee_schedule import FeeSchedule
from rcmflow.streams.lifecycle import SECONDS_PER_DAY, Transition
from rcmflow.streams.ordering import OffsetGuard
from rcmflow.streams.outgoing import Acked, OutRecord
from rcmflow.streams.processor import (
    AppliedEvent,
    BatchResult,
    ContractTally,
    Counts,
    Message,
    Processor,
)
from rcmflow.streams.refund_policy import RefundPolicy
from rcmflow.streams.shell.faust_internals import (
    BulkFeed,
    assigned_partitions,
    bulk_consume,
    commit_in_flight,
    committed_offset,
    disable_gap_commits,
    fetching_state,
    install_highwater_fix,
    install_recovery_seek_fix,
    limit_commits,
    mark_for_commit,
    note_committed,
    own_transactions,
    pause,
    refresh_metadata,
    resume,
    seek,
    settled,
)
from rcmflow.streams.shell.outbox import Outbox
from rcmflow.streams.topics import EVENTS
from rcmflow.streams.write_order import Batches
from rcmflow.tables.account_tables import AccountTables

__all__ = ["build_worker", "BuiltWorker", "Pipeline", "claim_worker_dir", "worker_families",
           "WORKER_SLOTS_MAX"]

log = logging.getLogger("rcmflow.worker")

WORKER_SLOTS_MAX = 64
PROGRESS_INTERVAL_S = 10.0
#: An assigned partition that has records but delivered none for this long is stalled ...
STALL_S = 15.0
#: ... it is resumed and sought; still stalled this long after, the worker crashes.
STALL_CRASH_S = 120.0
#: A hole (see ``ordering.py``) is read again at most this often ...
HOLE_RESEEK_S = 1.0
#: ... and if it is still there after this long, the worker crashes rather than skip it.
HOLE_WAIT_S = 60.0
#: How often the watchdog asks the broker for the commits of caught-up quiet partitions.
COMMIT_CHECK_S = 20.0
#: Applied durably but not committed for this long: said in the log (then once a minute).
COMMIT_LATE_S = 60.0


@dataclass
class Progress:
    """What this worker made durable since it started (counted after a batch's acks)."""

    counts: Counts = field(default_factory=Counts)
    batches: int = 0
    events: int = 0
    dlq_records: int = 0
    #: rcm.events records on this worker's partitions not yet applied; None: not measured.
    lag: int | None = None
    started_s: float = field(default_factory=time.monotonic)
    #: (source, kind) -> events applied; sources are bounded (``BoundedLabel``), kinds are
    #: the EventKind values.
    by_source_kind: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Event kind -> posting deltas made (claim-to-ledger: compared with the ERP's count).
    postings_by_kind: dict[str, int] = field(default_factory=dict)
    #: rcm.events record timestamp -> its posting delta durable on rcm.postings, seconds.
    latency: Histogram = field(default_factory=Histogram)
    sources: BoundedLabel = field(default_factory=BoundedLabel)
    #: Lifecycle (``streams/lifecycle.py``): (entity, from, to, expected) -> transitions; the
    #: days spent in a state as it was left, by (entity, from, to); the watched spans' days
    #: by (entity, span). Entities are bounded (``BoundedLabel``), states and spans fixed.
    transitions: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    time_in_state: Histogram = field(default_factory=lambda: Histogram(DAYS_BUCKETS))
    spans: Histogram = field(default_factory=lambda: Histogram(DAYS_BUCKETS))
    entities: BoundedLabel = field(default_factory=BoundedLabel)
    #: Contract variance (``streams/variance.py``): (payer, result) -> 835 lines compared,
    #: result priced / unpriced / uncontracted / underpaid / overpaid; (payer, direction) ->
    #: cents under- or overpaid. Payers are bounded (``BoundedLabel``).
    contract_lines: dict[tuple[str, str], int] = field(default_factory=dict)
    variance_cents: dict[tuple[str, str], int] = field(default_factory=dict)
    payers: BoundedLabel = field(default_factory=BoundedLabel)
    #: (payer, outcome) -> 835 claims applied: the denial rate by payer is denied over
    #: processed + denied (docs: denials).
    adjudications: dict[tuple[str, str], int] = field(default_factory=dict)

    def note_contract(self, tallies: Sequence[ContractTally]) -> None:
        for t in tallies:
            payer = self.payers(t.payer)
            for result, n in (("priced", t.priced), ("unpriced", t.unpriced),
                              ("uncontracted", t.uncontracted)):
                if n:
                    key = (payer, result)
                    self.contract_lines[key] = self.contract_lines.get(key, 0) + n
            for direction, cents in t.variances:
                key = (payer, direction)
                self.contract_lines[key] = self.contract_lines.get(key, 0) + 1
                self.variance_cents[key] = self.variance_cents.get(key, 0) + cents

    def note(self, applied: Sequence[AppliedEvent], now_s: float) -> None:
        """Count a durable batch's applied events (``now_s``: Unix time it became durable).
        Grouped first: the per-event cost is a tuple count, not a label lookup."""
        for (source, kind), n in Counter((e.source, e.kind) for e in applied).items():
            key = (self.sources(source), kind)
            self.by_source_kind[key] = self.by_source_kind.get(key, 0) + n
        posted = [e for e in applied if e.posted]
        for kind, n in Counter(e.kind for e in posted).items():
            self.postings_by_kind[kind] = self.postings_by_kind.get(kind, 0) + n
        # A producer clock ahead of ours would give a negative latency: 0.
        self.latency.observe_many([max(0.0, now_s - e.timestamp_ms / 1000) for e in posted
                                   if e.timestamp_ms is not None])
        for e in applied:
            if e.transitions:
                self._note_transitions(self.entities(e.entity), e.transitions)
            if e.adjudication is not None:
                key = (self.payers(e.adjudication[0]), e.adjudication[1])
                self.adjudications[key] = self.adjudications.get(key, 0) + 1

    def _note_transitions(self, entity: str, transitions: Sequence[Transition]) -> None:
        """Each transition at its event's own dates (``occurred_at``); one dated before the
        state it leaves was entered (it came out of order) counts 0 days."""
        for t in transitions:
            source = t.from_state or "none"
            key = (entity, source, t.state, "true" if t.expected else "false")
            self.transitions[key] = self.transitions.get(key, 0) + 1
            if t.seconds_in_from is not None:
                self.time_in_state.observe(max(0, t.seconds_in_from) / SECONDS_PER_DAY,
                                           (entity, source, t.state))
            for span, seconds in t.spans:
                self.spans.observe(max(0, seconds) / SECONDS_PER_DAY, (entity, span))


def worker_families(progress: Progress) -> list[Metric]:
    """The worker's metrics (read from another thread: each read is one int)."""
    c = progress.counts
    outcomes = {"applied": c.applied, "replay": c.replays, "redelivery": c.redeliveries,
                "conflict": c.conflicts, "rejected": c.rejected}
    return [
        counter("rcmflow_worker_events", "rcm.events records handled, by outcome: applied; "
                "replay (seen before, dropped); redelivery (re-read after a crash); conflict "
                "and rejected (to rcm.dlq)",
                [({"outcome": k}, v) for k, v in outcomes.items()]),
        counter("rcmflow_worker_postings", "Posting deltas sent to rcm.postings",
                [({}, c.postings)]),
        counter("rcmflow_worker_dlq_records", "Records sent to rcm.dlq (conflicts, rejected "
                "events, unmapped-dimension warnings)", [({}, progress.dlq_records)]),
        counter("rcmflow_worker_batches", "Batches made durable", [({}, progress.batches)]),
        gauge("rcmflow_worker_lag_records", "rcm.events records on this worker's partitions "
              "not yet applied (measured every 10 s; NaN: not yet known)",
              [({}, progress.lag)]),
        counter("rcmflow_worker_applied_events", "Events applied, by source (the event's "
                "source field, at most 50 distinct values, then 'other') and kind",
                [({"source": source, "kind": kind}, n)
                 for (source, kind), n in list(progress.by_source_kind.items())]),
        counter("rcmflow_worker_claims_adjudicated", "835 claims applied, by payer (at most "
                "50 distinct, then 'other') and outcome (processed, denied, reversal): the "
                "denial rate's denominator",
                [({"payer": p, "outcome": o}, n)
                 for (p, o), n in list(progress.adjudications.items())]),
        counter("rcmflow_worker_postings_by_kind", "Posting deltas made, by the kind of the "
                "event that made them (claim-to-ledger: against rcmflow_erp_postings_by_kind)",
                [({"kind": kind}, n) for kind, n in list(progress.postings_by_kind.items())]),
        histogram("rcmflow_worker_event_to_posting_seconds", "From the rcm.events record's "
                  "timestamp (the connector published the event) to its posting delta "
                  "acknowledged on rcm.postings", [], progress.latency),
        counter("rcmflow_worker_lifecycle_transitions", "Account lifecycle transitions made, "
                "by entity, the state left (none: the first), the state entered and whether "
                "the state machine expects it (docs/lifecycle.md)",
                [({"entity": e, "from_state": f, "to_state": t, "expected": x}, n)
                 for (e, f, t, x), n in list(progress.transitions.items())]),
        histogram("rcmflow_worker_lifecycle_time_in_state_days", "Days an account spent in "
                  "a lifecycle state, observed as it left it (by the events' dates), by "
                  "entity, that state and the state entered",
                  ["entity", "from_state", "to_state"], progress.time_in_state),
        histogram("rcmflow_worker_lifecycle_span_days", "Days from the last entry into one "
                  "lifecycle state to the first entry into another after it (claim_to_payment, "
                  "denial_to_appeal, ...: docs/lifecycle.md), by entity and span",
                  ["entity", "span"], progress.spans),
        counter("rcmflow_worker_contract_lines", "Processed 835 lines compared with the fee "
                "schedule (docs/variance.md), by payer (at most 50, then 'other') and result: "
                "priced (within tolerance or a variance), underpaid, overpaid (the variances), "
                "unpriced (a schedule in effect has no rate), uncontracted (no schedule)",
                [({"payer": p, "result": r}, n)
                 for (p, r), n in list(progress.contract_lines.items())]),
        counter("rcmflow_worker_variance_cents", "Cents under- or overpaid against the fee "
                "schedule beyond the tolerance, by payer and direction",
                [({"payer": p, "direction": d}, n)
                 for (p, d), n in list(progress.variance_cents.items())]),
    ]


class Pipeline:
    """Runs batches through the processor and writes the results in crash-safe order."""

    def __init__(self, app: faust.App, tables: AccountTables, processor: Processor,
                 outbox: Outbox, kafka: KafkaConnection, faults: Faults = NO_FAULTS) -> None:
        self.app = app
        #: Test-only kills and pauses at exact steps (``rcmflow/runtime/faults.py``).
        self.faults = faults
        self.kafka = kafka
        self.tables = tables
        self.processor = processor
        self.outbox = outbox
        self.guard = OffsetGuard(tables.load_next_offset,
                                 lambda partition: committed_offset(app, EVENTS, partition))
        #: Admit, apply, write in crash-safe order, move the commit limit: the write order
        #: the property test runs too (``streams/write_order.py``).
        self.batches = Batches(processor, tables, self, self.guard)
        #: (partition, offset) of a hole -> (first seen, last sought), monotonic seconds.
        self._holes: dict[tuple[int, int], tuple[float, float]] = {}
        #: Partition -> when it last delivered a record (or was assigned), monotonic seconds.
        self.last_delivery: dict[int, float] = {}
        #: Partition -> when the watchdog first found it stalled.
        self._stalled_since: dict[int, float] = {}
        self._commits_checked_at = 0.0
        #: Since when no rcm.events partition is assigned here (None: some are).
        self._unassigned_since: float | None = None
        self._unassigned_said = False
        #: Partition -> the group's committed offset when this assignment started reading it.
        self.started_at: dict[int, int] = {}
        self.progress = Progress()
        #: Partition -> since when its commit limit is ahead of what was committed.
        self._uncommitted_since: dict[int, float] = {}
        self._commit_late_said = 0.0
        #: Test-only (``Faults.worker_commit_hold_s``): no commit before this monotonic time.
        self._commit_hold_until = time.monotonic() + (faults.worker_commit_hold_s or 0.0)

    async def handle(self, messages: list[Message]) -> BatchResult:
        now = time.monotonic()
        for partition in {m.partition for m in messages}:
            self.last_delivery[partition] = now
        await self._learn_start_offsets(messages)
        admitted, result = await self.batches.apply(messages)
        if admitted.messages:
            self.progress.counts.add(result.counts)
            self.progress.dlq_records += len(result.dlq)
            self.progress.batches += 1
            self.progress.events += len(admitted.messages)
            self.progress.note(result.applied, time.time())
            self.progress.note_contract(result.contract)
            await self._fault_point("batch-done")
        for partition in admitted.read_to:
            self._holes = {k: v for k, v in self._holes.items() if k[0] != partition}
        for partition, offset in admitted.holes.items():
            await self._read_again(partition, offset)
        return result

    # -- the broker side of the write order (``write_order.Shell``) -----------------------
    @property
    def exactly_once(self) -> bool:
        return self.outbox.exactly_once

    async def send(self, records: list[OutRecord]) -> list[Acked]:
        return await self.outbox.send(records)

    async def commit(self, read_to: dict[int, int]) -> None:
        await self.outbox.commit(read_to, self.app.conf.id)
        # Nothing awaited between the commit and this: Faust's own commit (which must find
        # nothing to commit) cannot run in between.
        note_committed(self.app, EVENTS, read_to)

    async def reached(self, point: str) -> None:
        await self._fault_point(point)

    async def _learn_start_offsets(self, messages: list[Message]) -> None:
        """Where the consumer started each newly assigned partition: the group's committed
        offset, asked of the broker. Faust's own copy is filled by a seek that runs while the
        first records are already delivered; read too early it says 0, the guard then sees
        a hole at 0 and the worker would read the partition again from its beginning."""
        new = {m.partition for m in messages if not self.guard.positioned(m.partition)}
        if not new:
            return
        committed = await committed_offsets(self.kafka, self.app.conf.id, EVENTS, new)
        for partition in sorted(new):
            offset = self.started_at[partition] = committed.get(partition, 0)
            log.info("%s partition %d: reading from offset %d (committed; durable next offset "
                     "%s)", EVENTS, partition, offset, self.guard.next_offset(partition))
            self.guard.sought(partition, offset)

    def _durable_position(self, partition: int) -> int:
        """The offset every earlier record of ``partition`` is durably applied below: the
        last durable batch's end, else where this assignment started reading."""
        if partition in self.batches.durable_next:
            return self.batches.durable_next[partition]
        if partition in self.started_at:
            return self.started_at[partition]
        return committed_offset(self.app, EVENTS, partition)

    async def _read_again(self, partition: int, offset: int) -> None:
        """A hole before the next record: read the partition again instead of applying past
        it, from the committed offset (events between it and the hole may still need their
        redelivery: a batch whose states were lost)."""
        now = time.monotonic()
        first, last = self._holes.get((partition, offset), (now, 0.0))
        if now - first > HOLE_WAIT_S:
            raise RuntimeError(
                f"{EVENTS} partition {partition} has no record at offset {offset} after "
                f"{HOLE_WAIT_S:.0f}s of reading it again: records were deleted (retention) or "
                "written by a transactional producer; rcmflow does not skip events silently"
            )
        if now - last < HOLE_RESEEK_S:
            return
        self._holes[(partition, offset)] = (first, now)
        start = min(offset, self._durable_position(partition))
        log.warning("%s partition %d: the consumer skipped the records from offset %d; "
                    "reading them again from %d", EVENTS, partition, offset, start)
        await seek(self.app, EVENTS, partition, start)
        self.guard.sought(partition, start)

    async def consume(self, feed: BulkFeed) -> None:
        """Take batches from the feed and apply them, for ever (the agent's body)."""
        while True:
            records = await feed.take()
            try:
                await self.handle(to_messages(records))
            finally:
                feed.done()  # a rebalance or shutdown waits for this (wait_empty)
            mark_for_commit(self.app, EVENTS, {r.partition for r in records})

    def commit_limit(self, tp: TP) -> int | None:
        """What the consumer may commit for ``tp``: nothing past an unapplied record."""
        if tp.topic != EVENTS or time.monotonic() < self._commit_hold_until:
            return None
        return self.batches.durable_next.get(tp.partition)

    def partitions_assigned(self) -> None:
        self.batches.durable_next.clear()
        self.started_at.clear()
        now = time.monotonic()
        self.last_delivery = {p: now for p in assigned_partitions(self.app, EVENTS)}
        self._stalled_since.clear()

    async def watchdog(self, kafka: KafkaConnection) -> None:
        """Find assigned partitions that have records but deliver none; put them back. With
        none assigned for a while, refresh the metadata (``refresh_metadata``: an assignment
        made from metadata without the topics is made again)."""
        if not settled(self.app):
            return
        now = time.monotonic()
        if not assigned_partitions(self.app, EVENTS):
            since = self._unassigned_since = self._unassigned_since or now
            if now - since > STALL_S:
                # Said once a stretch: more workers than partitions is normal.
                if not self._unassigned_said:
                    log.info("%s: no partition assigned here for %.0fs; refreshing the "
                             "cluster metadata every %.0fs while so", EVENTS, now - since,
                             PROGRESS_INTERVAL_S)
                    self._unassigned_said = True
                try:
                    await refresh_metadata(self.app)
                except (KafkaError, OSError, TimeoutError) as exc:
                    log.warning("%s: metadata refresh failed: %s", EVENTS, exc)
            return
        self._unassigned_since, self._unassigned_said = None, False
        quiet = sorted(p for p in assigned_partitions(self.app, EVENTS)
                       if now - self.last_delivery.setdefault(p, now) > STALL_S)
        if not quiet:
            self._stalled_since.clear()
            return
        try:
            ends = await log_ends(kafka, EVENTS, quiet)
        except (KafkaError, OSError, TimeoutError) as exc:
            # The broker is down (or moving): nothing to compare with; the next round will.
            # Raising here crashed the whole worker while the consumer waited it out.
            log.warning("%s watchdog: log ends unknown (%s); looking again in %ds", EVENTS,
                        exc, PROGRESS_INTERVAL_S)
            return
        caught_up: dict[int, int] = {}
        for partition in quiet:
            expected = self.guard.next_offset(partition) or 0
            if ends[partition] <= expected:
                self._stalled_since.pop(partition, None)
                if expected > 0:
                    caught_up[partition] = expected
                continue
            since = self._stalled_since.setdefault(partition, now)
            state = fetching_state(self.app, EVENTS, partition)
            if now - since > STALL_CRASH_S:
                raise RuntimeError(
                    f"{EVENTS} partition {partition} is assigned here, has records up to offset "
                    f"{ends[partition]}, and delivered none from {expected} for "
                    f"{now - self.last_delivery[partition]:.0f}s (consumer: {state}); crashing "
                    "so that a restart (or another worker) takes it over"
                )
            start = min(expected, self._durable_position(partition))
            log.warning("%s partition %d stalled at offset %d of %d (consumer: %s): resuming "
                        "it from %d", EVENTS, partition, expected, ends[partition], state, start)
            resume(self.app, EVENTS, partition)
            await seek(self.app, EVENTS, partition, start)
            self.guard.sought(partition, start)
        if caught_up and now - self._commits_checked_at >= COMMIT_CHECK_S:
            self._commits_checked_at = now
            await self._commit_caught_up(kafka, caught_up, now)

    async def _commit_caught_up(self, kafka: KafkaConnection, caught_up: dict[int, int],
                                now: float) -> None:
        """Quiet partitions applied up to their offset (``caught_up``) whose group commit,
        asked of the broker (Faust's own copy can be wrong), is behind, with nothing in this
        assignment to move it:

        - applied here: commit again. Faust commits a partition only past what it believes
          committed; after commits lost to a broker restart its belief was ahead of the
          broker's and no commit came (a fault run found it: seed 282 on Kafka);
        - applied by an earlier owner: read it again from the commit, so that its batches
          move the commit limit. Faust's drain loop drops records below a read offset it
          kept across a rebalance, and only an admitted batch moves the limit (seed 129)."""
        try:
            committed = await committed_offsets(kafka, self.app.conf.id, EVENTS,
                                                sorted(caught_up))
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("%s watchdog: committed offsets unknown (%s)", EVENTS, exc)
            return
        for partition, expected in sorted(caught_up.items()):
            at = committed.get(partition, 0)
            if at >= expected:
                continue
            believed = committed_offset(self.app, EVENTS, partition)
            if self.batches.durable_next.get(partition, 0) >= expected:
                log.warning("%s partition %d: applied up to offset %d, but the group's commit "
                            "is %d (Faust believed %d): committing it again", EVENTS,
                            partition, expected, at, believed)
                note_committed(self.app, EVENTS, {partition: at})
                mark_for_commit(self.app, EVENTS, {partition})
                continue
            start = min(at, self._durable_position(partition))
            log.warning("%s partition %d: applied up to offset %d, committed up to %d, and "
                        "nothing delivered for %.0fs: reading it again from %d so that it is "
                        "committed", EVENTS, partition, expected, at,
                        now - self.last_delivery[partition], start)
            self.last_delivery[partition] = now  # one seek, then the records' turn
            await seek(self.app, EVENTS, partition, start)
            self.guard.sought(partition, start)

    async def measure_lag(self, kafka: KafkaConnection) -> None:
        """Log end minus the next offset to apply, summed over this worker's partitions."""
        if not settled(self.app):
            return
        partitions = sorted(assigned_partitions(self.app, EVENTS))
        try:
            ends = await log_ends(kafka, EVENTS, partitions) if partitions else {}
        except (KafkaError, OSError, TimeoutError) as exc:  # the broker may be down
            log.warning("%s lag unknown: %s", EVENTS, exc)
            self.progress.lag = None
            return
        self.progress.lag = sum(
            max(0, ends[p] - self._durable_position(p))
            for p in partitions)

    async def _fault_point(self, point: str) -> None:
        kill_at, pause_at = self.faults.worker_kill_at, self.faults.worker_pause_at
        if kill_at == (point, self.progress.batches):
            kill_this_process(f"worker_kill_at={point}:{kill_at[1]}")
        hold = self.faults.worker_hold_at
        if hold is not None and hold[:2] == (point, self.progress.batches):
            log.warning("worker_hold_at=%s:%d: holding the batch for %.1fs", *hold)
            await asyncio.sleep(hold[2])  # the loop runs on: Faust's commits, heartbeats
        if point == "batch-done" and pause_at is not None \
                and pause_at[1] == self.progress.batches - 1:
            log.warning("worker_pause_at=%d:%d: pausing the partition", *pause_at)
            pause(self.app, EVENTS, pause_at[0])

    def check_commits(self) -> None:
        """Say when partitions have been applied durably past what the consumer committed
        for COMMIT_LATE_S, although batches moved their commit limit: Faust's commits fail
        or hang (a commit in flight blocks the next ones). The group's lag then stays above
        0 and a rebalance reads those records again."""
        now = time.monotonic()
        late: dict[int, tuple[int, int]] = {}
        for partition, limit in self.batches.durable_next.items():
            committed = committed_offset(self.app, EVENTS, partition)
            if committed >= limit:
                self._uncommitted_since.pop(partition, None)
            elif now - self._uncommitted_since.setdefault(partition, now) > COMMIT_LATE_S:
                late[partition] = (committed, limit)
        if late and now - self._commit_late_said > COMMIT_LATE_S:
            self._commit_late_said = now
            log.warning("%s: applied but not committed for over %.0fs (partition: committed "
                        "< applied up to): %s; a commit in flight: %s", EVENTS, COMMIT_LATE_S,
                        ", ".join(f"{p}: {c} < {n}" for p, (c, n) in sorted(late.items())),
                        commit_in_flight(self.app))

    def log_progress(self) -> None:
        p = self.progress
        c = p.counts
        rate = p.events / max(time.monotonic() - p.started_s, 1e-9)
        log.info(
            "events %d (%.0f/s): applied %d, replays %d, redelivered %d, conflicts %d, "
            "rejected %d, postings %d, exceptions %d",
            p.events, rate, c.applied, c.replays, c.redeliveries, c.conflicts, c.rejected,
            c.postings, c.exceptions,
        )


def to_messages(records: Sequence[Any]) -> list[Message]:
    """aiokafka ``ConsumerRecord``s as the processor's messages (timestamps in ms, as sent;
    0 or none: None)."""
    return [Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp or None,
                    is_retry(r.headers))
            for r in records]


class BuiltWorker(NamedTuple):
    """A worker process's Faust app (tables, agent, timers) and the pipeline its agent runs
    (progress for the metrics endpoint)."""

    app: faust.App
    pipeline: Pipeline


def build_worker(settings: Settings, chart: ChartOfAccounts, policy: RefundPolicy, *,
                 datadir: Path, measure_lag: bool = False,
                 faults: Faults = NO_FAULTS,
                 fee_schedule: FeeSchedule | None = None) -> BuiltWorker:
    """The Faust app of one worker process, its tables and its agent.

    ``measure_lag``: ask the broker for the log ends every PROGRESS_INTERVAL_S (for the lag
    metric; off when nobody scrapes it). ``faults``: test-only kills, pauses, skips and
    ``break_dedup``. ``fee_schedule``: the contract-variance check's rates (None: off).
    """
    install_highwater_fix()
    install_recovery_seek_fix()
    disable_gap_commits()
    if settings.processing_guarantee == "exactly_once":
        own_transactions()
    kafka = settings.kafka()
    app = faust.App(
        settings.app_id,
        broker=kafka.url,
        broker_credentials=kafka.faust_credentials(),
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee=settings.processing_guarantee,
        # Tansu's first group join takes about half the session timeout; 10 s keeps it ~5 s.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        # Off by default (Settings.standby_replicas says why); the rebalance test runs both.
        table_standby_replicas=settings.standby_replicas,
        producer_acks=-1,
        web_enabled=False,
        # No leader election (no on_leader timers): without it Faust neither creates nor
        # consumes "<app id>-__assignor-__leader", one topic fewer to create and grant.
        topic_disable_leader=True,
        # `rcmflow worker` creates every topic first (run_worker.py, with all settings spelled
        # out). Faust's own declare asks CreateTopics again for each table changelog it has no
        # metadata for yet, and an existing topic without the CREATE ACL then kills the worker
        # (TopicAuthorizationFailedError: "Cannot create topic: rcm.accounts (29)").
        topic_allow_declare=False,
    )
    tables = AccountTables(app, partitions=settings.partitions,
                           state_cache_max=settings.state_cache_max)
    processor = Processor(chart, event_bytes_max=settings.event_bytes_max,
                          account_items_max=settings.account_items_max,
                          dlq_payload_bytes_max=settings.dlq_payload_bytes_max,
                          dedup_horizon_days=settings.dedup_horizon_days,
                          date_window=DateWindow.from_settings(settings),
                          break_dedup=faults.break_dedup, refund_policy=policy,
                          fee_schedule=fee_schedule,
                          variance_tolerance_cents=settings.variance_tolerance_cents)
    outbox = Outbox(kafka=kafka, timeout_s=settings.produce_timeout_s, app_id=settings.app_id,
                    source_topic=EVENTS,
                    exactly_once=settings.processing_guarantee == "exactly_once")
    app.add_dependency(outbox)  # stopped (its producer flushed) with the app
    pipeline = Pipeline(app, tables, processor, outbox, kafka, faults)
    limit_commits(app, pipeline.commit_limit)
    # Raw bytes in: decoding is the processor's job, so a malformed event becomes a DLQ
    # record instead of a ValueDecodeError that kills the agent.
    events_topic = app.topic(EVENTS, key_type=bytes, value_type=bytes, key_serializer="raw",
                             value_serializer="raw", partitions=settings.partitions)

    skip, drop = faults.worker_skip_at, faults.worker_drop_once_at
    handover = (SkipRecords(*skip) if skip is not None
                else SkipRecords(*drop, once=True) if drop is not None else None)
    feed = BulkFeed(app, EVENTS, batch_max=settings.batch_max,
                    batch_wait_s=settings.batch_wait_s, handover=handover)
    bulk_consume(app, feed)

    # The agent subscribes rcm.events (Faust's group, assignment and commits) and runs the
    # pipeline; the records come from the feed a fetch at a time, never through its stream.
    # A bug in the agent crashes the worker (offsets stay uncommitted, a supervisor restarts
    # it) instead of leaving a process that looks healthy and consumes nothing.
    @app.agent(events_topic, name="apply-events", supervisor_strategy=CrashingSupervisor)
    async def apply_events(stream: faust.StreamT[bytes]) -> None:
        await pipeline.consume(feed)

    # mode's SignalHandlerT rejects every handler, even one of exactly its declared shape
    # (sender, *args, signal, **kwargs): the ignores below are for that.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        tables.flush()
        tables.forget_cache()
        pipeline.guard.forget()
        await outbox.close_partitions(tp.partition for tp in revoked if tp.topic == EVENTS)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        tables.forget_cache()
        pipeline.guard.forget()
        pipeline.partitions_assigned()
        await outbox.open_partitions(assigned_partitions(app, EVENTS))

    @app.timer(PROGRESS_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust: -> Callable
    async def _progress() -> None:
        pipeline.log_progress()
        pipeline.check_commits()
        await pipeline.watchdog(kafka)
        if measure_lag:
            await pipeline.measure_lag(kafka)

    return BuiltWorker(app, pipeline)


def claim_worker_dir(data_dir: Path, name: str | None) -> tuple[Path, IO[str]]:
    """Lock a worker directory for this process: ``name``, or the first free ``wN`` slot.

    Each worker needs its own RocksDB directory; the lock keeps two processes out of one,
    and a restarted worker takes its old slot back (and its tables with it).
    """
    names = [name] if name else [f"w{n}" for n in range(1, WORKER_SLOTS_MAX + 1)]
    for candidate in names:
        path = data_dir / "workers" / candidate
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / ".lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.write(str(os.getpid()))
        handle.flush()
        return path, handle
    raise RuntimeError(
        f"worker directory {names[0] if name else 'slots w1..w64'} under {data_dir} is in use "
        "by another worker; set RCMFLOW_WORKER_NAME or RCMFLOW_DATA_DIR"
    )
