"""The consumer loop with a scripted adapter: retries, breaker, config errors, commits."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import date

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rcmflow.connectors.erp.base import ErpAdapter, JournalEntry, Outcome, Posted
from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError
from rcmflow.connectors.erp.runner import (
    CircuitBreaker,
    Connector,
    RunnerOptions,
    backoff_s,
    erp_families,
)
from rcmflow.runtime.broker import free_port
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.metrics import new_registry, render
from rcmflow.streams.postings import PostingDelta
from tests.conftest import Broker
from tests.connectors.erp.feed import publish_deltas, real_deltas, run_connector, run_in_process


class Scripted:
    """Fails the first ``failures`` calls with ``error``, then posts everything."""

    name = "scripted"
    batch_max = 7

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or TransientError("ERP down")
        self.posted: list[str] = []
        self.calls = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def post_batch(self, deltas: Sequence[PostingDelta]) -> list[Outcome]:
        self.calls += 1
        assert len(deltas) <= self.batch_max
        if self.calls <= self.failures:
            raise self.error
        self.posted += [d.posting_id for d in deltas]
        return [Posted(d.posting_id, f"ref-{d.posting_id}") for d in deltas]

    async def read_journal(self, *, day_from: date | None = None,
                           day_to: date | None = None) -> AsyncIterator[JournalEntry]:
        for _ in ():
            yield _


def test_backoff_and_breaker_bounds() -> None:
    rng = random.Random(1)
    assert all(0 <= backoff_s(n, 0.5, 30, rng) <= min(30, 0.5 * 2 ** n) for n in range(60))
    breaker = CircuitBreaker(failures_max=3, cooldown_s=0.2)
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed" and breaker.wait_s() == 0
    breaker.failure()
    assert breaker.state == "open" and 0 < breaker.wait_s() <= 0.2
    time.sleep(0.25)
    assert breaker.state == "half-open" and breaker.wait_s() == 0
    breaker.failure()  # the probe failed: open again
    assert breaker.state == "open"
    breaker.success()
    assert breaker.state == "closed"


def test_scripted_adapter_is_an_adapter() -> None:
    assert isinstance(Scripted(), ErpAdapter)


@pytest.mark.broker
def test_transient_failures_stall_then_everything_posts_in_order(
        broker: Broker) -> None:
    items = real_deltas(15)
    publish_deltas(broker, items)
    adapter = Scripted(failures=6)
    started = time.time()
    connector = run_connector(adapter, broker, retry_max=3)
    progress = connector.progress
    assert progress.transient_failures == 6
    assert progress.posted == len(items) and progress.lag == 0
    assert sorted(adapter.posted) == sorted(PostingDelta.model_validate_json(v).posting_id
                                            for _, v in items)
    assert len(set(adapter.posted)) == len(adapter.posted)
    assert progress.breaker == "closed"
    # The metrics: each delta by its event's kind, and its wait from rcm.postings to the ERP
    # (the outage included).
    kinds = Counter(PostingDelta.model_validate_json(v).event_kind for _, v in items)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(render(new_registry(
                   lambda: erp_families(progress, connector.breaker, connector.flow))).decode())
               for s in f.samples}
    assert {labels[1][1]: n for (name, labels), n in samples.items()
            if name == "rcmflow_erp_postings_by_kind_total"} == dict(kinds)
    assert all(dict(labels)["outcome"] == "posted" for (name, labels) in samples
               if name == "rcmflow_erp_postings_by_kind_total")
    count = samples[("rcmflow_erp_delta_to_posted_seconds_count", (("adapter", "scripted"),))]
    total = samples[("rcmflow_erp_delta_to_posted_seconds_sum", (("adapter", "scripted"),))]
    assert count == len(items) and 0 < total / count < time.time() - started + 1


@pytest.mark.broker
def test_config_error_exits_4_and_commits_nothing(broker: Broker) -> None:
    items = real_deltas(5)
    publish_deltas(broker, items)
    opts = RunnerOptions(kafka=broker.connection, group_id="erp-cfg", session_timeout_s=1.5,
                         idle_exit_s=1.5)
    bad = Connector(Scripted(failures=1, error=AdapterConfigError("bad password")), opts)
    assert asyncio.run(bad.run()) == ExitCode.ERP_CONFIG
    good = Scripted()
    progress = run_in_process(good, broker, group="erp-cfg")
    assert progress.posted == len(items)  # nothing was committed by the failed run


def test_an_unreachable_broker_exits_3_run_it_again() -> None:
    # The same code as ingest and consume give a broker that is not there: safe to re-run.
    nowhere = KafkaConnection.plaintext(f"127.0.0.1:{free_port()}")
    opts = RunnerOptions(kafka=nowhere, group_id="erp-nowhere", idle_exit_s=1.0)
    assert asyncio.run(Connector(Scripted(), opts).run()) == ExitCode.BROKER
