"""One startup check for every command: can this principal log in and do its job?

A wrong SCRAM password, an untrusted certificate or a missing ACL must end a command in
seconds with one line that names the cause and the setting or ACL to fix — not a client
that retries for ever (aiokafka logs the real cause and raises "Unable to bootstrap") or a
Faust worker that joins nothing and looks healthy. ``preflight`` runs before a command
starts its real clients, within ``PREFLIGHT_TIMEOUT_S``:

1. **connect**: one connection per bootstrap server with the command's own TLS and SASL
   settings, so the error is the broker's (SaslAuthenticationFailed, a certificate the
   client does not trust; for a refused client certificate a bare TLS handshake reads the
   broker's alert);
2. **prepare** (optional): what the command does first, e.g. the worker creates its topics;
3. **access**: Metadata v8 with each topic's authorized operations (READ/WRITE as the
   component needs, ``rcmflow/runtime/kafka_access.py``), the group's authorized operations
   (DescribeGroups v3), and FindCoordinator for a transactional id (exactly_once).

A broker that cannot say what is authorized (no authorizer, an older protocol: the embedded
broker) is checked for topic errors only. A missing topic is no access problem: the caller
decides (the worker creates it, the facade waits for it). Neither is a broker that is down:
the command-line commands then go on to meet it as they always have (``skip_if_unreachable``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnknownTopicOrPartitionError,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from rcmflow.runtime.exceptions import BrokerUnreachable, KafkaAccessError
from rcmflow.runtime.kafka_access import Access
from rcmflow.runtime.kafka_connection import KafkaConnection

__all__ = [ "preflight", "check_connection",
           "check_access", "explain_kafka_error", "access_error", "ACCESS_ERRORS",
           "PREFLIGHT_TIMEOUT_S", "DOCS"]

log = logging.getLogger("rcmflow.preflight")

#: Longest the whole check may take before the command fails (a black-holed address, a
#: broker that accepts TCP and never answers).
PREFLIGHT_TIMEOUT_S = 15.0
#: Pause between FindCoordinator asks while the coordinator is loading.
COORDINATOR_RETRY_S = 0.2
#: Where the settings and the ACLs of every component are listed.
DOCS = "docs/operations/security.md, 'Secure connections'"

# Kafka's AclOperation codes, as bits of an authorized-operations field.
_OPERATION_BITS = {"READ": 3, "WRITE": 4, "CREATE": 5, "DESCRIBE": 8}
#: "Not computed": the broker has no authorizer answer for us.
_UNKNOWN_OPERATIONS = -(2**31)


#: What aiokafka raises when a permission is missing or lost, or a login is refused: none of
#: them heals by retrying, so a running component stops on them (``access_error``).
ACCESS_ERRORS: tuple[type[KafkaError], ...] = (
    TopicAuthorizationFailedError, GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailed, ClusterAuthorizationFailedError,
    SaslAuthenticationFailed)


def access_error(exc: BaseException, kafka: KafkaConnection, component: str, *,
                 operation: str | None = None) -> KafkaAccessError | None:
    """A running component's authorization or authentication failure as one clear line
    (an ACL removed, a login refused); None for any other error. ``operation``: what the
    component was doing (e.g. WRITE), when the caller knows."""
    if isinstance(exc, KafkaAccessError):
        return exc
    if not isinstance(exc, ACCESS_ERRORS):
        return None
    return KafkaAccessError(f"{component}: {explain_kafka_error(exc, kafka, operation)}")


async def preflight(kafka: KafkaConnection, access: Access, *,
                    prepare: Callable[[], Awaitable[object]] | None = None,
                    skip_if_unreachable: bool = False,
                    timeout_s: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Connect, authenticate, ``prepare``, and check ``access``; KafkaAccessError if not,
    its message starting with the component ("worker: ...").

    ``skip_if_unreachable``: a broker that refuses every connection (down, or not there) is
    not this check's business: return, and let the command meet it as it always has (ingest,
    consume and the ERP connector exit 3 "run it again", the facade retries). Only a broker that
    answers can tell a wrong password or a missing ACL.
    """
    try:
        async with asyncio.timeout(timeout_s):
            try:
                await check_connection(kafka)
            except BrokerUnreachable:
                if skip_if_unreachable:
                    log.debug("%s: broker unreachable; preflight skipped", access.component)
                    return
                raise
            if prepare is not None:
                await prepare()
            await check_access(kafka, access)
    except TimeoutError as exc:
        raise KafkaAccessError(
            f"{access.component}: no answer from {kafka.describe()} within {timeout_s:.0f}s "
            "(is RCMFLOW_BROKER right, and does that listener speak "
            f"{kafka.security_protocol}?)") from exc
    except KafkaAccessError as exc:
        raise KafkaAccessError(f"{access.component}: {exc}") from exc
    except (KafkaError, OSError) as exc:
        raise KafkaAccessError(f"{access.component}: {explain_kafka_error(exc, kafka)}") from exc


# -- 1. connect and authenticate ----------------------------------------------------------
async def check_connection(kafka: KafkaConnection) -> None:
    """Return once one bootstrap server accepted a connection with these settings (TLS and
    SASL included); KafkaAccessError with the most telling failure otherwise."""
    options = {k: v for k, v in kafka.client_options().items() if k != "bootstrap_servers"}
    failures: list[tuple[str, BaseException]] = []
    for server in kafka.servers:
        host, _, port = server.rpartition(":")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=10_000, **options)
        except (KafkaError, OSError, TimeoutError) as exc:
            failures.append((server, await _diagnose(kafka, host, int(port), exc)))
            continue
        conn.close()
        return
    # Authentication and TLS say more than "connection refused" on another server.
    _, worst = max(failures, key=lambda f: _weight(f[1]))
    if _weight(worst) == 1:
        raise BrokerUnreachable(explain_kafka_error(worst, kafka))
    raise KafkaAccessError(explain_kafka_error(worst, kafka))


def _weight(exc: BaseException) -> int:
    """3: the login was refused; 2: TLS or the listener refused us; 1: nothing answered."""
    if isinstance(exc, SaslAuthenticationFailed | UnsupportedSaslMechanismError):
        return 3
    if isinstance(exc, ssl.SSLError | _Closed | KafkaError):
        return 2
    return 1


class _Closed(Exception):
    """The broker closed the connection. ``handshake``: after a completed TLS handshake and
    before answering anything (a TLS listener refusing the client's certificate, or the lack
    of one); ``alert``: the TLS alert it sent, when it arrived before the close."""

    def __init__(self, *, handshake: bool = False, alert: str | None = None) -> None:
        super().__init__(alert or "connection closed")
        self.handshake = handshake
        self.alert = alert


async def _diagnose(kafka: KafkaConnection, host: str, port: int,
                    exc: BaseException) -> BaseException:
    """aiokafka reports a broker that drops a TLS client (no or an unknown certificate) as a
    closed connection; a bare handshake plus one request tells the cases apart."""
    closed = isinstance(exc, ConnectionResetError) or (
        isinstance(exc, KafkaConnectionError) and "closed" in str(exc))
    if not closed:
        return exc
    context = kafka.ssl_context()
    if context is None:
        return _Closed()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), 10)
    except ssl.SSLCertVerificationError as tls:
        return tls
    except ssl.SSLError as tls:
        return _Closed(alert=tls.reason)
    except (OSError, TimeoutError):
        return _Closed()
    try:
        # ApiVersions v0 (api key 18, correlation id 1, no client id): every listener that
        # accepted us answers it, SASL ones before the login too.
        body = struct.pack(">hhih", 18, 0, 1, -1)
        writer.write(struct.pack(">i", len(body)) + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4), 10)
    except ssl.SSLError as tls:
        return _Closed(handshake=True, alert=tls.reason)
    except (OSError, TimeoutError):
        return _Closed(handshake=True)
    finally:
        writer.close()
    return _Closed(handshake=not answer)


def explain_kafka_error(exc: BaseException, kafka: KafkaConnection,
                        operation: str | None = None) -> str:
    """One line for an error of connecting, authenticating or authorizing, with the fix."""
    who = kafka.describe()
    if isinstance(exc, SaslAuthenticationFailed):
        return (f"authentication failed for {who}: the broker refused the "
                f"{kafka.sasl_mechanism} login ({_broker_text(exc)}); check "
                "RCMFLOW_KAFKA_USERNAME / RCMFLOW_KAFKA_PASSWORD (and that the user has "
                f"{kafka.sasl_mechanism} credentials on the cluster)")
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (f"authentication failed for {who}: the listener does not offer SASL "
                f"{kafka.sasl_mechanism}; set RCMFLOW_KAFKA_SASL_MECHANISM to one it enables")
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "mismatch" in (exc.verify_message or "") or "hostname" in str(exc):
            return (f"TLS: the broker's certificate does not name the host connected to "
                    f"({exc.verify_message}); use the name it was issued for in "
                    "RCMFLOW_BROKER (RCMFLOW_KAFKA_CHECK_HOSTNAME=false only as a last resort)")
        return (f"TLS: the broker's certificate is not trusted ({exc.verify_message}); set "
                "RCMFLOW_KAFKA_CA_FILE to the CA that signed it")
    if isinstance(exc, _Closed):
        return _explain_closed(exc, kafka)
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {who} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return (f"connection refused ({who}): is RCMFLOW_BROKER right and the broker up?")
    if isinstance(exc, ACCESS_ERRORS):
        what = {TopicAuthorizationFailedError: "topic", GroupAuthorizationFailedError: "group",
                TransactionalIdAuthorizationFailed: "transactional id",
                ClusterAuthorizationFailedError: "cluster"}.get(type(exc), "resource")
        return (f"not authorized ({who}): the broker refused {operation or 'an operation'} on "
                f"{what} {_broker_text(exc)}; a Kafka ACL is missing (or was removed) for this "
                f"principal (the ACLs of every component: {DOCS})")
    if isinstance(exc, OSError):
        return f"cannot connect ({who}): {exc.strerror or exc}"
    return f"{type(exc).__name__} from {who}: {exc}"


def _broker_text(exc: KafkaError) -> str:
    """aiokafka puts the broker's own error message after the class name."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def _explain_closed(exc: _Closed, kafka: KafkaConnection) -> str:
    who = kafka.describe()
    if exc.handshake and not kafka.cert_file:
        return (f"TLS: the broker requires a client certificate (mutual TLS) and {who} sent "
                "none; set RCMFLOW_KAFKA_CERT_FILE and RCMFLOW_KAFKA_KEY_FILE")
    if exc.handshake:
        why = f" ({exc.alert})" if exc.alert else ""
        return (f"TLS: the broker refused the client certificate RCMFLOW_KAFKA_CERT_FILE"
                f"{why}; it must be signed by a CA the broker trusts, and be valid now")
    if kafka.uses_tls:
        why = f" ({exc.alert})" if exc.alert else ""
        return (f"the broker closed the connection ({who}){why}: that listener does not seem "
                f"to speak {kafka.security_protocol}; check RCMFLOW_KAFKA_SECURITY_PROTOCOL "
                "and the port in RCMFLOW_BROKER")
    return (f"the broker closed the connection ({who}): that listener probably requires TLS "
            "or SASL; set RCMFLOW_KAFKA_SECURITY_PROTOCOL (and the SASL / certificate "
            "settings) as the cluster's administrators say")


# -- 3. access ----------------------------------------------------------------------------
class _MetadataResponseV8(Response):  # type: ignore[misc]  # aiokafka is untyped (Any)
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32),
                          ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        ("topics", Array(
            ("error_code", Int16), ("topic", String("utf-8")), ("is_internal", Boolean),
            ("partitions", Array(("error_code", Int16), ("partition", Int32),
                                 ("leader", Int32), ("leader_epoch", Int32),
                                 ("replicas", Array(Int32)), ("isr", Array(Int32)),
                                 ("offline_replicas", Array(Int32)))),
            ("topic_authorized_operations", Int32))),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _AuthorizedTopicsRequest(Request[_MetadataRequestV8]):  # type: ignore[misc]
    """Metadata v8 asking for each topic's authorized operations (aiokafka 0.14 stops at
    v5, which cannot ask). Versions 8 to 13 are accepted by Apache Kafka 4.1."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self._topics, False, False, True)


def _allowed(operations: int, operation: str) -> bool | None:
    """Does the bit field grant ``operation``? None: the broker did not say."""
    if operations == _UNKNOWN_OPERATIONS:
        return None
    return bool(operations & (1 << _OPERATION_BITS[operation]))


async def check_access(kafka: KafkaConnection, access: Access) -> None:
    """KafkaAccessError naming every ACL ``access`` needs and this principal lacks."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        missing = await _topic_denials(admin, access)
        missing += await _group_denials(admin, access)
        missing += await _transaction_denials(admin, access)
    finally:
        await admin.close()
    if missing:
        raise KafkaAccessError(
            f"not authorized on {kafka.describe()}: missing Kafka ACL"
            f"{'s' if len(missing) > 1 else ''} {'; '.join(missing)} (grant them to this "
            f"principal; every component's ACLs: {DOCS})")


async def _topic_denials(admin: AIOKafkaAdminClient, access: Access) -> list[str]:
    topics = list(access.topics)
    if not topics:
        return []
    try:
        response = await admin._send_request(_AuthorizedTopicsRequest(topics))
        entries: list[Any] = response.to_object()["topics"]
    except NotImplementedError:  # a broker without Metadata v8: errors only
        entries = await admin.describe_topics(topics)
    missing: list[str] = []
    for entry in entries:
        topic = entry["topic"]
        if topic not in topics:
            continue
        if entry["error_code"] == TopicAuthorizationFailedError.errno:
            needed = [op for op, names in (("READ", access.read), ("WRITE", access.write))
                      if topic in names] or ["DESCRIBE"]
            missing += [f"{op} on topic {topic}" for op in needed]
            continue
        if entry["error_code"] == UnknownTopicOrPartitionError.errno:
            # The command says it itself (the worker creates it, the facade waits, consume
            # refuses): a warning here would be a second line.
            log.debug("%s: topic %s does not exist (yet)", access.component, topic)
            continue
        operations = entry.get("topic_authorized_operations", _UNKNOWN_OPERATIONS)
        for op, names in (("READ", access.read), ("WRITE", access.write)):
            if topic in names and _allowed(operations, op) is False:
                missing.append(f"{op} on topic {topic}")
    return missing


async def _group_denials(admin: AIOKafkaAdminClient, access: Access) -> list[str]:
    if access.group is None:
        return []
    denied = [f"READ on group {access.group}"]
    try:
        coordinator = await _find_coordinator(admin, access.group, 0)
        described = await admin.describe_consumer_groups(
            [access.group], coordinator, include_authorized_operations=True)
    except GroupAuthorizationFailedError:
        return denied
    except NotImplementedError:  # no DescribeGroups v3: FindCoordinator said enough
        return []
    for response in described:
        for group in response.to_object()["groups"]:
            if group["error_code"] == GroupAuthorizationFailedError.errno:
                return denied
            operations = group.get("authorized_operations", _UNKNOWN_OPERATIONS)
            if group["error_code"] == 0 and _allowed(operations, "READ") is False:
                return denied
    return []


async def _find_coordinator(admin: AIOKafkaAdminClient, key: str, key_type: int) -> int:
    """FindCoordinator, asked again while the coordinator is not ready: a fresh cluster
    creates __consumer_offsets / __transaction_state on the first ask (the caller's timeout
    bounds the wait)."""
    while True:
        try:
            return int(await admin.find_coordinator(key, coordinator_type=key_type))
        except KafkaError as exc:
            if not exc.retriable:
                raise
            await asyncio.sleep(COORDINATOR_RETRY_S)


async def _transaction_denials(admin: AIOKafkaAdminClient, access: Access) -> list[str]:
    prefix = access.transactional_id_prefix
    if prefix is None:
        return []
    # One id of the shape Faust uses ("<app id>-<group>-<partition>"); FindCoordinator
    # needs DESCRIBE on it, which WRITE implies, and changes nothing on the broker.
    try:
        await _find_coordinator(admin, f"{prefix}0-0", 1)
    except TransactionalIdAuthorizationFailed:
        return [f"WRITE on transactional id {prefix}* (prefixed)"]
    return []
