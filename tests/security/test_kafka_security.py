"""rcmflow on Apache Kafka as hospitals run it: TLS, SCRAM users, mutual TLS and ACLs.

One secure broker per module (tests/apache_kafka/server.py, ``KafkaSecurity``): a SASL_SSL
listener with SCRAM-SHA-512 users, an SSL listener that requires client certificates, and
the StandardAuthorizer denying all that no ACL allows. Every component runs as its own user
holding only its ACLs from ``rcmflow/runtime/kafka_access.py`` (the table in
docs/operations/security.md), so a component that touched anything more would fail here.
The rcm.* topics are made by the administrator (the PLAINTEXT listener's super user), as on
a production cluster.

Failures must be fast and say what to fix: a wrong password, a certificate the broker
refuses, a missing ACL (at start: the preflight; while running: the worker and the ERP
connector stop) end the command with one line and exit 2, in seconds.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rcmflow.runtime.broker import ensure_topics, free_port
from rcmflow.runtime.exceptions import KafkaAccessError
from rcmflow.runtime.kafka_access import (
    Access,
    AclBinding,
    dlq_access,
    erp_access,
    facade_access,
    ingest_access,
    mllp_access,
    reader_access,
    reconcile_access,
    worker_access,
)
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.runtime.kafka_preflight import preflight
from rcmflow.streams.topics import ACCOUNTS, EVENTS, POSTINGS, topic_specs
from tests.apache_kafka.fixtures import kafka_or_skip
from tests.apache_kafka.server import ApacheKafka, KafkaSecurity
from tests.conftest import Workers, wait_until
from tests.connectors.erp.feed import start_connector
from tests.factories import charge
from tests.workload import Observed, Workload

pytestmark = pytest.mark.broker

PARTITIONS = 4
APP_ID = "rcmflow"
#: A refused login or ACL must end a command within this (the preflight's own bound is 15 s;
#: most of this is the interpreter importing rcmflow on 2 shared cores).
FAIL_FAST_S = 20.0
#: tests/connectors/erp's connector_env sets 1.5 s for Tansu; Apache Kafka refuses less than 6 s
#: (group.min.session.timeout.ms: InvalidSessionTimeoutError).
ERP_SESSION_TIMEOUT_S = "6"
#: One SCRAM user per component, each with its component's ACLs only.
USERS = {
    "worker": worker_access(APP_ID),
    "ingest": ingest_access("events"),
    "erp": erp_access(APP_ID, "csv"),
    "facade": facade_access(),
    "ops": reader_access("accounts list", ACCOUNTS),
    # A worker whose administrator forgot its consumer group / a changelog topic.
    "worker-nogroup": Access("worker", read=worker_access(APP_ID).read,
                             write=worker_access(APP_ID).write),
    "worker-nochangelog": Access(
        "worker", read=tuple(t for t in worker_access(APP_ID).read
                             if t != f"{APP_ID}-dedup-changelog"),
        write=worker_access(APP_ID).write, group=APP_ID),
    # For the runtime tests: ACLs taken away while they run.
    "worker-lost": worker_access(APP_ID),
    "erp-lost": erp_access(APP_ID, "csv"),
    "facade-lost": facade_access(),
    "watch-lost": ingest_access("watch"),
    # exactly_once under its own app id: Faust's transactional producers need the prefix ACL.
    "worker-eo": worker_access("eo", exactly_once=True),
    # Every other command, each as its own user with the documented ACLs only.
    **{f"ingest-{kind}": ingest_access(kind) for kind in ("hl7", "x12", "payments", "fhir")},
    "watch": ingest_access("watch"),
    "mllp": mllp_access(),
    "reconcile": reconcile_access(),
    "accounts": reader_access("accounts", ACCOUNTS),
    "accounts-history": reader_access("accounts history", POSTINGS),
    "dlq": dlq_access(APP_ID, changes=False),
    "dlq-changes": dlq_access(APP_ID, changes=True),
    "digest": reader_access("digest", ACCOUNTS),
    "rebuild": reader_access("rebuild", EVENTS),
    "rebuild-compare": reader_access("rebuild", EVENTS, ACCOUNTS),
    "aging": reader_access("aging", ACCOUNTS, POSTINGS),
    # ACLs for app id "fresh", whose dedup changelog nobody made (and no CREATE ACL).
    "worker-fresh": worker_access("fresh"),
    "nobody": Access("nobody"),
}
#: The mutual-TLS principals (certificate CN) and their ACLs.
MTLS_USERS = {"facade-mtls": facade_access()}


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    kafka_or_skip()
    root = tmp_path_factory.mktemp("secure-kafka")
    kafka = ApacheKafka(data_dir=root / "kafka", secure=KafkaSecurity(
        scram_users={name: f"{name}-secret-{os.getpid()}" for name in USERS})).start()
    try:
        async def administer() -> None:
            # The administrator makes the topics (nobody else holds CREATE) and the ACLs.
            eo_own = [spec for spec in topic_specs("eo") if spec.name.startswith("eo-")]
            await ensure_topics(kafka.connection, topic_specs(APP_ID) + eo_own, PARTITIONS, 1)
            for name, access in {**USERS, **MTLS_USERS}.items():
                await kafka.create_acls(f"User:{name}", access.acls())

        asyncio.run(administer())
        yield kafka
    finally:
        kafka.stop()


def rcmflow_env(kafka: KafkaConnection, data_dir: Path, **extra: str) -> dict[str, str]:
    """What an operator exports to run rcmflow as ``kafka``'s principal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(RCMFLOW_BROKER="kafka://" + ",".join(kafka.servers),
               RCMFLOW_DATA_DIR=str(data_dir), RCMFLOW_PARTITIONS=str(PARTITIONS),
               RCMFLOW_KAFKA_SECURITY_PROTOCOL=kafka.security_protocol)
    for name, value in (("SASL_MECHANISM", kafka.sasl_mechanism),
                        ("USERNAME", kafka.username), ("PASSWORD", kafka.password),
                        ("CA_FILE", kafka.ca_file), ("CERT_FILE", kafka.cert_file),
                        ("KEY_FILE", kafka.key_file)):
        if value is not None:
            env[f"RCMFLOW_KAFKA_{name}"] = str(value)
    env.update(extra)
    return env


def run_rcmflow(env: dict[str, str], *args: str,
                timeout_s: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    return done, time.monotonic() - started


def assert_fails_fast(done: subprocess.CompletedProcess[str], took_s: float,
                      *expected: str) -> str:
    """Exit 2 within FAIL_FAST_S, and one stderr line (no traceback) saying each of
    ``expected``."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert took_s < FAIL_FAST_S, f"took {took_s:.1f}s: {done.stderr}"
    lines = [line for line in done.stderr.splitlines() if line.startswith("rcmflow ")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def journal_ids(folder: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted(folder.glob("journal-*.csv")):
        with path.open(newline="") as handle:
            ids += [row["posting_id"] for row in csv.DictReader(handle)]
    return ids


# -- (a) the whole flow over SASL_SSL, each component with its own ACLs -------------------
def test_events_flow_end_to_end_with_least_privilege_users(secure_kafka: ApacheKafka,
                                                           tmp_path: Path) -> None:
    workload = Workload.build(accounts=30, seed=23)
    expected = workload.expected()
    events = tmp_path / "events.jsonl"
    events.write_text("".join(value.decode() + "\n" for _, value in workload.values))
    # Ingest as `ingest` (WRITE rcm.events, rcm.dlq).
    done, _ = run_rcmflow(rcmflow_env(secure_kafka.sasl_connection("ingest"),
                                      tmp_path / "ingest"), "ingest", "events", str(events))
    assert done.returncode == 0, done.stdout + done.stderr
    # The worker as `worker`: Faust's consumer, producer and the outbox, all over SASL_SSL.
    pool = Workers(secure_kafka, tmp_path / "workers")
    pool.data_dir.mkdir()
    worker = pool.start("w1", **rcmflow_env(secure_kafka.sasl_connection("worker"),
                                            pool.data_dir, RCMFLOW_BATCH_MAX="200"))
    facade_port = free_port()
    facade = subprocess.Popen(
        [sys.executable, "-m", "rcmflow.cli", "facade"],
        env=rcmflow_env(secure_kafka.sasl_connection("facade"), tmp_path / "facade",
                        RCMFLOW_FACADE_AUTH="off", RCMFLOW_FACADE_PORT=str(facade_port)),
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "facade.log", "wb"))
    try:
        def all_postings() -> bool:
            assert worker.alive(), worker.log_tail()
            return set(Observed.read(secure_kafka.connection).postings) == set(
                expected.postings)

        wait_until(all_postings, 180, "the worker's postings", worker.log_tail)
        observed = Observed.read(secure_kafka.connection)
        assert observed.dlq_reasons() == expected.dlq_reasons
        assert {a: s["balances"] for a, s in observed.states.items()} == {
            a: s["balances"] for a, s in expected.states.items()}

        # The ERP connector as `erp` (READ rcm.postings and its group, WRITE the posting DLQ).
        journal = tmp_path / "journal"
        erp = start_connector("csv", secure_kafka, tmp_path / "erp", 1, "--idle-exit-s", "2",
                              **rcmflow_env(secure_kafka.sasl_connection("erp"),
                                            tmp_path / "erp", RCMFLOW_ERP_CSV_DIR=str(journal),
                                            RCMFLOW_SESSION_TIMEOUT_S=ERP_SESSION_TIMEOUT_S))
        assert erp.process.wait(120) == 0, erp.log_tail()
        rows = journal_ids(journal)  # one row per posting line, each posting once
        assert set(rows) == set(expected.postings)
        assert len(rows) == sum(len(json.loads(v)["lines"]) for v in expected.postings.values())

        # The facade as `facade` (READ rcm.accounts, no group): every account served.
        def facade_has_all() -> bool:
            assert facade.poll() is None, (tmp_path / "facade.log").read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{facade_port}/health", timeout=2).json()
            except httpx.HTTPError:
                return False
            return bool(health["accounts"] == len(expected.states))

        wait_until(facade_has_all, 60, "the facade's read model",
                   lambda: (tmp_path / "facade.log").read_text())
    finally:
        facade.terminate()
        facade.wait(30)
        worker.stop()


# -- every other command, as its own user with only its ACLs ---------------------------------
DEMO = Path(__file__).resolve().parents[2] / "rcmflow" / "cli" / "demo_data"
PAYMENTS_CSV = ("type,account,amount,date,reference\n"
                "payment,P-SEC-1,25.00,2026-11-20,SEC-REF-1\n")


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    """Ran (0: all through; 1: some input went to a DLQ or reconcile found differences), and
    no access problem on the way."""
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "not authorized" not in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("kind", ["hl7", "x12", "payments", "fhir", "watch"])
def test_each_inbound_command_runs_with_only_its_acls(secure_kafka: ApacheKafka,
                                                      tmp_path: Path, kind: str) -> None:
    payments = tmp_path / "payments.csv"
    payments.write_text(PAYMENTS_CSV)
    files = {"hl7": DEMO / "dft_A3001.hl7", "x12": DEMO / "remit_A3001.835",
             "payments": payments,
             "fhir": Path(__file__).resolve().parents[1] / "samples" / "fhir"
             / "r4_chargeitem-example.json"}
    user = "watch" if kind == "watch" else f"ingest-{kind}"
    env = rcmflow_env(secure_kafka.sasl_connection(user), tmp_path / "data")
    if kind == "watch":
        drop = tmp_path / "drop"
        drop.mkdir()
        (drop / "claim.837").write_bytes((DEMO / "claim_A3001.837").read_bytes())
        (drop / "payments.csv").write_text(PAYMENTS_CSV)
        done, _ = run_rcmflow(env, "watch", str(drop), "--once")
        assert sorted(p.name for p in (drop / "done").iterdir()) == ["claim.837",
                                                                     "payments.csv"]
    else:
        done, _ = run_rcmflow(env, "ingest", kind, str(files[kind]))
    _ok(done)


def test_the_mllp_listener_runs_with_only_its_acls(secure_kafka: ApacheKafka,
                                                   tmp_path: Path) -> None:
    port = free_port()
    listener = subprocess.Popen(
        [sys.executable, "-m", "rcmflow.cli", "mllp", "--port", str(port)],
        env=rcmflow_env(secure_kafka.sasl_connection("mllp"), tmp_path),
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "mllp.log", "wb"))

    async def send() -> bytes:
        from rcmflow.connectors.inbound.hl7.framing import frame

        for _ in range(200):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                assert listener.poll() is None, (tmp_path / "mllp.log").read_text()
                await asyncio.sleep(0.1)
        message = (DEMO / "dft_A3001.hl7").read_bytes().replace(b"\r\n", b"\r")
        writer.write(frame(message.replace(b"\n", b"\r")))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 30)
        writer.close()
        return ack

    try:
        ack = asyncio.run(send())
        assert b"MSA|AA|" in ack, ack
    finally:
        listener.terminate()
        listener.wait(30)


@pytest.mark.parametrize(("user", "command"), [
    ("reconcile", ("reconcile",)), ("accounts", ("accounts", "list")),
    ("accounts", ("accounts", "show", "NO-SUCH-ACCOUNT")),
    ("accounts-history", ("accounts", "history", "NO-SUCH-ACCOUNT")),
    ("dlq", ("dlq", "list")), ("dlq", ("dlq", "show", "NO-SUCH-ID")),
    ("dlq-changes", ("dlq", "resolve", "NO-SUCH-ID", "--note", "checked")),
    ("digest", ("digest",)), ("rebuild", ("rebuild",)),
    ("rebuild-compare", ("rebuild", "--compare")), ("aging", ("aging",))])
def test_operator_commands_run_with_only_their_acls(secure_kafka: ApacheKafka, tmp_path: Path,
                                                   user: str, command: tuple[str, ...]) -> None:
    done, _ = run_rcmflow(rcmflow_env(secure_kafka.sasl_connection(user), tmp_path), *command)
    _ok(done)  # `show` of an unknown id exits 1 after reading the whole topic


# -- (b) mutual TLS --------------------------------------------------------------------------
async def test_mutual_tls_client_with_a_certificate_reads(secure_kafka: ApacheKafka) -> None:
    kafka = secure_kafka.mtls_connection("facade-mtls")
    await preflight(kafka, facade_access())
    await read_topic(kafka, ACCOUNTS)  # READ granted to User:facade-mtls, the cert's CN


async def test_mutual_tls_client_without_a_certificate_is_refused_clearly(
        secure_kafka: ApacheKafka, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(KafkaAccessError, match="requires a client certificate .*"
                       "RCMFLOW_KAFKA_CERT_FILE"):
        await preflight(secure_kafka.mtls_connection(None), facade_access())
    assert time.monotonic() - started < 5
    # And the command: `rcmflow accounts list` without a certificate.
    done, took_s = await asyncio.to_thread(
        run_rcmflow, rcmflow_env(secure_kafka.mtls_connection(None), tmp_path),
        "accounts", "list")
    assert_fails_fast(done, took_s, "accounts list:", "requires a client certificate")


async def test_a_certificate_from_another_ca_is_refused_clearly(
        secure_kafka: ApacheKafka, tmp_path: Path) -> None:
    from tests.apache_kafka.certs import CertificateAuthority

    stranger = CertificateAuthority(tmp_path / "other-ca").issue("facade-mtls")
    kafka = secure_kafka.mtls_connection(None)
    kafka = KafkaConnection(servers=kafka.servers, security_protocol="SSL",
                            ca_file=kafka.ca_file, cert_file=stranger.cert_file,
                            key_file=stranger.key_file)
    with pytest.raises(KafkaAccessError, match="refused the client certificate"):
        await preflight(kafka, facade_access())


async def test_an_untrusted_broker_certificate_is_named(secure_kafka: ApacheKafka,
                                                        tmp_path: Path) -> None:
    from tests.apache_kafka.certs import CertificateAuthority

    other = CertificateAuthority(tmp_path / "other-ca")
    good = secure_kafka.sasl_connection("facade")
    kafka = KafkaConnection(servers=good.servers, security_protocol="SASL_SSL",
                            sasl_mechanism="SCRAM-SHA-512", username="facade",
                            password=good.password, ca_file=other.ca_file)
    with pytest.raises(KafkaAccessError, match="certificate is not trusted.*"
                       "RCMFLOW_KAFKA_CA_FILE"):
        await preflight(kafka, facade_access())


# -- (c) a wrong SCRAM password ------------------------------------------------------------
@pytest.mark.parametrize("command", [("worker",), ("ingest", "events", "EVENTS"),
                                     ("erp", "csv"), ("facade",)])
def test_a_wrong_password_ends_the_command_in_seconds(secure_kafka: ApacheKafka,
                                                      tmp_path: Path,
                                                      command: tuple[str, ...]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(charge(100, "W1", event_id="W1-CH")) + "\n")
    args = [str(events) if arg == "EVENTS" else arg for arg in command]
    kafka = secure_kafka.sasl_connection("worker", password="not-the-password")
    done, took_s = run_rcmflow(rcmflow_env(kafka, tmp_path, RCMFLOW_FACADE_AUTH="off",
                                           RCMFLOW_FACADE_PORT=str(free_port())), *args)
    line = assert_fails_fast(done, took_s, "authentication failed", "RCMFLOW_KAFKA_PASSWORD",
                             "SCRAM-SHA-512")
    assert "not-the-password" not in done.stderr + done.stdout, "a password in the output"
    print(f"{' '.join(command)}: exit 2 in {took_s:.1f}s: {line}")


# -- (d) a missing ACL ----------------------------------------------------------------------
def test_a_worker_without_its_group_acl_names_it(secure_kafka: ApacheKafka,
                                                tmp_path: Path) -> None:
    done, took_s = run_rcmflow(rcmflow_env(secure_kafka.sasl_connection("worker-nogroup"),
                                           tmp_path), "worker")
    assert_fails_fast(done, took_s, "worker: not authorized", "READ on group rcmflow",
                      "Secure connections")


def test_a_worker_without_a_changelog_acl_names_the_topic(secure_kafka: ApacheKafka,
                                                         tmp_path: Path) -> None:
    done, took_s = run_rcmflow(rcmflow_env(
        secure_kafka.sasl_connection("worker-nochangelog"), tmp_path), "worker")
    assert_fails_fast(done, took_s, "READ on topic rcmflow-dedup-changelog")


@pytest.mark.parametrize("command", [("ingest", "events", "EVENTS"), ("erp", "csv"),
                                     ("reconcile",), ("dlq", "list")])
def test_a_user_without_acls_is_told_which_to_grant(secure_kafka: ApacheKafka, tmp_path: Path,
                                                   command: tuple[str, ...]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(charge(100, "N1", event_id="N1-CH")) + "\n")
    args = [str(events) if arg == "EVENTS" else arg for arg in command]
    done, took_s = run_rcmflow(rcmflow_env(secure_kafka.sasl_connection("nobody"), tmp_path),
                               *args)
    wanted = {"ingest": "WRITE on topic rcm.events", "erp": "READ on group rcmflow-erp-csv",
              "reconcile": "READ on topic rcm.raw.hl7", "dlq": "READ on topic rcm.dlq"}
    assert_fails_fast(done, took_s, "not authorized", wanted[command[0]])


def test_a_worker_that_may_not_create_a_missing_topic_says_so(secure_kafka: ApacheKafka,
                                                             tmp_path: Path) -> None:
    # App id "fresh": its dedup changelog does not exist and its worker may not create it.
    done, took_s = run_rcmflow(rcmflow_env(secure_kafka.sasl_connection("worker-fresh"),
                                           tmp_path, RCMFLOW_APP_ID="fresh"), "worker")
    assert_fails_fast(done, took_s, "topic fresh-dedup-changelog does not exist",
                      "grant CREATE on topic fresh-dedup-changelog")


async def test_exactly_once_without_its_transactional_id_acl_is_named(
        secure_kafka: ApacheKafka) -> None:
    with pytest.raises(KafkaAccessError, match=r"WRITE on transactional id rcmflow-\*"):
        await preflight(secure_kafka.sasl_connection("worker"),
                        worker_access(APP_ID, exactly_once=True))


def test_an_exactly_once_worker_runs_with_only_its_acls(secure_kafka: ApacheKafka,
                                                       tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(charge(700, "EO1", event_id="EO1-CH")) + "\n")
    done, _ = run_rcmflow(rcmflow_env(secure_kafka.sasl_connection("ingest"),
                                      tmp_path / "ingest"), "ingest", "events", str(events))
    assert done.returncode == 0, done.stderr
    pool = Workers(secure_kafka, tmp_path / "workers")
    pool.data_dir.mkdir()
    worker = pool.start("w1", **rcmflow_env(
        secure_kafka.sasl_connection("worker-eo"), pool.data_dir, RCMFLOW_APP_ID="eo",
        RCMFLOW_PROCESSING_GUARANTEE="exactly_once"))
    try:
        # Offsets committed inside transactions (TxnOffsetCommit) up to the end of rcm.events.
        wait_until(lambda: not worker.alive() or _caught_up(secure_kafka, "eo", EVENTS), 120,
                   "the exactly_once worker to commit", worker.log_tail)
        assert worker.alive(), worker.log_tail()
        postings = asyncio.run(read_topic(secure_kafka.connection, POSTINGS,
                                          keep=lambda key: key == b"EO1"))
        assert [json.loads(r.value or b"{}")["event_id"] for r in postings] == ["EO1-CH"]
    finally:
        worker.stop()


# -- a permission lost while running: the worker and the ERP connector stop -----------------
def _caught_up(kafka: ApacheKafka, group: str, topic: str) -> bool:
    """Has ``group`` committed everything on ``topic`` (read as the administrator)?"""
    async def check() -> bool:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.structs import TopicPartition

        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer = AIOKafkaConsumer(**kafka.connection.client_options())
        admin = AIOKafkaAdminClient(**kafka.connection.client_options())
        await consumer.start()
        await admin.start()
        try:
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group)
        finally:
            await consumer.stop()
            await admin.close()
        return all((committed[tp].offset if tp in committed else 0) >= ends[tp] for tp in tps)

    return asyncio.run(check())


def test_a_worker_that_loses_an_acl_stops_and_names_it(secure_kafka: ApacheKafka,
                                                      tmp_path: Path) -> None:
    # The same app (group rcmflow) as a worker that ran before; `worker-lost` holds its ACLs.
    pool = Workers(secure_kafka, tmp_path / "workers")
    pool.data_dir.mkdir()
    worker = pool.start("w1", **rcmflow_env(secure_kafka.sasl_connection("worker-lost"),
                                            pool.data_dir))
    try:
        wait_until(lambda: not worker.alive() or (
            "Worker ready" in worker.log.read_text(errors="replace")
            and _caught_up(secure_kafka, APP_ID, EVENTS)), 120, "the worker to catch up",
            worker.log_tail)
        assert worker.alive(), worker.log_tail()
        asyncio.run(secure_kafka.delete_acls("User:worker-lost",
                                             [AclBinding("TOPIC", POSTINGS, "WRITE")]))
        events = tmp_path / "events.jsonl"
        events.write_text(json.dumps(charge(100, "L1", event_id="L1-CH")) + "\n")
        done, _ = run_rcmflow(rcmflow_env(secure_kafka.sasl_connection("ingest"),
                                          tmp_path / "ingest"), "ingest", "events",
                              str(events))
        assert done.returncode == 0, done.stderr
        sent = time.monotonic()
        assert worker.process.wait(90) == 2, worker.log_tail()
        print(f"worker exited 2 {time.monotonic() - sent:.1f}s after the event was published")
        last = worker.log_tail(5)
        assert "rcmflow worker: not authorized" in last and POSTINGS in last, last
    finally:
        worker.kill()


def test_an_erp_connector_that_loses_its_group_acl_stops(secure_kafka: ApacheKafka,
                                                        tmp_path: Path) -> None:
    from tests.connectors.erp.feed import publish_deltas, real_deltas, status

    deltas = real_deltas(6, seed=31)
    publish_deltas(secure_kafka, deltas[:10])
    env = rcmflow_env(secure_kafka.sasl_connection("erp-lost"), tmp_path,
                      RCMFLOW_ERP_CSV_DIR=str(tmp_path / "journal"),
                      RCMFLOW_SESSION_TIMEOUT_S=ERP_SESSION_TIMEOUT_S)
    erp = start_connector("csv", secure_kafka, tmp_path, 1, **env)
    try:
        wait_until(lambda: not erp.alive() or status(tmp_path, "csv").get("posted", 0) > 0,
                   60, "the connector to post", erp.log_tail)
        assert erp.alive(), erp.log_tail()
        asyncio.run(secure_kafka.delete_acls(
            "User:erp-lost", [AclBinding("GROUP", f"{APP_ID}-erp-csv", "READ")]))
        publish_deltas(secure_kafka, deltas[10:])
        sent = time.monotonic()
        assert erp.process.wait(60) == 2, erp.log_tail()
        print(f"erp exited 2 {time.monotonic() - sent:.1f}s after the deltas were published")
        assert "not authorized" in erp.log_tail(5) and f"group {APP_ID}-erp-csv" in \
            erp.log_tail(5), erp.log_tail()
    finally:
        erp.kill()


def test_a_facade_that_loses_its_acl_stops_its_server(secure_kafka: ApacheKafka,
                                                     tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "facade.log"
    facade = subprocess.Popen(
        [sys.executable, "-m", "rcmflow.cli", "facade"],
        env=rcmflow_env(secure_kafka.sasl_connection("facade-lost"), tmp_path,
                        RCMFLOW_FACADE_AUTH="off", RCMFLOW_FACADE_PORT=str(port)),
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"))

    def health() -> dict[str, object]:
        try:
            doc: dict[str, object] = httpx.get(f"http://127.0.0.1:{port}/health",
                                               timeout=2).json()
            return doc
        except httpx.HTTPError:
            return {}

    try:
        wait_until(lambda: facade.poll() is not None or health().get("positions") is not None,
                   60, "the facade's feed", log.read_text)
        assert facade.poll() is None, log.read_text()
        asyncio.run(secure_kafka.delete_acls("User:facade-lost",
                                             [AclBinding("TOPIC", ACCOUNTS, "READ")]))
        removed = time.monotonic()
        assert facade.wait(60) == 2, log.read_text()
        print(f"facade exited 2 {time.monotonic() - removed:.1f}s after its ACL was removed")
        last = log.read_text().splitlines()[-1]
        assert last.startswith("rcmflow facade: not authorized") and ACCOUNTS in last, last
    finally:
        if facade.poll() is None:
            facade.kill()


def test_a_drop_folder_watch_that_loses_its_acl_stops(secure_kafka: ApacheKafka,
                                                     tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    log = tmp_path / "watch.log"
    watch = subprocess.Popen(
        [sys.executable, "-m", "rcmflow.cli", "watch", str(drop)],
        env=rcmflow_env(secure_kafka.sasl_connection("watch-lost"), tmp_path / "data",
                        RCMFLOW_WATCH_POLL_S="0.2"),
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        (drop / "first.835").write_bytes((DEMO / "remit_A3001.835").read_bytes())
        wait_until(lambda: watch.poll() is not None or (drop / "done" / "first.835").exists(),
                   60, "the first file", log.read_text)
        asyncio.run(secure_kafka.delete_acls("User:watch-lost",
                                             [AclBinding("TOPIC", "rcm.raw.x12", "WRITE")]))
        (drop / "second.837").write_bytes((DEMO / "claim_A3001.837").read_bytes())
        assert watch.wait(60) == 2, log.read_text()
        assert (drop / "second.837").exists()  # left in place, for after the fix
        assert "rcmflow watch: not authorized" in log.read_text(), log.read_text()
    finally:
        if watch.poll() is None:
            watch.kill()
