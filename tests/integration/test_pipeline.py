"""The worker on the real embedded broker with real RocksDB tables: exact counts and sums."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.rules import bucket_effects, delta_amounts
from rcmflow.streams.state import LEDGER_BUCKETS
from tests.conftest import Broker, Workers, wait_until
from tests.workload import Observed, Workload

pytestmark = pytest.mark.broker


def test_stream_with_replays_and_conflicts_posts_exactly_once(
    broker: Broker, workers: Workers
) -> None:
    workload = Workload.build(accounts=300, conflicts=6, invalid=4)
    expected = workload.expected()
    workload.publish(broker.connection)
    worker = workers.start("w1")

    def done() -> bool:
        observed = Observed.read(broker.connection)
        return (len(observed.postings) >= len(expected.postings)
                and observed.dlq_reasons() == expected.dlq_reasons
                and observed.states == expected.states)

    wait_until(done, 90, "the worker to apply the stream", worker.log_tail)
    observed = Observed.read(broker.connection)
    # Exactly the deltas the pure core computes, each sent once with one content.
    assert set(observed.postings) == set(expected.postings)
    assert all(values == {expected.postings[pid]} for pid, values in observed.postings.items())
    assert sum(len(v) for v in observed.postings.values()) == len(expected.postings)
    # Replays were dropped; conflicts and invalid events answered in the DLQ.
    assert expected.dlq_reasons["conflict"] == 6
    assert expected.dlq_reasons["invalid_event"] == 4
    # Per account, the sum of the deltas equals the account table's buckets.
    ledger: dict[str, Counter[str]] = defaultdict(Counter)
    for (raw,) in observed.postings.values():
        delta = PostingDelta.model_validate_json(raw)
        ledger[delta.account].update(bucket_effects(delta_amounts(delta.lines)))
    for account, state in observed.states.items():
        for bucket in LEDGER_BUCKETS:
            assert ledger[account][bucket] == state["balances"][bucket], (account, bucket)
    assert worker.alive(), worker.log_tail()


def test_accounts_show_prints_the_buckets_by_their_names(
    broker: Broker, workers: Workers
) -> None:
    workload = Workload.build(accounts=3, replay_ratio=0, conflicts=0, invalid=0)
    workload.publish(broker.connection)
    workers.start("w1")
    wait_until(lambda: "T00001" in Observed.read(broker.connection).states, 60, "T00001")
    expected = workload.expected().states["T00001"]

    def show(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rcmflow.cli", "accounts", "show", *args],
                              env=workers.env(), capture_output=True, text=True, timeout=60)

    shown = show("T00001", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert list(doc["balances"]) == [
        "gross_charges", "payer_paid", "contractual_adjustments", "patient_responsibility",
        "other_adjustments", "denied", "patient_paid", "refunds", "write_offs",
        "insurance_ar", "patient_ar", "unapplied_credit", "interest_income",
        "payer_overpayments", "balance"]
    assert doc["balances"] == expected["balances"]
    assert all(isinstance(v, int) for v in doc["balances"].values())
    table = show("T00001")
    assert table.returncode == 0 and "gross_charges" in table.stdout
    missing = show("NOPE")
    assert missing.returncode == 1 and "no account 'NOPE'" in missing.stderr
