"""A workload's inputs, as the real connectors publish them, reconcile with their events:
`rcmflow reconcile` finds no source difference (every unit's cents equal its events', each
counted once however often it was re-sent, a conflicting re-send never standing for the
original). No worker runs: only the source causes are asserted (tests/audit for the rest)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rcmflow.audit.reconcile import reconcile
from rcmflow.runtime.kafka_io import publish
from rcmflow.streams.chart import load_chart
from tests.chaos.real_path import run_real
from tests.chaos.workload import generate
from tests.conftest import Broker

pytestmark = pytest.mark.broker


#: Seeds 2 and 5 re-send a conflicting input whose raw record sits in a partition read before
#: the original's (8 partitions): reconcile counted the re-send's cents before it ordered by time.
@pytest.mark.parametrize("seed", [2, 5])
def test_a_workloads_sources_reconcile_with_its_events(seed: int, broker: Broker,
                                                       tmp_path: Path) -> None:
    observed = asyncio.run(run_real(generate(seed), tmp_path / "replay"))
    for phase in observed.phases:  # one publish per phase: later phases, later timestamps
        asyncio.run(publish(broker.connection, phase))
    report = asyncio.run(reconcile(broker.connection, load_chart()))
    found = [(f.cause, f.account, f.day, f.amount_cents) for f in report.ordered()
             if f.cause.startswith("source_")]
    assert found == []
    assert report.counts["source_events_found"] == report.counts["source_events_listed"]
