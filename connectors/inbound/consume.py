"""`rcmflow consume FORMAT --topic T`: records other systems write to Kafka, ingested.

Hospitals already stream their interfaces into Kafka (an interface engine's Kafka destination,
an EHR's event bus). Each record of such a topic is one unit of its format, handled by that
connector's own code exactly as a file or an MLLP frame is (mapping, validation, raw records
with source totals, DLQ reason codes, size bounds):

==========  ==========================================  ======================================
format      one record is                               handled by
==========  ==========================================  ======================================
hl7         an HL7 v2 message (bare ER7; CR, LF or      ``hl7.intake.Intake`` (replay store,
            CRLF; MLLP bytes stripped) or an FHS/BHS    mapping, the ACK rules), after
            batch of them                               ``hl7.batch.split_batch``
x12         an X12 interchange (a file's content)       ``x12.ingest.process_x12``
fhir        a resource, a Bundle or NDJSON              ``fhir.ingest.process_fhir``
payments    a payment file: CSV with its header row,    ``payments.ingest.process_payments``
            or JSON lines
events      one canonical event (JSON) or JSON lines    ``inbound.events.key_document``
==========  ==========================================  ======================================

**The commit rule.** Per fetched batch (at most RCMFLOW_CONSUME_BATCH_MAX records, any
partitions): (1) each record becomes its outputs (raw records, canonical events, DLQ records);
(2) every output is sent with acks=all and its ack awaited; (3) only then are the batch's
offsets committed (last offset + 1 per partition). A crash anywhere before (3) reads the batch
again: the same input makes the same event ids (MSH-10 + FT1, 835 TRN + CLP, payment
reference, FHIR identifier, the event's own id) and the same DLQ ids, so the worker's dedup
drops what arrives twice. A batch the broker does not acknowledge is sent again
(RCMFLOW_CONSUME_RETRY_MAX times, with backoff), then the command exits 3
(``ExitCode.BROKER``) with nothing committed past the last acknowledged batch. A group with no
committed offset has its start committed before its first batch is taken, so a crash before the
first commit cannot move the start to a later "latest".

**Bad input never stops the stream.** A record that cannot be parsed, is not UTF-8 where text
is required, has no value, or is over its format's size bound becomes an rcm.dlq record (stage,
reason code, the original bytes up to RCMFLOW_DLQ_PAYLOAD_BYTES_MAX) and the next record goes
on. A record the connector's code fails on (a bug) goes to rcm.dlq as ``internal_error`` and is
logged (exception type and line): a poison record must not hold its partition. An output the
broker refuses as too large for its topic puts its record in rcm.dlq (``output_too_large``).

**HL7 has no one to ACK here.** What would be AA publishes the raw message (status applied,
source totals) and its events; what would be AE or AR publishes the raw message (status
refused, when its MSH-3/4/10 could be read) and a DLQ record with the reason the ACK would
carry. A replay (same MSH-3/4/10 and content, in this group's replay store) publishes nothing.
"Not stored" (the broker did not acknowledge) is the one outcome that is not final: the batch
is sent again and its offsets wait.

Logs carry counts, offsets, control numbers and account numbers only (never record keys or
values: they may hold patient data).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CommitFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from rcmflow.connectors.inbound.exceptions import BrokerFailed
from rcmflow.connectors.inbound.hl7.batch import split_batch
from rcmflow.connectors.inbound.hl7.framing import HEAD_BYTES
from rcmflow.connectors.inbound.hl7.intake import Intake, Sink
from rcmflow.runtime.exceptions import RecordTooLarge
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.faults import NO_FAULTS, Faults, kill_this_process
from rcmflow.runtime.kafka_access import consume_group
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Outgoing, group_lag, topic_partitions
from rcmflow.runtime.metrics import Metric, counter, gauge, new_registry, serve, url
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Problem, Rejection
from rcmflow.streams.topics import (
    DLQ,
    EVENTS,
    RAW_FHIR,
    RAW_HL7,
    RAW_PAYMENTS,
    RAW_X12,
    topic_specs,
)

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["FORMATS", "Format", "Incoming", "Tally", "Handler",
           "RecordsHandler", "Hl7Handler", "ConsumeOptions", "Progress", "TopicConsumer",
           "refusal", "default_group", "run_consume"]

log = logging.getLogger("rcmflow.consume")

Format = Literal["hl7", "x12", "fhir", "payments", "events"]
FORMATS: tuple[Format, ...] = ("hl7", "x12", "fhir", "payments", "events")


#: Broker answers that say one output can never be stored (too large for its topic or the
#: producer), as opposed to an outage: sending it again would hold the partition for ever.
_REFUSED = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError,
            RecordTooLarge)
_RAW_TOPICS = frozenset({RAW_HL7, RAW_X12, RAW_FHIR, RAW_PAYMENTS})
_BACKOFF_FIRST_S = 0.5


class Incoming(NamedTuple):
    """One consumed record, as the handlers see it (no aiokafka types past the loop)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def origin(self) -> str:
        """The connectors' origin string (raw records, DLQ ids and reasons): stable across
        re-reads, so a record read again makes the same DLQ ids."""
        return f"kafka:{self.topic}:{self.partition}:{self.offset}"


@dataclass
class Tally:
    records: int = 0
    events: int = 0
    dlq: int = 0
    raw: int = 0
    replays: int = 0  # HL7 messages this group's replay store had accepted: nothing published

    def add(self, other: Tally) -> None:
        self.records += other.records
        self.events += other.events
        self.dlq += other.dlq
        self.raw += other.raw
        self.replays += other.replays

    def count(self, outputs: Sequence[Outgoing]) -> None:
        for item in outputs:
            topic = item[0]
            if topic == EVENTS:
                self.events += 1
            elif topic == DLQ:
                self.dlq += 1
            elif topic in _RAW_TOPICS:
                self.raw += 1


class Handler(Protocol):
    async def take(self, batch: Sequence[Incoming]) -> Tally:
        """Return only once every output of ``batch`` is acknowledged (acks=all); else raise
        BrokerFailed. Bad input is never an exception: it is a DLQ output."""


def refusal(record: Incoming, fmt: str, code: str, reason: str, *, payload_bytes_max: int,
            severity: Literal["error", "warning"] = "error",
            context: dict[str, Any] | None = None, part: str = "") -> Outgoing:
    """The DLQ record of a record the connector never got to read (no value, too large) or
    failed on: a rejection whose one problem is the record as a whole (or its HL7 message
    ``part``), with the original bytes (cut at ``payload_bytes_max``, said in the context).
    Its dlq_id comes from where the record was read (and ``part``), so a record read again
    after a crash makes the same one."""
    problem = Problem(reason_code=code, detail=reason, place=f"message {part}" if part else "")
    dlq = dlq_record(
        Rejection(stage="decode", reason_code=code, severity=severity,
                  detail=f"{record.topic} partition {record.partition} offset "
                  f"{record.offset}: {reason}", problems=(problem,)),
        origin=Origin(topic=record.topic, partition=record.partition, offset=record.offset,
                      key=None if record.key is None
                      else record.key.decode("utf-8", "replace")),
        payload=record.value or b"", received_at=datetime.now(UTC),
        context={"format": fmt, **(context or {})}, discriminator=f"consume:{fmt}:{part}",
        payload_bytes_max=payload_bytes_max)
    return DLQ, record.key, dlq.model_dump_json().encode()


def _where(exc: BaseException) -> str:
    """Exception type and the line it came from, for logs (its message may quote input)."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{last}"


#: A connector's pure unit function: one record's value -> its outputs, in writing order.
UnitFn = Callable[[Incoming], Sequence[Outgoing]]


class RecordsHandler:
    """x12, fhir, payments, events: each record becomes its outputs through the connector's
    pure function; the whole batch's outputs are sent, then every ack awaited."""

    def __init__(self, fmt: Format, sink: Sink, unit: UnitFn, *, bytes_max: int,
                 bytes_setting: str, payload_bytes_max: int) -> None:
        self.format = fmt
        self._sink = sink
        self._unit = unit
        self._bytes_max = bytes_max
        self._bytes_setting = bytes_setting
        self._payload_bytes_max = payload_bytes_max

    def outputs(self, record: Incoming) -> Sequence[Outgoing]:
        """What one record becomes; never raises (bad input and bugs alike are DLQ'd)."""
        value = record.value
        if value is None or not value.strip():
            return [self._refuse(record, "empty_record", "the record has no value "
                                 "(a tombstone or blanks): nothing to read", "warning")]
        if len(value) > self._bytes_max:
            return [self._refuse(record, "too_large", f"record of {len(value)} bytes exceeds "
                                 f"{self._bytes_max} ({self._bytes_setting}): not read")]
        try:
            return list(self._unit(record))
        except Exception as exc:  # a bug on foreign input must not hold the partition
            log.error("consume %s %s[%d]@%d: internal error %s; record to %s", self.format,
                      record.topic, record.partition, record.offset, _where(exc), DLQ)
            return [self._refuse(record, "internal_error", f"the {self.format} connector "
                                 f"failed on this record: {type(exc).__name__}: {exc}")]

    async def take(self, batch: Sequence[Incoming]) -> Tally:
        tally = Tally(records=len(batch))
        per_record = [self.outputs(record) for record in batch]
        try:
            await self._sink.write([item for outputs in per_record for item in outputs])
        except _REFUSED:
            # Some output is larger than its topic takes: find it record by record.
            per_record = [await self._write_alone(record, outputs)
                          for record, outputs in zip(batch, per_record, strict=True)]
        except Exception as exc:
            raise BrokerFailed(_where(exc)) from exc
        for outputs in per_record:
            tally.count(outputs)
        return tally

    async def _write_alone(self, record: Incoming,
                           outputs: Sequence[Outgoing]) -> Sequence[Outgoing]:
        """The record's outputs; if the broker refuses one as too large, a DLQ record
        instead, with as much of the payload as rcm.dlq takes (JSON escaping can double
        it): up to the DLQ payload bound, else its first 4 KB."""
        reason = ""
        for payload_bytes_max in (None, self._payload_bytes_max, HEAD_BYTES):
            if payload_bytes_max is not None:
                outputs = [refusal(record, self.format, "output_too_large", reason,
                                   payload_bytes_max=payload_bytes_max)]
            try:
                await self._sink.write(outputs)
                return outputs
            except _REFUSED as exc:
                log.error("consume %s %s[%d]@%d: the broker refused %s as too large (%s)",
                          self.format, record.topic, record.partition, record.offset,
                          "an output" if not reason else "its DLQ record", type(exc).__name__)
                reason = reason or (
                    f"the broker refused a record made of this one ({type(exc).__name__}: "
                    "larger than its topic or the producer takes); others made of it may "
                    "have been stored")
            except Exception as exc:
                raise BrokerFailed(_where(exc)) from exc
        raise BrokerFailed(f"{DLQ} refuses even a {HEAD_BYTES}-byte payload")

    def _refuse(self, record: Incoming, code: str, reason: str,
                severity: Literal["error", "warning"] = "error") -> Outgoing:
        return refusal(record, self.format, code, reason, severity=severity,
                       payload_bytes_max=self._payload_bytes_max)


class Hl7Handler:
    """hl7: each record is split into its messages (``split_batch``, as batch files are) and
    each message goes through the shared intake, which writes and awaits its own acks."""

    format: Format = "hl7"

    def __init__(self, intake: Intake, sink: Sink, *, record_bytes_max: int,
                 payload_bytes_max: int) -> None:
        self._intake = intake
        self._sink = sink
        self._record_bytes_max = record_bytes_max
        self._payload_bytes_max = payload_bytes_max

    async def take(self, batch: Sequence[Incoming]) -> Tally:
        tally = Tally(records=len(batch))
        for record in batch:
            value = record.value or b""
            if len(value) > self._record_bytes_max:
                await self._refuse(record, "too_large", f"record of {len(value)} bytes "
                                   f"exceeds {self._record_bytes_max}: not read")
                tally.dlq += 1
                continue
            # Messages as in a batch file: MLLP bytes, BOM, LF/CRLF and FHS/BHS handled.
            messages = split_batch(value).messages
            if not messages:
                await self._refuse(record, "empty_record", "no HL7 message in the record "
                                   "(no value, blanks or batch segments only)", "warning")
                tally.dlq += 1
                continue
            for number, raw in enumerate(messages, start=1):
                await self._message(record, raw, number, len(messages), tally)
        return tally

    async def _message(self, record: Incoming, raw: bytes, number: int, count: int,
                       tally: Tally) -> None:
        context: dict[str, object] | None = (
            {"message": number, "messages": count} if count > 1 else None)
        try:
            outcome = await self._intake.handle(raw, position=record.offset,
                                                partition=record.partition, context=context)
        except Exception as exc:  # a bug on foreign input must not hold the partition
            log.error("consume hl7 %s[%d]@%d #%d: internal error %s; message to %s",
                      record.topic, record.partition, record.offset, number, _where(exc), DLQ)
            await self._refuse(record._replace(value=raw), "internal_error", "the hl7 "
                               f"connector failed on message {number}: {type(exc).__name__}: "
                               f"{exc}", context=context, part=str(number))
            tally.dlq += 1
            return
        if outcome.reason_code == "not_stored":
            raise BrokerFailed(f"message {number} at {record.topic}[{record.partition}]@"
                               f"{record.offset} not stored")
        if outcome.reason_code == "replay":
            tally.replays += 1
        elif outcome.code == "AA":
            tally.raw += 1
            tally.events += len(outcome.events)
        else:  # AE / AR: a DLQ record (and the raw message, when its MSH could be read)
            tally.dlq += 1

    async def _refuse(self, record: Incoming, code: str, reason: str,
                      severity: Literal["error", "warning"] = "error",
                      context: dict[str, Any] | None = None, part: str = "") -> None:
        await self._write([refusal(record, "hl7", code, reason, severity=severity,
                                   payload_bytes_max=self._payload_bytes_max,
                                   context=context, part=part)])

    async def _write(self, outputs: Sequence[Outgoing]) -> None:
        try:
            await self._sink.write(outputs)
        except Exception as exc:
            raise BrokerFailed(_where(exc)) from exc


@dataclass(frozen=True)
class ConsumeOptions:
    kafka: KafkaConnection
    format: Format
    topic: str
    group_id: str
    #: Where a group with no committed offset starts: the log start, else the log end.
    from_beginning: bool = False
    batch_max: int = 500
    retry_max: int = 5
    backoff_max_s: float = 30.0
    progress_s: float = 10.0
    #: Stop once nothing arrived for this long and the group's lag is 0 (tests, catch-up).
    idle_exit_s: float | None = None
    session_timeout_s: float = 10.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    #: Test-only: ``consume_kill_after`` kills the process before that batch's commit.
    faults: Faults = NO_FAULTS


@dataclass
class Progress:
    format: str
    topic: str
    group: str
    total: Tally = field(default_factory=Tally)
    batches: int = 0
    write_failures: int = 0
    lag: int | None = None
    committed: dict[int, int] = field(default_factory=dict)
    last_commit_at_s: float | None = None

    def line(self) -> str:
        t = self.total
        replays = f", {t.replays} HL7 replays" if self.format == "hl7" else ""
        return (f"consume {self.format} {self.topic} (group {self.group}): {t.records} records, "
                f"{t.events} events, {t.raw} raw records, {t.dlq} to {DLQ}{replays}, "
                f"{self.write_failures} unacknowledged writes, lag {self.lag}")


def consume_families(progress: Progress) -> list[Metric]:
    """The consumer's metrics, read from its progress at scrape time (labels: format and the
    configured topic only)."""
    at = {"format": progress.format, "topic": progress.topic}
    t = progress.total
    return [
        counter("rcmflow_consume_records", "Records taken from the topic and committed",
                [(at, t.records)]),
        counter("rcmflow_consume_events", "Canonical events published to rcm.events",
                [(at, t.events)]),
        counter("rcmflow_consume_dlq_records", "Records published to rcm.dlq (bad input, "
                "refused HL7 messages, parked X12 sets, ...)", [(at, t.dlq)]),
        counter("rcmflow_consume_write_failures", "Batches the broker did not acknowledge "
                "(each sent again; nothing committed past them)", [(at, progress.write_failures)]),
        gauge("rcmflow_consume_lag_records", "Records of the topic not yet committed by this "
              "group (measured every RCMFLOW_CONSUME_PROGRESS_S; NaN: not yet known)",
              [(at, progress.lag)]),
        gauge("rcmflow_consume_last_commit_timestamp_seconds", "Unix time of the last offset "
              "commit; NaN: none yet", [(at, progress.last_commit_at_s)]),
    ]


class _Stop(Exception):
    pass


class TopicConsumer:
    """The loop: fetch a batch, take it (every output acknowledged), commit its offsets."""

    def __init__(self, handler: Handler, options: ConsumeOptions) -> None:
        self.handler = handler
        self.options = options
        self.progress = Progress(options.format, options.topic, options.group_id)
        self.stopping = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self._pinned: set[TopicPartition] = set()
        #: What this process knows its group has committed, per partition.
        self._committed: dict[TopicPartition, int] = {}
        self._last_progress = 0.0
        self._kill_after = options.faults.consume_kill_after

    async def run(self) -> ExitCode:
        opts = self.options
        self.consumer = AIOKafkaConsumer(
            opts.topic, **opts.kafka.client_options(), group_id=opts.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if opts.from_beginning else "latest",
            session_timeout_ms=int(opts.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(opts.session_timeout_s * 1000 / 3)),
            # Never leave the group for being slow: retries of an unacknowledged batch wait.
            max_poll_interval_ms=24 * 3600 * 1000, fetch_max_wait_ms=200,
            # A source that writes with transactions: its aborted records are no input.
            isolation_level="read_committed")
        try:
            await self.consumer.start()
            log.info("consume %s: reading %s as group %s (where it has no offset: from the "
                     "%s)", opts.format, opts.topic, opts.group_id,
                     "beginning" if opts.from_beginning else "end")
            idle_since = time.monotonic()
            while not self.stopping.is_set():
                fetched = await self.consumer.getmany(timeout_ms=500,
                                                      max_records=opts.batch_max)
                await self._pin(fetched)
                if fetched:
                    await self._batch(fetched)
                    idle_since = time.monotonic()
                else:
                    await self._commit_skipped()
                await self._maybe_progress()
                if self.stopping.is_set():
                    log.info("consume %s: stopping (signal); every batch taken is committed",
                             opts.format)
                    break
                if (opts.idle_exit_s is not None and not fetched
                        and time.monotonic() - idle_since > opts.idle_exit_s):
                    await self._measure_lag()
                    if self.progress.lag == 0:
                        log.info("consume %s: idle for %.1fs with lag 0: exiting",
                                 opts.format, opts.idle_exit_s)
                        break
            return ExitCode.OK
        except _Stop:
            return ExitCode.OK
        except BrokerFailed as exc:
            log.error("consume %s: the broker did not acknowledge a batch after %d retries "
                      "(%s); stopping, nothing committed past the last acknowledged batch",
                      opts.format, opts.retry_max, exc)
            return ExitCode.BROKER
        except (KafkaError, OSError) as exc:
            log.error("consume %s: the broker is unreachable or failing (%s); stopping, nothing "
                      "committed past the last acknowledged batch", opts.format, exc)
            return ExitCode.BROKER
        finally:
            await self._maybe_progress(force=True)
            await self.consumer.stop()

    async def _batch(self, fetched: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
                     ) -> None:
        assert self.consumer is not None
        parts = sorted(fetched.items(), key=lambda kv: kv[0].partition)
        batch = [Incoming(m.topic, m.partition, m.offset, m.key, m.value)
                 for _, messages in parts for m in messages]
        tally = await self._take(batch)
        self.progress.batches += 1
        if self.progress.batches == self._kill_after:
            kill_this_process(f"consume_kill_after={self._kill_after}: before its commit")
        offsets = {tp: OffsetAndMetadata(messages[-1].offset + 1, "")
                   for tp, messages in parts}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved (rebalance: the new owner reads from the last commit) or
            # the broker failed. Never go on past an uncommitted batch: read it again.
            log.warning("consume %s: commit failed (%s); reading the batch again",
                        self.options.format, type(exc).__name__)
            for tp, messages in parts:
                if tp in self.consumer.assignment():
                    self.consumer.seek(tp, messages[0].offset)
            return
        self.progress.total.add(tally)
        self._committed.update({tp: o.offset for tp, o in offsets.items()})
        self.progress.committed.update({tp.partition: o.offset for tp, o in offsets.items()})
        self.progress.last_commit_at_s = time.time()

    async def _take(self, batch: list[Incoming]) -> Tally:
        """The batch taken, every output acknowledged; sent again while the broker fails."""
        attempt = 0
        while True:
            try:
                return await self.handler.take(batch)
            except BrokerFailed as exc:
                attempt += 1
                self.progress.write_failures += 1
                if attempt > self.options.retry_max:
                    raise
                wait_s = min(self.options.backoff_max_s, _BACKOFF_FIRST_S * 2 ** (attempt - 1))
                log.warning("consume %s: %d records not acknowledged (%s); sending again in "
                            "%.1fs (retry %d of %d)", self.options.format, len(batch), exc,
                            wait_s, attempt, self.options.retry_max)
                await self._idle(wait_s)

    async def _pin(self, fetched: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
                   ) -> None:
        """Commit the start of every newly assigned partition that has no committed offset,
        before anything of it is taken: else a crash before the first commit would let the
        restart begin again at "latest", past records never read."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        self._pinned &= assigned
        for tp in sorted(assigned - self._pinned, key=lambda t: t.partition):
            try:
                known = await self.consumer.committed(tp)
                if known is None:
                    known = (fetched[tp][0].offset if fetched.get(tp)
                             else await self.consumer.position(tp))
                    await self.consumer.commit({tp: OffsetAndMetadata(known, "")})
                    log.info("consume %s: partition %d had no committed offset; starts at %d",
                             self.options.format, tp.partition, known)
                self._committed[tp] = known
            except (CommitFailedError, KafkaError) as exc:
                log.warning("consume %s: partition %d: start not committed yet (%s)",
                            self.options.format, tp.partition, type(exc).__name__)
                continue
            self._pinned.add(tp)

    async def _commit_skipped(self) -> None:
        """Nothing was returned: every record returned before is taken and committed, so a
        position past the last commit only stepped over what is no input (a transaction's
        commit marker, aborted records). Commit it, or the lag would never reach 0."""
        assert self.consumer is not None
        for tp in self.consumer.assignment() & self._pinned:
            known = self._committed.get(tp)
            position = await self.consumer.position(tp)
            if known is None or position <= known:
                continue
            try:
                await self.consumer.commit({tp: OffsetAndMetadata(position, "")})
            except (CommitFailedError, KafkaError) as exc:
                log.warning("consume %s: partition %d: position not committed (%s)",
                            self.options.format, tp.partition, type(exc).__name__)
                continue
            self._committed[tp] = position
            self.progress.committed[tp.partition] = position

    async def _idle(self, seconds: float) -> None:
        """Wait, staying in the group and reporting progress; a stop ends it (uncommitted)."""
        deadline = time.monotonic() + seconds
        while True:
            if self.stopping.is_set():
                raise _Stop()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.5))
            await self._maybe_progress()

    async def _maybe_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.consumer is None or (not force
                                     and now - self._last_progress < self.options.progress_s):
            return
        self._last_progress = now
        await self._measure_lag()
        log.info("%s", self.progress.line())

    async def _measure_lag(self) -> None:
        assert self.consumer is not None
        try:
            self.progress.lag = await group_lag(self.options.kafka, self.consumer,
                                                self.options.topic)
        except (KafkaError, OSError, TimeoutError) as exc:  # the broker may be down too
            log.warning("consume %s: lag unknown: %s", self.options.format, type(exc).__name__)


def default_group(settings: Settings, fmt: str, topic: str) -> str:
    """One group per format and topic, apart from the workers' and the ERP connectors'."""
    return consume_group(settings.app_id, fmt, topic)


def _own_topics(settings: Settings) -> set[str]:
    """Topics rcmflow itself writes: consuming one would feed the consumer its own output."""
    return {spec.name for spec in topic_specs(settings.app_id)}


async def _check_topic(kafka: KafkaConnection, topic: str) -> str | None:
    """None when the topic exists; else the one-line reason it cannot be read (a broker that
    cannot be reached raises: KafkaError / OSError / TimeoutError)."""
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its own connection errors: ours is the one line
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), 30)
        # Listed first: Tansu creates a topic that a metadata request names.
        exists = topic in await asyncio.wait_for(admin.list_topics(), 30)
    finally:
        await admin.close()
        quiet.setLevel(level)
    if not exists or not await asyncio.wait_for(topic_partitions(kafka, topic), 30):
        return f"topic {topic!r} does not exist on {kafka.describe()} (check --topic)"
    return None


def _handler(settings: Settings, fmt: Format, sink: Sink, *, channel: str, currency: str,
             intake: Intake | None) -> Handler:
    """The format's connector code, with the settings' bounds (the file paths' own)."""
    payload_max = settings.dlq_payload_bytes_max
    if fmt == "hl7":
        from rcmflow.connectors.inbound.hl7.batch import HL7_FILE_BYTES_MAX

        assert intake is not None
        return Hl7Handler(intake, sink, record_bytes_max=HL7_FILE_BYTES_MAX,
                          payload_bytes_max=payload_max)
    unit: UnitFn
    if fmt == "x12":
        from rcmflow.connectors.inbound.x12.files import limits_from as x12_limits
        from rcmflow.connectors.inbound.x12.ingest import process_x12

        x12 = x12_limits(settings)

        def unit(r: Incoming) -> Sequence[Outgoing]:
            return list(process_x12(r.value or b"", origin=r.origin, limits=x12).records(x12))

        bytes_max, setting = settings.x12_file_bytes_max, "RCMFLOW_X12_FILE_BYTES_MAX"
    elif fmt == "fhir":
        from rcmflow.connectors.inbound.fhir.ingest import limits_from as fhir_limits
        from rcmflow.connectors.inbound.fhir.ingest import process_fhir

        fhir = fhir_limits(settings, currency)

        def unit(r: Incoming) -> Sequence[Outgoing]:
            value = r.value or b""
            name = "record.ndjson" if _looks_ndjson(value) else "record.json"
            return process_fhir(value, name=name, origin=r.origin,
                                limits=fhir).records(fhir.dlq_payload_bytes_max)

        bytes_max, setting = settings.fhir_file_bytes_max, "RCMFLOW_FHIR_FILE_BYTES_MAX"
    elif fmt == "payments":
        from rcmflow.connectors.inbound.payments.ingest import process_payments
        from rcmflow.streams.date_window import DateWindow

        window = DateWindow.from_settings(settings)

        def unit(r: Incoming) -> Sequence[Outgoing]:
            return process_payments(r.value or b"", name="", origin=r.origin, channel=channel,
                                    rows_max=settings.payments_rows_max,
                                    date_window=window).records(payload_max)

        bytes_max, setting = settings.payments_file_bytes_max, "RCMFLOW_PAYMENTS_FILE_BYTES_MAX"
    else:
        from rcmflow.connectors.inbound.events import INGEST_FILE_BYTES_MAX, key_document

        def unit(r: Incoming) -> Sequence[Outgoing]:
            return key_document(
                r.value or b"", line_bytes_max=settings.event_bytes_max,
                payload_bytes_max=payload_max,
                where=f"{r.topic} partition {r.partition} offset {r.offset}",
                origin=Origin(topic=r.topic, partition=r.partition, offset=r.offset,
                              key=None if r.key is None else r.key.decode("utf-8", "replace")))

        bytes_max, setting = INGEST_FILE_BYTES_MAX, "2 GiB"
    return RecordsHandler(fmt, sink, unit, bytes_max=bytes_max, bytes_setting=setting,
                          payload_bytes_max=payload_max)


def _looks_ndjson(value: bytes) -> bool:
    """Several lines, each a JSON object of its own (a pretty-printed resource has lines that
    start otherwise); one line is read as a resource or a Bundle."""
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    return len(lines) > 1 and all(line.startswith(b"{") for line in lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:200]


async def _consume(settings: Settings, kafka: KafkaConnection, options: ConsumeOptions,
                   channel: str, currency: str) -> ExitCode:
    from rcmflow.connectors.inbound.hl7.intake import KafkaSink, raw_record_bytes_max
    from rcmflow.connectors.inbound.hl7.replay import ReplayStore
    from rcmflow.connectors.inbound.hl7.service import new_intake, replay_dir

    reason = await _check_topic(kafka, options.topic)
    if reason is not None:
        log.error("%s", reason)
        return ExitCode.REFUSED
    # The HL7 intake's producer for every format: acks=all, requests sized for the largest
    # accepted HL7 message; RCMFLOW_PRODUCE_TIMEOUT_S bounds the wait for a batch's acks.
    sink = KafkaSink(kafka, settings.produce_timeout_s, raw_record_bytes_max(
        settings.mllp_message_bytes_max, settings.hl7_ft1_max))
    store = intake = None
    if options.format == "hl7":
        # This group's own replay memory (one process per group and data dir).
        store = ReplayStore(replay_dir(settings, f"consume-{_safe(options.group_id)}"),
                            settings.hl7_replay_retention_s)
        intake = new_intake(settings, sink, store, f"kafka:{options.topic}")
    try:
        await sink.start()
        handler = _handler(settings, options.format, sink, channel=channel,
                           currency=currency, intake=intake)
        consumer = TopicConsumer(handler, options)
        if options.metrics_port:
            registry = new_registry(lambda: consume_families(consumer.progress))
            try:
                bound = serve(registry, options.metrics_host, options.metrics_port)
            except OSError as exc:
                log.error("%s", exc)
                return ExitCode.REFUSED
            log.info("consume %s: metrics on %s", options.format,
                     url(options.metrics_host, bound))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stopping.set)
        return await consumer.run()
    finally:
        await sink.stop()
        if store is not None:
            store.close()


def run_consume(settings: Settings, kafka: KafkaConnection, fmt: Format, topic: str, *,
                group: str | None = None, from_beginning: bool = False,
                idle_exit_s: float | None = None, metrics_port: int | None = None,
                channel: str = "lockbox", faults: Faults = NO_FAULTS) -> ExitCode:
    """`rcmflow consume FORMAT --topic T`: runs until SIGINT/SIGTERM (or ``idle_exit_s``);
    returns the exit code (``ExitCode``: OK stopped, REFUSED setup error, BROKER).
    ``faults``: test-only."""
    from rcmflow.connectors.inbound.exceptions import ReplayStoreLocked
    from rcmflow.connectors.inbound.hl7.service import mapping_config
    from rcmflow.streams.chart import load_chart

    logging.getLogger("rcmflow").setLevel(
        {"warn": "WARNING"}.get(settings.log_level, settings.log_level.upper()))
    if topic in _own_topics(settings):
        log.error("%s is a topic rcmflow writes: consuming it would read its own output "
                  "(canonical events on rcm.events are the worker's input already)", topic)
        return ExitCode.REFUSED
    try:  # settings the connectors need, checked before anything is read
        mapping_config(settings)
        currency = load_chart(settings.coa).currency
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return ExitCode.REFUSED
    options = ConsumeOptions(
        kafka=kafka, format=fmt, topic=topic,
        group_id=group or default_group(settings, fmt, topic),
        from_beginning=from_beginning, batch_max=settings.consume_batch_max,
        retry_max=settings.consume_retry_max, backoff_max_s=settings.consume_backoff_max_s,
        progress_s=settings.consume_progress_s, idle_exit_s=idle_exit_s,
        session_timeout_s=settings.session_timeout_s, metrics_host=settings.metrics_host,
        metrics_port=settings.consume_metrics_port if metrics_port is None else metrics_port,
        faults=faults)
    try:
        return asyncio.run(_consume(settings, kafka, options, channel, currency))
    except (ReplayStoreLocked, ValueError) as exc:  # a store held, a bad chart or setting
        log.error("%s", exc)
        return ExitCode.REFUSED
    except (KafkaError, OSError, TimeoutError) as exc:
        text = str(exc) or type(exc).__name__  # KafkaError's text starts with its name
        log.error("the broker %s is unreachable: %s", kafka.describe(), text)
        return ExitCode.BROKER
