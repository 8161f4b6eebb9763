"""The MLLP listener over real sockets, writing to the real embedded broker.

What a sender sees (ACK codes, MSA-2, ERR) is checked against what is on the topics at that
moment: an AA means the raw message and its events are already on the broker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from rcmflow.connectors.inbound.hl7.framing import frame
from rcmflow.connectors.inbound.hl7.intake import Intake, KafkaSink
from rcmflow.connectors.inbound.hl7.listener import ListenerLimits, MllpListener
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.ops.accounts import latest_snapshots
from rcmflow.runtime.broker import free_port
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.topics import DLQ, EVENTS, RAW_HL7
from tests.conftest import Broker, Workers
from tests.scrape import scrape

pytestmark = pytest.mark.broker

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "hl7"
DFT_01 = (SAMPLES / "ms_dft_p03_01_v28.hl7").read_bytes()
DFT_02 = (SAMPLES / "ms_dft_p03_02_v28.hl7").read_bytes()  # same MSH-3/4/10, other content
NO_ACCOUNT = (SAMPLES / "lfh_dft_p03_minimal_v26.hl7").read_bytes()
BOM_LF = (SAMPLES / "ms_adt_a04_v23_bom.hl7").read_bytes().replace(b"\r", b"\n")


def dft(control_id: str, account: str = "A900", *amounts: str, kind: str = "CG") -> bytes:
    ft1s = [f"FT1|{n}|||20261120||{kind}|CDM{n}|||1|{a}||ED" for n, a in
            enumerate(amounts or ("125.00",), 1)]
    pid = "|".join(["PID", "1", "", "MRN1"] + [""] * 14 + [account])
    return "\r".join([
        f"MSH|^~\\&|EHR|GEN|RCM|GEN|20261120103000||DFT^P03|{control_id}|P|2.5",
        "EVN|P03|20261120103000", pid, "PV1|1|O", *ft1s]).encode() + b"\r"


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, message: bytes) -> list[list[str]]:
        self.writer.write(frame(message))
        await self.writer.drain()
        return await self.ack()

    async def ack(self) -> list[list[str]]:
        data = await asyncio.wait_for(self.reader.readuntil(b"\x1c\r"), 30)
        assert data.startswith(b"\x0b")
        return [s.split("|") for s in data[1:-2].decode().split("\r") if s]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def msa(ack: list[list[str]]) -> tuple[str, str]:
    segment = next(s for s in ack if s[0] == "MSA")
    return segment[1], segment[2]


def errs(ack: list[list[str]]) -> list[list[str]]:
    return [s for s in ack if s[0] == "ERR"]


async def topic(broker: Broker, name: str) -> list[Any]:
    return await read_topic(broker.connection, name)


async def dlq(broker: Broker) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await topic(broker, DLQ)]


@asynccontextmanager
async def listening(broker: Broker, store_dir: Path, *, write_timeout_s: float = 10,
                    **limits: Any) -> AsyncIterator[int]:
    sink = KafkaSink(broker.connection, write_timeout_s)
    await sink.start()
    store = ReplayStore(store_dir, 3600)
    intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="mllp")
    listener = MllpListener(intake, ListenerLimits(**limits))
    port = await listener.start("127.0.0.1", 0)
    try:
        yield port
    finally:
        await listener.stop()
        await sink.stop()
        store.close()


async def test_aa_comes_after_raw_and_events_are_on_the_broker(
    broker: Broker, tmp_path: Path
) -> None:
    async with listening(broker, tmp_path / "replay") as port:
        client = await Client.connect(port)
        ack = await client.send(DFT_01)
        assert msa(ack) == ("AA", "MSG00001")
        # Read right after the AA: everything is already there.
        events = [json.loads(r.value) for r in await topic(broker, EVENTS)]
        raw = await topic(broker, RAW_HL7)
        assert [(e["kind"], e["account"], e["amount_cents"]) for e in events] == [
            ("charge_posted", "4000776", 10000), ("charge_posted", "4000776", 12000)]
        assert [r.value for r in raw] == [DFT_01]  # byte for byte as received
        assert {r.key for r in await topic(broker, EVENTS)} == {b"4000776"}
        await client.close()


async def test_every_public_sample_over_one_connection(
    broker: Broker, tmp_path: Path
) -> None:
    """In file-name order. The microsoft samples reuse MSH-10 MSG00001 from one sender:
    DFT 02 after DFT 01 (IMMAPP) is a conflict (ADTApp's ADT^A04 and BAR^P01 are dated
    2029 in EVN-2: refused as date_out_of_range, before their keys are kept)."""
    from rcmflow.connectors.inbound.hl7.batch import split_batch

    expected = {
        "lfh_dft_p03_minimal_v26.hl7": [("AE", "MSGID000001", "no_account")],
        # EVN-2 2029-08-01: past today + RCMFLOW_DATE_FUTURE_DAYS (366 by default).
        "ms_adt_a04_01_v28.hl7": [("AE", "MSG00001", "date_out_of_range")],
        "ms_adt_a04_v23_bom.hl7": [("AA", "1270326314", None)],
        "ms_bar_p01_01_v28.hl7": [("AE", "MSG00001", "date_out_of_range")],
        "ms_dft_p03_01_v28.hl7": [("AA", "MSG00001", None)],
        "ms_dft_p03_02_v28.hl7": [("AE", "MSG00001", "conflict")],
        "pythonhl7_adt_a01_hnam_v23.hl7": [("AA", "Q150084616T145947960", None)],
        "pythonhl7_adt_a04_batch_v25.hl7": [("AE", "12334456778890", "no_account"),
                                            ("AE", "12334456778891", "no_account")],
    }
    assert sorted(p.name for p in SAMPLES.iterdir()) == sorted(expected)
    async with listening(broker, tmp_path / "replay") as port:
        client = await Client.connect(port)
        for name, answers in sorted(expected.items()):
            messages = split_batch((SAMPLES / name).read_bytes()).messages
            assert len(messages) == len(answers)
            for message, (code, control_id, _) in zip(messages, answers, strict=True):
                ack = await client.send(message)
                assert msa(ack) == (code, control_id), name
                assert bool(errs(ack)) == (code != "AA"), name
        await client.close()
    reasons = sorted(r["reason_code"] for r in await dlq(broker))
    assert reasons == sorted(a[2] for v in expected.values() for a in v if a[2])
    events = [json.loads(r.value) for r in await topic(broker, EVENTS)]
    assert sorted((e["kind"], e["account"], e.get("amount_cents")) for e in events) == [
        ("account_status_changed", "123456789", None),
        ("account_status_changed", "O75622322", None),
        ("charge_posted", "4000776", 10000), ("charge_posted", "4000776", 12000),
        ("workflow_step", "123456789", None), ("workflow_step", "O75622322", None)]


async def test_replay_is_aa_again_and_conflict_is_ae_with_dlq_across_a_restart(
    broker: Broker, tmp_path: Path
) -> None:
    async with listening(broker, tmp_path / "replay") as port:
        client = await Client.connect(port)
        assert msa(await client.send(DFT_01)) == ("AA", "MSG00001")
        assert msa(await client.send(DFT_01)) == ("AA", "MSG00001")
        await client.close()
    # A new listener on the same store still remembers what it accepted.
    async with listening(broker, tmp_path / "replay") as port:
        client = await Client.connect(port)
        assert msa(await client.send(DFT_01)) == ("AA", "MSG00001")
        conflict = await client.send(DFT_02)
        assert msa(conflict) == ("AE", "MSG00001")
        (err,) = errs(conflict)
        assert err[3].startswith("205^") and "different content" in err[8]
        await client.close()
    assert len(await topic(broker, EVENTS)) == 2  # from the first message only
    (record,) = await dlq(broker)
    assert (record["reason_code"], record["stage"]) == ("conflict", "dedup")
    assert record["payload"].encode() == DFT_02 and record["context"]["msh_10"] == "MSG00001"


async def test_malformed_messages_get_ae_or_ar_with_err_and_a_dlq_record(
    broker: Broker, tmp_path: Path
) -> None:
    async with listening(broker, tmp_path / "replay") as port:
        client = await Client.connect(port)
        no_account = await client.send(NO_ACCOUNT)
        assert msa(no_account) == ("AE", "MSGID000001")
        assert [e[2] for e in errs(no_account)] == ["PID^1^18", "FT1^1^11"]
        garbage = await client.send(b"this is not HL7")
        assert msa(garbage) == ("AR", "")
        assert errs(garbage)[0][8] == "the message does not start with an MSH segment"
        unmapped = await client.send(dft("U1", "A1", "10.00", kind="PY"))
        assert msa(unmapped) == ("AE", "U1") and errs(unmapped)[0][2] == "FT1^1^6"
        # The same connection still works after all that.
        assert msa(await client.send(BOM_LF)) == ("AA", "1270326314")
        await client.close()
    records = await dlq(broker)
    assert sorted(r["reason_code"] for r in records) == [
        "no_account", "unmapped_transaction_type", "unreadable"]
    by_code = {r["reason_code"]: r for r in records}
    assert by_code["no_account"]["payload"].encode() == NO_ACCOUNT
    assert by_code["unreadable"]["payload"] == "this is not HL7"
    events = [json.loads(r.value) for r in await topic(broker, EVENTS)]
    assert [(e["kind"], e["account"]) for e in events] == [
        ("account_status_changed", "123456789"), ("workflow_step", "123456789")]


async def test_oversized_message_is_ar_and_the_connection_stays_open(
    broker: Broker, tmp_path: Path
) -> None:
    big = dft("BIG1") + b"NTE|1||" + b"x" * 10_000 + b"\r"
    async with listening(broker, tmp_path / "replay", message_bytes_max=4096) as port:
        client = await Client.connect(port)
        ack = await client.send(big)
        assert msa(ack) == ("AR", "BIG1")
        assert f"message of {len(big)} bytes exceeds the maximum of 4096" in errs(ack)[0][8]
        assert msa(await client.send(dft("SMALL1"))) == ("AA", "SMALL1")
        await client.close()
    (record,) = await dlq(broker)
    assert record["reason_code"] == "too_large"
    assert record["context"]["payload_bytes"] == len(big)
    assert record["context"]["payload_truncated"] is True
    assert len(await topic(broker, EVENTS)) == 1


async def test_concurrent_persistent_connections_and_a_half_frame(
    broker: Broker, tmp_path: Path
) -> None:
    async with listening(broker, tmp_path / "replay") as port:
        async def sender(name: str) -> list[tuple[str, str]]:
            client = await Client.connect(port)
            acks = [msa(await client.send(dft(f"{name}-{n}", f"{name}ACC", "1.00")))
                    for n in range(15)]
            await client.close()
            return acks

        quitter = await Client.connect(port)
        quitter.writer.write(b"\x0b" + dft("HALF1")[:40])
        await quitter.writer.drain()
        first, second = await asyncio.gather(sender("X"), sender("Y"))
        await quitter.close()
        assert first == [("AA", f"X-{n}") for n in range(15)]
        assert second == [("AA", f"Y-{n}") for n in range(15)]
        for _ in range(50):  # the half frame is answered in the DLQ once the peer is gone
            records = await dlq(broker)
            if records:
                break
            await asyncio.sleep(0.1)
    (record,) = records
    assert record["reason_code"] == "truncated_frame"
    assert record["payload"].encode() == dft("HALF1")[:40]
    events = [json.loads(r.value) for r in await topic(broker, EVENTS)]
    assert sorted({e["account"] for e in events}) == ["XACC", "YACC"] and len(events) == 30


async def test_connection_limit_and_idle_timeout_close_connections(
    broker: Broker, tmp_path: Path
) -> None:
    async with listening(broker, tmp_path / "replay", connections_max=1,
                         idle_timeout_s=1.0) as port:
        first = await Client.connect(port)
        assert msa(await first.send(dft("L1"))) == ("AA", "L1")
        second = await Client.connect(port)  # over the limit: closed at once
        assert await asyncio.wait_for(second.reader.read(), 5) == b""
        assert msa(await first.send(dft("L2"))) == ("AA", "L2")  # the first one lives on
        assert await asyncio.wait_for(first.reader.read(), 5) == b""  # idle: closed
        third = await Client.connect(port)  # a slot is free again
        assert msa(await third.send(dft("L3"))) == ("AA", "L3")
        await third.close()


async def test_the_same_new_message_on_two_connections_at_once_publishes_once(
    broker: Broker, tmp_path: Path
) -> None:
    async with listening(broker, tmp_path / "replay") as port:
        clients = [await Client.connect(port) for _ in range(4)]
        for client in clients:  # all four in flight before any answer
            client.writer.write(frame(dft("SAME1", "A5", "10.00", "20.00")))
        acks = await asyncio.gather(*(c.ack() for c in clients))
        assert [msa(a) for a in acks] == [("AA", "SAME1")] * 4
        for client in clients:
            await client.close()
    assert len(await topic(broker, EVENTS)) == 2 and len(await topic(broker, RAW_HL7)) == 1


async def test_pipelined_frames_in_one_write_are_answered_in_order(
    broker: Broker, tmp_path: Path
) -> None:
    async with listening(broker, tmp_path / "replay") as port:
        client = await Client.connect(port)
        client.writer.write(frame(dft("P1")) + frame(b"garbage") + frame(dft("P3")))
        await client.writer.drain()
        acks = [msa(await client.ack()) for _ in range(3)]
        assert acks == [("AA", "P1"), ("AR", ""), ("AA", "P3")]
        await client.close()


async def test_no_aa_when_the_broker_does_not_take_the_write(
    broker: Broker, tmp_path: Path
) -> None:
    async with listening(broker, tmp_path / "replay", write_timeout_s=3) as port:
        client = await Client.connect(port)
        assert msa(await client.send(dft("OK1"))) == ("AA", "OK1")
        broker.stop()
        ack = await client.send(dft("LOST1"))
        assert msa(ack) == ("AR", "LOST1")
        assert "send it again" in errs(ack)[0][8]
        await client.close()


def test_dft_over_mllp_reaches_the_account_table(
    broker: Broker, workers: Workers, tmp_path: Path
) -> None:
    from tests.conftest import wait_until

    worker = workers.start("w1")

    async def send_all() -> list[tuple[str, str]]:
        async with listening(broker, tmp_path / "replay") as port:
            client = await Client.connect(port)
            acks = [msa(await client.send(m)) for m in (
                DFT_01, DFT_01,
                dft("CR1", "4000776", "40.00", kind="CD"))]
            await client.close()
            return acks

    assert asyncio.run(send_all()) == [("AA", "MSG00001"), ("AA", "MSG00001"), ("AA", "CR1")]

    def state() -> dict[str, Any] | None:
        # The account's head and items (charges are items of their own) as one document.
        found: dict[str, Any] | None = asyncio.run(
            latest_snapshots(broker.connection, "4000776")).get("4000776")
        return found

    wait_until(lambda: (s := state()) is not None and s["version"] >= 3, 90,
               "the worker to apply the HL7 charges", worker.log_tail)
    snap = state()
    assert snap is not None
    assert snap["balances"]["gross_charges"] == 10000 + 12000 - 4000
    assert snap["balances"]["insurance_ar"] == 18000
    assert sorted(c["amount_cents"] for c in snap["charges"]) == [10000, 12000]
    assert worker.alive(), worker.log_tail()


def test_ingest_hl7_files_batch_and_single_messages(
    broker: Broker, workers: Workers, tmp_path: Path
) -> None:
    import subprocess
    import sys

    batch = SAMPLES / "pythonhl7_adt_a04_batch_v25.hl7"
    lf_file = tmp_path / "two.hl7"
    lf_file.write_bytes(b"\xef\xbb\xbf" + (dft("F1", "B1", "10.00") + dft("F2", "B2", "2.50"))
                        .replace(b"\r", b"\n"))

    def ingest(*files: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rcmflow.cli", "ingest", "hl7",
                               *map(str, files)], env=workers.env(), capture_output=True,
                              text=True, timeout=120)

    first = ingest(lf_file, batch)
    assert first.returncode == 1, first.stderr  # the batch's messages have no account
    assert "two.hl7 #1 MSH-10 F1: AA" in first.stderr and "#2 MSH-10 F2: AA" in first.stderr
    assert "#1 MSH-10 12334456778890: AE no_account" in first.stderr
    assert "#2 MSH-10 12334456778891: AE no_account" in first.stderr
    again = ingest(lf_file)
    assert again.returncode == 0 and again.stderr.count(": AA replay") == 2, again.stderr
    events = [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, EVENTS))]
    assert sorted((e["account"], e["amount_cents"]) for e in events) == [("B1", 1000),
                                                                        ("B2", 250)]
    reasons = [json.loads(r.value)["reason_code"]
               for r in asyncio.run(read_topic(broker.connection, DLQ))]
    assert reasons == ["no_account", "no_account"]


def test_rcmflow_mllp_command_serves_stops_cleanly_and_logs_no_patient_data(
    broker: Broker, workers: Workers, tmp_path: Path
) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics_port = free_port()
    log = tmp_path / "mllp.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "rcmflow.cli", "mllp", "--port", str(port),
             "--metrics-port", str(metrics_port)],
            env=workers.env() | {"RCMFLOW_LOG_LEVEL": "debug"}, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        async def talk() -> list[tuple[str, str]]:
            for _ in range(100):
                try:
                    client = await Client.connect(port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            acks = [msa(await client.send(m)) for m in (DFT_01, NO_ACCOUNT, DFT_02)]
            await client.close()
            return acks

        assert asyncio.run(talk()) == [("AA", "MSG00001"), ("AE", "MSGID000001"),
                                       ("AE", "MSG00001")]
        by_code = scrape(metrics_port)
        assert [by_code[f'rcmflow_mllp_messages_total{{ack="{c}"}}'] for c in
                ("AA", "AE", "AR")] == [1, 2, 0]
        metrics_text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        time.sleep(0)
    text = log.read_text()
    assert "MSG00001" in text and "4000776" in text  # control ids and accounts only
    for phi in ("EVERYMAN", "ADAM", "DOE", "JANE", "PATID1234", "123456789", "Aniston"):
        assert phi not in text, phi
    for label in ("4000776", "MSG00001", "MRN"):  # no accounts or ids in metric labels
        assert label not in metrics_text, label


async def test_a_message_at_the_size_bound_is_stored_with_its_headers(
    broker: Broker, tmp_path: Path
) -> None:
    """A 1,000-FT1 DFT just under the default 1 MiB bound: its raw record (message + reconcile
    headers, ~1.3 MB) must fit the producer and the topic, or the sender gets AR "not stored"
    for ever (aiokafka's 1 MiB request default did exactly that)."""
    from rcmflow.connectors.inbound.hl7.intake import raw_record_bytes_max
    from rcmflow.runtime.settings import Settings

    settings = Settings()
    padding = "x" * 950
    message = dft("NEAR1MB", "A901", *["1.00"] * settings.hl7_ft1_max).replace(
        b"|ED\r", f"|ED||{padding}\r".encode())
    assert 900_000 < len(message) <= settings.mllp_message_bytes_max
    sink = KafkaSink(broker.connection, 10.0, raw_record_bytes_max(
        settings.mllp_message_bytes_max, settings.hl7_ft1_max))
    await sink.start()
    store = ReplayStore(tmp_path / "replay", 3600)
    try:
        intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="t")
        outcome = await intake.handle(message)
    finally:
        await sink.stop()
        store.close()
    assert (outcome.code, outcome.reason_code) == ("AA", None)
    (raw,) = await topic(broker, RAW_HL7)
    assert raw.value == message and dict(raw.headers)["rcm-status"] == b"applied"
    assert len(await topic(broker, EVENTS)) == settings.hl7_ft1_max


def test_too_many_ft1_is_refused_whole_and_the_bounds_agree() -> None:
    from rcmflow.connectors.inbound.hl7.intake import raw_record_bytes_max
    from rcmflow.connectors.inbound.hl7.mapping import map_message
    from rcmflow.connectors.inbound.hl7.problems import Rejected
    from rcmflow.connectors.inbound.hl7.reader import read_message
    from rcmflow.runtime.settings import Settings
    from rcmflow.streams.topics import RAW_HL7_RECORD_BYTES_MAX

    config = MappingConfig(ft1_max=3)
    assert isinstance(map_message(read_message(dft("M3", "A1", "1", "2", "3").decode()),
                                  config), list)
    refused = map_message(read_message(dft("M4", "A1", "1", "2", "3", "4").decode()), config)
    assert isinstance(refused, Rejected) and refused.ack_code == "AE"
    (problem,) = refused.problems
    assert problem.reason_code == "too_many_ft1" and "at most 3" in problem.detail
    # The topic takes the largest record the settings' ceilings allow.
    fields = Settings.model_fields
    ceilings = [next(m.le for m in fields[name].metadata if getattr(m, "le", None))
                for name in ("mllp_message_bytes_max", "hl7_ft1_max")]
    assert RAW_HL7_RECORD_BYTES_MAX == raw_record_bytes_max(*ceilings)


def test_a_batch_file_message_over_the_size_bound_is_refused_like_over_mllp(
    broker: Broker, workers: Workers, tmp_path: Path
) -> None:
    """Files had no per-message bound: a message the producer could not take made exit 3
    ("run again") for ever. Now it is too_large, AR and rcm.dlq, as over MLLP."""
    import subprocess
    import sys

    big = dft("FBIG", "B9") + b"NTE|1||" + b"x" * 10_000 + b"\r"
    path = tmp_path / "mixed.hl7"
    path.write_bytes(big + dft("FSMALL", "B9", "3.00"))
    done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "ingest", "hl7", str(path)],
                          env=workers.env() | {"RCMFLOW_MLLP_MESSAGE_BYTES_MAX": "4096"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "#1 MSH-10 FBIG: AR too_large" in done.stderr
    assert "#2 MSH-10 FSMALL: AA" in done.stderr
    (record,) = asyncio.run(read_topic(broker.connection, DLQ))
    doc = json.loads(record.value)
    assert doc["reason_code"] == "too_large" and doc["context"]["payload_bytes"] == len(big)
    events = [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, EVENTS))]
    assert [(e["account"], e["amount_cents"]) for e in events] == [("B9", 300)]
