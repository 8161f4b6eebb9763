"""`rcmflow erp ADAPTER`: rcm.postings -> one ERP, exactly once per posting id.

The loop, per fetched batch and per partition, in offset order:

1. decode each record as a ``PostingDelta`` (a record that is not one goes to the DLQ);
2. send up to ``batch_max`` deltas to the adapter; a ``TransientError`` or a timeout is
   retried with exponential backoff and full jitter (each attempt bounded by
   ``erp_timeout_s``); ``erp_retry_max`` consecutive failures open the circuit breaker, which
   then lets one probe through per ``erp_breaker_cooldown_s``. There is no give-up: while the
   ERP is down the connector stalls on the same deltas and its lag grows (the
   ``rcmflow_erp_lag_records`` metric, the progress log and the status file); nothing is
   skipped or dropped;
3. rejected deltas go to rcm.postings.dlq with the ERP's text and the business context, and
   the connector waits for the broker's ack;
4. only then is the partition's offset committed (last record + 1).

A kill at any instant therefore leaves the offset at or before the first delta whose fate
is not durable; on restart those deltas are sent again and the ERP's duplicate guard answers
``AlreadyThere`` (counted, not posted twice). A DLQ record may be written twice in that
window; it has the same ``dlq_id`` both times.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from pydantic import ValidationError

from rcmflow.connectors.erp.base import ErpAdapter, Outcome, Rejected
from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.faults import NO_FAULTS, Faults, kill_this_process
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_preflight import ACCESS_ERRORS, access_error
from rcmflow.runtime.metrics import (
    BoundedLabel,
    Histogram,
    Metric,
    counter,
    gauge,
    histogram,
    new_registry,
    serve,
    url,
)
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.rejections import Problem, Rejection
from rcmflow.streams.topics import ERP_OUTCOMES, OUTPUT_RECORD_BYTES_MAX, POSTINGS, POSTINGS_DLQ

__all__ = ["RunnerOptions", "Progress", "Flow", "CircuitBreaker", "run_connector", "backoff_s",
           "erp_families", "rejection"]

log = logging.getLogger("rcmflow.erp")

#: What an rcm.postings.dlq record keeps of the ERP's answer and of the delta.
REASON_CHARS_MAX = 4000
DLQ_PAYLOAD_BYTES_MAX = 4 * 1024 * 1024


@dataclass(frozen=True)
class RunnerOptions:
    kafka: KafkaConnection
    group_id: str
    #: Deltas per adapter call (capped again by the adapter's own ``batch_max``).
    batch_max: int = 100
    #: Longest one adapter call may take; past it the attempt counts as a transient failure.
    timeout_s: float = 30.0
    #: Consecutive failed attempts before the circuit breaker opens.
    retry_max: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    breaker_cooldown_s: float = 30.0
    #: How often progress (counters, lag, breaker state) is logged and written.
    progress_s: float = 10.0
    status_file: Path | None = None
    #: Serve /metrics on metrics_host:metrics_port; 0: no endpoint.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    #: Stop after this many seconds without records and zero lag (tests, benchmarks); None: run.
    idle_exit_s: float | None = None
    session_timeout_s: float = 10.0
    #: Test-only: ``erp_kill_after`` / ``erp_kill_before`` kill the process after / before
    #: that many ERP calls; ``break_erp_commit_first`` commits before the ERP call.
    faults: Faults = NO_FAULTS


@dataclass
class Progress:
    adapter: str
    posted: int = 0
    already_there: int = 0
    rejected: int = 0
    invalid: int = 0
    transient_failures: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    lag: int | None = None
    breaker: str = "closed"
    stalled_since_s: float | None = None
    #: Unix time of the last offset commit (the ERP had taken every delta before it).
    last_commit_at_s: float | None = None
    updated_at_s: float = 0.0

    def line(self) -> str:
        stalled = (f" stalled {time.time() - self.stalled_since_s:.0f}s"
                   if self.stalled_since_s else "")
        return (f"erp {self.adapter}: posted {self.posted}, already there "
                f"{self.already_there}, rejected {self.rejected}, invalid {self.invalid}, "
                f"transient failures {self.transient_failures}, lag {self.lag}, "
                f"breaker {self.breaker}{stalled}")

    def write(self, path: Path | None) -> None:
        """Atomically replace the status file (a metric a scraper or a test can read)."""
        self.updated_at_s = time.time()
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)


@dataclass
class Flow:
    """What the metrics keep beside ``Progress`` (which is the JSON status file): outcomes by
    event kind and the delta -> ERP latency."""

    adapter: str
    #: (event kind, outcome: posted | already_there | rejected) -> deltas.
    by_kind: dict[tuple[str, str], int] = field(default_factory=dict)
    #: The rcm.postings record's timestamp (the worker wrote the delta) -> the ERP accepted
    #: it as a new posting, seconds.
    latency: Histogram = field(default_factory=Histogram)
    #: ``event_kind`` is a string in the record: bounded like any input.
    kinds: BoundedLabel = field(default_factory=BoundedLabel)

    def note(self, record_timestamp_ms: int | None, kind: str, outcome: str,
             now_s: float) -> None:
        key = (self.kinds(kind), outcome)
        self.by_kind[key] = self.by_kind.get(key, 0) + 1
        if outcome == "posted" and record_timestamp_ms is not None and record_timestamp_ms > 0:
            self.latency.observe(max(0.0, now_s - record_timestamp_ms / 1000),
                                 (self.adapter,))


def erp_families(progress: Progress, breaker: CircuitBreaker,
                 flow: Flow | None = None) -> list[Metric]:
    """The connector's metrics, read from its progress at scrape time (another thread: each
    read is of one int or float, and a scrape a moment stale is fine)."""
    at = {"adapter": progress.adapter}
    flow = flow or Flow(progress.adapter)
    return [
        gauge("rcmflow_erp_lag_records", "rcm.postings records not yet committed by this "
              "connector's group (measured every RCMFLOW_ERP_PROGRESS_S; NaN: not yet known)",
              [(at, progress.lag)]),
        counter("rcmflow_erp_posted", "Deltas the ERP accepted as new postings",
                [(at, progress.posted)]),
        counter("rcmflow_erp_already_there", "Deltas the ERP already had (re-sent after a "
                "restart; its duplicate guard answered, nothing posted twice)",
                [(at, progress.already_there)]),
        counter("rcmflow_erp_dlq", "Records sent to rcm.postings.dlq: ERP rejections and "
                "records that are no posting delta", [(at, progress.rejected + progress.invalid)]),
        counter("rcmflow_erp_transient_failures", "Failed ERP attempts (outage, timeout); "
                "each one is retried, nothing is skipped", [(at, progress.transient_failures)]),
        gauge("rcmflow_erp_circuit_open", "1 while the circuit breaker is open (the ERP keeps "
              "failing; one probe per cooldown), else 0",
              [(at, 0 if breaker.opened_at_s is None else 1)]),
        gauge("rcmflow_erp_last_commit_timestamp_seconds", "Unix time of the last offset "
              "commit (every delta before it is in the ERP or the DLQ); NaN: none yet",
              [(at, progress.last_commit_at_s)]),
        counter("rcmflow_erp_postings_by_kind", "Deltas by the kind of event that made them "
                "and what the ERP answered: posted, already_there (its duplicate guard), "
                "rejected (to rcm.postings.dlq). Claim-to-ledger completion: against "
                "rcmflow_worker_postings_by_kind",
                [(at | {"kind": kind, "outcome": outcome}, n)
                 for (kind, outcome), n in list(flow.by_kind.items())]),
        histogram("rcmflow_erp_delta_to_posted_seconds", "From the rcm.postings record's "
                  "timestamp (the worker wrote the delta) to the ERP accepting it as a new "
                  "posting", ["adapter"], flow.latency),
    ]


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**attempt)]."""
    return rng.uniform(0, min(max_s, base_s * (2 ** min(attempt, 30))))


class CircuitBreaker:
    """closed -> (retry_max consecutive failures) -> open -> (cooldown) -> half-open probe."""

    def __init__(self, failures_max: int, cooldown_s: float) -> None:
        self.failures_max = failures_max
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at_s: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at_s is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at_s >= self.cooldown_s else "open"

    def wait_s(self) -> float:
        if self.opened_at_s is None:
            return 0.0
        return max(0.0, self.cooldown_s - (time.monotonic() - self.opened_at_s))

    def success(self) -> None:
        self.failures, self.opened_at_s = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failures_max:
            self.opened_at_s = time.monotonic()  # (re)open; the next probe after the cooldown


class _Stop(Exception):
    pass


class Connector:
    def __init__(self, adapter: ErpAdapter, options: RunnerOptions) -> None:
        self.adapter = adapter
        self.options = options
        self.progress = Progress(adapter.name)
        self.flow = Flow(adapter.name)
        self.breaker = CircuitBreaker(options.retry_max, options.breaker_cooldown_s)
        self.rng = random.Random()
        self.stopping = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._last_progress = 0.0
        self._calls = 0
        self._attempts = 0  # ERP calls begun, retries included (``erp_kill_before``)
        self._kill_after = options.faults.erp_kill_after

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> ExitCode:
        opts = self.options
        self.consumer = AIOKafkaConsumer(
            POSTINGS, **opts.kafka.client_options(), group_id=opts.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=int(opts.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(opts.session_timeout_s * 1000 / 3)),
            # Never leave the group for being slow: a stall on a down ERP may last hours.
            max_poll_interval_ms=24 * 3600 * 1000,
            fetch_max_wait_ms=200,
            # Under exactly_once a delta is read once its worker's transaction commits, and a
            # delta of an aborted transaction never reaches the ERP (its re-send would).
            isolation_level="read_committed")
        self.producer = AIOKafkaProducer(**opts.kafka.client_options(), acks="all",
                                         max_request_size=OUTPUT_RECORD_BYTES_MAX,
                                         linger_ms=5)
        log.debug("erp %s: starting", self.adapter.name)
        await self.adapter.open()
        try:
            await self.producer.start()
            await self.consumer.start()
            log.info("erp %s: consuming %s as group %s", self.adapter.name, POSTINGS,
                     opts.group_id)
            idle_since = time.monotonic()
            while not self.stopping.is_set():
                fetched = await self.consumer.getmany(
                    timeout_ms=500, max_records=opts.batch_max * 10)
                for tp, records in sorted(fetched.items(), key=lambda kv: kv[0].partition):
                    await self._partition(tp, records)
                if fetched:
                    idle_since = time.monotonic()
                await self._maybe_progress()
                if (opts.idle_exit_s is not None and not fetched
                        and time.monotonic() - idle_since > opts.idle_exit_s):
                    await self._maybe_progress(force=True)
                    if self.progress.lag == 0:
                        break
            return ExitCode.OK
        except _Stop:
            return ExitCode.OK
        except ACCESS_ERRORS as exc:
            # A permission removed while running: no retry heals it.
            log.error("erp %s: stopping (nothing committed past the last accepted delta): %s",
                      self.adapter.name, access_error(exc, opts.kafka, f"erp {self.adapter.name}"))
            return ExitCode.REFUSED
        except KafkaError as exc:
            log.error("erp %s: broker unreachable or failing, stopping (nothing committed past "
                      "the last accepted delta): %s", self.adapter.name, exc)
            return ExitCode.BROKER
        except AdapterConfigError as exc:
            log.error("erp %s: configuration error, stopping (nothing committed past the "
                      "last accepted delta): %s", self.adapter.name, exc)
            return ExitCode.ERP_CONFIG
        finally:
            await self._maybe_progress(force=True)
            await self.adapter.close()
            await self.consumer.stop()
            await self.producer.stop()

    async def _partition(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]
                         ) -> None:
        size = max(1, min(self.options.batch_max, self.adapter.batch_max))
        # The test-only break (Faults.break_erp_commit_first) commits before the ERP call.
        commit_first = self.options.faults.break_erp_commit_first
        for start in range(0, len(records), size):
            chunk = records[start:start + size]
            if not commit_first:
                await self._chunk(tp, chunk)
            if not await self._commit(tp, chunk):
                return
            if commit_first:
                await self._chunk(tp, chunk)

    async def _commit(self, tp: TopicPartition, chunk: list[ConsumerRecord[Any, Any]]) -> bool:
        """Commit past ``chunk``; False: not committed, the consumer is back at its start."""
        assert self.consumer is not None
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(chunk[-1].offset + 1, "")})
        except ACCESS_ERRORS:
            raise  # the group's READ ACL is gone: re-reading would loop for ever
        except (CommitFailedError, KafkaError) as exc:
            # Either the partition moved (rebalance: its new owner re-reads from the last
            # commit) or the broker hiccuped. Never go on past an uncommitted chunk: seek
            # back to it, so it is read and sent again (the ERP answers AlreadyThere).
            log.warning("erp %s: commit on %s failed (%s); re-reading from offset %d",
                        self.adapter.name, tp, exc, chunk[0].offset)
            if tp in self.consumer.assignment():
                self.consumer.seek(tp, chunk[0].offset)
            return False
        self.progress.committed[str(tp.partition)] = chunk[-1].offset + 1
        self.progress.last_commit_at_s = time.time()
        return True

    async def _chunk(self, tp: TopicPartition, chunk: list[ConsumerRecord[Any, Any]]) -> None:
        deltas: list[tuple[ConsumerRecord[Any, Any], PostingDelta]] = []
        dlq: list[tuple[ConsumerRecord[Any, Any], Rejection, PostingDelta | None]] = []
        for record in chunk:
            try:
                delta = PostingDelta.model_validate_json(record.value or b"")
            except ValidationError as exc:
                first = exc.errors()[0]
                place = ".".join(str(part) for part in first["loc"])
                dlq.append((record, Rejection.of("posting", [Problem(
                    reason_code="invalid_delta", place=place,
                    detail=f"not a posting delta: {first['loc']}: {first['msg']}")]), None))
                self.progress.invalid += 1
                continue
            deltas.append((record, delta))
        outcomes = await self._post_with_retry([d for _, d in deltas]) if deltas else []
        assert len(outcomes) == len(deltas), "adapter returned a wrong number of outcomes"
        now_s = time.time()
        for (record, delta), outcome in zip(deltas, outcomes, strict=True):
            assert outcome.posting_id in (delta.posting_id, ""), "outcome for another delta"
            self.flow.note(record.timestamp, delta.event_kind, outcome.kind, now_s)
            if outcome.kind == "posted":
                self.progress.posted += 1
            elif outcome.kind == "already_there":
                self.progress.already_there += 1
            else:
                assert isinstance(outcome, Rejected)
                self.progress.rejected += 1
                dlq.append((record, rejection(outcome), delta))
        await self._send_outcomes(deltas, outcomes, now_s)
        already = sum(1 for o in outcomes if o.kind == "already_there")
        if already:
            log.info("erp %s: %d of %d deltas were already in the ERP (re-sent after a "
                     "restart; not posted again)", self.adapter.name, already, len(outcomes))
        if dlq:
            await self._send_dlq(dlq)

    async def _post_with_retry(self, deltas: Sequence[PostingDelta]) -> list[Outcome]:
        attempt = 0
        while True:
            wait = self.breaker.wait_s()
            if wait > 0:
                self.progress.breaker = "open"
                await self._idle(wait)
            self.progress.breaker = self.breaker.state
            self._attempts += 1
            if self._attempts == self.options.faults.erp_kill_before:
                kill_this_process(f"erp_kill_before={self._attempts}")
            try:
                outcomes = await asyncio.wait_for(self.adapter.post_batch(deltas),
                                                  self.options.timeout_s)
            except (TransientError, TimeoutError) as exc:
                attempt += 1
                self.progress.transient_failures += 1
                if self.progress.stalled_since_s is None:
                    self.progress.stalled_since_s = time.time()
                was = self.breaker.state
                self.breaker.failure()
                what = str(exc) or type(exc).__name__
                if self.breaker.state != was and self.breaker.state == "open":
                    log.error("erp %s: circuit open after %d failed attempts (%s); probing "
                              "every %.0fs, nothing is skipped", self.adapter.name,
                              self.breaker.failures, what, self.breaker.cooldown_s)
                else:
                    log.warning("erp %s: attempt %d failed: %s", self.adapter.name, attempt,
                                what)
                if self.breaker.state == "closed":
                    await self._idle(backoff_s(attempt, self.options.backoff_base_s,
                                               self.options.backoff_max_s, self.rng))
                continue
            if self.progress.stalled_since_s is not None:
                log.warning("erp %s: ERP answers again after %.0fs", self.adapter.name,
                            time.time() - self.progress.stalled_since_s)
            self.breaker.success()
            self.progress.breaker = "closed"
            self.progress.stalled_since_s = None
            self._calls += 1
            if self._calls == self._kill_after:
                kill_this_process(f"erp_kill_after={self._calls}")
            return outcomes

    async def _idle(self, seconds: float) -> None:
        """Wait while keeping the group membership alive and progress (lag) reported."""
        deadline = time.monotonic() + seconds
        while True:
            if self.stopping.is_set():
                raise _Stop()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 1.0))
            await self._maybe_progress()

    async def _send_outcomes(self, deltas: list[tuple[ConsumerRecord[Any, Any], PostingDelta]],
                             outcomes: list[Outcome], now_s: float) -> None:
        """One rcm.erp.outcomes record per delta (what this ERP did with it, and when), acked
        before the chunk is committed: a delta re-read after a crash gets one again (its
        outcome then ``already_there``). Read by `rcmflow trace`; nothing depends on it."""
        assert self.producer is not None
        at = datetime.fromtimestamp(now_s, tz=UTC).isoformat(timespec="milliseconds")
        futures = [await self.producer.send(ERP_OUTCOMES, key=delta.posting_id.encode(),
                                            value=orjson.dumps({
            "posting_id": delta.posting_id, "adapter": self.adapter.name,
            "account": delta.account, "outcome": outcome.kind, "at": at,
            **({"erp_ref": outcome.erp_ref} if not isinstance(outcome, Rejected) else {})}))
            for (_, delta), outcome in zip(deltas, outcomes, strict=True)]
        await asyncio.gather(*futures)

    async def _send_dlq(
        self, items: list[tuple[ConsumerRecord[Any, Any], Rejection, PostingDelta | None]]
    ) -> None:
        assert self.producer is not None
        futures = []
        for record, refused, delta in items:
            context: dict[str, Any] = {"adapter": self.adapter.name,
                                       "erp_error": refused.reason_code}
            if delta is not None:
                context |= {
                    "posting_id": delta.posting_id, "account": delta.account,
                    "entity": delta.entity, "event_id": delta.event_id,
                    "event_kind": delta.event_kind, "correlation_id": delta.correlation_id,
                    "amount_cents": delta.total_cents,
                    "effective_date": delta.effective_date.isoformat(),
                    "gl_accounts": sorted({line.gl_account for line in delta.lines}),
                }
            key = record.key.decode("utf-8", "replace") if record.key else None
            # Bounded to fit rcm.postings.dlq (the origin names the delta on rcm.postings).
            dlq = dlq_record(
                refused,
                origin=Origin(topic=record.topic, partition=record.partition,
                              offset=record.offset, key=key),
                payload=record.value or b"", context=context, discriminator=self.adapter.name,
                payload_bytes_max=DLQ_PAYLOAD_BYTES_MAX)
            futures.append(await self.producer.send(
                POSTINGS_DLQ, key=record.key, value=dlq.model_dump_json().encode()))
            log.warning("erp %s: posting %s (account %s) to %s: %s", self.adapter.name,
                        context.get("posting_id", "?"), key, POSTINGS_DLQ, refused.reason_code)
        await asyncio.gather(*futures)

    async def _maybe_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < self.options.progress_s:
            return
        self._last_progress = now
        try:
            self.progress.lag = await self._lag()
        except (KafkaError, OSError, TimeoutError) as exc:  # the broker may be down too
            log.warning("erp %s: lag unknown: %s", self.adapter.name, exc)
        log.info("%s", self.progress.line())
        self.progress.write(self.options.status_file)

    async def _lag(self) -> int | None:
        """Σ over partitions (true log end − committed offset of this group); None: unknown."""
        from rcmflow.runtime.kafka_io import group_lag

        assert self.consumer is not None
        return await group_lag(self.options.kafka, self.consumer, POSTINGS)


def rejection(rejected: Rejected) -> Rejection:
    """An adapter's ``Rejected`` as the core's rejection value (stage "posting"), what
    rcm.postings.dlq records: one problem, the delta as a whole, in the ERP's words cut to
    ``REASON_CHARS_MAX`` (an ERP may answer with a whole HTML page)."""
    return Rejection.of("posting", [Problem(reason_code=rejected.code,
                                            detail=rejected.reason[:REASON_CHARS_MAX])])


async def run_connector(adapter: ErpAdapter, options: RunnerOptions) -> ExitCode:
    """Run until SIGTERM/SIGINT (or idle_exit_s); returns the exit code."""
    connector = Connector(adapter, options)
    if options.metrics_port:
        registry = new_registry(lambda: erp_families(connector.progress, connector.breaker,
                                                     connector.flow))
        try:
            port = serve(registry, options.metrics_host, options.metrics_port)
        except OSError as exc:
            log.error("erp %s: %s", adapter.name, exc)
            return ExitCode.REFUSED
        log.info("erp %s: metrics on %s", adapter.name, url(options.metrics_host, port))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, connector.stopping.set)
    return await connector.run()
