"""`rcmflow reconcile`: do events, postings, account tables, the posting DLQ and the ERP agree?

Six sources, compared per posting id, then summed per patient account and day, per GL
account, and in total:

0. **source totals** the inbound connectors kept for every unit they accepted
   (connectors/inbound/totals.py): what the source document says in money, read from its own fields
   (HL7 FT1 amounts, 835 CLP04 / CAS / PLB, 837 CLM02, payment rows, FHIR amounts), per
   account, day and measure (``charges``, ``billed``, ``payer_paid``, ``adjusted``,
   ``patient_responsibility``, ``provider_adjustments``, ``payments``, ``refunds``,
   ``write_offs``), with the ids of the events the unit became. Kept as ``source_totals`` in
   the JSON records of ``rcm.raw.x12`` / ``payments`` / ``fhir`` and in the record headers of
   ``rcm.raw.hl7`` (whose value stays the message as received; a refused message says
   ``refused`` and counts for nothing). Each listed event must be on ``rcm.events``
   (``source_event_missing``), and those events, summed into the same measures, must carry
   the same cents per account and day (``source_amount_differs``). Only events a source
   lists are compared: events published by ``rcmflow ingest events`` or other producers have
   no source record and are no difference. Each amount is attributed to the event its part
   of the source became (an FT1, an 835 claim or PLB, an 837 claim, a payment row, a FHIR
   ChargeItem or PaymentReconciliation detail) and counts once per event id, as the worker
   applies each event once: the earliest record (by timestamp) listing the event counts it,
   a later record listing it again re-sends that part (a file under a new envelope, or a
   corrected 835 repeating some claims beside new ones, or a conflicting re-send the worker
   refused), whichever partition is read first. Amounts without an event id (records written
   before amounts were attributed) count with their unit unless an earlier record listed all
   of its events. Checked in one direction only, source -> events: the raw topics are kept
   7 days and rcm.events for ever, so most events have no source record left to compare
   with. Raw records written before amounts were kept carry no totals: they are counted,
   not compared;
1. **canonical events** (``rcm.events``): replayed through the pure core (``Processor``, the
   same code and chart as the worker, partition by partition in offset order), they say which
   posting deltas *must* exist and what every account's balances must be;
2. **posting deltas** (``rcm.postings``), deduplicated by posting id (a re-sent delta is
   byte-identical; a different body under the same id is a conflict);
3. **account table state** (``rcm.accounts``, the latest snapshot per account): its ledger
   buckets must equal the sum of the account's posting lines (``bucket_effects``);
4. **the posting DLQ** (``rcm.postings.dlq``): deltas an ERP refused for good;
5. **the ERP's journal**, read back through an adapter's ``read_journal`` (``--erp``).

Each difference is a ``Finding`` with its likely cause (``CAUSES``). ``suspense`` is a warning
(the money reached the ledger, on the suspense account, and an exception record says which
key was unmapped); every other cause is an error and makes the exit code 1.

**Memory.** Bounded by what must be kept, not by the history read. Every topic is read as a
stream (``kafka_io.iter_topic``: one batch of records at a time, each folded in and dropped);
rcm.events is replayed through the core in batches of ``REPLAY_BATCH`` as the worker does,
holding one partition's account tables until the next partition starts (what the worker
keeps in RocksDB: its accounts' heads and items, and a dedup record per event, ~0.5 KB, values
kept at their size); rcm.postings is compared with the events' deltas as it is read. Kept to
the end (tracemalloc over 20,000-event histories of 500 and 4,000 accounts):
per distinct posting id ~0.2 KB (its id and a packed account number, day, total, suspense
cents and lines' digest: ``_POSTING``), per account-day with postings ~0.2 KB, per account
~1.1 KB (its snapshot, ledger sums and the events' balances), per event a source record on
the raw topics lists ~0.2 KB plus ~0.2 KB per (account, day, measure) of source totals (the
raw topics keep 7 days), and the findings (capped at ``findings_max``; the rest are
counted). Measured peak RSS: ``bench/RESULTS.md`` (``python -m bench.reconcile_memory``).
``postings_max`` refuses a larger run up front instead of exhausting the machine (narrow it
with ``--from/--to``, which filter by effective date but still read the topics whole).
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from rich.console import Console

from rcmflow.audit.exceptions import TooLarge
from rcmflow.connectors.erp.base import ErpAdapter
from rcmflow.connectors.inbound.totals import (
    HEADER_STATUS,
    HEADER_TOTALS,
    MEASURES,
    SourceTotals,
    event_amounts,
)
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record, iter_topic, log_ends, topic_partitions
from rcmflow.runtime.progress import LOG_EVERY_S, progress
from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.dedup import is_retry
from rcmflow.streams.events import EVENT_ADAPTER, ValidationError
from rcmflow.streams.layout import head_key, is_head_key, item_key
from rcmflow.streams.limits import ACCOUNT_ITEMS_MAX, EVENT_BYTES_MAX
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.money import cents_for_people as _money
from rcmflow.streams.processor import BatchResult, Message, Processor
from rcmflow.streams.refund_policy import RefundPolicy
from rcmflow.streams.rules import bucket_effects
from rcmflow.streams.state import LEDGER_BUCKETS
from rcmflow.streams.topics import (
    ACCOUNTS,
    EVENTS,
    POSTINGS,
    POSTINGS_DLQ,
    RAW_FHIR,
    RAW_HL7,
    RAW_PAYMENTS,
    RAW_X12,
)

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["CAUSES", "Finding", "Cell", "Amounts", "Report", "reconcile",
           "build_reader", "render", "FINDINGS_MAX", "POSTINGS_MAX", "SOURCE_TOPICS",
           "ReplayTables", "log_starts", "REPLAY_BATCH"]

log = logging.getLogger("rcmflow.reconcile")

#: cause -> (severity, what it most likely means)
CAUSES: dict[str, tuple[str, str]] = {
    "source_event_missing": ("error", "an inbound connector accepted input (rcm.raw.*) whose "
                                      "event is not on rcm.events"),
    "source_amount_differs": ("error", "an inbound connector accepted these cents (rcm.raw.*) "
                                       "that its events on rcm.events do not carry (an event "
                                       "lost or altered, or a mapping that drops money)"),
    "missing_posting": ("error", "the events imply this delta but rcm.postings lacks it "
                                 "(worker not caught up, or a lost write)"),
    "unexpected_posting": ("error", "a delta on rcm.postings that the events do not imply "
                                    "(events topic trimmed, another chart, or a bug)"),
    "posting_conflict": ("error", "two different deltas under one posting id"),
    "posting_differs": ("error", "the delta on rcm.postings differs from what the events "
                                 "imply (chart or rules changed since)"),
    "state_differs": ("error", "the account snapshot's buckets differ from the sum of its "
                               "deltas or from the events"),
    "dlq": ("error", "the ERP refused the delta: it is in rcm.postings.dlq"),
    "journal_entry_missing": ("error", "not in the ERP and not in the DLQ (connector behind, "
                                       "or the entry was deleted in the ERP)"),
    "unposted": ("error", "the ERP holds the entry but has not posted it (draft, approval, "
                          "or a torn write)"),
    "journal_entry_extra": ("error", "an ERP entry with a posting id rcm.postings does not "
                                     "have"),
    "journal_entry_duplicate": ("error", "the ERP holds two entries with one posting id"),
    "amount_differs": ("error", "the ERP entry's lines or amounts differ from the delta"),
    "suspense": ("warning", "posted to the suspense account: a mapping key is missing "
                            "(see the unmapped_dimension records in rcm.dlq)"),
}
FINDINGS_MAX = 10_000
#: The raw topics whose records say what a connector accepted; what "accepted" reads as.
SOURCE_TOPICS = (RAW_HL7, RAW_X12, RAW_PAYMENTS, RAW_FHIR)
_ACCEPTED = frozenset({"applied", "partly"})  # FHIR: "partly" = some details applied


POSTINGS_MAX = 5_000_000


@dataclass
class Finding:
    cause: str
    account: str | None
    day: str | None
    posting_id: str | None
    amount_cents: int
    detail: str

    @property
    def severity(self) -> str:
        return CAUSES[self.cause][0]


@dataclass
class Cell:
    """Sums (debit side of each delta, in cents) for one account and day, or one GL account."""

    events_cents: int = 0
    postings_cents: int = 0
    dlq_cents: int = 0
    erp_cents: int = 0

    def agrees(self, with_erp: bool) -> bool:
        if self.events_cents != self.postings_cents:
            return False
        return not with_erp or self.postings_cents == self.erp_cents + self.dlq_cents


@dataclass
class Amounts:
    """One measure: what the sources accepted and what their events on rcm.events carry."""

    source_cents: int = 0
    events_cents: int = 0

    @property
    def difference_cents(self) -> int:
        return self.source_cents - self.events_cents


@dataclass
class Report:
    erp: str | None
    day_from: str | None
    day_to: str | None
    counts: dict[str, int] = field(default_factory=dict)
    totals: Cell = field(default_factory=Cell)
    #: the account-days that differ (all were compared: ``account_days_compared``)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    account_days_compared: int = 0
    gl: dict[str, dict[str, int]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    findings_by_cause: Counter[str] = field(default_factory=Counter)
    findings_omitted: int = 0
    #: per measure, over every account and day compared
    sources: dict[str, Amounts] = field(default_factory=dict)
    source_days_compared: int = 0
    source_days_differing: dict[tuple[str, str], dict[str, Amounts]] = field(
        default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(n for cause, n in self.findings_by_cause.items()
                   if CAUSES[cause][0] == "error")

    def add(self, finding: Finding, findings_max: int) -> None:
        self.findings_by_cause[finding.cause] += 1
        if len(self.findings) < findings_max:
            self.findings.append(finding)
        else:
            self.findings_omitted += 1

    def ordered(self) -> list[Finding]:
        """Errors first, then by account and day."""
        return sorted(self.findings, key=lambda f: (f.severity != "error", f.account or "",
                                                    f.day or "", f.cause))

    def to_json(self) -> dict[str, Any]:
        differing = {f"{a}|{d}": asdict(c) for (a, d), c in sorted(self.cells.items())}
        return {
            "ok": self.errors == 0, "erp": self.erp, "from": self.day_from, "to": self.day_to,
            "counts": self.counts, "totals": asdict(self.totals),
            "findings_by_cause": dict(sorted(self.findings_by_cause.items())),
            "findings": [asdict(f) | {"severity": f.severity} for f in self.ordered()],
            "findings_omitted": self.findings_omitted,
            "account_days_compared": self.account_days_compared,
            "account_days_differing": differing,
            "gl_accounts": {gl: sums for gl, sums in sorted(self.gl.items())},
            "source_totals": {m: _amounts_json(a) for m, a in sorted(self.sources.items())},
            "source_account_days_compared": self.source_days_compared,
            "source_account_days_differing": {
                f"{a}|{d}": {m: _amounts_json(x) for m, x in sorted(ms.items())}
                for (a, d), ms in sorted(self.source_days_differing.items())},
        }


def _amounts_json(amounts: Amounts) -> dict[str, int]:
    return asdict(amounts) | {"difference_cents": amounts.difference_cents}


# -- small pieces ---------------------------------------------------------------------------
def _lines_digest(lines: Iterable[tuple[str, int, int]]) -> bytes:
    """Order-free digest of (gl, debit, credit) lines: 12 bytes kept per posting."""
    text = "\n".join(f"{g}|{d}|{c}" for g, d, c in sorted(lines))
    return hashlib.blake2b(text.encode(), digest_size=12).digest()


#: What is kept per posting id, packed (~70 bytes, not a ~300-byte object): the account's
#: number (``_Accounts``), the effective day (ordinal), the total and suspense cents, the
#: lines' digest. Equal bytes = the same delta.
_POSTING = struct.Struct("<Iiqq12s")
#: Bits of a day ordinal in a cell key (account number << _DAY_BITS | day): date.max fits.
_DAY_BITS = 22
_BUCKETS = tuple(sorted(LEDGER_BUCKETS))
_BUCKET_INDEX = {b: i for i, b in enumerate(_BUCKETS)}
_MEASURE_INDEX = {m: i for i, m in enumerate(MEASURES)}
#: Events replayed through the core at once (its batch, and the records held while it runs).
REPLAY_BATCH = 1_000
#: Records one read holds at once (any other topic).
READ_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class _Posting:
    account: str
    day: date
    total_cents: int
    digest: bytes
    suspense_cents: int


class ReplayTables(MemoryTables):
    """A partition's tables during the replay. Values are copied to their size before they
    are kept: orjson hands back a 4 KB allocation for every document however small, which
    the account items and dedup records (one per event) would otherwise each hold."""

    def write(self, result: BatchResult) -> None:
        super().write(result)
        for key in (*result.dedup_writes, *result.purge_marks):
            value = self.dedup.get(key)
            if value is not None:
                self.dedup[key] = bytes(memoryview(value))
        for p, account in result.heads:
            key = (p, head_key(account))
            self.accounts[key] = bytes(memoryview(self.accounts[key]))
        for p, account, ref in (*result.transitions, *result.items):
            key = (p, item_key(account, ref))
            self.accounts[key] = bytes(memoryview(self.accounts[key]))


class _Accounts:
    """Account names <-> small numbers: each name is kept once, keys hold its number."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.names: list[str] = []

    def number(self, account: str) -> int:
        n = self.numbers.get(account)
        if n is None:
            n = self.numbers[account] = len(self.names)
            self.names.append(account)
        return n

    def name(self, account: str) -> str:
        """The kept copy of this name (so per-account dicts share one string)."""
        return self.names[self.number(account)]


def _source_totals(record: Record) -> tuple[str | None, SourceTotals | None]:
    """(status, totals) of a raw record: from the headers of rcm.raw.hl7 (its value is the
    message as received), from the JSON document on the other raw topics."""
    try:
        if record.topic == RAW_HL7:
            headers = dict(record.headers)
            status = headers.get(HEADER_STATUS, b"").decode() or None
            raw = headers.get(HEADER_TOTALS)
            return status, SourceTotals.from_json(orjson.loads(raw)) if raw else None
        doc = orjson.loads(record.value or b"{}")
        status = doc.get("status")
        raw_doc = doc.get("source_totals")
        return status, SourceTotals.from_json(raw_doc) if raw_doc is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unreadable", None


def _listing(key: str) -> bytes:
    """A listed event's key, small (8 bytes: a wrong match among a run's events is ~1e-19)."""
    return hashlib.blake2b(key.encode(), digest_size=8).digest()


def _in_range(day: date, day_from: date | None, day_to: date | None) -> bool:
    return (day_from is None or day >= day_from) and (day_to is None or day <= day_to)


def _balances(balances: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(balances.get(b, 0)) for b in _BUCKETS)


# -- the comparison -------------------------------------------------------------------------
async def log_starts(kafka: KafkaConnection, topic: str, partitions: list[int]
                      ) -> dict[int, int]:
    """The first offset still in each partition (retention deletes older records)."""
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        found = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in found.items()}


class Reconciler:
    """Reads each topic once, as a stream, folding every record into what must be kept
    (``Memory`` in the module's doc) and comparing postings with the events' as they arrive."""

    def __init__(self, kafka: KafkaConnection, chart: ChartOfAccounts, *,
                 adapter: ErpAdapter | None = None, day_from: date | None = None,
                 day_to: date | None = None, findings_max: int = FINDINGS_MAX,
                 postings_max: int = POSTINGS_MAX, event_bytes_max: int | None = None,
                 account_items_max: int | None = None, console: Console | None = None,
                 progress_every_s: float = LOG_EVERY_S,
                 refund_policy: RefundPolicy | None = None) -> None:
        self.kafka = kafka
        self.chart = chart
        self.adapter = adapter
        self.day_from, self.day_to = day_from, day_to
        self.findings_max = findings_max
        self.postings_max = postings_max
        self.console = console or Console(file=io.StringIO())
        self.progress_every_s = progress_every_s
        self.processor = Processor(
            chart, event_bytes_max=event_bytes_max or EVENT_BYTES_MAX,
            account_items_max=account_items_max or ACCOUNT_ITEMS_MAX,
            refund_policy=refund_policy)
        self.report = Report(adapter.name if adapter else None,
                             day_from.isoformat() if day_from else None,
                             day_to.isoformat() if day_to else None)
        self.accounts = _Accounts()
        # posting id -> _POSTING: what the events imply, until rcm.postings shows the id
        self.expected: dict[str, bytes] = {}
        self.postings: dict[str, bytes] = {}  # posting id -> _POSTING, each id once
        self.expected_balances: dict[str, tuple[int, ...]] = {}  # by _BUCKETS
        self.ledger: dict[str, list[int]] = {}  # Σ posting lines' bucket effects
        self.snapshots: dict[str, tuple[int, ...]] = {}
        self.dlq: dict[str, str] = {}  # posting id -> reason code + reason
        # "account\0event id" a source record lists -> its raw topic (index in
        # SOURCE_TOPICS), or -1 once the event was found (and summed) on rcm.events
        self.source_events: dict[str, int] = {}
        # cell key << 4 | measure -> [source cents, events cents]
        self.source_cells: dict[int, list[int]] = {}
        # cell key (account number << _DAY_BITS | day) -> [events, postings, dlq, erp] cents
        self.cells: dict[int, list[int]] = {}

    def find(self, cause: str, account: str | None, day: date | None, posting_id: str | None,
             amount_cents: int, detail: str = "") -> None:
        self.report.add(Finding(cause, account, day.isoformat() if day else None, posting_id,
                                amount_cents, detail or CAUSES[cause][1]), self.findings_max)

    def _cell_key(self, account: str, day: date) -> int:
        return self.accounts.number(account) << _DAY_BITS | day.toordinal()

    def cell(self, account: str, day: date) -> list[int]:
        """[events, postings, dlq, erp] cents of one account and day."""
        key = self._cell_key(account, day)
        sums = self.cells.get(key)
        if sums is None:
            sums = self.cells[key] = [0, 0, 0, 0]
        return sums

    def gl(self, code: str) -> dict[str, int]:
        return self.report.gl.setdefault(code, {"postings_net_cents": 0, "erp_net_cents": 0})

    def _pack(self, doc: dict[str, Any]) -> bytes:
        lines = [(x["gl_account"], int(x["debit_cents"]), int(x["credit_cents"]))
                 for x in doc["lines"]]
        return _POSTING.pack(
            self.accounts.number(doc["account"]),
            date.fromisoformat(doc["effective_date"]).toordinal(),
            sum(d for _, d, _ in lines),
            sum(int(x["debit_cents"]) + int(x["credit_cents"])
                for x in doc["lines"] if x.get("suspense")),
            _lines_digest(lines))

    def _unpack(self, packed: bytes) -> _Posting:
        number, day, total, suspense, digest = _POSTING.unpack(packed)
        return _Posting(self.accounts.names[number], date.fromordinal(day), total, digest,
                        suspense)

    async def _read(self, topic: str, *, batch: int = READ_BATCH,
                    keep: Callable[[bytes | None], bool] | None = None
                    ) -> AsyncIterator[list[Record]]:
        """A topic's records in batches, one partition after another (offset order within
        each), with progress: records read of the offsets between the log's start (moved by
        retention: the raw topics keep 7 days) and its end."""
        partitions = await topic_partitions(self.kafka, topic)
        ends = await log_ends(self.kafka, topic, partitions) if partitions else {}
        starts = await log_starts(self.kafka, topic, partitions) if partitions else {}
        total = sum(max(0, end - starts.get(p, 0)) for p, end in ends.items())
        with progress(self.console, f"reading {topic}", total=total or None,
                      every_s=self.progress_every_s) as advance:
            for p in partitions:
                async for records in iter_topic(self.kafka, topic, start={p: 0}, keep=keep,
                                                batch_records=batch, on_read=advance):
                    yield records

    # -- reading ------------------------------------------------------------------------
    async def read_sources(self) -> None:
        """What the inbound connectors accepted, as kept on rcm.raw.* (7 days' retention):
        the source totals of every record marked applied, summed per account and day. Each
        raw record is a unit of its own (a set split into parts is several records).

        An event counts with the earliest record (by timestamp) that lists it, found in a
        first pass: a later re-send under another key may sit in a partition read first,
        and if its amounts differ (a conflict, which the worker refused) they must not
        stand for the original's."""
        first = await self._first_listings()
        counts: Counter[str] = Counter()
        for topic in SOURCE_TOPICS:
            async for records in self._read(topic):
                for record in records:
                    counts[self._note_source_record(record, first)] += 1
        self.report.counts |= {f"source_records_{what}": n for what, n in sorted(counts.items())}
        self.report.counts["source_events_listed"] = len(self.source_events)

    async def _first_listings(self) -> dict[bytes, int]:
        """8-byte digest of each listed "account\0event id" -> the earliest timestamp of a
        record listing it (~0.13 KB per event, tracemalloc, while the sources are read)."""
        first: dict[bytes, int] = {}
        for topic in SOURCE_TOPICS:
            async for records in self._read(topic):
                for record in records:
                    status, totals = _source_totals(record)
                    if status not in _ACCEPTED or totals is None:
                        continue
                    for account, event_id in totals.event_ids:
                        digest = _listing(f"{account}\0{event_id}")
                        if first.get(digest, record.timestamp_ms + 1) > record.timestamp_ms:
                            first[digest] = record.timestamp_ms
        return first

    def _note_source_record(self, record: Record, first: dict[bytes, int]) -> str:
        """Sum one raw record's totals in; what it was, for the counts. ``first``: when each
        event was first listed (``_first_listings``)."""
        status, totals = _source_totals(record)
        if status is None:
            return "without_totals"  # an HL7 raw record written before statuses were kept
        if status not in _ACCEPTED:  # refused, parked, rejected, a notice: no money moved
            return "unreadable" if status == "unreadable" else "not_applied"
        if totals is None:
            return "without_totals"  # written before amounts were kept, or unreadable
        keys = [f"{account}\0{event_id}" for account, event_id in totals.event_ids]
        stamp = record.timestamp_ms
        # listed by an earlier record, read before or after this one: that one counts it
        later = {key for key in keys if first.get(_listing(key), stamp) < stamp}
        if keys and all(key in self.source_events or key in later for key in keys):
            return "resent"  # the same events under another key (a re-sent file)
        # events another record counts: this one re-sends those parts (a corrected 835
        # repeating some claims), whose attributed amounts were counted with that record
        resent = {event_id for (account, event_id), key in zip(totals.event_ids, keys,
                                                               strict=True)
                  if key in self.source_events or key in later}
        topic = SOURCE_TOPICS.index(record.topic)
        for key in keys:
            if key not in later:
                self.source_events.setdefault(key, topic)
        for (account, day, measure, event_id), cents in totals.by_event().items():
            if event_id not in resent:  # unattributed (None) counts with its unit, as before
                self._amounts(account, day, measure)[0] += cents
        return "applied"

    def _amounts(self, account: str, day: date, measure: str) -> list[int]:
        """[source cents, events cents] of one measure, account and day."""
        key = self._cell_key(account, day) << 4 | _MEASURE_INDEX[measure]
        sums = self.source_cells.get(key)
        if sums is None:
            sums = self.source_cells[key] = [0, 0]
        return sums

    def _note_source(self, value: bytes | None) -> None:
        """An event on rcm.events a source lists: sum its amounts in, once."""
        try:
            doc = orjson.loads(value or b"{}")
            pair = (doc.get("account"), doc.get("event_id"))
        except (ValueError, AttributeError):
            return
        if not all(isinstance(x, str) for x in pair):
            return
        key = f"{pair[0]}\0{pair[1]}"
        if self.source_events.get(key, -1) == -1:  # no source lists it, or counted already
            return
        try:
            event = EVENT_ADAPTER.validate_python(doc)
        except ValidationError:
            return  # not an event the connector made: the source's cents stay unmatched
        self.source_events[key] = -1
        for measure, cents in event_amounts(event):
            self._amounts(event.account, event.occurred_at.date(), measure)[1] += cents

    def compare_sources(self) -> None:
        """Listed events not found, and measures whose cents differ (only the differences
        are sorted: the rest is summed where it lies)."""
        missing = sorted((pair, topic) for pair, topic in self.source_events.items()
                         if topic != -1)
        for pair, topic in missing:
            account, event_id = pair.split("\0", 1)
            self.find("source_event_missing", account, None, None, 0,
                      f"{event_id} accepted on {SOURCE_TOPICS[topic]}; no such event on "
                      "rcm.events")
        self.report.counts["source_events_found"] = len(self.source_events) - len(missing)
        days: set[int] = set()
        differing: list[tuple[str, date, str, Amounts]] = []
        for key, (source_cents, events_cents) in self.source_cells.items():
            cell, measure = key >> 4, MEASURES[key & 15]
            day = date.fromordinal(cell & ((1 << _DAY_BITS) - 1))
            if not _in_range(day, self.day_from, self.day_to):
                continue
            days.add(cell)
            total = self.report.sources.setdefault(measure, Amounts())
            total.source_cents += source_cents
            total.events_cents += events_cents
            if source_cents != events_cents:
                differing.append((self.accounts.names[cell >> _DAY_BITS], day, measure,
                                  Amounts(source_cents, events_cents)))
        for account, day, measure, amounts in sorted(differing, key=lambda x: x[:3]):
            self.report.source_days_differing.setdefault(
                (account, day.isoformat()), {})[measure] = amounts
            self.find("source_amount_differs", account, day, None, amounts.difference_cents,
                      f"{measure}: the sources accepted {_money(amounts.source_cents)}, their "
                      f"events on rcm.events carry {_money(amounts.events_cents)}")
        self.report.source_days_compared = len(days)

    async def read_events(self) -> None:
        """The core replays each partition of rcm.events from offset 0 (fresh states), in
        batches of REPLAY_BATCH as the worker does: what is held is the partition's account
        tables (heads, items, dedup records), not its events or their outputs."""
        events = 0
        partition: int | None = None
        tables = ReplayTables()
        async for records in self._read(EVENTS, batch=REPLAY_BATCH):
            if records[0].partition != partition:  # a new partition: fresh states
                partition, tables = records[0].partition, ReplayTables()
            events += len(records)
            for record in records:
                self._note_source(record.value)
            result = self.processor.process(
                [Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms,
                         is_retry(r.headers))
                 for r in records], tables)
            del records
            tables.write(result)
            for _, _, value in result.postings:
                doc = orjson.loads(value)
                self.expected[doc["posting_id"]] = self._pack(doc)
            for (_, account), head in result.heads.items():
                self.expected_balances[self.accounts.name(account)] = _balances(
                    head.balances.model_dump())
            del result
            self._bound(len(self.expected), "implied by rcm.events")
        self.report.counts["event_records"] = events
        self.report.counts["postings_expected"] = len(self.expected)

    async def read_postings(self) -> None:
        """Each posting id once, compared with what the events imply as it arrives."""
        records_total = 0
        async for records in self._read(POSTINGS):
            for record in records:
                records_total += 1
                doc = orjson.loads(record.value or b"{}")
                pid = doc.get("posting_id")
                if not pid:
                    continue
                packed = self._pack(doc)
                seen = self.postings.get(pid)
                if seen is not None:
                    if seen != packed:
                        have = self._unpack(packed)
                        self.find("posting_conflict", have.account, have.day, pid,
                                  have.total_cents, f"{pid} sent twice with other lines")
                    continue
                self.postings[pid] = packed
                account = self.accounts.name(doc["account"])
                ledger = self.ledger.get(account)
                if ledger is None:
                    ledger = self.ledger[account] = [0] * len(_BUCKETS)
                for bucket, cents in bucket_effects(
                        (x["bucket"], int(x["debit_cents"]) - int(x["credit_cents"]))
                        for x in doc["lines"]).items():
                    if bucket in _BUCKET_INDEX:
                        ledger[_BUCKET_INDEX[bucket]] += cents
                self._compare_posting(pid, packed, doc["lines"])
            self._bound(len(self.postings), "on rcm.postings")
        self.report.counts["posting_records"] = records_total
        self.report.counts["postings"] = len(self.postings)

    def _compare_posting(self, pid: str, packed: bytes, lines: list[dict[str, Any]]) -> None:
        """One posting id's first delta on rcm.postings against the events' (then dropped
        from ``expected``: what stays there at the end is missing)."""
        rng = (self.day_from, self.day_to)
        have = self._unpack(packed)
        wanted = self.expected.pop(pid, None)
        if wanted is not None:
            want = self._unpack(wanted)
            if _in_range(want.day, *rng):
                self.cell(want.account, want.day)[0] += want.total_cents
                self.report.totals.events_cents += want.total_cents
                if wanted != packed:
                    self.find("posting_differs", want.account, want.day, pid,
                              have.total_cents, f"rcm.postings {have.total_cents} vs events "
                                                f"{want.total_cents} cents")
        if not _in_range(have.day, *rng):
            return
        for x in lines:
            self.gl(x["gl_account"])["postings_net_cents"] += (
                int(x["debit_cents"]) - int(x["credit_cents"]))
        sums = self.cell(have.account, have.day)
        sums[1] += have.total_cents
        self.report.totals.postings_cents += have.total_cents
        if wanted is None:
            self.find("unexpected_posting", have.account, have.day, pid, have.total_cents)
        if have.suspense_cents:
            self.find("suspense", have.account, have.day, pid, have.suspense_cents)
        if pid in self.dlq:
            sums[2] += have.total_cents
            self.report.totals.dlq_cents += have.total_cents

    async def read_snapshots(self) -> None:
        """The newest head of every account (its balances); item records are skipped
        unread."""
        async for records in self._read(ACCOUNTS, keep=is_head_key):
            for record in records:
                if record.key is None:
                    continue
                account = self.accounts.name(record.key.decode())
                if record.value is None:  # a tombstone
                    self.snapshots.pop(account, None)
                    continue
                self.snapshots[account] = _balances(
                    orjson.loads(record.value).get("balances", {}))
        self.report.counts["accounts"] = len(self.snapshots)

    async def read_dlq(self) -> None:
        async for records in self._read(POSTINGS_DLQ):
            for record in records:
                doc = orjson.loads(record.value or b"{}")
                pid = (doc.get("context") or {}).get("posting_id")
                if pid:  # the payload (the whole delta) is not kept
                    self.dlq[pid] = f"{doc.get('reason_code')}: {doc.get('reason', '')[:300]}"
        self.report.counts["postings_dlq"] = len(self.dlq)

    def _bound(self, n: int, what: str) -> None:
        if n > self.postings_max:
            raise TooLarge(f"more than {self.postings_max} posting ids {what}: raise "
                              "postings_max knowingly (~0.5 KB each) or reconcile a "
                              "smaller broker")

    # -- comparing ----------------------------------------------------------------------
    def compare_streams(self) -> None:
        """What stays after rcm.postings was read: implied deltas it lacks, and account state
        (snapshot = Σ deltas, and = what the events imply)."""
        rng = (self.day_from, self.day_to)
        accounts = set(self.snapshots) | set(self.expected_balances)
        with progress(self.console, "comparing", total=len(self.expected) + len(accounts),
                      unit="ids and accounts", every_s=self.progress_every_s) as advance:
            for pid, wanted in self.expected.items():
                advance(1)
                want = self._unpack(wanted)
                if not _in_range(want.day, *rng):
                    continue
                self.cell(want.account, want.day)[0] += want.total_cents
                self.report.totals.events_cents += want.total_cents
                self.find("missing_posting", want.account, want.day, pid, want.total_cents)
            zero = (0,) * len(_BUCKETS)
            for account in sorted(accounts):
                advance(1)
                snap = self.snapshots.get(account)
                ledger = self.ledger.get(account, zero)
                implied = self.expected_balances.get(account)
                if snap is None:
                    if implied and any(implied):
                        self.find("state_differs", account, None, None, 0,
                                  "no snapshot on rcm.accounts for an account the events move")
                    continue
                for i, bucket in enumerate(_BUCKETS):
                    if snap[i] != ledger[i]:
                        self.find("state_differs", account, None, None, snap[i] - ledger[i],
                                  f"{bucket}: snapshot {snap[i]} vs Σ deltas {ledger[i]}")
                    elif implied is not None and snap[i] != implied[i]:
                        self.find("state_differs", account, None, None, snap[i] - implied[i],
                                  f"{bucket}: snapshot {snap[i]} vs events {implied[i]}")

    async def compare_erp(self) -> None:
        assert self.adapter is not None
        seen: set[str] = set()
        entries = 0
        async for entry in self.adapter.read_journal(day_from=self.day_from,
                                                     day_to=self.day_to):
            entries += 1
            pid = entry.posting_id
            lines = [(x.gl_account, x.debit_cents, x.credit_cents) for x in entry.lines]
            for gl, debit, credit in lines:
                self.gl(gl)["erp_net_cents"] += debit - credit
            packed = self.postings.get(pid)
            have = self._unpack(packed) if packed is not None else None
            if pid in seen:
                self.find("journal_entry_duplicate", have.account if have else None,
                          entry.effective_date, pid, entry.total_cents,
                          f"ERP ref {entry.erp_ref}")
                continue
            seen.add(pid)
            if have is None:
                self.find("journal_entry_extra", None, entry.effective_date, pid,
                          entry.total_cents, f"ERP ref {entry.erp_ref}")
                continue
            self.cell(have.account, have.day)[3] += entry.total_cents
            self.report.totals.erp_cents += entry.total_cents
            if not entry.posted:
                self.find("unposted", have.account, have.day, pid, entry.total_cents,
                          f"ERP ref {entry.erp_ref} is not posted")
            elif _lines_digest(lines) != have.digest or entry.effective_date != have.day:
                self.find("amount_differs", have.account, have.day, pid,
                          entry.total_cents - have.total_cents,
                          f"ERP ref {entry.erp_ref}: {entry.total_cents} cents on "
                          f"{entry.effective_date} vs delta {have.total_cents} on {have.day}")
        self.report.counts["erp_entries"] = entries
        for pid, packed in self.postings.items():
            if pid in seen:
                continue
            have = self._unpack(packed)
            if not _in_range(have.day, self.day_from, self.day_to):
                continue
            if pid in self.dlq:
                self.find("dlq", have.account, have.day, pid, have.total_cents, self.dlq[pid])
            else:
                self.find("journal_entry_missing", have.account, have.day, pid,
                          have.total_cents)

    def _report_cells(self) -> None:
        """The account-days compared, and those that differ, into the report."""
        with_erp = self.adapter is not None
        self.report.account_days_compared = len(self.cells)
        for key, (events, postings, dlq, erp) in self.cells.items():
            cell = Cell(events, postings, dlq, erp)
            if not cell.agrees(with_erp):
                account = self.accounts.names[key >> _DAY_BITS]
                day = date.fromordinal(key & ((1 << _DAY_BITS) - 1))
                self.report.cells[(account, day.isoformat())] = cell

    async def run(self) -> Report:
        await self.read_sources()
        await self.read_events()
        await self.read_dlq()  # before rcm.postings: each delta is compared as it is read
        await self.read_postings()
        await self.read_snapshots()
        self.compare_sources()
        self.compare_streams()
        if self.adapter is not None:
            await self.compare_erp()
        self._report_cells()
        for sums in self.report.gl.values():
            if self.adapter is None or sums["postings_net_cents"] == sums["erp_net_cents"]:
                continue
            sums["difference_cents"] = sums["erp_net_cents"] - sums["postings_net_cents"]
        log.info("reconcile: %s", dict(self.report.findings_by_cause))
        return self.report


async def reconcile(kafka: KafkaConnection, chart: ChartOfAccounts, *,
                    adapter: ErpAdapter | None = None, day_from: date | None = None,
                    day_to: date | None = None, findings_max: int = FINDINGS_MAX,
                    postings_max: int = POSTINGS_MAX, open_adapter: bool = True,
                    event_bytes_max: int | None = None,
                    account_items_max: int | None = None, console: Console | None = None,
                    progress_every_s: float = LOG_EVERY_S,
                    refund_policy: RefundPolicy | None = None) -> Report:
    """Compare everything; the adapter is opened (unless told not to) and closed here.
    ``console``: where progress goes (a bar on a terminal, a line every
    ``progress_every_s`` in a log; none by default)."""
    reconciler = Reconciler(kafka, chart, adapter=adapter, day_from=day_from, day_to=day_to,
                            findings_max=findings_max, postings_max=postings_max,
                            event_bytes_max=event_bytes_max,
                            account_items_max=account_items_max, console=console,
                            progress_every_s=progress_every_s, refund_policy=refund_policy)
    if adapter is not None and open_adapter:
        await adapter.open()
    try:
        return await reconciler.run()
    finally:
        if adapter is not None and open_adapter:
            await adapter.close()


def build_reader(name: str, settings: Settings, chart: ChartOfAccounts
                 ) -> tuple[ErpAdapter, bool]:
    """(adapter, open it?) for ``--erp NAME``. The csv adapter is read without ``open()``:
    open takes the journal folder's writer lock, which a running connector holds."""
    import importlib

    from rcmflow.connectors.erp.registry_cloud import all_adapters

    adapters = all_adapters()
    if name not in adapters:
        raise ValueError(f"unknown ERP adapter {name!r}; known: {', '.join(sorted(adapters))}")
    module = importlib.import_module(f"rcmflow.connectors.erp.{adapters[name]}")
    adapter: ErpAdapter = module.build(settings, chart)
    return adapter, name != "csv"


def _render_sources(report: Report, console: Any) -> None:
    """What the connectors accepted, per measure, next to what their events carry."""
    from rich.table import Table

    if not report.sources:
        return
    table = Table(title="source totals (rcm.raw.*) vs their events (rcm.events)")
    for column in ("measure", "sources accepted", "events carry", "difference"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for measure, amounts in sorted(report.sources.items()):
        diff = amounts.difference_cents
        table.add_row(measure, _money(amounts.source_cents), _money(amounts.events_cents),
                      f"[red]{_money(diff)}[/red]" if diff else "0.00")
    console.print(table)
    console.print(f"source account-days compared: {report.source_days_compared}, differing: "
                  f"{len(report.source_days_differing)}")


def render(report: Report, console: Any, *, show: int = 50) -> None:
    """Rich tables: totals, findings by cause, then the first ``show`` findings."""
    from rich.table import Table

    with_erp = report.erp is not None
    totals = Table(title=f"rcmflow reconcile{f' against {report.erp}' if with_erp else ''}"
                         f"{f' from {report.day_from}' if report.day_from else ''}"
                         f"{f' to {report.day_to}' if report.day_to else ''}")
    for column in ("source", "entries", "amount"):
        totals.add_column(column, justify="right" if column != "source" else "left")
    c, t = report.counts, report.totals
    totals.add_row("events → implied deltas", str(c.get("postings_expected", 0)),
                   _money(t.events_cents))
    totals.add_row("rcm.postings", str(c.get("postings", 0)), _money(t.postings_cents))
    totals.add_row("rcm.postings.dlq", str(c.get("postings_dlq", 0)), _money(t.dlq_cents))
    if with_erp:
        totals.add_row(f"ERP journal ({report.erp})", str(c.get("erp_entries", 0)),
                       _money(t.erp_cents))
    totals.add_row("account snapshots", str(c.get("accounts", 0)), "")
    totals.add_row("sources: units applied / their events found on rcm.events",
                   f"{c.get('source_records_applied', 0)} / "
                   f"{c.get('source_events_found', 0)} of {c.get('source_events_listed', 0)}",
                   "")
    console.print(totals)
    _render_sources(report, console)
    console.print(f"account-days compared: {report.account_days_compared}, differing: "
                  f"{len(report.cells)}")
    gl_off = {gl: s for gl, s in report.gl.items() if "difference_cents" in s}
    if gl_off:
        table = Table(title="GL accounts that differ (net debit)")
        for column in ("GL", "rcm.postings", "ERP", "difference"):
            table.add_column(column, justify="right")
        for gl, sums in sorted(gl_off.items()):
            table.add_row(gl, _money(sums["postings_net_cents"]), _money(sums["erp_net_cents"]),
                          _money(sums["difference_cents"]))
        console.print(table)
    if not report.findings_by_cause:
        console.print("[green]no differences: source totals, events, postings, account state"
                      f"{', DLQ and the ERP journal' if with_erp else ' and DLQ'} agree[/green]")
        return
    causes = Table(title="findings by likely cause")
    for column in ("cause", "severity", "count", "meaning"):
        causes.add_column(column)
    for cause, n in sorted(report.findings_by_cause.items()):
        severity, meaning = CAUSES[cause]
        style = "red" if severity == "error" else "yellow"
        causes.add_row(f"[{style}]{cause}[/{style}]", severity, str(n), meaning)
    console.print(causes)
    table = Table(title=f"findings (first {min(show, len(report.findings))} of "
                        f"{sum(report.findings_by_cause.values())})")
    for column in ("account", "day", "cause", "posting id", "amount", "detail"):
        table.add_column(column, justify="right" if column == "amount" else "left")
    for finding in report.ordered()[:show]:
        table.add_row(finding.account or "—", finding.day or "—", finding.cause,
                      finding.posting_id or "—", _money(finding.amount_cents), finding.detail)
    console.print(table)
