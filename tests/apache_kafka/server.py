"""A real single-node Apache Kafka (KRaft, combined broker + controller) for tests and dev.

Tansu (rcmflow.broker.EmbeddedBroker) cannot run idempotent or transactional producers, so
what needs them — Faust's ``exactly_once`` — is tested here. Same shape as EmbeddedBroker:
``ApacheKafka().start()`` then ``.bootstrap`` / ``.url``, ``stop()``, or a ``with`` block.
PLAINTEXT on 127.0.0.1 with free ports, data in a temp dir, logs in one file whose tail is in
the error when the broker does not come up.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from types import TracebackType

from rcmflow.broker import BrokerError, free_port, stop_process, wait_for_broker
from rcmflow.kafka_connection import KafkaConnection
from tests.apache_kafka.fetch import ensure_jars, find_java
from tests.compose_file import kafka_properties

__all__ = ["ApacheKafka", "TEST_OVERRIDES", "ADDRESS_PROPERTIES"]

# A JVM on 2 shared cores: format + first metadata answer takes seconds, not milliseconds.
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
FORMAT_TIMEOUT_S = 60.0
HEAP = "512m"

#: The broker settings come from docker-compose.yml (its kafka service's KAFKA_* variables).
#: Each instance replaces these with its own free ports on 127.0.0.1 and its temp dir ...
ADDRESS_PROPERTIES = ("listeners", "advertised.listeners", "controller.quorum.voters",
                      "log.dirs")
#: ... and a broker that lives for one test differs from production only here:
TEST_OVERRIDES = {
    # The first group or transaction creates these internal topics, and creating 50
    # partitions each (Kafka's default, kept in production) takes seconds on 2 shared cores.
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    # Production waits 3 s (Kafka's default) so workers started together join one
    # generation; a test's group would wait those 3 s at every first join.
    "group.initial.rebalance.delay.ms": "0",
    # The ERP connector tests use 1.5 s sessions so that a killed connector's partitions move
    # fast; Kafka's floor (6 s, kept in production) refuses them.
    "group.min.session.timeout.ms": "1000",
}

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# The per-request and state-change chatter hides the lines that explain a failed start.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def _cluster_id() -> str:
    """What `kafka-storage.sh random-uuid` prints: a UUID in URL-safe base64, no padding,
    never starting with "-" (Kafka's Uuid.randomUuid draws again: 1 in 64 would, and the
    storage tool's argument parser reads such an id as an option and refuses to format)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _storage_tool(jars: Path) -> str:
    """kafka.tools.StorageTool in 4.0/4.1; look it up so a version bump cannot miss a move."""
    for name in ("kafka.tools.StorageTool", "org.apache.kafka.tools.StorageTool"):
        entry = name.replace(".", "/") + ".class"
        for jar in sorted(jars.glob("kafka*.jar")):
            with zipfile.ZipFile(jar) as archive:
                if entry in archive.namelist():
                    return name
    raise BrokerError(f"no StorageTool class in the Kafka jars under {jars}")


class ApacheKafka:
    """An Apache Kafka process bound to 127.0.0.1 on a free port (its controller on another)."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None,
                 log_file: Path | None = None, heap: str = HEAP) -> None:
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap = heap
        # A temp dir we made is removed on stop(), and kept when start() fails: the log is there.
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="rcmflow-kafka-"))
        self.log_file = log_file or self.data_dir / "kafka.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in_s: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def connection(self) -> KafkaConnection:
        return KafkaConnection.plaintext(self.bootstrap)

    def properties(self) -> dict[str, str]:
        """docker-compose.yml's broker settings, at this instance's addresses and data dir,
        with TEST_OVERRIDES: the tests run the production broker's configuration."""
        controller = f"127.0.0.1:{self.controller_port}"
        properties = kafka_properties()
        addresses = {
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.quorum.voters": f"1@{controller}",
            "log.dirs": str(self.data_dir / "data"),
        }
        for key in (*addresses, *TEST_OVERRIDES):  # replaced, never added: see test_compose
            if key not in properties:
                raise BrokerError(f"docker-compose.yml's kafka service does not set {key}")
        return properties | addresses | TEST_OVERRIDES

    def start(self) -> ApacheKafka:
        started = time.monotonic()
        jars = ensure_jars()
        java = find_java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2)
        base = [java, f"-Xmx{self.heap}", "-Xms128m", "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
                f"-Dkafka.logs.dir={self.data_dir}", "-cp", str(jars / "*")]
        with open(self.log_file, "ab") as out:
            try:
                subprocess.run([*base, _storage_tool(jars), "format", "-t", _cluster_id(),
                                "-c", str(config)], stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=FORMAT_TIMEOUT_S, check=True)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise BrokerError(f"Apache Kafka storage format failed: {exc}\n"
                                  f"--- {self.log_file} ---\n{self.log_tail()}") from exc
            self.process = subprocess.Popen(
                [*base, "kafka.Kafka", str(config)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
            )
        try:
            asyncio.run(wait_for_broker(self.connection, START_TIMEOUT_S))
        except BrokerError as exc:
            exited = self.process.poll()
            self.stop(keep_data=True)
            raise BrokerError(f"Apache Kafka did not start (exit code {exited}): {exc}\n"
                              f"--- {self.log_file} ---\n{self.log_tail()}") from exc
        self.started_in_s = time.monotonic() - started
        return self

    def stop(self, keep_data: bool = False) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT_S)
        if self._own_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
