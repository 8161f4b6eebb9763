"""docker-compose.yml read as Docker Compose and the apache/kafka image read it.

The compose file is the production shape; the tests take what they can from it instead of
keeping a copy: the test broker's server.properties (tests/apache_kafka/server.py) and the
environment of each process the compose test starts (tests/test_compose.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "COMPOSE_FILE",
    "KAFKA_SERVICE",
    "ComposeError",
    "load_compose",
    "service_environment",
    "interpolate",
    "image_env_to_property",
    "kafka_properties",
]

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
KAFKA_SERVICE = "kafka"

#: KAFKA_* variables the apache/kafka image passes to the JVM instead of server.properties
#: (docker/resources/common-scripts/kafka-propertiesSpec.json "excludes").
IMAGE_NON_PROPERTIES = frozenset({
    "KAFKA_VERSION", "KAFKA_HEAP_OPT", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL",
})

# Compose's interpolation: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error} (defaults and messages without nested variables).
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class ComposeError(ValueError):
    """The compose file is not what the tests can read, or a required variable is unset."""


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The file as YAML (anchors and ``<<`` merges resolved, as Compose resolves them)."""
    doc = yaml.safe_load(path.read_text("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise ComposeError(f"{path}: no services")
    return doc


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """``value`` with its ``${...}`` replaced as Compose does from the shell or .env."""
    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["bare"] or match["braced"]
        op, arg = match["op"], match["arg"] or ""
        got = variables.get(name)
        unset = got is None or (got == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("-") and unset:
            return arg
        if op is not None and op.endswith("?") and unset:
            raise ComposeError(f"required variable {name} is unset: {arg}")
        return got or ""

    return _VARIABLE.sub(one, value)


def service_environment(compose: Mapping[str, Any], service: str,
                        variables: Mapping[str, str]) -> dict[str, str]:
    """The service's environment as its container gets it (list or mapping form)."""
    raw = compose["services"][service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, str):  # YAML 1.1 turns 1, on, 0750 into other things
            raise ComposeError(f"{service}: {name} must be a quoted string, not {value!r}")
        env[name] = interpolate(value, variables)
    return env


def image_env_to_property(name: str) -> str:
    """The apache/kafka image's rule (docker/resources/utility ConvertKey): drop ``KAFKA_``,
    ``___`` -> ``-``, ``__`` -> ``_``, a single ``_`` -> ``.``, lower case."""
    key = name.removeprefix("KAFKA_")
    parts = re.split(r"(_{1,3})", key)
    return "".join({"_": ".", "__": "_", "___": "-"}.get(part, part)
                   for part in parts).lower()


def kafka_properties(compose: Mapping[str, Any] | None = None) -> dict[str, str]:
    """server.properties of the compose file's Kafka, as the image writes it."""
    env = service_environment(compose or load_compose(), KAFKA_SERVICE, {})
    return {image_env_to_property(name): value for name, value in env.items()
            if name.startswith("KAFKA_") and name not in IMAGE_NON_PROPERTIES}
