"""docker-compose.yml is the tested shape.

Three layers, cheapest first:

1. Structure (always runs, no broker): the services and their commands exist in `rcmflow`,
   every ``RCMFLOW_*`` name is a real setting (pydantic-settings ignores unknown names, so a
   typo would silently fall back to a default), ports, hosts, volumes, healthchecks and
   depends_on fit together, the Kafka image is the version the tests run
   (tests/apache_kafka/pom.xml) and the test broker's settings are the compose file's.
2. `docker compose config` where a Docker engine answers (skipped, with the reason, here).
3. The topology without Docker (broker + slow): a fresh Apache Kafka from the tests' jars
   with the compose file's broker settings (no topics: the workers create them, as in
   production), then every default-profile rcmflow service of the file started as a local
   process, in depends_on order, with exactly the service's environment except for the
   rewrites below; then canonical events through `rcmflow ingest events` and an HL7 DFT over
   MLLP, and the results checked where each process puts them.

The rewrites from container to local process (``local_environment``, ``Topology``):

- ``RCMFLOW_BROKER``: the compose address (the kafka service's advertised listener) -> the
  test broker's ``kafka://127.0.0.1:PORT``.
- Paths under a volume's mount point (``/data``) -> a temp dir per named volume; replicas of
  one service share their volume's dir, as the containers share the volume.
- ``RCMFLOW_*_PORT`` values -> a free local port per process (containers each have their own
  network namespace; processes on one host do not).
- ``RCMFLOW_*_HOST`` ``0.0.0.0`` -> ``127.0.0.1`` (the test's processes stay on loopback).
- ``${VAR...}`` interpolation: ``RCMFLOW_FACADE_JWT_KEY`` is a fresh secret the test signs
  its tokens with, for a fresh ``RCMFLOW_FACADE_JWT_AUDIENCE``; everything else takes the
  file's defaults.
- The command's ``rcmflow`` -> the console script of this interpreter's environment; a
  healthcheck's ``python`` -> this interpreter. The kafka service's healthcheck (a script of
  the image) is replaced by ApacheKafka's own readiness wait.
- Everything else the containers get from the image (PATH, HOME, locale) comes from this
  process's environment, minus any ``RCMFLOW_*`` of the developer's shell.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.core
import typer.main
from typer.testing import CliRunner

from rcmflow.cli import app as rcmflow_cli
from rcmflow.cli.demo_sources import HL7_FILE, send_mllp
from rcmflow.connectors.erp import ADAPTERS
from rcmflow.runtime.broker import free_port
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import read_topic, topic_partitions
from rcmflow.runtime.settings import Settings
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.money import parse_cents
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS
from tests.apache_kafka.fetch import kafka_version
from tests.apache_kafka.server import ADDRESS_PROPERTIES, TEST_OVERRIDES, ApacheKafka
from tests.compose_file import (
    COMPOSE_FILE,
    KAFKA_SERVICE,
    ComposeError,
    image_env_to_property,
    interpolate,
    kafka_properties,
    load_compose,
    service_environment,
)
from tests.conftest import wait_until
from tests.facade.conftest import token
from tests.scrape import scrape
from tests.workload import Observed, Workload

ROOT = COMPOSE_FILE.parent
COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
#: Services that run an rcmflow command (built from this repository's Dockerfile).
RCMFLOW_SERVICES = sorted(name for name, svc in SERVICES.items()
                          if (svc.get("command") or [None])[0] == "rcmflow")
#: What `docker compose up` starts (no --profile).
DEFAULT_SERVICES = sorted(name for name, svc in SERVICES.items() if not svc.get("profiles"))
#: Prometheus and Grafana: images of their own, configured from deploy/ (checked by
#: tests/deploy); the topology test runs no Docker, so it leaves them out.
MONITORING_SERVICES = ("prometheus", "grafana")
#: What the compose file needs from the shell; the test sets them (module docstring).
REQUIRED_VARIABLES = ("RCMFLOW_FACADE_JWT_KEY", "RCMFLOW_FACADE_JWT_AUDIENCE")

#: The variables the apache/kafka image fills in when they are unset
#: (docker/resources/common-scripts/configureDefaults): the file must spell each one out, so
#: the broker runs what the file says and not what the image happens to default to.
IMAGE_DEFAULTED = ("CLUSTER_ID", "KAFKA_NODE_ID", "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                   "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS",
                   "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                   "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
                   "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_PROCESS_ROLES",
                   "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_INTER_BROKER_LISTENER_NAME",
                   "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_LOG_DIRS")


def _variables() -> dict[str, str]:
    return {name: f"test-{name.lower()}-{secrets.token_hex(16)}" for name in REQUIRED_VARIABLES}


def _env(service: str, variables: Mapping[str, str] | None = None) -> dict[str, str]:
    return service_environment(COMPOSE, service, _variables() if variables is None
                               else variables)


# -- 1. structure ------------------------------------------------------------------------


def setting_names() -> set[str]:
    """Every RCMFLOW_* variable some settings object reads."""
    return {f"RCMFLOW_{name.upper()}" for name in Settings.model_fields}


def unknown_settings(compose: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(service, name) of every RCMFLOW_* variable no setting reads."""
    known = setting_names()
    return [(service, name) for service in compose["services"]
            for name in service_environment(compose, service, _variables())
            if name.startswith("RCMFLOW_") and name not in known]


def test_every_rcmflow_variable_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert unknown_settings(COMPOSE) == []
    # The check catches what pydantic-settings would ignore: a typo in the shared block.
    typo = load_compose()
    typo["services"]["worker"]["environment"]["RCMFLOW_PARTITONS"] = "8"
    assert unknown_settings(typo) == [("worker", "RCMFLOW_PARTITONS")]
    # ... and every value is one the settings accept, read as the process reads it.
    for service in RCMFLOW_SERVICES:
        env = _env(service)
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            settings = Settings()  # the cloud adapters' RCMFLOW_ERP_* values included
        assert settings.partitions == int(env["RCMFLOW_PARTITIONS"]), service


def test_services_and_their_commands_exist() -> None:
    assert {KAFKA_SERVICE, "worker", "facade", "mllp", "erp"} <= set(DEFAULT_SERVICES)
    assert set(RCMFLOW_SERVICES) == set(SERVICES) - {KAFKA_SERVICE, *MONITORING_SERVICES}
    commands = typer.main.get_command(rcmflow_cli)
    assert isinstance(commands, typer.core.TyperGroup)
    for name in RCMFLOW_SERVICES:
        service = SERVICES[name]
        assert service.get("build") == ".", name  # this repository's Dockerfile
        command = service["command"]
        assert command[1] in commands.commands, (name, command, sorted(commands.commands))
        if command[1] == "erp":
            assert command[2] in ADAPTERS, (name, command)
        # The exact argv parses (`rcmflow erp csv --help` exits 0; a bad adapter would not
        # be caught here, hence the ADAPTERS check above).
        done = CliRunner().invoke(rcmflow_cli, [*command[1:], "--help"])
        assert done.exit_code == 0, (name, done.output)
    assert (ROOT / "Dockerfile").is_file()


def test_kafka_image_is_the_version_the_tests_run() -> None:
    image = SERVICES[KAFKA_SERVICE]["image"]
    assert image == f"apache/kafka:{kafka_version()}", (image, "tests/apache_kafka/pom.xml")
    # Every pulled image names its version: `latest` moves under a deployment.
    for name, service in SERVICES.items():
        if "image" in service:
            tag = service["image"].rpartition(":")[2]
            assert "/" not in tag and tag not in ("", "latest"), (name, service["image"])


def test_the_test_broker_runs_the_compose_broker_settings(tmp_path: Path) -> None:
    compose = kafka_properties()
    test = ApacheKafka(data_dir=tmp_path).properties()
    assert set(test) == set(compose)  # nothing added, nothing dropped
    differ = {key for key in compose if compose[key] != test[key]}
    assert differ == set(ADDRESS_PROPERTIES) | set(TEST_OVERRIDES), differ
    env = _env(KAFKA_SERVICE)
    missing = [name for name in IMAGE_DEFAULTED if name not in env]
    assert missing == [], f"left to the image's defaults: {missing}"
    # The data lives where the volume is (the image's default is /tmp/kraft-combined-logs).
    mounts = [volume.split(":")[1] for volume in SERVICES[KAFKA_SERVICE]["volumes"]]
    assert compose["log.dirs"] in mounts, (compose["log.dirs"], mounts)
    assert compose["auto.create.topics.enable"] == "false"
    assert image_env_to_property("KAFKA_FOO__BAR___BAZ_QUX") == "foo_bar-baz.qux"


def test_services_fit_together() -> None:
    """Ports, hosts, volumes, healthchecks and depends_on, service by service."""
    declared_volumes = set(COMPOSE.get("volumes") or {})
    advertised = _env(KAFKA_SERVICE)["KAFKA_ADVERTISED_LISTENERS"]
    kafka_address = advertised.split("PLAINTEXT://", 1)[1].split(",", 1)[0]
    shared: dict[str, set[str]] = {"RCMFLOW_BROKER": set(), "RCMFLOW_PARTITIONS": set(),
                                   "RCMFLOW_APP_ID": set()}
    for name in RCMFLOW_SERVICES:
        service, env = SERVICES[name], _env(name)
        for key, seen in shared.items():
            seen.add(env.get(key, ""))
        # Every rcmflow process reaches the broker at the kafka service's advertised address.
        assert env["RCMFLOW_BROKER"] == f"kafka://{kafka_address}", name
        # Its state is on a named volume mounted at its data dir.
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
        assert mounts.get(env["RCMFLOW_DATA_DIR"]) in declared_volumes, (name, mounts)
        # So is every other path it writes (a path outside the volumes dies with the
        # container; the topology test could not map it to a temp dir either).
        for key, value in env.items():
            if key.startswith("RCMFLOW_") and value.startswith("/"):
                assert any(value == m or value.startswith(m.rstrip("/") + "/")
                           for m in mounts), (name, key, value, mounts)
        # Every port it exposes or publishes is one it listens on, bound to all interfaces
        # (127.0.0.1 inside a container is unreachable from Prometheus and the clients).
        ports = {key: int(value) for key, value in env.items()
                 if key.startswith("RCMFLOW_") and key.endswith("_PORT") and int(value)}
        container_ports = {int(str(p).split(":")[-1]) for p in
                           [*service.get("expose", []), *service.get("ports", [])]}
        assert container_ports == set(ports.values()), (name, container_ports, ports)
        for key in ports:
            host = "RCMFLOW_METRICS_HOST" if "METRICS" in key else key[:-5] + "_HOST"
            assert env.get(host) == "0.0.0.0", (name, key, host)
        # The healthcheck reads the port from the service's own environment.
        check = service["healthcheck"]["test"]
        assert check[:3] == ["CMD", "python", "-c"], (name, check)
        used = re.findall(r"os\.environ\['(RCMFLOW_[A-Z_]+)'\]", check[3])
        assert used and all(var in ports for var in used), (name, used)
        # Started once the broker is healthy, directly or through the workers.
        assert _reaches_kafka_healthy(name), name
    assert all(len(seen) == 1 for seen in shared.values()), shared
    assert "healthcheck" in SERVICES[KAFKA_SERVICE]
    for name, service in SERVICES.items():
        for target, condition in _depends_on(service).items():
            assert target in SERVICES, (name, target)
            assert condition in ("service_started", "service_healthy",
                                 "service_completed_successfully"), (name, condition)
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], (name, target)
            # A default service may not wait for one only a profile starts.
            assert SERVICES[target].get("profiles") is None or service.get("profiles"), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in declared_volumes, (name, volume)
    assert _start_order(DEFAULT_SERVICES)[0] == KAFKA_SERVICE


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def _reaches_kafka_healthy(name: str) -> bool:
    deps = _depends_on(SERVICES[name])
    return deps.get(KAFKA_SERVICE) == "service_healthy" or any(
        condition == "service_healthy" and _reaches_kafka_healthy(target)
        for target, condition in deps.items() if target != KAFKA_SERVICE)


def _start_order(names: list[str]) -> list[str]:
    """depends_on order (a cycle fails here, as it fails `docker compose up`)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        assert name not in visiting, f"depends_on cycle through {name}"
        visiting.add(name)
        for target in _depends_on(SERVICES[name]):
            visit(target)
        order.append(name)

    for name in sorted(names):
        visit(name)
    return order


def test_interpolation_follows_compose() -> None:
    variables = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", variables) == (
        "$SET x x d d ")
    with pytest.raises(ComposeError, match="set the key"):
        interpolate("${EMPTY:?set the key}", variables)
    with pytest.raises(ComposeError, match="RCMFLOW_FACADE_JWT_KEY"):
        _env("facade", {})


# -- 2. docker compose config ----------------------------------------------------------


def _docker_engine() -> str | None:
    """Why there is no Docker engine to ask, or None when `docker info` answers."""
    if shutil.which("docker") is None:
        return "no docker client"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer in 30 s"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine (`docker info` exit {info.returncode}: {last})"
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    reason = _docker_engine()
    if reason is not None:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    base = ["docker", "compose", "-f", str(COMPOSE_FILE)]
    for profile in ([], ["--profile", "tryton"]):
        done = subprocess.run([*base, *profile, "config", "--quiet"], capture_output=True,
                              text=True, timeout=60, env=env | _variables())
        assert done.returncode == 0, (profile, done.stderr)
    # Without the facade's key the file refuses to run (`:?`), with the file's message.
    done = subprocess.run([*base, "config", "--quiet"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode != 0 and "JWT key" in done.stderr, done.stderr


# -- 3. the topology, without Docker ---------------------------------------------------


def _seconds(duration: str) -> float:
    """A compose duration: 1m30s, 5s, 500ms."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


@dataclass
class Process:
    service: str
    replica: int
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes]

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def port(self, variable: str) -> int:
        return int(self.env[variable])

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text)


@dataclass
class Topology:
    """The compose file's services as local processes against ``kafka``."""

    kafka: ApacheKafka
    root: Path
    variables: dict[str, str]
    processes: list[Process] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)

    def volume_dir(self, volume: str) -> Path:
        path = self.root / "volumes" / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def local_environment(self, service: str, replica: int) -> dict[str, str]:
        """The service's compose environment with the module docstring's rewrites."""
        env = _env(service, self.variables)
        mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES[service].get("volumes", [])}
        out = dict(env)
        for key, value in env.items():
            if key == "RCMFLOW_BROKER":
                out[key] = self.kafka.url
            elif key.endswith("_PORT") and key.startswith("RCMFLOW_") and int(value):
                out[key] = str(free_port())
            elif key.endswith("_HOST") and value == "0.0.0.0":
                out[key] = "127.0.0.1"
            else:
                for target, volume in mounts.items():
                    if value == target or value.startswith(target.rstrip("/") + "/"):
                        out[key] = str(self.volume_dir(volume)) + value[len(target):]
            if out[key] != value:
                self.rewrites.append(f"{service}-{replica} {key}: {value} -> {out[key]}")
        return out

    def start(self, service: str) -> list[Process]:
        spec = SERVICES[service]
        command = list(spec["command"])
        script = Path(sys.executable).with_name(command[0])  # the env's `rcmflow` script
        assert script.is_file(), f"no {command[0]} script beside {sys.executable}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
        started = []
        for replica in range(1, int((spec.get("deploy") or {}).get("replicas", 1)) + 1):
            env = self.local_environment(service, replica)
            log = self.root / "logs" / f"{service}-{replica}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as out:
                popen = subprocess.Popen([str(script), *command[1:]], env=base | env,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            started.append(Process(service, replica, env, log, popen))
        self.processes.extend(started)
        return started

    def healthy(self, process: Process) -> bool:
        """The service's compose healthcheck, run once against this process."""
        check = SERVICES[process.service]["healthcheck"]
        test = check["test"]
        argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
        if argv[0] == "python":
            argv[0] = sys.executable
        try:
            done = subprocess.run(argv, env=os.environ | process.env, capture_output=True,
                                  timeout=_seconds(check.get("timeout", "30s")))
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def wait_healthy(self, service: str) -> None:
        """As `depends_on: {condition: service_healthy}` waits, for every replica."""
        check = SERVICES[service]["healthcheck"]
        budget = (_seconds(check.get("start_period", "0s"))
                  + _seconds(check.get("interval", "30s")) * int(check.get("retries", 3)))
        for process in self.of(service):
            def answered(p: Process = process) -> bool:
                return self.healthy(p) or not p.alive()

            wait_until(answered, budget, f"{process.name} healthy", self.tails)
            assert process.alive(), self.tails()

    def up(self) -> None:
        """`docker compose up` for the default profile: depends_on order and conditions."""
        for service in _start_order(DEFAULT_SERVICES):
            if service == KAFKA_SERVICE:
                continue  # self.kafka: started, answering, and with the file's settings
            if service in MONITORING_SERVICES:
                continue  # not rcmflow: Docker only
            for target, condition in _depends_on(SERVICES[service]).items():
                if target != KAFKA_SERVICE and condition == "service_healthy":
                    self.wait_healthy(target)
            self.start(service)
        for service in DEFAULT_SERVICES:
            if service != KAFKA_SERVICE and service not in MONITORING_SERVICES:
                self.wait_healthy(service)

    def of(self, service: str) -> list[Process]:
        return [p for p in self.processes if p.service == service]

    def one(self, service: str) -> Process:
        (process,) = self.of(service)
        return process

    def tails(self) -> str:
        return "\n".join(p.log_tail() for p in self.processes)

    def down(self, grace_s: float) -> dict[str, tuple[int, float]]:
        """`docker compose down`: SIGTERM, then SIGKILL after the grace period.
        Returns each process's exit code and how long it took to stop."""
        stopped: dict[str, tuple[int, float]] = {}
        for process in self.processes:
            if process.alive():
                process.popen.send_signal(signal.SIGTERM)
        began = time.monotonic()
        for process in self.processes:
            try:
                process.popen.wait(max(0.1, grace_s - (time.monotonic() - began)))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            stopped[process.name] = (process.popen.returncode, time.monotonic() - began)
        return stopped


@pytest.fixture
def bare_kafka(broker_kind: str, tmp_path: Path) -> Iterator[ApacheKafka]:
    """A fresh Apache Kafka with the compose file's settings and no topics.

    Not the ``broker`` fixture: that one creates the rcm.* topics with the tests' partition
    count, and here the workers must create them with the file's RCMFLOW_PARTITIONS.
    ``broker_kind`` (always "kafka", see the brokers mark) brings --broker and
    ``kafka_or_skip`` with it.
    """
    assert broker_kind == "kafka"
    kafka = ApacheKafka(data_dir=tmp_path / "kafka").start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def topology(bare_kafka: ApacheKafka, tmp_path: Path) -> Iterator[Topology]:
    top = Topology(bare_kafka, tmp_path / "compose", _variables())
    try:
        yield top
    finally:
        for process in top.processes:
            if process.alive():
                process.popen.kill()
                process.popen.wait()


def events_assignment(kafka: KafkaConnection, group: str) -> dict[str, set[int]]:
    """Member id -> the rcm.events partitions the group's leader assigned it."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    async def describe() -> Any:
        admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
        await admin.start()
        try:
            return await admin.describe_consumer_groups([group])
        finally:
            await admin.close()

    out: dict[str, set[int]] = {}
    for response in asyncio.run(describe()):
        for entry in response.groups:
            error, state, members = entry[0], entry[2], entry[5]
            if error or state != "Stable":
                return {}
            for member in members:
                member_id, raw = member[0], member[-1]
                got: set[int] = set()
                if raw:
                    decoded = ConsumerProtocolMemberAssignment.decode(raw)
                    for topic, partitions in decoded.assignment:
                        if topic == EVENTS:
                            got.update(partitions)
                out[member_id] = got
    return out


def journal_rows(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("journal-*.csv")):
        with path.open(newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def account_balances(doc: dict[str, Any]) -> dict[str | None, int]:
    """Aggregate code (insurance, patient; None: the total) -> cents, from a FHIR Account."""
    from rcmflow.facade.resources import BALANCE_EXTENSION

    out: dict[str | None, int] = {}
    for ext in doc["extension"]:
        if ext["url"] != BALANCE_EXTENSION:
            continue  # the lifecycle state's extension (docs/lifecycle.md)
        parts = {p["url"]: p for p in ext["extension"]}
        aggregate = parts.get("aggregate")
        code = None if aggregate is None else aggregate["valueCodeableConcept"]["coding"][0][
            "code"]
        out[code] = int(Decimal(str(parts["amount"]["valueMoney"]["value"])) * 100)
    return out


#: DescribeConfigs' config_source for a setting read from server.properties.
STATIC_BROKER_CONFIG = 4


def broker_configs(kafka: KafkaConnection) -> dict[str, tuple[str, int]]:
    """Every setting of broker 1 as Kafka understood it: name -> (value, source).
    A name Kafka does not know is not there (Kafka ignores it, as pydantic would)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def describe() -> Any:
        admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
        await admin.start()
        try:
            return await admin.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, "1")])
        finally:
            await admin.close()

    (response,) = asyncio.run(describe())
    (resource,) = response.resources
    assert resource[0] == 0, resource[:2]
    return {entry[0]: (entry[1], entry[3]) for entry in resource[4]}


#: Accounts in the canonical-event workload (a few events each, with replays, conflicts and
#: invalid events); enough for every partition of eight to get some.
ACCOUNTS = 60
HL7_ACCOUNT = "A3001"  # dft_A3001.hl7: two charges, 100.00 and 50.00
#: `docker compose down` / `stop`: SIGTERM, then SIGKILL after stop_grace_period (10 s).
STOP_GRACE_S = 10.0


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.brokers("kafka")
def test_the_compose_topology_runs_as_local_processes(topology: Topology) -> None:
    started = time.monotonic()
    kafka = topology.kafka
    # The broker runs every setting of the file: Kafka knows each name and took its value
    # from server.properties (a misspelt KAFKA_* variable would be missing here).
    understood = broker_configs(kafka.connection)
    assert {key: understood.get(key) for key in kafka.properties()} == {
        key: (value, STATIC_BROKER_CONFIG) for key, value in kafka.properties().items()}
    topology.up()
    print("rewrites:\n  " + "\n  ".join(topology.rewrites))
    up_s = time.monotonic() - started

    # The workers created the topics with the file's partition count, and split them.
    partitions = int(_env("worker")["RCMFLOW_PARTITIONS"])
    assert asyncio.run(topic_partitions(kafka.connection, EVENTS)) == list(range(partitions))
    workers = topology.of("worker")
    assert len(workers) == 2
    group = _env("worker").get("RCMFLOW_APP_ID", "rcmflow")

    def split() -> bool:
        members = events_assignment(kafka.connection, group)
        return len(members) == len(workers) and all(members.values())

    wait_until(split, 120, "both workers to hold rcm.events partitions", topology.tails)
    assignment = events_assignment(kafka.connection, group)
    assert sorted(p for ps in assignment.values() for p in ps) == list(range(partitions))

    # Feed: canonical events as a file connector publishes them, and an HL7 DFT over MLLP.
    workload = Workload.build(accounts=ACCOUNTS, seed=10, conflicts=3, invalid=3)
    events_file = topology.root / "events.jsonl"
    events_file.write_bytes(b"".join(value + b"\n" for _, value in workload.values))
    ingest_env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    ingest_env |= {"RCMFLOW_BROKER": kafka.url,
                   "RCMFLOW_DATA_DIR": str(topology.root / "ingest")}
    script = Path(sys.executable).with_name("rcmflow")
    done = subprocess.run([str(script), "ingest", "events", str(events_file)], env=ingest_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    mllp = topology.one("mllp")
    assert send_mllp("127.0.0.1", mllp.port("RCMFLOW_MLLP_PORT"), HL7_FILE.read_bytes()) == "AA"

    # What the pure core says for exactly what is on rcm.events (the file's lines, in order
    # per account, and the listener's two charge events).
    records = asyncio.run(read_topic(kafka.connection, EVENTS))
    hl7_records = [r for r in records if r.key == HL7_ACCOUNT.encode()]
    assert len(hl7_records) == 2
    assert Counter(r.value for r in records if r.key != HL7_ACCOUNT.encode()) == Counter(
        value for _, value in workload.values)
    messages = [Message(EVENTS, 0, i, k.encode(), v) for i, (k, v) in enumerate(
        [*workload.values, *((HL7_ACCOUNT, r.value) for r in hl7_records)])]
    tables = MemoryTables()
    result = Processor(load_chart()).process(messages, tables)
    tables.write(result)
    expected_states = tables.views()
    expected_postings = {json.loads(v)["posting_id"]: v for _, _, v in result.postings}
    assert workload.expected().states.items() <= expected_states.items()

    def applied() -> bool:
        observed = Observed.read(kafka.connection)
        return (observed.states == expected_states
                and set(observed.postings) == set(expected_postings))

    wait_until(applied, 180, "the workers to apply every event", topology.tails)
    observed = Observed.read(kafka.connection)
    # Each posting once, byte for byte what the core computes; the DLQ has the rest.
    assert {pid: values for pid, values in observed.postings.items()} == {
        pid: {value} for pid, value in expected_postings.items()}
    assert observed.dlq_reasons() == workload.expected().dlq_reasons
    hl7 = observed.states[HL7_ACCOUNT]
    assert (hl7["version"], hl7["balances"]["gross_charges"], hl7["balances"]["balance"]) == (
        2, 15_000, 15_000)

    # Both workers did some of it, and together all of it (once each).
    applied_by = [scrape(w.port("RCMFLOW_WORKER_METRICS_PORT"))
                  .get('rcmflow_worker_events_total{outcome="applied"}', 0) for w in workers]
    assert all(n > 0 for n in applied_by), applied_by
    assert sum(applied_by) == result.counts.applied, (applied_by, result.counts)

    # The ERP journal: every posting id once, each line as the delta has it.
    erp = topology.one("erp")
    journal = Path(erp.env["RCMFLOW_ERP_CSV_DIR"])

    def journaled() -> set[str]:
        return {row["posting_id"] for row in journal_rows(journal)}

    wait_until(lambda: journaled() == set(expected_postings), 120, "the ERP journal",
               topology.tails)
    by_id: dict[str, list[dict[str, str]]] = {}
    for row in journal_rows(journal):
        by_id.setdefault(row["posting_id"], []).append(row)
    for pid, raw in expected_postings.items():
        lines = json.loads(raw)["lines"]
        assert [int(r["line_no"]) for r in by_id[pid]] == list(range(1, len(lines) + 1)), pid
        assert [(r["gl_account"], parse_cents(r["debit"]), parse_cents(r["credit"]))
                for r in by_id[pid]] == [(x["gl_account"], x["debit_cents"], x["credit_cents"])
                                         for x in lines], pid

    # The facade serves every account, over HTTP, to a caller with a token signed with the
    # key the compose file takes from the shell (and to nobody without one).
    facade = topology.one("facade")
    port = facade.port("RCMFLOW_FACADE_PORT")
    base = f"http://127.0.0.1:{port}{facade.env.get('RCMFLOW_FACADE_BASE_PATH', '/fhir')}"
    key, aud = facade.env["RCMFLOW_FACADE_JWT_KEY"], facade.env["RCMFLOW_FACADE_JWT_AUDIENCE"]
    with httpx.Client(base_url=base, timeout=10,
                      headers={"Authorization": f"Bearer {token(key=key, aud=aud)}"}) as client:
        def health() -> dict[str, Any]:
            doc: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
            return doc

        def caught_up() -> bool:
            doc = health()
            return doc.get("accounts") == len(expected_states) and doc.get("lag_records") == 0

        wait_until(caught_up, 60, "the facade's read model", topology.tails)
        assert httpx.get(f"{base}/Account/{HL7_ACCOUNT}", timeout=10).status_code == 401
        for account, state in expected_states.items():
            response = client.get(f"/Account/{account}")
            assert response.status_code == 200, (account, response.text)
            doc = response.json()
            assert doc["meta"]["versionId"] == str(state["version"]), account
            b = state["balances"]
            assert account_balances(doc) == {"insurance": b["insurance_ar"],
                                             "patient": b["patient_ar"],
                                             None: b["balance"]}, account

    # Every process's /metrics answers, with what it did.
    mllp_metrics = scrape(mllp.port("RCMFLOW_MLLP_METRICS_PORT"))
    assert mllp_metrics.get('rcmflow_mllp_messages_total{ack="AA"}') == 1, mllp_metrics
    erp_metrics = scrape(erp.port("RCMFLOW_ERP_METRICS_PORT"))
    assert erp_metrics.get("rcmflow_erp_posted_total") == len(expected_postings), erp_metrics
    facade_metrics = scrape(port)
    assert facade_metrics.get("rcmflow_facade_accounts") == len(expected_states)
    for worker in workers:
        assert "rcmflow_worker_postings_total" in scrape(
            worker.port("RCMFLOW_WORKER_METRICS_PORT"))
    # The audit follower: each exception item of rcm.dlq counted once, no ledger mismatch.
    audit_port = topology.one("audit").port("RCMFLOW_AUDIT_METRICS_PORT")

    def dlq_items() -> float:
        return sum(v for k, v in scrape(audit_port).items()
                   if k.startswith("rcmflow_audit_dlq_items{") and 'queue="dlq"' in k)

    assert result.dlq  # the workload has refusals
    wait_until(lambda: dlq_items() == len(result.dlq), 60, "the audit's DLQ items",
               topology.tails)
    assert scrape(audit_port).get("rcmflow_audit_mismatches_total") == 0

    # `docker compose down`: every process stops on SIGTERM within the grace period.
    assert all(p.alive() for p in topology.processes), topology.tails()
    stopped = topology.down(STOP_GRACE_S)
    print(f"up in {up_s:.1f}s, whole test {time.monotonic() - started:.1f}s, "
          f"stopped: {stopped}")
    print(f"rcm.events partitions by worker: {sorted(map(sorted, assignment.values()))}, "
          f"events applied by worker: {applied_by}")
    # Exit 0, or -SIGTERM: uvicorn (the facade) re-raises the signal after its graceful
    # shutdown. Never the grace period's SIGKILL.
    late = {name: got for name, got in stopped.items()
            if got[1] >= STOP_GRACE_S or got[0] not in (0, -signal.SIGTERM)}
    assert late == {}, f"not stopped cleanly within the grace period: {late}\n{topology.tails()}"
