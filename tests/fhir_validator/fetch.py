"""Fetch HL7's FHIR validator jars (HAPI, R4) named in pom.xml beside this file into a cache.

Standard library only, so `.ci/run` can call it with the system python3 before the venv exists:

    python3 tests/fhir_validator/fetch.py      # prints the cache directory; exit 1 if it cannot

The cache is ``$XDG_CACHE_HOME/rcmflow/fhir-validator-<hapi version>-<pom hash>/``
(tests/maven_jars.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if not __package__:  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.maven_jars import FetchError, MavenJars  # noqa: E402

__all__ = ["FetchError", "HARNESS", "JARS", "POM", "ensure_jars", "find_java", "hapi_version"]

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
HARNESS = HERE / "Harness.java"  # runs in Java's source-file mode
JARS = MavenJars(POM, "fhir-validator", "hapi.version", "hapi-fhir-validation-[0-9]*.jar",
                 "the FHIR validator")


def hapi_version() -> str:
    return JARS.version()


def find_java() -> str:
    return JARS.find_java()


def ensure_jars() -> Path:
    return JARS.ensure()


def main() -> int:
    started = time.monotonic()
    try:
        target = ensure_jars()
    except FetchError as exc:
        print(f"fhir-validator: {exc}", file=sys.stderr)
        return 1
    print(f"fhir-validator (HAPI {hapi_version()}): {JARS.summary(target)} "
          f"({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
