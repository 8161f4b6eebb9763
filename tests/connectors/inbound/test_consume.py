"""`rcmflow consume FORMAT --topic T`: topics other systems write, through the connectors.

Real `rcmflow consume` processes on both brokers (the ``broker`` fixture). What they publish
is compared with what the file path (`rcmflow ingest`) publishes for the same input; bad
records go to rcm.dlq while the next ones flow; a kill -9 mid-topic and a broker that does
not acknowledge leave offsets at or before the first output not yet acknowledged, so a
restart reads those records again and the worker's dedup drops the repeats.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

import rcmflow
from rcmflow.connectors.inbound.hl7.framing import frame
from rcmflow.connectors.inbound.hl7.mapping import map_message
from rcmflow.connectors.inbound.hl7.reader import normalise, read_message
from rcmflow.connectors.inbound.hl7.service import mapping_config
from rcmflow.runtime.broker import ensure_topics, free_port
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.faults import Faults
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record, read_topic
from rcmflow.runtime.settings import Settings
from rcmflow.streams.money import cents_text
from rcmflow.streams.topics import (
    DLQ,
    EVENTS,
    RAW_FHIR,
    RAW_HL7,
    RAW_PAYMENTS,
    RAW_X12,
    TopicSpec,
    topic_specs,
)
from tests.conftest import Broker, Workers, wait_until
from tests.connectors.inbound.fhir.test_fhir_e2e import CHARGE, NOTICE, PAYMENT
from tests.connectors.inbound.x12.x12_build import ClaimSpec, envelope, remit_segments
from tests.factories import charge
from tests.integration.test_crash import converged, difference
from tests.scrape import scrape
from tests.workload import Expected, Observed, Workload

pytestmark = pytest.mark.broker

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DEMO = Path(rcmflow.__file__).resolve().parent / "cli" / "demo_data"
RAW = {"hl7": RAW_HL7, "x12": RAW_X12, "fhir": RAW_FHIR, "payments": RAW_PAYMENTS}
#: Apache Kafka refuses sessions under 6 s (group.min.session.timeout.ms); Tansu's first join
#: takes about half of it.
FAST = {"RCMFLOW_SESSION_TIMEOUT_S": "6", "RCMFLOW_CONSUME_PROGRESS_S": "1"}
#: Patient data in the inputs: never in a log line.
PHI = ("EVERYMAN", "ADAM", "DOE", "JANE", "Chalmers", "MRN3001", "PATIENT", "Aniston")


# -- helpers ---------------------------------------------------------------------------------

def create_topic(broker: Broker, name: str, partitions: int = 1, **config: str) -> None:
    spec = TopicSpec(name, {"cleanup.policy": "delete", **config}, "an external system's")
    asyncio.run(ensure_topics(broker.connection, [spec], partitions, 1))


def produce(kafka: KafkaConnection, topic: str,
            records: list[tuple[bytes | None, bytes | None]]) -> None:
    """(key, value) in order; a None value is a tombstone (what other systems send too)."""
    async def send() -> None:
        producer = AIOKafkaProducer(**kafka.client_options(), acks="all",
                                    max_request_size=8 * 1024 * 1024)
        await producer.start()
        try:
            futures = [await producer.send(topic, key=k, value=v) for k, v in records]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send())


def cli(workers: Workers, *args: str, env: dict[str, str] | None = None,
        timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args],
                          env=workers.env(**FAST, **(env or {})), capture_output=True,
                          text=True, timeout=timeout_s)


def consume(workers: Workers, fmt: str, topic: str, *args: str,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One catch-up run: from the beginning, exits once idle with lag 0."""
    return cli(workers, "consume", fmt, "--topic", topic, "--from-beginning", "--idle-exit",
               "1", *args, env=env)


def start_consume(workers: Workers, fmt: str, topic: str, log: Path, *args: str,
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "rcmflow.cli", "consume", fmt, "--topic", topic,
             "--from-beginning", *args], env=workers.env(**FAST, **(env or {})),
            stdout=out, stderr=subprocess.STDOUT)


def committed(kafka: KafkaConnection, group: str, topic: str,
              partitions: int) -> dict[int, int | None]:
    """The group's committed offsets, read without joining it."""
    async def read() -> dict[int, int | None]:
        consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            return {p: await consumer.committed(TopicPartition(topic, p))
                    for p in range(partitions)}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def topics(kafka: KafkaConnection) -> dict[str, list[Record]]:
    async def read() -> dict[str, list[Record]]:
        return {t: await read_topic(kafka, t) for t in (EVENTS, DLQ, *RAW.values())}

    return asyncio.run(read())


def since(before: dict[str, list[Record]],
          after: dict[str, list[Record]]) -> dict[str, list[Record]]:
    """The records published between two reads, in offset order per partition."""
    seen = {t: {(r.partition, r.offset) for r in records} for t, records in before.items()}
    return {t: [r for r in records if (r.partition, r.offset) not in seen[t]]
            for t, records in after.items()}


def dlq_docs(records: dict[str, list[Record]]) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in records[DLQ]]


def published(fmt: str, records: dict[str, list[Record]]) -> dict[str, Counter[Any]]:
    """What a run published, without where it was read from (file name vs topic offset):
    events byte for byte, raw records with their status and source totals, DLQ records by
    stage, reason, severity and the original payload."""
    raw: Counter[Any] = Counter()
    for r in records.get(RAW.get(fmt, ""), []):
        if fmt == "hl7":  # the message as received; status and source totals in headers
            raw[(r.key, r.value, r.headers)] += 1
        else:
            doc = json.loads(r.value or b"")
            raw[json.dumps({k: v for k, v in doc.items() if k != "origin"}, sort_keys=True)] += 1
    return {
        "events": Counter(r.value for r in records[EVENTS]),
        "raw": raw,
        "dlq": Counter((d["stage"], d["reason_code"], d["severity"], d["payload"])
                       for d in dlq_docs(records)),
    }


# -- inputs: (file name, file bytes, record value) -------------------------------------------

def inputs(fmt: str) -> list[tuple[str, bytes, bytes]]:
    if fmt == "hl7":
        files = [(p.name, p.read_bytes()) for p in sorted((SAMPLES / "hl7").iterdir())]
        demo = (DEMO / "dft_A3001.hl7").read_bytes()
        # On the topic the demo DFT comes MLLP-framed: the frame bytes are dropped.
        return [(n, b, b) for n, b in files] + [("dft_A3001.hl7", demo, frame(demo))]
    if fmt == "x12":
        paths = [DEMO / "claim_A3001.837", DEMO / "remit_A3001.835",
                 SAMPLES / "x12/835/lfh_5010_managed-care.835",
                 SAMPLES / "x12/835/editools_5010_two_st_ge_count_wrong.835",
                 SAMPLES / "x12/835/edi835parser_no_envelope_bcbsnc.835",
                 SAMPLES / "x12/837/lfh_837p_5010_example1.837"]
        return [(p.name, p.read_bytes(), p.read_bytes()) for p in paths]
    if fmt == "fhir":
        files = [(p.name, p.read_bytes()) for p in sorted((SAMPLES / "fhir").iterdir())]
        bundle = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": CHARGE,
             "request": {"method": "POST", "url": "ChargeItem"}},
            {"fullUrl": "urn:uuid:2", "resource": PAYMENT,
             "request": {"method": "POST", "url": "PaymentReconciliation"}},
            {"resource": NOTICE, "request": {"method": "POST", "url": "PaymentNotice"}}]},
            indent=1).encode()
        second = CHARGE | {"identifier": [{"system": "urn:example:charges", "value": "CH-2"}],
                           "priceOverride": {"value": 12.50, "currency": "USD"}}
        ndjson = "\n".join(json.dumps(r) for r in (second, CHARGE, {"resourceType": 7})).encode()
        return ([(n, b, b) for n, b in files]
                + [("visit.json", bundle, bundle), ("more.ndjson", ndjson, ndjson + b"\n")])
    if fmt == "payments":
        csv = (b"type,account,amount,date,reference,channel,reason\n"
               b"payment,C1001,100.00,2026-03-05,LB-100,lockbox,\n"
               b"payment,C1001,12.345,2026-03-05,LB-101,lockbox,\n"
               b"write_off,C1002,4.00,2026-03-06,WO-1,,small_balance\n")
        lines = (b'{"type":"payment","account":"C1003","amount":"25.50","date":"2026-03-07",'
                 b'"reference":"PT-9","channel":"portal"}\n'
                 b'{"type":"refund","account":"C1003","amount":5,"date":"2026-03-08",'
                 b'"reference":"RF-1"}\n{"type":"refund"}\n')
        return [("lockbox.csv", csv, csv), ("portal.jsonl", lines, lines)]
    assert fmt == "events"
    docs = [charge(10_000 + n, f"V{n % 3}", event_id=f"CH-{n}") for n in range(6)]
    lines = [json.dumps(d).encode() for d in docs] + [b"{not json", b'{"kind": "x"}']
    day = b"\n".join(lines) + b"\n"
    # One event per record, then the rest as one JSON-lines record.
    return [("day.jsonl", day, b"")] + [("", b"", line) for line in lines[:3]] + [
        ("", b"", b"\n".join(lines[3:]) + b"\n")]


FORMATS = ("hl7", "x12", "fhir", "payments", "events")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_topic_publishes_what_the_file_path_publishes(
        broker: Broker, workers: Workers, tmp_path: Path, fmt: str) -> None:
    topic = f"ehr.{fmt}"
    create_topic(broker, topic)
    items = inputs(fmt)
    files = []
    for name, data, _ in items:
        if name:
            files.append(tmp_path / name)
            files[-1].write_bytes(data)
    by_file = cli(workers, "ingest", fmt, *map(str, files))
    assert by_file.returncode in (0, 1), by_file.stderr
    before = topics(broker.connection)

    produce(broker.connection, topic, [(None, value) for _, _, value in items if value])
    run = consume(workers, fmt, topic)
    assert run.returncode == 0, run.stderr
    assert f"consume {fmt} {topic} (group rcmflow-consume-{fmt}-{topic})" in run.stderr
    from_topic = since(before, topics(broker.connection))

    expected, got = published(fmt, before), published(fmt, from_topic)
    assert got == expected
    assert got["events"] and got["dlq"], "the inputs hold good and bad units"
    if fmt in RAW:
        assert got["raw"], "raw records with their source totals"
    if fmt == "hl7":  # AE/AR over Kafka: raw message refused + the ACK's reason in rcm.dlq
        statuses = Counter(dict(r.headers)["rcm-status"] for r in from_topic[RAW_HL7])
        assert statuses == {b"applied": 4, b"refused": 6}
        # ADTApp's ADT^A04 and BAR^P01 carry EVN-2 2029-08-01: past the date window.
        assert Counter(d["reason_code"] for d in dlq_docs(from_topic)) == {
            "no_account": 3, "conflict": 1, "date_out_of_range": 2}
        assert all(d["origin"]["topic"] == f"hl7:kafka:{topic}" for d in dlq_docs(from_topic))
    for phi in PHI:
        assert phi not in run.stderr, phi
    # Read again by the same group: nothing new (the offsets were committed).
    done = topics(broker.connection)
    again = consume(workers, fmt, topic)
    assert again.returncode == 0, again.stderr
    assert since(done, topics(broker.connection)) == {t: [] for t in done}
    assert f"consume {fmt} {topic} (group rcmflow-consume-{fmt}-{topic}): 0 records" in (
        again.stderr)


# -- bad records -----------------------------------------------------------------------------

def dft(control_id: str, account: str, *amounts: str, kind: str = "CG",
        sep: str = "\r") -> bytes:
    ft1s = [f"FT1|{n}|{control_id}-{n}||20261120||{kind}|CDM{n}|||1|{a}||ED"
            for n, a in enumerate(amounts or ("125.00",), 1)]
    pid = "|".join(["PID", "1", "", "MRN1^^^H^MR", "", "DOE^JANE"] + [""] * 12 + [account])
    return sep.join([
        f"MSH|^~\\&|EHR|GEN|RCM|GEN|20261120103000||DFT^P03|{control_id}|P|2.5",
        "EVN|P03|20261120103000", pid, "PV1|1|O", *ft1s]).encode() + sep.encode()


def x12_remit(account: str, trace: str) -> bytes:
    return envelope(remit_segments([ClaimSpec(account, 10000, 8000, cas=[("CO", "45", 2000)])],
                                   trn02=trace))


def fhir_charge(value: str, cents: int) -> bytes:
    return json.dumps(CHARGE | {"identifier": [{"system": "urn:example:charges",
                                                "value": value}],
                                "priceOverride": {"value": cents / 100, "currency": "USD"},
                                "account": [{"reference": "Account/B1"}]}).encode()


def payment_row(reference: str, amount: str) -> bytes:
    return (b"type,account,amount,date,reference\n"
            + f"payment,B1,{amount},2026-03-05,{reference}\n".encode())


#: Per format: the bound set low for the test, and records in order: good, unparseable,
#: not UTF-8, over the bound, a tombstone, good. The DLQ reason code of each bad one.
BAD: dict[str, tuple[dict[str, str], list[bytes | None], list[str]]] = {
    "hl7": ({"RCMFLOW_MLLP_MESSAGE_BYTES_MAX": "2048"},
            [dft("G1", "B1", "10.00"), b"this is not HL7\r", b"\xff\xfe\x00\x01",
             dft("BIG", "B1", *["1.00"] * 60), None,
             # Latin-1 (not UTF-8) is what many HL7 feeds send: read, not refused.
             dft("G2", "B1", "2.50").replace(b"DOE^JANE", b"M\xdcLLER^J")],
            ["unreadable", "unreadable", "too_large", "empty_record"]),
    "x12": ({"RCMFLOW_X12_FILE_BYTES_MAX": "1024"},
            [x12_remit("B1", "T1"), b"ST*835*0001~SE*2*0001~", b"ISA\xff\xfe*00*",
             x12_remit("B1", "T2") + b" " * 1024, None, x12_remit("B2", "T3")],
            ["x12_no_interchange", "x12_isa_unreadable", "too_large", "empty_record"]),
    "fhir": ({"RCMFLOW_FHIR_FILE_BYTES_MAX": "2048"},
             [fhir_charge("F1", 1000), b'{"resourceType": "ChargeItem",', b"\xff\xfe{}",
              fhir_charge("F2", 2000) + b" " * 2048, None, fhir_charge("F3", 3000)],
             ["fhir_invalid_json", "fhir_not_utf8", "too_large", "empty_record"]),
    "payments": ({"RCMFLOW_PAYMENTS_FILE_BYTES_MAX": "1024"},
                 [payment_row("P1", "10.00"), b"no,header,here\n1,2,3\n",
                  b"type,account\n\xff\xfe", payment_row("P2", "1.00") + b"\n" * 1024, None,
                  payment_row("P3", "3.00")],
                 ["file_unreadable", "file_unreadable", "too_large", "empty_record"]),
    "events": ({"RCMFLOW_EVENT_BYTES_MAX": "1024"},
               [json.dumps(charge(100, "B1", event_id="EV1")).encode(), b"{oops",
                b"\xff\xfe\x00{", json.dumps(charge(200, "B1", event_id="EV2",
                                                    source="x" * 1100)).encode(),
                None, json.dumps(charge(300, "B1", event_id="EV3")).encode()],
               ["invalid_json", "invalid_json", "too_large", "empty_record"]),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_records_go_to_the_dlq_and_the_next_records_flow(
        broker: Broker, workers: Workers, fmt: str) -> None:
    env, values, reasons = BAD[fmt]
    topic = f"bad.{fmt}"
    create_topic(broker, topic)
    produce(broker.connection, topic, [(b"k", v) for v in values])
    run = consume(workers, fmt, topic, env=env)
    assert run.returncode == 0, run.stderr
    out = topics(broker.connection)
    # One DLQ record per bad record, with its reason and its original bytes.
    docs = sorted(dlq_docs(out), key=lambda d: read_at(d["origin"], topic))
    assert [d["reason_code"] for d in docs] == reasons, [d["reason"] for d in docs]
    for doc, offset in zip(docs, range(1, 5), strict=True):
        value = values[offset] or b""
        assert read_at(doc["origin"], topic) == offset, doc["origin"]
        payload = (doc["payload"].encode() if doc["payload_encoding"] == "utf-8"
                   else base64.b64decode(doc["payload"]))
        if doc["reason_code"] == "too_large":
            assert f"{len(value)} bytes" in doc["reason"], doc["reason"]
        else:  # hl7: the message as split from the record (segments end in CR)
            assert payload.rstrip(b"\r") == value.rstrip(b"\r")
    assert docs[-1]["severity"] == "warning"  # a tombstone is no error of the sender's
    # The good records before and after all went through.
    events = [json.loads(r.value or b"") for r in out[EVENTS]]
    assert len(events) >= 2 and {e["account"] for e in events} <= {"B1", "B2"}
    assert json.loads(out[EVENTS][-1].value or b"")["event_id"] != json.loads(
        out[EVENTS][0].value or b"")["event_id"]
    assert "4 to rcm.dlq" in run.stderr, run.stderr


def read_at(origin: dict[str, Any], topic: str) -> int:
    """The offset a DLQ record says its input was read at: the origin's own offset, or the
    file connectors' origin string ``kafka:<topic>:<partition>:<offset>``."""
    if origin["topic"].startswith("kafka:"):
        name, partition, offset = origin["topic"].removeprefix("kafka:").rsplit(":", 2)
        assert (name, partition) == (topic, "0")
        return int(offset)
    assert origin["topic"] in (topic, f"hl7:kafka:{topic}") and origin["partition"] == 0
    return int(origin["offset"])


# -- crashes: kill -9 mid-topic, a kill between the acks and the commit, no acks ------------

def dft_stream(accounts: int, per_account: int, seed: int) -> list[tuple[str, bytes]]:
    """(account, DFT) per message, accounts interleaved, each account's messages in order:
    charges of 1-3 FT1s, then a credit smaller than the first charge."""
    rng = random.Random(seed)
    queues: list[list[tuple[str, bytes]]] = []
    for n in range(accounts):
        account = f"K{n:04d}"
        first = rng.randrange(1_000, 90_000)
        queue = [(account, dft(f"{account}-0", account, cents_text(first)))]
        for m in range(1, per_account):
            amounts = [cents_text(rng.randrange(100, 250_000)) for _ in range(rng.randint(1, 3))]
            queue.append((account, dft(f"{account}-{m}", account, *amounts)))
        queue.append((account, dft(f"{account}-CR", account, cents_text(first // 2),
                                   kind="CD")))
        queues.append(queue)
    out: list[tuple[str, bytes]] = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return out


def hl7_expected(stream: list[tuple[str, bytes]]) -> Workload:
    """The canonical events the HL7 mapping makes of the stream, in order."""
    config = mapping_config(Settings())
    events: list[tuple[str, bytes]] = []
    for _, raw in stream:
        mapped = map_message(read_message(normalise(raw)), config)
        assert isinstance(mapped, list), mapped
        events += [(e.account, e.model_dump_json().encode()) for e in mapped]
    return Workload(events)


def feed(kafka: KafkaConnection, topic: str, values: list[tuple[str, bytes]], chunks: int,
         pause_s: float, hold: threading.Event) -> threading.Thread:
    """Publish in chunks from a thread, so the topic grows while it is consumed; the second
    half waits for ``hold`` (a kill must find records it has not read yet)."""
    size = len(values) // chunks + 1

    def run() -> None:
        for start in range(0, len(values), size):
            if start >= len(values) // 2:
                hold.wait(180)
            produce(kafka, topic, [(k.encode(), v) for k, v in values[start:start + size]])
            time.sleep(pause_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def assert_same_ledger(kafka: KafkaConnection, expected: Expected) -> None:
    """Postings and account states exactly as the pure core makes them of the input; the
    worker's own DLQ records (conflicts, invalid events) once per distinct input, whatever
    was re-read (a repeat lands at another rcm.events offset, so gets another dlq_id)."""
    observed = Observed.read(kafka)
    doubled = {pid: v for pid, v in observed.postings.items() if len(v) > 1}
    assert not doubled, f"posting ids sent with two contents: {list(doubled)[:3]}"
    assert set(observed.postings) == set(expected.postings)
    assert all(v == {expected.postings[pid]} for pid, v in observed.postings.items())
    assert observed.states == expected.states
    distinct = {(d["reason_code"], d["payload"]) for d in
                (json.loads(r.value or b"") for r in asyncio.run(read_topic(kafka, DLQ)))}
    assert Counter(reason for reason, _ in distinct) == expected.dlq_reasons


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["hl7", "events"])
def test_kill_9_mid_topic_then_restart_every_event_once_in_the_balances(
        broker: Broker, workers: Workers, tmp_path: Path, fmt: str) -> None:
    """The topic grows while `rcmflow consume` reads it. Killed twice: by itself right after
    the outputs of a random batch were acknowledged and before its commit (the window a
    re-read must cover), then from outside at a random moment after more commits; the third
    run reads to the end. Every event of the input is on rcm.events, and the worker's
    balances, postings and DLQ are what the pure core makes of the input once."""
    topic, partitions = f"feed.{fmt}", 4
    create_topic(broker, topic, partitions)
    rng = random.Random(11)
    if fmt == "hl7":
        stream = dft_stream(accounts=150, per_account=5, seed=4)
        workload = hl7_expected(stream)
    else:
        workload = Workload.build(accounts=200, seed=5)
        stream = workload.values
    expected = workload.expected()
    event_ids = {json.loads(v)["event_id"] for _, v in workload.values}
    group = f"rcmflow-consume-{fmt}-{topic}"

    def committed_total() -> int:
        return sum(o or 0 for o in committed(broker.connection, group, topic,
                                             partitions).values())

    worker = workers.start("w1")
    log = tmp_path / "consume.log"
    env = {"RCMFLOW_CONSUME_BATCH_MAX": "10"}
    killed = threading.Event()
    feeder = feed(broker.connection, topic, stream, chunks=30, pause_s=0.3, hold=killed)
    first = start_consume(workers, fmt, topic, log,
                          env=env | Faults(consume_kill_after=rng.randint(3, 12)).environment())
    assert first.wait(120) == -signal.SIGKILL, log.read_text()
    after_first = committed_total()
    second = start_consume(workers, fmt, topic, log, env=env)
    wait_until(lambda: committed_total() > after_first + 20 or second.poll() is not None, 90,
               "more commits", log.read_text)
    time.sleep(rng.uniform(0.0, 1.0))
    second.send_signal(signal.SIGKILL)
    assert second.wait(30) == -signal.SIGKILL, log.read_text()
    after_second = committed_total()
    killed.set()
    feeder.join()
    assert 0 < after_first < after_second < len(stream), "both kills landed mid-topic"
    third = consume(workers, fmt, topic, env=env)
    assert third.returncode == 0, third.stderr
    assert committed_total() == len(stream)

    published_ids = [json.loads(r.value or b"")["event_id"]
                     for r in asyncio.run(read_topic(broker.connection, EVENTS))]
    assert set(published_ids) >= event_ids, "every event of the input, at least once"
    # The batch acknowledged before the first kill was read again by a later run (the second,
    # or the third when the second was killed before it read anything): its HL7 messages are
    # replays in the group's replay store; canonical events go out twice.
    if fmt == "hl7":
        runs = log.read_text() + third.stderr
        assert ": replay, AA again" in runs, runs
    else:
        assert len(published_ids) > len(event_ids)
    wait_until(lambda: converged(broker.connection, expected), 120, "the worker to apply",
               lambda: difference(broker.connection, expected) + worker.log_tail())
    assert_same_ledger(broker.connection, expected)
    assert worker.alive(), worker.log_tail()
    for phi in PHI:
        assert phi not in log.read_text() + third.stderr, phi


def test_a_kill_between_the_acks_and_the_commit_reads_the_batch_again(
        broker: Broker, workers: Workers) -> None:
    topic = "acks.events"
    create_topic(broker, topic)
    values = [json.dumps(charge(100 + n, f"A{n % 5}", event_id=f"K-{n}")).encode()
              for n in range(40)]
    produce(broker.connection, topic, [(None, v) for v in values])
    env = {"RCMFLOW_CONSUME_BATCH_MAX": "10"} | Faults(consume_kill_after=2).environment()
    killed = consume(workers, "events", topic, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    group = f"rcmflow-consume-events-{topic}"
    (at_kill,) = committed(broker.connection, group, topic, 1).values()
    events = asyncio.run(read_topic(broker.connection, EVENTS))
    # The second batch is on rcm.events (acknowledged) but its offsets were not committed.
    assert at_kill is not None and 0 < at_kill < len(events) <= len(values)
    assert Counter(r.value for r in events) == Counter(values[:len(events)])

    again = consume(workers, "events", topic)
    assert again.returncode == 0, again.stderr
    counts = Counter(r.value for r in asyncio.run(read_topic(broker.connection, EVENTS)))
    assert counts == Counter(values + values[at_kill:len(events)])  # read again, once more
    assert committed(broker.connection, group, topic, 1) == {0: len(values)}


def test_unacknowledged_writes_are_retried_then_exit_3_with_nothing_committed(
        broker: Broker, workers: Workers) -> None:
    topic = "noack.events"
    create_topic(broker, topic)
    values = [json.dumps(charge(100 + n, f"N{n % 3}", event_id=f"N-{n}")).encode()
              for n in range(12)]
    produce(broker.connection, topic, [(None, v) for v in values])
    # No ack can arrive within a microsecond: every batch counts as not acknowledged.
    refused = consume(workers, "events", topic, env={"RCMFLOW_PRODUCE_TIMEOUT_S": "0.000001",
                                                     "RCMFLOW_CONSUME_RETRY_MAX": "2"})
    assert refused.returncode == ExitCode.BROKER, refused.stderr
    assert refused.stderr.count("not acknowledged") == 2, refused.stderr
    assert "did not acknowledge a batch after 2 retries" in refused.stderr
    group = f"rcmflow-consume-events-{topic}"
    # Only the group's start was committed: the records were not taken.
    assert committed(broker.connection, group, topic, 1) == {0: 0}

    again = consume(workers, "events", topic)
    assert again.returncode == 0, again.stderr
    counts = Counter(r.value for r in asyncio.run(read_topic(broker.connection, EVENTS)))
    assert set(counts) == set(values)  # the timed-out sends may have landed: repeats only
    assert "12 records" in again.stderr
    assert committed(broker.connection, group, topic, 1) == {0: len(values)}


# -- the command: signals, progress, metrics, one-line errors ---------------------------------

def test_sigterm_stops_cleanly_after_committing_and_logs_no_patient_data(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    topic = "ehr.dft"
    create_topic(broker, topic, 2)
    messages = [p.read_bytes() for p in sorted((SAMPLES / "hl7").iterdir())]
    produce(broker.connection, topic, [(b"one", m) for m in messages])
    port = free_port()
    log = tmp_path / "consume.log"
    process = start_consume(workers, "hl7", topic, log, "--metrics-port", str(port))
    try:
        def caught_up() -> bool:
            try:
                values = scrape(port)
            except OSError:
                return False
            at = '{format="hl7",topic="ehr.dft"}'
            return (values.get(f"rcmflow_consume_records_total{at}") == len(messages)
                    and values.get(f"rcmflow_consume_lag_records{at}") == 0)

        wait_until(caught_up, 60, "the consumer to catch up", log.read_text)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "stopping (signal)" in text and "8 records, " in text, text
    assert "MSG00001" in text and "4000776" in text  # control ids and accounts only
    for phi in PHI + ("PATID1234", "Everyman"):
        assert phi not in text, phi
    assert committed(broker.connection, f"rcmflow-consume-hl7-{topic}", topic, 2) in (
        {0: len(messages), 1: None}, {0: None, 1: len(messages)},
        {0: len(messages), 1: 0}, {0: 0, 1: len(messages)})


def test_a_missing_topic_or_rcmflows_own_topic_is_one_line_and_exit_2(
        broker: Broker, workers: Workers) -> None:
    missing = cli(workers, "consume", "hl7", "--topic", "no.such.topic")
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip().count("\n") == 0, missing.stderr
    assert "topic 'no.such.topic' does not exist on" in missing.stderr
    own = cli(workers, "consume", "events", "--topic", EVENTS)
    assert own.returncode == 2 and "rcm.events is a topic rcmflow writes" in own.stderr


@pytest.mark.brokers("tansu")  # no broker is involved: once is enough
def test_an_unreachable_broker_is_one_line_and_exit_3(broker: Broker, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env |= {"RCMFLOW_BROKER": f"kafka://127.0.0.1:{free_port()}",
            "RCMFLOW_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "consume", "x12", "--topic",
                           "ehr.x12"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.BROKER, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "is unreachable: KafkaConnectionError" in done.stderr


@pytest.mark.brokers("kafka")  # Tansu creates a missing topic on the first write to it
def test_a_broker_that_refuses_the_writes_commits_nothing_and_a_restart_reads_again(
        broker: Broker, workers: Workers) -> None:
    """rcm.events is gone (an operator's mistake, a cluster being rebuilt): Apache Kafka
    refuses every write to it. The consumer sends the batch again, gives up (exit 3) with
    only the group's start committed; once the topic is back, a restart reads every record
    and publishes each event once."""
    topic = "refused.events"
    create_topic(broker, topic)
    values = [json.dumps(charge(100 + n, f"R{n % 3}", event_id=f"R-{n}")).encode()
              for n in range(12)]
    produce(broker.connection, topic, [(None, v) for v in values])
    delete_topic(broker, EVENTS)
    refused = consume(workers, "events", topic, env={"RCMFLOW_PRODUCE_TIMEOUT_S": "3",
                                                     "RCMFLOW_CONSUME_RETRY_MAX": "1"})
    assert refused.returncode == ExitCode.BROKER, refused.stderr
    assert "did not acknowledge a batch after 1 retries" in refused.stderr
    group = f"rcmflow-consume-events-{topic}"
    assert committed(broker.connection, group, topic, 1) == {0: 0}

    asyncio.run(ensure_topics(broker.connection, topic_specs("rcmflow"), 4, 1))
    again = consume(workers, "events", topic)
    assert again.returncode == 0, again.stderr
    counts = Counter(r.value for r in asyncio.run(read_topic(broker.connection, EVENTS)))
    assert counts == Counter(values)
    assert committed(broker.connection, group, topic, 1) == {0: len(values)}


@pytest.mark.brokers("kafka")  # Tansu has no transactions
def test_a_transactional_source_its_aborted_records_are_no_input(
        broker: Broker, workers: Workers) -> None:
    """An EHR bus writing with Kafka transactions: the aborted record is skipped, and the
    commit markers are committed past, so the lag reaches 0 (--idle-exit fires)."""
    topic = "tx.events"
    create_topic(broker, topic)
    kept, aborted, later = (json.dumps(charge(100 * n, "X1", event_id=f"TX-{n}")).encode()
                            for n in (1, 2, 3))

    async def write() -> None:
        producer = AIOKafkaProducer(**broker.connection.client_options(),
                                    transactional_id="ehr-bus-test")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, kept)
            await producer.begin_transaction()
            await producer.send_and_wait(topic, aborted)
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, later)
        finally:
            await producer.stop()

    asyncio.run(write())
    run = consume(workers, "events", topic)
    assert run.returncode == 0, run.stderr
    assert [r.value for r in asyncio.run(read_topic(broker.connection, EVENTS))] == [
        kept, later]
    # 3 records and 3 control records (two commits, one abort): all stepped over.
    assert committed(broker.connection, f"rcmflow-consume-events-{topic}", topic, 1) == {0: 6}


def delete_topic(broker: Broker, name: str) -> None:
    """Delete a topic and wait until the broker no longer lists it."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def delete() -> None:
        admin = AIOKafkaAdminClient(**broker.connection.client_options())
        await admin.start()
        try:
            await admin.delete_topics([name])
            for _ in range(100):
                if name not in await admin.list_topics():
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"{name} still listed after its deletion")
        finally:
            await admin.close()

    asyncio.run(delete())
