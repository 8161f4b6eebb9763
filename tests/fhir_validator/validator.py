"""Run HL7's FHIR validator (``Harness.java`` over the jars ``fetch.py`` caches) from tests.

``validator_or_skip()`` gives the jar directory, or skips saying why — under ``CI=true`` it
fails instead (as tests/apache_kafka/fixtures.py does for Kafka): CI must run the validator.
``validate_dir()`` runs one JVM over every ``*.json`` in a directory and returns its report.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fhir_validator.fetch import HARNESS, FetchError, ensure_jars, find_java

__all__ = ["Issue", "Report", "r4_search_parameters", "validate_dir", "validator_or_skip"]

#: Definitions the validator cannot download offline (Harness.java --definitions).
DEFINITIONS = Path(__file__).resolve().parent / "definitions"
#: rcmflow's own conformance resources (the Account lifecycle extension and its code
#: system), as the facade package ships them.
OWN_DEFINITIONS = Path(__file__).resolve().parents[2] / "facade" / "definitions"
#: One JVM validates the whole set; on 2 busy cores it takes about a minute.
RUN_TIMEOUT_S = 900
#: Small heap, serial GC: the validator holds R4's definitions, nothing more. C1 only
#: (TieredStopAtLevel=1): one short run never repays C2's compiling; it halves the CPU time
#: (10 s instead of 17 s user on the 2-core machine).
JVM_OPTIONS = ("-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss4m")


@dataclass(frozen=True)
class Issue:
    file: str
    severity: str  # fatal | error | warning | information
    location: str
    message_id: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.file} {self.severity} at {self.location}: {self.message}"


@dataclass(frozen=True)
class Report:
    files: list[str]
    issues: list[Issue]
    start_s: float
    validate_s: float

    def of(self, *severities: str) -> list[Issue]:
        return [i for i in self.issues if i.severity in severities]


def validator_or_skip() -> tuple[str, Path]:
    """(java, the jar directory); skips with the reason when the validator cannot run here,
    fails instead under ``CI=true``."""
    try:
        return find_java(), ensure_jars()
    except FetchError as exc:
        message = f"no FHIR validator: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: the FHIR validator must run in CI)")
        pytest.skip(message)


def validate_dir(java: str, jars: Path, directory: Path) -> Report:
    """Every ``*.json`` file in ``directory`` through the validator, in one JVM."""
    done = subprocess.run(
        [java, *JVM_OPTIONS, "-cp", f"{jars}/*", str(HARNESS), "--definitions",
         str(DEFINITIONS), "--definitions", str(OWN_DEFINITIONS), str(directory)],
        capture_output=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (
        f"the validator harness failed (exit {done.returncode}):\n"
        + done.stderr.decode(errors="replace")[-3000:])
    doc: dict[str, Any] = orjson.loads(done.stdout)
    issues = [Issue(f["file"], i["severity"], i["location"] or "", i["messageId"], i["message"])
              for f in doc["files"] for i in f["issues"]]
    return Report([f["file"] for f in doc["files"]], issues, doc["seconds"]["start"],
                  doc["seconds"]["validate"])


#: R4's SearchParameter definitions inside the validator's R4 package.
SEARCH_PARAMETERS = "org/hl7/fhir/r4/model/sp/search-parameters.json"


def r4_search_parameters(jars: Path) -> dict[str, dict[str, Any]]:
    """url -> SearchParameter, read from hapi-fhir-validation-resources-r4's jar (a zip)."""
    [jar] = sorted(jars.glob("hapi-fhir-validation-resources-r4-*.jar"))
    with zipfile.ZipFile(jar) as archive:
        bundle = orjson.loads(archive.read(SEARCH_PARAMETERS))
    return {e["resource"]["url"]: e["resource"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == "SearchParameter"}
