"""One batch of raw ``rcm.events`` messages -> outgoing records and table writes.

Still pure: the caller hands in the messages and the table lookups (``Lookups``: account
heads, items, dedup records) and gets back what to send and what to write. The Faust agent
(``worker.py``) does the I/O in the order crash safety needs: deltas and DLQ records, then
dedup records, then heads, then items, waiting for the broker after each, and only then lets
the offsets be committed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import NamedTuple, Protocol

from pydantic import ValidationError

from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.core import (
    Applied,
    apply,
    item_changes,
    new_account,
)
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, DEFAULT_WINDOW, DateWindow
from rcmflow.streams.dedup import (
    DEFAULT_HORIZON_DAYS,
    HORIZON_PREFIX,
    PURGED_BEFORE_KEY,
    DedupEntry,
    Verdict,
    day_of,
    dedup_key,
    dedup_key_of,
    horizon_key,
    judge,
)
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.events import (
    EVENT_ADAPTER,
    ClaimAdjudicated,
    Event,
    EventKind,
    event_digest,
)
from rcmflow.streams.fee_schedule import FeeSchedule
from rcmflow.streams.lifecycle import Transition
from rcmflow.streams.limits import ACCOUNT_ITEMS_MAX, DLQ_PAYLOAD_BYTES_MAX, EVENT_BYTES_MAX
from rcmflow.streams.refund_policy import RefundPolicy, load_refund_policy
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.state import AccountHead, Item, ItemRef
from rcmflow.streams.topics import OUTPUT_RECORD_BYTES_MAX
from rcmflow.streams.variance import UNPRICED_CODES_SHOWN, ContractCheck, check_claim

__all__ = ["Message", "BatchResult", "Counts", "AppliedEvent", "ContractTally", "Lookups",
           "Processor", "describe_validation_error", "DEFAULT_VARIANCE_TOLERANCE_CENTS"]

#: Room kept under a topic's record limit for the key and the record's own overhead.
RECORD_OVERHEAD_BYTES = 64 * 1024
ERRORS_SHOWN_MAX = 5
#: Longest piece of the input quoted in a DLQ reason or context.
SHOWN_CHARS_MAX = 200
#: Expired dedup records one batch deletes per partition: more than a batch adds (each event
#: adds at most one), so the purge keeps up with any steady rate.
PURGE_RECORDS_MAX = 2_000
#: A record timestamp further ahead of this clock than this does not move the dedup clock
#: (a producer with a wrong clock must not purge the horizon early).
CLOCK_SKEW_MAX_S = 24 * 3600
#: A line allowed within this many cents of its fee schedule rate is no variance.
DEFAULT_VARIANCE_TOLERANCE_CENTS = 100


class Message(NamedTuple):
    """A raw message as read from ``rcm.events``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    #: An operator's replay from the work queue (``dedup.RETRY_HEADER``).
    retry: bool = False


@dataclass
class Counts:
    applied: int = 0
    replays: int = 0
    redeliveries: int = 0
    conflicts: int = 0
    rejected: int = 0
    postings: int = 0
    exceptions: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class AppliedEvent(NamedTuple):
    """What the metrics need of an applied event (``worker_families``): bounded fields only,
    never the account."""

    source: str
    kind: str
    #: The rcm.events record's timestamp (when the connector published it); None: unknown.
    timestamp_ms: int | None
    #: Whether it made a posting delta.
    posted: bool
    #: The event's entity (a bounded label) and the lifecycle transitions it made.
    entity: str = ""
    transitions: tuple[Transition, ...] = ()
    #: An 835 claim's payer and outcome (processed, denied, reversal): the denial rate's
    #: denominator by payer; None for other events.
    adjudication: tuple[str, str] | None = None


class ContractTally(NamedTuple):
    """One applied claim's contract comparison, for the metrics (``variance.py``)."""

    payer: str
    priced: int
    unpriced: int
    uncontracted: int
    #: (direction, difference in cents, positive) of each variance.
    variances: tuple[tuple[str, int], ...]


@dataclass
class BatchResult:
    """What a batch sends and writes, in the order it must reach the broker."""

    #: Phase 1: (source partition, account key, delta JSON) for rcm.postings.
    postings: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    #: Phase 1: (source partition, source key, record JSON) for rcm.dlq.
    dlq: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    #: Phase 2: dedup records and their index keys, only once the outputs they vouch for
    #: are durable.
    dedup_writes: dict[tuple[int, bytes], bytes | None] = field(default_factory=dict)
    #: Phase 3: the newest head of each touched account, by (partition, account) ...
    heads: dict[tuple[int, str], AccountHead] = field(default_factory=dict)
    #: Phase 4: ... then the items its events created or changed, by (partition, account,
    #: item). Heads before items: a head on the broker means its batch's items reached the
    #: broker or are re-derived on redelivery (``_redeliver``).
    items: dict[tuple[int, str, ItemRef], Item] = field(default_factory=dict)
    #: Phase 3 comes after these: the lifecycle transition records (``lifecycle.py``). They
    #: depend on the head before their event, so unlike items they cannot be re-derived once
    #: a later head is durable: they are made durable before the heads.
    transitions: dict[tuple[int, str, ItemRef], Item] = field(default_factory=dict)
    #: Phases 5-7, the purge (``_purge``), each durable before the next: the moved purge
    #: marks, then the expired dedup records deleted, then their index keys deleted. After the
    #: dedup records: a batch read again whose mark moved has all its dedup records, so its
    #: events are redeliveries, never judged against the new mark.
    purge_marks: dict[tuple[int, bytes], bytes | None] = field(default_factory=dict)
    purged_records: dict[tuple[int, bytes], bytes | None] = field(default_factory=dict)
    purged_index: dict[tuple[int, bytes], bytes | None] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    #: Every event the batch applied, in order (for the metrics: by source and kind, and
    #: the end-to-end latency of those that posted).
    applied: list[AppliedEvent] = field(default_factory=list)
    #: The contract comparisons of the batch's applied claims (metrics).
    contract: list[ContractTally] = field(default_factory=list)


class Lookups(Protocol):
    """The tables a batch reads (a partition's RocksDB stores, or a test's dicts)."""

    def load_head(self, partition: int, account: str) -> AccountHead | None:
        """The account's head (``layout.decode_head``: a head of an older layout raises
        ``UpgradeNeeded``, and the worker stops)."""

    def load_item(self, partition: int, account: str, ref: ItemRef) -> Item | None: ...

    def load_dedup(self, partition: int, key: bytes) -> DedupEntry | None: ...

    def load_purge_mark(self, partition: int) -> int:
        """The day before which the partition's dedup records were deleted (0: none were)."""

    def expired(self, partition: int, before_day: int, limit: int) -> list[bytes]:
        """Up to ``limit`` dedup index keys (``horizon_key``) filed before ``before_day``,
        oldest first."""


class Processor:
    def __init__(
        self,
        chart: ChartOfAccounts,
        *,
        event_bytes_max: int = EVENT_BYTES_MAX,
        account_items_max: int = ACCOUNT_ITEMS_MAX,
        dlq_payload_bytes_max: int = DLQ_PAYLOAD_BYTES_MAX,
        output_bytes_max: int = OUTPUT_RECORD_BYTES_MAX,
        dedup_horizon_days: int = DEFAULT_HORIZON_DAYS,
        date_window: DateWindow = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
        break_dedup: bool = False,
        refund_policy: RefundPolicy | None = None,
        fee_schedule: FeeSchedule | None = None,
        variance_tolerance_cents: int = DEFAULT_VARIANCE_TOLERANCE_CENTS,
    ) -> None:
        """``output_bytes_max``: the largest delta the worker may write (rcm.postings' record
        limit); an event that would make a larger one is refused. ``dedup_horizon_days``:
        how long dedup records are kept (``dedup.py``); ``clock``: seconds since the epoch,
        the bound on how far ahead a record's timestamp may move the dedup clock.
        ``date_window``: events dated outside it go to rcm.dlq (date_out_of_range), judged
        against the day of the record's timestamp, so a batch read again is judged alike.
        ``break_dedup``: test-only, never in production (``Faults.break_dedup``): a replay is
        applied again as if new, to show that the tests see a guarantee broken.
        ``refund_policy``: the refund approval policy (None: the one shipped with rcmflow).
        ``fee_schedule``: the payers' contracted rates; each processed claim's lines are
        compared with them and a variance beyond ``variance_tolerance_cents`` becomes a
        ``contract`` record on rcm.dlq (``variance.py``). None: no comparison."""
        self.chart = chart
        self.refund_policy = refund_policy or load_refund_policy()
        self.event_bytes_max = event_bytes_max
        self.account_items_max = account_items_max
        self.dlq_payload_bytes_max = dlq_payload_bytes_max
        self.output_bytes_max = output_bytes_max - RECORD_OVERHEAD_BYTES
        self.dedup_horizon_days = dedup_horizon_days
        self.date_window = date_window
        self.clock = clock
        self.break_dedup = break_dedup
        self.fee_schedule = fee_schedule
        self.variance_tolerance_cents = variance_tolerance_cents

    def process(self, messages: list[Message], tables: Lookups) -> BatchResult:
        result = BatchResult()
        now_ms = int(self.clock() * 1000)
        days = [self._message_day(message, now_ms) for message in messages]
        marks = self._purge(messages, days, tables, result)
        for message, day in zip(messages, days, strict=True):
            self._one(message, day, result, tables, marks)
        return result

    def _message_day(self, msg: Message, now_ms: int) -> int:
        """The dedup clock's day for a message: its timestamp (deterministic when the batch
        is read again), no further than CLOCK_SKEW_MAX_S ahead of this process's clock."""
        stamp = now_ms if msg.timestamp_ms is None else msg.timestamp_ms
        stamp = min(stamp, now_ms + CLOCK_SKEW_MAX_S * 1000)
        return day_of(datetime.fromtimestamp(stamp / 1000, tz=UTC))

    def _purge(self, messages: list[Message], days: list[int], tables: Lookups,
               out: BatchResult) -> dict[int, int]:
        """Delete each partition's dedup records filed more than the horizon before the
        batch's earliest record (at most PURGE_RECORDS_MAX a batch): never a record of the
        batch's own events. Returns each partition's purge mark as it stood before: the
        batch's events are judged by it (the deletions come after them, phases 5-7)."""
        clock: dict[int, int] = {}
        for msg, day in zip(messages, days, strict=True):
            clock[msg.partition] = min(clock.get(msg.partition, day), day)
        marks: dict[int, int] = {}
        for partition, day in clock.items():
            mark = marks[partition] = tables.load_purge_mark(partition)
            expired = tables.expired(partition, day - self.dedup_horizon_days,
                                     PURGE_RECORDS_MAX)
            if not expired:
                continue
            # The mark passes the newest day deleted, never further: until something is
            # deleted nothing is refused (a fresh system takes history of any age).
            newest = int(expired[-1][len(HORIZON_PREFIX):len(HORIZON_PREFIX) + 7])
            # Written even when the store holds it already: the store may be ahead of the
            # changelog (a crash after the local write), and a deletion must never reach the
            # changelog before the mark that refuses replays of what it deleted.
            out.purge_marks[(partition, PURGED_BEFORE_KEY)] = str(max(mark, newest + 1)).encode()
            for index in expired:
                out.purged_records[(partition, dedup_key_of(index))] = None
                out.purged_index[(partition, index)] = None
        return marks

    def _head(self, out: BatchResult, tables: Lookups, partition: int,
              account: str) -> AccountHead | None:
        """The account's head as of this point of the batch."""
        head = out.heads.get((partition, account))
        if head is not None:
            return head
        return tables.load_head(partition, account)

    @staticmethod
    def _items(out: BatchResult, tables: Lookups, partition: int,
               account: str) -> Callable[[ItemRef], Item | None]:
        """An account's items as of this point of the batch."""
        def item(ref: ItemRef) -> Item | None:
            written = out.items.get((partition, account, ref))
            return written if written is not None else tables.load_item(partition, account, ref)
        return item

    def _one(self, msg: Message, day: int, out: BatchResult, tables: Lookups,
             marks: dict[int, int]) -> None:
        """``day``: the message's dedup clock day (``_message_day``)."""
        decoded = self._decode(msg)
        if isinstance(decoded, Rejection):
            self._reject(msg, out, decoded, event=None)
            return
        event = decoded
        assert msg.value is not None  # decoded
        digest = event_digest(msg.value)
        dkey = dedup_key(event.account, event.event_id)
        part = msg.partition
        entry = _dedup_entry(out, tables, part, dkey)
        verdict = judge(entry, digest, part, msg.offset, retry=msg.retry)
        if verdict is Verdict.REPLAY and self.break_dedup:
            verdict = Verdict.NEW  # the test-only break: the dedup check is gone
        if verdict is Verdict.REPLAY:
            out.counts.replays += 1
            return
        if verdict is Verdict.CONFLICT:
            assert entry is not None
            out.counts.conflicts += 1
            detail = (
                f"event_id {event.event_id!r} was applied from partition {entry.partition} "
                f"offset {entry.offset} with other content; this one is not applied"
            )
            self._reject(msg, out, Rejection(stage="dedup", reason_code="conflict",
                                             detail=detail), event)
            return
        head = self._head(out, tables, part, event.account)
        items = self._items(out, tables, part, event.account)
        if verdict is Verdict.REDELIVERY:
            assert entry is not None
            self._redeliver(msg, out, event, entry, head, items)
            return
        current = head or new_account(event.account)
        dated = day_of(event.occurred_at)
        outcome: Applied | Rejection
        implausible = self.date_window.problem(event.occurred_at, "occurred_at",
                                               today=date.fromordinal(day))
        if implausible is not None:
            outcome = Rejection(stage="validate", reason_code=DATE_OUT_OF_RANGE,
                                detail=implausible)
            dated = day  # filed by its arrival: a date in 9999 must not pin the record
        elif dated < marks[part]:
            outcome = _beyond_horizon(dated, marks[part], self.dedup_horizon_days)
        else:
            outcome = apply(current, event, self.chart, items, items_max=self.account_items_max,
                            policy=self.refund_policy)
        if isinstance(outcome, Applied):
            outcome = self._fits(outcome) or outcome
        filed = max(dated, day)
        if isinstance(outcome, Rejection):
            self._reject(msg, out, outcome, event)
            entry = DedupEntry(digest=digest, partition=part, offset=msg.offset,
                               outcome="rejected", version=current.version, horizon_day=filed)
        else:
            out.counts.applied += 1
            posting = self._emit(msg, out, event, outcome)
            out.applied.append(AppliedEvent(
                event.source, event.kind.value, msg.timestamp_ms, posting is not None,
                event.dimensions.entity, outcome.transitions,
                (event.dimensions.payer or "-", event.outcome)
                if isinstance(event, ClaimAdjudicated) else None))
            entry = DedupEntry(digest=digest, partition=part, offset=msg.offset,
                               version=outcome.head.version, posting_sha256=_sha256(posting),
                               horizon_day=filed)
            self._keep(out, part, outcome.head, outcome.items)
        _file(out, part, dkey, entry)

    def _fits(self, outcome: Applied) -> Rejection | None:
        """A refusal when the event's delta would be larger than rcm.postings takes (Apache
        Kafka would refuse the record: the batch could never be written). Heads and items
        need no such check: a head is a few hundred bytes, an item smaller than its event."""
        limit = self.output_bytes_max
        if outcome.delta is not None and len(outcome.delta) > limit:
            return Rejection(stage="posting", reason_code="output_too_large",
                             detail=f"its posting delta would be {len(outcome.delta)} bytes; "
                             f"the largest record rcm.postings takes is {limit} bytes")
        return None

    @staticmethod
    def _keep(out: BatchResult, partition: int, head: AccountHead,
              items: dict[ItemRef, Item]) -> None:
        out.heads[(partition, head.account)] = head
        for ref, item in items.items():
            into = out.transitions if ref[0] == "transition" else out.items
            into[(partition, head.account, ref)] = item

    def _redeliver(
        self,
        msg: Message,
        out: BatchResult,
        event: Event,
        entry: DedupEntry,
        head: AccountHead | None,
        items: Callable[[ItemRef], Item | None],
    ) -> None:
        """An event of an unfinished batch: its outputs were durable before its dedup record,
        so nothing is sent again. Its head write may be lost: then so are its item writes
        (heads are acked before items are sent) and it is applied again. If its head is
        durable its items may still be lost: each one not yet at the event's version is
        changed again (``item_changes`` needs no head). Either way head and items are written
        again: the changelog may lack them (the local store can be ahead of it)."""
        out.counts.redeliveries += 1
        current = head or new_account(event.account)
        if entry.outcome == "applied":
            if current.version < entry.version:
                assert current.version == entry.version - 1, (
                    f"account {event.account} at version {current.version} cannot be the "
                    f"state before {event.event_id} (version {entry.version})"
                )
                outcome = apply(current, event, self.chart, items,
                                items_max=self.account_items_max, policy=self.refund_policy)
                assert isinstance(outcome, Applied), "an applied event failed on redelivery"
                assert _sha256(outcome.delta) == entry.posting_sha256, \
                    "redelivered event posts differently"
                self._keep(out, msg.partition, outcome.head, outcome.items)
            else:
                changed = item_changes(event, entry.version, items, policy=self.refund_policy,
                                       posted=entry.posting_sha256 is not None)
                stored = {ref: items(ref) for ref in changed}
                self._keep(out, msg.partition, current, {
                    ref: item if item is not None and item["version"] >= entry.version
                    else changed[ref]
                    for ref, item in stored.items()})
        _file(out, msg.partition, dedup_key(event.account, event.event_id), entry)

    def _emit(self, msg: Message, out: BatchResult, event: Event,
              outcome: Applied) -> bytes | None:
        """Queue the delta and its exception records; returns the delta as sent."""
        key = event.account.encode()
        posting = outcome.delta
        if posting is not None:
            out.postings.append((msg.partition, key, posting))
            out.counts.postings += 1
        for index, line in enumerate(outcome.unmapped):
            record = dlq_record(
                Rejection(stage="posting", reason_code="unmapped_dimension",
                          severity="warning",
                          detail=f"no GL account for {line.missing} (entity "
                          f"{event.dimensions.entity}, chart {line.coa_version}): posted to "
                          f"suspense {line.gl_account}"),
                origin=_origin(msg),
                payload=line.model_dump_json().encode(),
                received_at=_received_at(msg),
                context=_context(event),
                discriminator=str(index),
            )
            out.dlq.append((msg.partition, key, record.model_dump_json().encode()))
            out.counts.exceptions += 1
        if isinstance(event, ClaimAdjudicated) and self.fee_schedule is not None:
            check = check_claim(event, self.fee_schedule,
                                tolerance_cents=self.variance_tolerance_cents)
            if check is not None:
                self._contract(msg, out, event, check, self.fee_schedule.version)
        return posting

    @staticmethod
    def _contract(msg: Message, out: BatchResult, event: ClaimAdjudicated,
                  check: ContractCheck, schedule_version: str) -> None:
        """A claim's variances, one warning record each, and its unpriced lines, one record
        for the claim: beside its delta, in the same phase, so they are durable before its
        dedup record (a redelivery sends nothing again). Their ids come from the event and
        the line, never the offset: the same claim however it arrives is the same item."""
        key = event.account.encode()
        dims = event.dimensions
        common = {"payer": dims.payer, "payer_class": dims.payer_class,
                  "claim_id": event.claim_id,
                  "payer_claim_control_number": event.payer_claim_control_number,
                  "paid_on": event.occurred_at.date().isoformat(),
                  "schedule_version": schedule_version}
        identity = f"contract|{event.account}|{event.event_id}"
        for index, v in enumerate(check.variances):
            line = f"line {v.line_id}" if v.line_id is not None else "the claim (no lines)"
            code = v.procedure_code or v.revenue_code or "no code"
            record = dlq_record(
                Rejection(stage="contract", reason_code=v.direction, severity="warning",
                          detail=f"claim {event.claim_id} {line} ({code}): allowed "
                          f"{v.allowed_cents} cents ({v.allowed_from}), the fee schedule "
                          f"expects {v.expected_cents} ({v.schedule}: {v.rate}), "
                          f"{v.direction} by {abs(v.difference_cents)} cents"),
                origin=_origin(msg),
                payload=json.dumps(v.as_dict(), sort_keys=True).encode(),
                received_at=_received_at(msg),
                context=_context(event) | common | {
                    "line_id": v.line_id, "procedure_code": v.procedure_code,
                    "revenue_code": v.revenue_code, "service_date": v.service_date.isoformat(),
                    "expected_cents": v.expected_cents, "allowed_cents": v.allowed_cents,
                    "line_paid_cents": v.paid_cents, "difference_cents": v.difference_cents},
                identity=identity,
                discriminator=f"{index}|{v.line_id}",
            )
            out.dlq.append((msg.partition, key, record.model_dump_json().encode()))
            out.counts.exceptions += 1
        if check.unpriced:
            shown = [{"line_id": u.line_id, "procedure_code": u.procedure_code,
                      "revenue_code": u.revenue_code}
                     for u in check.unpriced[:UNPRICED_CODES_SHOWN]]
            codes = sorted({u.procedure_code or u.revenue_code or "no code"
                            for u in check.unpriced})
            record = dlq_record(
                Rejection(stage="contract", reason_code="unpriced", severity="warning",
                          detail=f"claim {event.claim_id}: {len(check.unpriced)} line(s) the "
                          f"fee schedule in effect does not price ({', '.join(codes[:10])}"
                          f"{' ...' if len(codes) > 10 else ''}): not compared"),
                origin=_origin(msg),
                payload=json.dumps(shown, sort_keys=True).encode(),
                received_at=_received_at(msg),
                context=_context(event) | common | {"unpriced_lines": len(check.unpriced),
                                                    "lines": shown},
                identity=identity,
                discriminator="unpriced",
            )
            out.dlq.append((msg.partition, key, record.model_dump_json().encode()))
            out.counts.exceptions += 1
        out.contract.append(ContractTally(
            dims.payer or "", check.priced, len(check.unpriced), check.uncontracted,
            tuple((v.direction, abs(v.difference_cents)) for v in check.variances)))

    def _decode(self, msg: Message) -> Event | Rejection:
        value = msg.value
        if value is None:
            return Rejection(stage="decode", reason_code="empty", detail="message has no value")
        if len(value) > self.event_bytes_max:
            return Rejection(
                stage="decode",
                reason_code="too_large",
                detail=f"event of {len(value)} bytes exceeds the {self.event_bytes_max} byte limit",
            )
        try:
            event = EVENT_ADAPTER.validate_json(value)
        except ValidationError as exc:
            return describe_validation_error(exc)
        if msg.key != event.account.encode():
            return Rejection(
                stage="validate",
                reason_code="key_mismatch",
                detail="message key is not the event's account: events must be keyed by "
                "account (default partitioner) so each account stays in one partition",
            )
        return event

    def _reject(
        self, msg: Message, out: BatchResult, rejection: Rejection, event: Event | None
    ) -> None:
        """Answer input that is not applied with a DLQ record."""
        if rejection.reason_code != "conflict":
            out.counts.rejected += 1
        record = dlq_record(
            rejection,
            origin=_origin(msg),
            payload=msg.value or b"",
            received_at=_received_at(msg),
            context=_context(event) if event is not None else _loose_context(msg.value),
            payload_bytes_max=self.dlq_payload_bytes_max,
            # A re-sent file's refused events are the same exceptions, not new ones.
            identity=f"{msg.topic}|{msg.key!r}|{_sha256(msg.value)}",
        )
        out.dlq.append((msg.partition, msg.key or b"", record.model_dump_json().encode()))


def _file(out: BatchResult, partition: int, key: bytes, entry: DedupEntry) -> None:
    """Write a dedup record and its index key."""
    out.dedup_writes[(partition, key)] = entry.to_json()
    out.dedup_writes[(partition, horizon_key(entry.horizon_day, key))] = b""


def _beyond_horizon(dated: int, mark: int, horizon_days: int) -> Rejection:
    return Rejection(
        stage="dedup",
        reason_code="beyond_dedup_horizon",
        detail=f"dated {date.fromordinal(dated)}, before {date.fromordinal(mark)}: the ids of "
        f"events applied before then are no longer kept (RCMFLOW_DEDUP_HORIZON_DAYS="
        f"{horizon_days}), so a first arrival cannot be told from a replay; not applied. "
        "If the ledger shows it was never posted, post its effect as a new, current event",
    )


def _dedup_entry(out: BatchResult, tables: Lookups, partition: int,
                 key: bytes) -> DedupEntry | None:
    """The dedup record of ``key`` as of this point of the batch: written earlier in it
    (replays inside one batch), or as stored (the batch's purge deletes after its events)."""
    raw = out.dedup_writes.get((partition, key))
    if raw is not None:
        return DedupEntry.read(raw)
    return tables.load_dedup(partition, key)


def _sha256(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _origin(msg: Message) -> Origin:
    key = msg.key.decode("utf-8", "replace") if msg.key is not None else None
    return Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=key)


def _received_at(msg: Message) -> datetime | None:
    if msg.timestamp_ms is None:
        return None
    return datetime.fromtimestamp(msg.timestamp_ms / 1000, tz=UTC)


def _context(event: Event) -> dict[str, object]:
    """Business context for a DLQ record: identifiers and money, never patient names."""
    context: dict[str, object] = {
        "account": event.account,
        "event_id": event.event_id,
        "kind": event.kind.value,
        "entity": event.dimensions.entity,
        "correlation_id": event.correlation_id,
        "source": event.source,
    }
    for name in ("amount_cents", "paid_cents", "charge_cents", "claim_id"):
        if hasattr(event, name):
            context[name] = getattr(event, name)
    return context


def _loose_context(value: bytes | None) -> dict[str, object]:
    """Best-effort context from an event that failed validation (for filtering the DLQ)."""
    try:
        doc = json.loads(value or b"")
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: _shortened(doc[k]) for k in ("account", "event_id", "kind")
            if isinstance(doc.get(k), str)}


def _shortened(text: str, chars_max: int = SHOWN_CHARS_MAX) -> str:
    """Input quoted in a DLQ reason or context: bounded (the payload holds the rest)."""
    return text if len(text) <= chars_max else f"{text[:chars_max]}... ({len(text)} chars)"


def describe_validation_error(exc: ValidationError) -> Rejection:
    """A readable sentence and a stable code for why an event did not validate."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return Rejection(stage="decode", reason_code="invalid_json",
                         detail=f"not valid JSON: {first['msg']}")
    if first["type"] == "union_tag_invalid":
        kinds = ", ".join(kind.value for kind in EventKind)
        return Rejection(stage="validate", reason_code="unknown_kind",
                         detail=f"unknown kind {first['ctx']['tag']!r}; known kinds: {kinds}")
    if first["type"] == "union_tag_not_found":
        return Rejection(stage="validate", reason_code="unknown_kind",
                         detail="the event has no 'kind'")
    parts = []
    for err in errors[:ERRORS_SHOWN_MAX]:
        # Drop the discriminator tag from the location: ('charge_posted', 'amount_cents').
        loc = ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0] if err["loc"] else "")
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) else f" (got {_shortened(repr(got))})"
        parts.append(f"{loc or 'event'}: {err['msg']}{shown}")
    if len(errors) > ERRORS_SHOWN_MAX:
        parts.append(f"... and {len(errors) - ERRORS_SHOWN_MAX} more")
    code = "invalid_event"
    if any(err["loc"][1:2] == ("schema_version",) for err in errors):
        code = "unsupported_schema_version"
    return Rejection(stage="validate", reason_code=code, detail="; ".join(parts))
