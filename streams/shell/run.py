"""`rcmflow worker`: checks what a worker needs, then hands the process to Faust's Worker."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
from typing import Protocol

from rcmflow.runtime import metrics
from rcmflow.runtime.broker import ensure_topics
from rcmflow.runtime.exceptions import BrokerNotFound, KafkaAccessError, TopicCreateDenied
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.faults import NO_FAULTS, Faults
from rcmflow.runtime.kafka_access import worker_access
from rcmflow.runtime.kafka_preflight import access_error, preflight
from rcmflow.runtime.settings import EMBEDDED_PREFIX, Settings
from rcmflow.streams.chart import load_chart
from rcmflow.streams.exceptions import (
    ChartError,
    FeeScheduleError,
    RefundPolicyError,
    UpgradeNeeded,
)
from rcmflow.streams.fee_schedule import load_fee_schedule
from rcmflow.streams.refund_policy import load_refund_policy
from rcmflow.streams.shell.worker import build_worker, claim_worker_dir, worker_families
from rcmflow.streams.topics import topic_specs

__all__ = ["run_worker", "exit_when_a_crash_hangs", "CRASH_EXIT_GRACE_S"]

log = logging.getLogger("rcmflow.worker")

GC_THRESHOLDS = (20_000, 20, 50)
#: A crashed worker still running this long after the crash is ended (exit 1). Faust's
#: shutdown can hang on its consumer thread while the broker is down, and a worker stuck so
#: stays in the group: the group keeps its partitions there and nothing is read until a
#: person kills it (a fault run found this: seed 282 on Apache Kafka, RELIABILITY.md).
CRASH_EXIT_GRACE_S = 30.0


class _Crashable(Protocol):
    async def crash(self, reason: BaseException) -> None: ...


def exit_when_a_crash_hangs(app: _Crashable, grace_s: float = CRASH_EXIT_GRACE_S) -> None:
    """After ``app`` crashes, end the process if it is still alive ``grace_s`` later (a
    supervisor restarts it; its uncommitted batch is read again, as after a kill -9)."""
    crash = app.crash

    async def crash_then_exit(reason: BaseException) -> None:
        def hard_exit() -> None:
            log.error("the worker crashed (%r) and has not stopped in %.0fs: exiting",
                      reason, grace_s)
            logging.shutdown()
            os._exit(1)

        timer = threading.Timer(grace_s, hard_exit)
        timer.daemon = True
        timer.start()
        await crash(reason)

    app.crash = crash_then_exit  # type: ignore[method-assign]


def run_worker(settings: Settings, *, metrics_port: int | None = None,
               faults: Faults = NO_FAULTS) -> ExitCode:
    """``metrics_port`` (the --metrics-port option) overrides RCMFLOW_WORKER_METRICS_PORT;
    ``faults``: test-only kills and pauses (``rcmflow/runtime/faults.py``)."""
    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    try:
        url, identity = settings.resolve_broker()
        chart = load_chart(settings.coa)
        policy = load_refund_policy(settings.refund_policy)
        fees = (load_fee_schedule(settings.fee_schedule)
                if settings.fee_schedule is not None else None)
    except (BrokerNotFound, ChartError, RefundPolicyError, FeeScheduleError) as exc:
        print(f"rcmflow worker: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    if settings.processing_guarantee == "exactly_once" and identity.startswith(EMBEDDED_PREFIX):
        print("rcmflow worker: exactly_once needs Apache Kafka transactions; the embedded broker "
              "has none (its InitProducerId fails). Use at_least_once (crash-safe on its own) "
              "or set RCMFLOW_BROKER to a Kafka cluster.", file=sys.stderr)
        return ExitCode.REFUSED
    try:
        kafka = settings.kafka()
    except ValueError as exc:
        print(f"rcmflow worker: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    access = worker_access(settings.app_id,
                           exactly_once=settings.processing_guarantee == "exactly_once")
    specs = topic_specs(settings.app_id)

    async def create_topics() -> None:
        # A worker on a fresh broker creates the topics it needs, with every setting spelled
        # out (on a cluster with ACLs, those of other components only if it may).
        await ensure_topics(kafka, specs, settings.partitions, settings.replication_factor,
                            needed=access.topics)

    try:
        asyncio.run(preflight(kafka, access, prepare=create_topics))
    except KafkaAccessError as exc:
        print(f"rcmflow {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    except TopicCreateDenied as exc:
        print(f"rcmflow worker: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    datadir, _lock = claim_worker_dir(settings.tables_dir / identity, settings.worker_name)
    app, pipeline = build_worker(settings, chart, policy, datadir=datadir, measure_lag=port > 0,
                                 faults=faults, fee_schedule=fees)
    exit_when_a_crash_hangs(app)
    if port:
        try:
            bound = metrics.serve(
                metrics.new_registry(lambda: worker_families(pipeline.progress)),
                settings.metrics_host, port)
        except OSError as exc:
            print(f"rcmflow worker: {exc}", file=sys.stderr)
            return ExitCode.REFUSED
        log.info("worker metrics on %s", metrics.url(settings.metrics_host, bound))

    from faust.worker import Worker

    # Long-lived account states make every full collection expensive; almost all garbage
    # here is acyclic and freed by reference counting, so collect far less often.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    log.info("worker tables in %s, broker %s, chart %s, refund policy %s", datadir, url,
             chart.version, policy.version)
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        # An ACL removed while running, or a record of an older rcmflow (``UpgradeNeeded``):
        # Faust crashes the worker and exits 1 after a traceback; say it in one line, exit 2.
        crash = worker.crash_reason
        reason = crash if isinstance(crash, UpgradeNeeded) else \
            access_error(crash, kafka, "worker") if crash else None
        if reason is None:
            raise
        print(f"rcmflow {'worker: ' * isinstance(reason, UpgradeNeeded)}{reason}",
              file=sys.stderr)
        return ExitCode.REFUSED
    return ExitCode.OK
