"""The session fixture ``apache_kafka`` and the rule for when Kafka runs may skip.

tests/conftest.py imports both, so every test can use them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from rcmflow.runtime.broker import ensure_topics
from rcmflow.streams.topics import topic_specs
from tests.apache_kafka.fetch import FetchError, ensure_jars
from tests.apache_kafka.server import ApacheKafka

PARTITIONS = 4  # as tests/conftest.py's broker fixture


def kafka_or_skip() -> None:
    """Skip the calling test, with the reason, when Apache Kafka cannot run here (no java, no
    mvn, no Maven registry) — unless ``CI=true``: CI must run Kafka, so there it fails."""
    try:
        ensure_jars()
    except FetchError as exc:
        message = f"no Apache Kafka: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: the Apache Kafka tests must run in CI)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """One Apache Kafka per session (a JVM start costs seconds) with the rcm.* topics.

    Skips (``kafka_or_skip``) only when the jars are neither cached nor fetchable; a broker
    that has its jars and does not start fails the tests.
    """
    kafka_or_skip()
    logs = tmp_path_factory.mktemp("apache-kafka")
    kafka = ApacheKafka(log_file=logs / "kafka.log").start()
    try:
        asyncio.run(ensure_topics(kafka.connection, topic_specs("rcmflow"), PARTITIONS, 1))
        yield kafka
    finally:
        kafka.stop()
