"""The session fixture ``apache_kafka``: tests/conftest.py imports it, so every test can use it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from rcmflow.broker import ensure_topics
from rcmflow.streams.topics import topic_specs
from tests.apache_kafka.fetch import FetchError, ensure_jars
from tests.apache_kafka.server import ApacheKafka

PARTITIONS = 4  # as tests/conftest.py's broker fixture


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """One Apache Kafka per session (a JVM start costs seconds) with the rcm.* topics.

    Skips, with the reason, only when the jars are neither cached nor fetchable (no java, no
    mvn, no Maven registry); a broker that has its jars and does not start fails the tests.
    """
    try:
        ensure_jars()
    except FetchError as exc:
        pytest.skip(f"no Apache Kafka: {exc}")
    logs = tmp_path_factory.mktemp("apache-kafka")
    kafka = ApacheKafka(log_file=logs / "kafka.log").start()
    try:
        asyncio.run(ensure_topics([kafka.bootstrap], topic_specs("rcmflow"), PARTITIONS, 1))
        yield kafka
    finally:
        kafka.stop()
