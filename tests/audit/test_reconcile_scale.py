"""`rcmflow reconcile` on a long history: memory bounded by what it keeps, progress shown.

The history is the benchmark's (``bench.reconcile_memory.fill``): canonical events with
replays, the processor's deltas and account heads and items as the worker writes them, and
the connectors' raw records with their source totals, on the real broker.
"""

from __future__ import annotations

import asyncio
import io
import tracemalloc

import pytest
from rich.console import Console

from bench.reconcile_memory import fill
from rcmflow.audit.reconcile import reconcile
from rcmflow.streams.chart import load_chart
from tests.conftest import Broker

pytestmark = pytest.mark.broker
CHART = load_chart()
#: 20,000 events over 500 accounts: ~16,000 posting ids, 40 events per account.
EVENTS, ACCOUNTS = 20_000, 500
#: What reconcile may hold at its peak (Python allocations, tracemalloc): what it keeps per
#: posting id, account-day and listed source event (~0.5 KB together: ~8 MB here) plus one
#: replay batch, one read batch and the modules it imports on first use. Reading each
#: partition whole and replaying it in one batch (before) peaked at ~107 MB here.
PEAK_BYTES_MAX = 60 * 1024 * 1024


@pytest.mark.brokers("tansu")
def test_memory_is_bounded_by_what_is_kept_not_by_the_history(broker: Broker) -> None:
    """On Tansu only: what is measured is reconcile's own memory (tracemalloc, Python
    allocations) over a long history, which the broker does not change; reading every topic
    on both brokers is the next test's, and the other reconcile tests' (test_reconcile.py)."""
    asyncio.run(fill(broker.connection, EVENTS, ACCOUNTS, replay_ratio=0.05))
    tracemalloc.start()
    try:
        report = asyncio.run(reconcile(broker.connection, CHART))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.errors == 0, report.findings[:5]
    assert report.counts["event_records"] == EVENTS
    assert report.counts["postings"] == report.counts["postings_expected"] > 15_000
    assert report.counts["source_events_found"] == report.counts["source_events_listed"] > 0
    assert peak < PEAK_BYTES_MAX, f"peak {peak / 2**20:.0f} MiB"


def test_a_run_in_a_log_shows_its_progress(broker: Broker) -> None:
    asyncio.run(fill(broker.connection, 2_000, 100, replay_ratio=0.05))
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    report = asyncio.run(reconcile(broker.connection, CHART, console=console,
                                   progress_every_s=0))
    assert report.errors == 0
    lines = out.getvalue().splitlines()
    for topic in ("rcm.raw.hl7", "rcm.raw.payments", "rcm.events", "rcm.postings",
                  "rcm.accounts"):
        done = [line for line in lines if line.startswith(f"reading {topic}: done, ")]
        assert done and "(100%)" in done[-1], (topic, lines[-20:])
    assert any(line.startswith("comparing: done, ") for line in lines)
    events = next(line for line in lines if line.startswith("reading rcm.events: done"))
    assert "2,000 records of 2,000 records" in events
