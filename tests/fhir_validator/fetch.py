"""Fetch HL7's FHIR validator jars (HAPI, R4) named in pom.xml beside this file into a cache.

Standard library only, so `.ci/run` can call it with the system python3 before the venv exists:

    python3 tests/fhir_validator/fetch.py      # prints the cache directory; exit 1 if it cannot

The cache is ``$XDG_CACHE_HOME/rcmflow/fhir-validator-<hapi version>-<pom hash>/`` (``~/.cache``
by default). A complete fetch is renamed into place in one step, so a half-copied directory is
never used and a second fetch does nothing. The same pattern as tests/apache_kafka/fetch.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["FetchError", "HARNESS", "POM", "cache_dir", "ensure_jars", "find_java",
           "hapi_version"]

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
HARNESS = HERE / "Harness.java"
# Full plugin coordinates: with an empty local repository Maven cannot resolve the
# `dependency:` prefix unless the registry serves the plugin-group metadata.
COPY_GOAL = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
FETCH_TIMEOUT_S = 1200
MIN_JAVA = 17  # HAPI FHIR 8 needs Java 17; Harness.java runs in source-file mode


class FetchError(RuntimeError):
    """The jars are not in the cache and could not be fetched (no java, no mvn, no registry)."""


def hapi_version(pom: Path = POM) -> str:
    match = re.search(r"<hapi\.version>([^<]+)</hapi\.version>", pom.read_text())
    if match is None:
        raise FetchError(f"{pom} names no <hapi.version>")
    return match.group(1).strip()


def cache_dir(pom: Path = POM) -> Path:
    """``$XDG_CACHE_HOME/rcmflow/fhir-validator-<version>-<hash of pom.xml>``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:10]
    return base / "rcmflow" / f"fhir-validator-{hapi_version(pom)}-{digest}"


def find_java() -> str:
    """JAVA_HOME's java if set, else the one on PATH; FetchError if missing or older than 17."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise FetchError("java not found: the FHIR validator needs Java 17+ (JAVA_HOME or PATH)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise FetchError(f"{java} is Java {major}; the FHIR validator needs {MIN_JAVA}+")
    return java


def _complete(directory: Path) -> bool:
    return (directory / ".complete").exists()


def _first_error(output: str) -> str:
    """Maven's first [ERROR] line says why (unknown host, missing artifact); the rest is help."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines()]
    errors = [line for line in lines if line.startswith("[ERROR]") and len(line) > 10]
    if not errors:
        return "\n".join(lines[-15:])
    first = errors[0].removeprefix("[ERROR]").removesuffix("-> [Help 1]").strip()
    return first if len(first) <= 300 else "..." + first[-300:]  # the end names the cause


def ensure_jars() -> Path:
    """The cache directory holding the validator's jars; runs Maven only when it is missing."""
    target = cache_dir()
    if _complete(target):
        return target
    find_java()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError("mvn not found: it fetches the FHIR validator jars named in " + str(POM))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        command = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM), COPY_GOAL,
                   "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise FetchError(f"mvn did not finish in {FETCH_TIMEOUT_S}s") from exc
        if done.returncode != 0 or not any(staging.glob("hapi-fhir-validation-[0-9]*.jar")):
            raise FetchError(f"mvn could not fetch the FHIR validator jars (exit "
                             f"{done.returncode}): " + _first_error(done.stdout + done.stderr))
        (staging / ".complete").write_text(" ".join(command) + "\n")
        try:
            staging.rename(target)
        except OSError:
            if not _complete(target):  # not a concurrent fetch that finished first
                raise
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def main() -> int:
    started = time.monotonic()
    try:
        target = ensure_jars()
    except FetchError as exc:
        print(f"fhir-validator: {exc}", file=sys.stderr)
        return 1
    jars = list(target.glob("*.jar"))
    size_mb = sum(jar.stat().st_size for jar in jars) / 1e6
    print(f"fhir-validator (HAPI {hapi_version()}): {len(jars)} jars, {size_mb:.1f} MB in "
          f"{target} ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
