"""`rcmflow ingest payments` streams a file to the real broker: good rows as events, each bad
row one rcm.dlq record, the report's counts; a file over its size bound is refused whole."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.topics import DLQ, EVENTS, RAW_PAYMENTS
from tests.conftest import Broker

pytestmark = pytest.mark.broker


def test_a_streamed_file_publishes_its_rows_and_one_record_per_bad_row(
        broker: Broker, tmp_path: Path) -> None:
    env = {"RCMFLOW_BROKER": broker.url, "RCMFLOW_DATA_DIR": str(tmp_path / "data"),
           "PATH": "/usr/bin:/bin"}

    def run(path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rcmflow.cli", "ingest", "payments",
                               str(path)], env=env | extra, capture_output=True, text=True,
                              timeout=300)

    rows = 3_000
    path = tmp_path / "day.csv"
    path.write_text("type,account,amount,date,reference\n" + "".join(
        f"payment,A{n % 100},{'1.005' if n % 1000 == 7 else '10.00'},2026-03-01,LB-{n}\n"
        for n in range(rows)))
    done = run(path)
    assert done.returncode == 1, done.stderr
    assert f"{rows - 3} rows published to {EVENTS}, 3 to {DLQ}" in done.stderr
    events = asyncio.run(read_topic(broker.connection, EVENTS))
    raw = asyncio.run(read_topic(broker.connection, RAW_PAYMENTS))
    dlq = asyncio.run(read_topic(broker.connection, DLQ))
    assert (len(events), len(raw), len(dlq)) == (rows - 3, rows - 3, 3)

    too_big = run(path, RCMFLOW_PAYMENTS_FILE_BYTES_MAX="1024")
    assert too_big.returncode == 2 and "RCMFLOW_PAYMENTS_FILE_BYTES_MAX" in too_big.stderr
    assert len(asyncio.run(read_topic(broker.connection, EVENTS))) == rows - 3
