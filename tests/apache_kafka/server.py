"""A real single-node Apache Kafka (KRaft, combined broker + controller) for tests and dev.

Tansu (rcmflow.runtime.broker.EmbeddedBroker) cannot run idempotent or transactional producers, so
what needs them — Faust's ``exactly_once`` — is tested here. Same shape as EmbeddedBroker:
``ApacheKafka().start()`` then ``.bootstrap`` / ``.url``, ``stop()``, or a ``with`` block.
PLAINTEXT on 127.0.0.1 with free ports, data in a temp dir, logs in one file whose tail is in
the error when the broker does not come up.

``ApacheKafka(secure=KafkaSecurity(...))`` adds what hospital clusters run (tests/security):

- a SASL_SSL listener (SCRAM-SHA-512; the users are created at storage format time);
- an SSL listener that requires a client certificate (mutual TLS; the certificate's CN is the
  principal: ``User:<CN>``);
- certificates from a throw-away CA (``tests/apache_kafka/certs.py``), read as PEM by Kafka;
- the StandardAuthorizer with ``allow.everyone.if.no.acl.found=false``: a principal reaches
  nothing but what an ACL grants (``create_acls``).

The PLAINTEXT listener stays, for the harness only: its principal, ``User:ANONYMOUS``, is a
super user (as is the ``admin`` SCRAM user), so ``connection`` still creates topics and ACLs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest

from rcmflow.runtime.broker import stop_process, wait_for_broker
from rcmflow.runtime.exceptions import BrokerError
from rcmflow.runtime.kafka_access import AclBinding
from rcmflow.runtime.kafka_connection import KafkaConnection
from tests.apache_kafka.certs import CertificateAuthority
from tests.apache_kafka.fetch import ensure_jars, find_java
from tests.compose_file import kafka_properties

__all__ = ["ApacheKafka", "KafkaSecurity", "ADMIN_USER", "SCRAM_MECHANISM", "TEST_OVERRIDES",
           "ADDRESS_PROPERTIES"]

# A JVM on 2 shared cores: format + first metadata answer takes seconds, not milliseconds.
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
FORMAT_TIMEOUT_S = 60.0
HEAP = "512m"
#: JVM flags for a test broker: the client compiler only and the serial collector. A test
#: broker lives seconds and carries little; measured on 2 shared cores, start goes from ~6.8
#: to ~4.2 s and its CPU from ~5.4 to ~3.3 s (the suite starts ~100 of them). The benchmarks
#: pass ``quick_jvm=False``: a broker measured for throughput runs the JVM's defaults.
QUICK_JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
#: A test broker also maps the classes an earlier one loaded (AppCDS, a dynamic archive beside
#: the jars, written by the first broker of a machine at its clean exit): ~1.1 s less CPU a
#: start (3.5 -> 2.4 s measured, start + stop). A missing or stale archive is only slower: the
#: JVM's default ``-Xshare:auto`` starts without it.
_archive_lock = threading.Lock()
_archive_claimed = False
#: One storage format per process, copied into each new broker's data dir: the format tool is
#: a JVM of its own (~1.2 s wall, ~1 s CPU), and a fresh single-node cluster's metadata dir
#: is the same bytes every time (its cluster id too: each broker is a cluster of its own).
_template_lock = threading.Lock()
_templates: dict[Path, Path] = {}

#: The broker settings come from docker-compose.yml (its kafka service's KAFKA_* variables).
#: Each instance replaces these with its own free ports on 127.0.0.1 and its temp dir ...
ADDRESS_PROPERTIES = ("listeners", "advertised.listeners", "controller.quorum.voters",
                      "log.dirs")
#: ... and a broker that lives for one test differs from production only here:
TEST_OVERRIDES = {
    # The first group or transaction creates these internal topics, and creating 50
    # partitions each (Kafka's default, kept in production) takes seconds on 2 shared cores.
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    # Production waits 3 s (Kafka's default) so workers started together join one
    # generation; a test's group would wait those 3 s at every first join.
    "group.initial.rebalance.delay.ms": "0",
    # The ERP connector tests use 1.5 s sessions so that a killed connector's partitions move
    # fast; Kafka's floor (6 s, kept in production) refuses them.
    "group.min.session.timeout.ms": "1000",
}

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# The per-request and state-change chatter hides the lines that explain a failed start.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""
#: With an authorizer: every denial is logged at INFO (what a missing ACL looks like).
LOG4J2_AUTHORIZER = """\
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = info
"""

SCRAM_MECHANISM = "SCRAM-SHA-512"
#: A SCRAM super user for the secure listeners (the harness itself uses PLAINTEXT).
ADMIN_USER = "admin"
SUPER_USERS = ("User:ANONYMOUS", f"User:{ADMIN_USER}")

# Kafka's wire codes for CreateAcls (org.apache.kafka.common.acl / resource).
_RESOURCE_TYPES = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
_PATTERN_TYPES = {"LITERAL": 3, "PREFIXED": 4}
_OPERATIONS = {"ALL": 2, "READ": 3, "WRITE": 4, "CREATE": 5, "DELETE": 6, "ALTER": 7,
               "DESCRIBE": 8, "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11,
               "IDEMPOTENT_WRITE": 12}
_ALLOW = 3


@dataclass(frozen=True)
class KafkaSecurity:
    """The secure listeners of a test broker and who may log in on them."""

    #: SCRAM-SHA-512 users (name -> password) created when the storage is formatted.
    scram_users: Mapping[str, str] = field(default_factory=dict)
    #: Also open an SSL listener that requires a client certificate signed by the CA.
    mutual_tls: bool = True


def _one_line_pem(pem: str) -> str:
    """PEM as one properties-file line: Java's Properties turns each \\n back into a line
    break (joined with spaces instead, Kafka served the CA as the broker's certificate)."""
    return "\\n".join(line.strip() for line in pem.strip().splitlines())


def _cluster_id() -> str:
    """What `kafka-storage.sh random-uuid` prints: a UUID in URL-safe base64, no padding,
    never starting with "-" (Kafka's Uuid.randomUuid draws again: 1 in 64 would, and the
    storage tool's argument parser reads such an id as an option and refuses to format)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _archive_path(jars: Path) -> Path:
    """The class archive beside the jars, for this JVM (an archive is a JVM build's own)."""
    release = Path(find_java()).resolve().parents[1] / "release"
    java = release.read_text() if release.exists() else find_java()
    return jars / f"kafka-classes-{uuid.uuid5(uuid.NAMESPACE_URL, java).hex[:12]}.jsa"


def _formatted_template(base: list[str], jars: Path, properties: dict[str, str],
                        out: IO[bytes]) -> Path:
    """A formatted metadata dir for these jars, made once per process (the storage tool's
    output goes to ``out``, the broker's log)."""
    with _template_lock:
        template = _templates.get(jars)
        if template is None or not template.exists():
            root = Path(tempfile.mkdtemp(prefix="rcmflow-kafka-format-"))
            config = root / "server.properties"
            config.write_text("".join(f"{k}={v}\n" for k, v in
                                      (properties | {"log.dirs": str(root / "data")}).items()))
            subprocess.run([*base, _storage_tool(jars), "format", "-t", _cluster_id(),
                            "-c", str(config)], stdout=out, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=FORMAT_TIMEOUT_S, check=True)
            template = _templates[jars] = root / "data"
        return template


def _storage_tool(jars: Path) -> str:
    """kafka.tools.StorageTool in 4.0/4.1; look it up so a version bump cannot miss a move."""
    for name in ("kafka.tools.StorageTool", "org.apache.kafka.tools.StorageTool"):
        entry = name.replace(".", "/") + ".class"
        for jar in sorted(jars.glob("kafka*.jar")):
            with zipfile.ZipFile(jar) as archive:
                if entry in archive.namelist():
                    return name
    raise BrokerError(f"no StorageTool class in the Kafka jars under {jars}")


def distinct_free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 now, all different (held open together while
    the OS picks them)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class ApacheKafka:
    """An Apache Kafka process bound to 127.0.0.1 on a free port (its controller on another)."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None,
                 log_file: Path | None = None, heap: str = HEAP,
                 secure: KafkaSecurity | None = None, quick_jvm: bool = True) -> None:
        # Distinct ports, taken at once: one free_port() after another may give the same port
        # twice (the first is free again when the second is asked), and Kafka then refuses
        # two listeners on one port.
        ports = iter(distinct_free_ports(5))
        self.port = port or next(ports)
        self.controller_port = next(ports)
        if self.controller_port == self.port:
            self.controller_port = next(ports)
        self.heap = heap
        self.quick_jvm = quick_jvm
        # A temp dir we made is removed on stop(), and kept when start() fails: the log is there.
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="rcmflow-kafka-"))
        self.log_file = log_file or self.data_dir / "kafka.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in_s: float | None = None
        self.secure = secure
        self.sasl_port = next(ports) if secure else None
        self.ssl_port = next(ports) if secure and secure.mutual_tls else None
        self.admin_password = uuid.uuid4().hex
        self._archive_dump: Path | None = None
        self.ca: CertificateAuthority | None = None
        if secure:
            self.ca = CertificateAuthority(self.data_dir / "pki")
            self._broker_cert = self.ca.issue("broker", server=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def connection(self) -> KafkaConnection:
        """PLAINTEXT; on a secure broker this is the harness's super-user back door."""
        return KafkaConnection.plaintext(self.bootstrap)

    @property
    def sasl_bootstrap(self) -> str:
        assert self.sasl_port, "not a secure broker"
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        assert self.ssl_port, "no mutual TLS listener"
        return f"127.0.0.1:{self.ssl_port}"

    def sasl_connection(self, username: str, password: str | None = None) -> KafkaConnection:
        """SASL_SSL + SCRAM-SHA-512 as ``username`` (its registered password by default)."""
        assert self.secure and self.ca
        if password is None:
            password = (self.admin_password if username == ADMIN_USER
                        else self.secure.scram_users[username])
        return KafkaConnection(servers=(self.sasl_bootstrap,), security_protocol="SASL_SSL",
                               sasl_mechanism=SCRAM_MECHANISM, username=username,
                               password=password, ca_file=self.ca.ca_file)

    def mtls_connection(self, common_name: str | None) -> KafkaConnection:
        """SSL to the mutual-TLS listener with a client certificate for ``common_name`` (the
        principal ``User:<common_name>``), or with none (``None``: the broker refuses it)."""
        assert self.ca
        if common_name is None:
            return KafkaConnection(servers=(self.ssl_bootstrap,), security_protocol="SSL",
                                   ca_file=self.ca.ca_file)
        issued = self.ca.issue(common_name)
        return KafkaConnection(servers=(self.ssl_bootstrap,), security_protocol="SSL",
                               ca_file=self.ca.ca_file, cert_file=issued.cert_file,
                               key_file=issued.key_file)

    def properties(self) -> dict[str, str]:
        properties = self._plaintext_properties()
        if self.secure:
            properties.update(self._secure_properties())
        return properties

    def _secure_properties(self) -> dict[str, str]:
        assert self.secure and self.ca
        controller = f"127.0.0.1:{self.controller_port}"
        listeners = [f"PLAINTEXT://{self.bootstrap}", f"SASL_SSL://{self.sasl_bootstrap}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "SASL_SSL:SASL_SSL", "CONTROLLER:PLAINTEXT"]
        if self.ssl_port:
            listeners.append(f"SSL://{self.ssl_bootstrap}")
            protocols.append("SSL:SSL")
        properties = {
            "listeners": ",".join([*listeners, f"CONTROLLER://{controller}"]),
            "advertised.listeners": ",".join(listeners),
            "listener.security.protocol.map": ",".join(protocols),
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            # The broker only verifies SCRAM logins here (inter-broker traffic is PLAINTEXT).
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            # PEM in the properties themselves: no keystore files, no keytool.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": _one_line_pem(self._broker_cert.chain_pem()),
            "ssl.keystore.key": _one_line_pem(self._broker_cert.key_pem()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": _one_line_pem(self.ca.ca_pem()),
            # Mutual TLS: no certificate, no connection; the CN names the principal.
            "listener.name.ssl.ssl.client.auth": "required",
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+),.*$/$1/,DEFAULT",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": ";".join(SUPER_USERS),
            "allow.everyone.if.no.acl.found": "false",
        }
        return properties

    def _plaintext_properties(self) -> dict[str, str]:
        """docker-compose.yml's broker settings, at this instance's addresses and data dir,
        with TEST_OVERRIDES: the tests run the production broker's configuration."""
        controller = f"127.0.0.1:{self.controller_port}"
        properties = kafka_properties()
        addresses = {
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.quorum.voters": f"1@{controller}",
            "log.dirs": str(self.data_dir / "data"),
        }
        for key in (*addresses, *TEST_OVERRIDES):  # replaced, never added: see test_compose
            if key not in properties:
                raise BrokerError(f"docker-compose.yml's kafka service does not set {key}")
        return properties | addresses | TEST_OVERRIDES

    def start(self, format_storage: bool = True) -> ApacheKafka:
        """Format the storage and start; ``format_storage=False`` starts again from the log
        of an earlier start (after ``stop(keep_data=True)`` or a kill -9: tests/chaos)."""
        started = time.monotonic()
        jars = ensure_jars()
        java = find_java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2 + (LOG4J2_AUTHORIZER if self.secure else ""))
        base = [java, f"-Xmx{self.heap}", "-Xms128m", "-XX:+ExitOnOutOfMemoryError",
                *(QUICK_JVM_FLAGS if self.quick_jvm else ()),
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
                f"-Dkafka.logs.dir={self.data_dir}", "-cp", str(jars / "*")]
        with open(self.log_file, "ab") as out:
            try:
                if format_storage and self.secure:  # its SCRAM users are made at format
                    self._format(base, jars, config, out)
                elif format_storage:
                    shutil.copytree(_formatted_template(base, jars, self.properties(), out),
                                    self.data_dir / "data")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise BrokerError(f"Apache Kafka storage format failed: {exc}\n"
                                  f"--- {self.log_file} ---\n{self.log_tail()}") from exc
            archive = self._archive_flags(jars) if self.quick_jvm else ()
            self.process = subprocess.Popen(
                [*base, *archive, "kafka.Kafka", str(config)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
            )
        try:
            asyncio.run(wait_for_broker(self.connection, START_TIMEOUT_S))
        except BrokerError as exc:
            exited = self.process.poll()
            self.stop(keep_data=True)
            raise BrokerError(f"Apache Kafka did not start (exit code {exited}): {exc}\n"
                              f"--- {self.log_file} ---\n{self.log_tail()}") from exc
        self.started_in_s = time.monotonic() - started
        return self

    def _format(self, base: list[str], jars: Path, config: Path, out: IO[bytes]) -> None:
        subprocess.run([*base, _storage_tool(jars), "format", "-t", _cluster_id(),
                        "-c", str(config), *self._scram_arguments()],
                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=FORMAT_TIMEOUT_S, check=True)

    def _archive_flags(self, jars: Path) -> tuple[str, ...]:
        """Use the class archive; with none yet, the first broker of the process writes it."""
        global _archive_claimed
        archive = _archive_path(jars)
        if archive.exists():
            return (f"-XX:SharedArchiveFile={archive}",)
        with _archive_lock:
            if _archive_claimed:
                return ()
            _archive_claimed = True
        self._archive_dump = archive.with_name(f"{archive.name}.{os.getpid()}.tmp")
        return (f"-XX:ArchiveClassesAtExit={self._archive_dump}",)

    def discard(self) -> None:
        """Kill -9 and remove its data: a test's broker needs no clean stop (one that is
        writing the class archive does, and gets it)."""
        if self._archive_dump is not None:
            self.stop()
            return
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _scram_arguments(self) -> list[str]:
        """StorageTool --add-scram per user: the credentials exist before the first login."""
        if not self.secure:
            return []
        users = {**self.secure.scram_users, ADMIN_USER: self.admin_password}
        arguments: list[str] = []
        for name, password in users.items():
            assert "," not in name + password and "]" not in name + password, name
            arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        return arguments

    async def create_acls(self, principal: str, bindings: Iterable[AclBinding]) -> None:
        """Grant ``bindings`` (ALLOW, any host) to ``principal`` (e.g. ``User:worker``)."""
        await self._acls(CreateAclsRequest, principal, bindings)

    async def delete_acls(self, principal: str, bindings: Iterable[AclBinding]) -> None:
        """Take ``bindings`` back from ``principal`` (a permission lost while running)."""
        await self._acls(DeleteAclsRequest, principal, bindings)

    async def _acls(self, kind: type[CreateAclsRequest] | type[DeleteAclsRequest],
                    principal: str, bindings: Iterable[AclBinding]) -> None:
        # aiokafka's admin has no create_acls/delete_acls methods; its protocol module has
        # CreateAcls and DeleteAcls v1 (which Kafka 4.1 still accepts), sent here through the
        # admin's client, as the super user of the PLAINTEXT listener.
        admin = AIOKafkaAdminClient(**self.connection.client_options(), request_timeout_ms=10_000)
        await admin.start()
        try:
            for binding in bindings:
                request = kind(
                    _RESOURCE_TYPES[binding.resource_type], binding.name,
                    _PATTERN_TYPES[binding.pattern], principal, "*",
                    _OPERATIONS[binding.operation], _ALLOW)
                response = await admin._client.send(admin._client.get_random_node(), request)
                answers = (response.creation_responses if kind is CreateAclsRequest
                           else [entry[:2] for entry in response.filter_responses])
                for code, message in answers:
                    if code:
                        raise for_code(code)(f"{kind.__name__} {binding} for {principal}: "
                                             f"{message}")
        finally:
            await admin.close()

    def stop(self, keep_data: bool = False) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT_S)
        dump, self._archive_dump = self._archive_dump, None
        if dump is not None and dump.exists():  # written at the JVM's clean exit
            os.replace(dump, _archive_path(dump.parent))
        if self._own_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
