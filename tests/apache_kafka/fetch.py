"""Fetch the Apache Kafka broker jars named in pom.xml beside this file into a cache directory.

Standard library only, so `.ci/run` can call it with the system python3 before the venv exists:

    python3 tests/apache_kafka/fetch.py      # prints the cache directory; exit 1 if it cannot

The cache is ``$XDG_CACHE_HOME/rcmflow/apache-kafka-<version>-<pom hash>/`` (tests/maven_jars.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if not __package__:  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.maven_jars import FetchError, MavenJars  # noqa: E402

__all__ = ["FetchError", "JARS", "POM", "cache_dir", "ensure_jars", "find_java", "kafka_version"]

POM = Path(__file__).resolve().parent / "pom.xml"
JARS = MavenJars(POM, "apache-kafka", "kafka.version", "kafka_2.13-*.jar", "Apache Kafka")


def kafka_version() -> str:
    return JARS.version()


def cache_dir(version: str | None = None) -> Path:
    return JARS.cache_dir(version)


def find_java() -> str:
    return JARS.find_java()


def ensure_jars(version: str | None = None) -> Path:
    return JARS.ensure(version)


def main() -> int:
    started = time.monotonic()
    try:
        target = ensure_jars()
    except FetchError as exc:
        print(f"apache-kafka: {exc}", file=sys.stderr)
        return 1
    print(f"apache-kafka {kafka_version()}: {JARS.summary(target)} "
          f"({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
