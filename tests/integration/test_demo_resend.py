"""The README's "rcmflow demo > day.jsonl && rcmflow ingest events day.jsonl": what a re-send
of the demo day does, through a real worker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rcmflow.cli.demo import demo_lines
from rcmflow.cli.dev import _expected_versions
from rcmflow.ops.accounts import dlq_records, latest_heads
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.chart import load_chart
from rcmflow.streams.topics import DLQ, POSTINGS
from tests.conftest import Broker, Workers, wait_until

pytestmark = pytest.mark.broker


def _rcmflow(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(RCMFLOW_BROKER=broker.url)
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env, text=True,
                          capture_output=True, timeout=120)


def test_a_resent_demo_day_changes_no_account_and_makes_no_new_exception(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    kafka = broker.connection
    worker = workers.start("w1")
    day = tmp_path / "day.jsonl"
    printed = _rcmflow(broker, "demo")
    assert printed.returncode == 0, printed.stderr
    day.write_text(printed.stdout)
    expected = _expected_versions(demo_lines(), load_chart())

    def applied() -> bool:
        heads = asyncio.run(latest_heads(kafka))
        return all(heads.get(a, {}).get("version") == v for a, v in expected.items())

    first = _rcmflow(broker, "ingest", "events", str(day))
    assert first.returncode == 1, first.stderr  # the line that is not JSON: rcm.dlq
    wait_until(applied, 120, "the demo applied", worker.log_tail)
    time.sleep(3)  # the worker's rejections of that batch are written with it
    heads = asyncio.run(latest_heads(kafka))
    postings = len(asyncio.run(read_topic(kafka, POSTINGS)))
    before = {r["dlq_id"]: r for r in asyncio.run(dlq_records(kafka))}
    dlq_before = {(r.partition, r.offset) for r in asyncio.run(read_topic(kafka, DLQ))}
    again = _rcmflow(broker, "ingest", "events", str(day))
    assert again.returncode == 1, again.stderr

    def parked_again() -> list[dict[str, object]]:
        return [json.loads(r.value) for r in asyncio.run(read_topic(kafka, DLQ))
                if (r.partition, r.offset) not in dlq_before and r.value is not None]

    wait_until(lambda: len(parked_again()) >= 3, 90, "the refused events refused again",
               worker.log_tail)
    time.sleep(3)
    # All replays: no account moved, no posting was emitted again ...
    assert asyncio.run(latest_heads(kafka)) == heads
    assert len(asyncio.run(read_topic(kafka, POSTINGS))) == postings
    # ... and what the worker refused before it applied anything is refused again as the
    # same exception (the same DLQ id: same bytes, same key, same reason): the conflicting
    # re-send, the float amount, the unknown kind. The EUR payment a posting rule refused used
    # up its key (a replay now); the line that is not JSON keeps its id (file and line).
    again_ids = [str(r["dlq_id"]) for r in parked_again()]
    assert sorted((str(r["stage"]), str(r["reason_code"])) for r in parked_again()
                  if r["stage"] != "decode") == [
        ("dedup", "conflict"), ("validate", "invalid_event"), ("validate", "unknown_kind")]
    assert set(again_ids) <= set(before), "a re-sent file made new exceptions"
    assert {r["dlq_id"] for r in asyncio.run(dlq_records(kafka))} == set(before)
    assert worker.alive(), worker.log_tail()
    # And the README says so where it shows the command.
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text()
                      .replace("#", " ").split())
    assert "the refused lines are the same exceptions (same DLQ ids" in readme
