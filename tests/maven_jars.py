"""Fetch the jars a pom.xml names into a cache directory, once: what tests/apache_kafka/fetch.py
and tests/fhir_validator/fetch.py share.

Standard library only, so `.ci/run` can run those scripts with the system python3 before the
venv exists. The cache is ``$XDG_CACHE_HOME/rcmflow/<name>-<version>-<pom hash>/`` (``~/.cache``
by default): a changed pom (another jar, another logging binding) never reuses an older fetch.
A complete fetch is renamed into place in one step, so a half-copied directory is never used
and a second fetch does nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FetchError", "MavenJars"]

# Full plugin coordinates: with an empty local repository Maven cannot resolve the
# `dependency:` prefix unless the registry serves the plugin-group metadata.
COPY_GOAL = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
FETCH_TIMEOUT_S = 1200
MIN_JAVA = 17  # Kafka 4.x and HAPI FHIR 8 both need Java 17


class FetchError(RuntimeError):
    """The jars are not in the cache and could not be fetched (no java, no mvn, no registry)."""


@dataclass(frozen=True)
class MavenJars:
    pom: Path
    #: Cache directory prefix, e.g. "apache-kafka".
    name: str
    #: The pom's property holding the version, e.g. "kafka.version".
    version_property: str
    #: A jar every complete fetch holds, e.g. "kafka_2.13-*.jar".
    marker: str
    #: Who needs the jars, for messages: "Apache Kafka".
    needed_by: str

    def version(self) -> str:
        prop = re.escape(self.version_property)
        match = re.search(rf"<{prop}>([^<]+)</{prop}>", self.pom.read_text())
        if match is None:
            raise FetchError(f"{self.pom} names no <{self.version_property}>")
        return match.group(1).strip()

    def cache_dir(self, version: str | None = None) -> Path:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        digest = hashlib.sha256(self.pom.read_bytes()).hexdigest()[:10]
        return base / "rcmflow" / f"{self.name}-{version or self.version()}-{digest}"

    def find_java(self) -> str:
        """JAVA_HOME's java if set, else the one on PATH; FetchError if missing or too old."""
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not java or not Path(java).exists():
            raise FetchError(f"java not found: {self.needed_by} needs Java {MIN_JAVA}+ "
                             "(JAVA_HOME or PATH)")
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
        match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
        major = int(match.group(1)) if match else 0
        if major == 1 and match and match.group(2):  # "1.8.0_x" style
            major = int(match.group(2))
        if major < MIN_JAVA:
            raise FetchError(f"{java} is Java {major}; {self.needed_by} needs {MIN_JAVA}+")
        return java

    def ensure(self, version: str | None = None) -> Path:
        """The cache directory holding the jars; runs Maven only when it is missing."""
        target = self.cache_dir(version)
        if _complete(target):
            return target
        self.find_java()
        mvn = shutil.which("mvn")
        if mvn is None:
            raise FetchError(f"mvn not found: it fetches the {self.needed_by} jars named in "
                             f"{self.pom}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            command = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(self.pom), COPY_GOAL,
                       "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
            if version is not None:
                command.append(f"-D{self.version_property}={version}")
            try:
                done = subprocess.run(command, capture_output=True, text=True,
                                      timeout=FETCH_TIMEOUT_S, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as exc:
                raise FetchError(f"mvn did not finish in {FETCH_TIMEOUT_S}s") from exc
            if done.returncode != 0 or not any(staging.glob(self.marker)):
                raise FetchError(f"mvn could not fetch the {self.needed_by} jars (exit "
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

    def summary(self, target: Path) -> str:
        jars = list(target.glob("*.jar"))
        size_mb = sum(jar.stat().st_size for jar in jars) / 1e6
        return f"{len(jars)} jars, {size_mb:.1f} MB in {target}"


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
