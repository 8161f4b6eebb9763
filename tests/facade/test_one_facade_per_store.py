"""Two `rcmflow facade` processes on one data dir: the second refuses to start, saying
which read model is held and which setting gives it its own (it used to run and log
"database is locked" every 2 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rcmflow.runtime.broker import free_port
from tests.conftest import Broker, wait_until

pytestmark = pytest.mark.broker

START_S = 60.0


def _facade(broker: Broker, data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "RCMFLOW_BROKER": broker.url, "RCMFLOW_DATA_DIR": str(data_dir),
           "RCMFLOW_FACADE_AUTH": "off", "RCMFLOW_FACADE_PORT": str(port)}
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "facade"], env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)
    return process, port


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_second_facade_on_the_same_data_dir_refuses_to_start(broker: Broker,
                                                                tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first, first_port = _facade(broker, data_dir, tmp_path / "first.log")
    try:
        wait_until(lambda: _answers(first_port), START_S, "the first facade to answer",
                   lambda: (tmp_path / "first.log").read_text(errors="replace"))
        second, _ = _facade(broker, data_dir, tmp_path / "second.log")
        try:
            code = second.wait(START_S)
        finally:
            _stop(second)
        said = (tmp_path / "second.log").read_text(errors="replace")
        assert code == 2, said
        assert str(data_dir / "facade" / "read.sqlite") in said
        assert "RCMFLOW_DATA_DIR" in said and "another `rcmflow facade`" in said
        assert "database is locked" not in said
        assert first.poll() is None and _answers(first_port)  # the first one is untouched
    finally:
        _stop(first)
    # Once the first has stopped, the store is free again.
    third, third_port = _facade(broker, data_dir, tmp_path / "third.log")
    try:
        wait_until(lambda: _answers(third_port), START_S, "a facade after the first stopped",
                   lambda: (tmp_path / "third.log").read_text(errors="replace"))
    finally:
        _stop(third)
