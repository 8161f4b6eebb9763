"""`rcmflow consume` without a broker: what a record becomes, bad and poison records, the
retry rule, and the shared per-unit functions it uses (test_consume.py runs the real thing)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from rcmflow.connectors.inbound.consume import (
    ConsumeOptions,
    Hl7Handler,
    Incoming,
    RecordsHandler,
    Tally,
    TopicConsumer,
    _looks_ndjson,
)
from rcmflow.connectors.inbound.events import key_document
from rcmflow.connectors.inbound.exceptions import BrokerFailed
from rcmflow.connectors.inbound.hl7.intake import Intake
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Outgoing
from rcmflow.streams.dlq import Origin
from rcmflow.streams.topics import DLQ, EVENTS, RAW_HL7
from tests.factories import charge

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


class MemorySink:
    """Takes every write, or fails the next ``fail`` writes with ``error``."""

    def __init__(self, fail: int = 0, error: Exception | None = None) -> None:
        self.writes: list[list[Outgoing]] = []
        self.fail = fail
        self.error = error or KafkaConnectionError("broker gone")

    async def write(self, records: Sequence[Outgoing]) -> None:
        if self.fail:
            self.fail -= 1
            raise self.error
        self.writes.append(list(records))


def record(value: bytes | None, offset: int = 7) -> Incoming:
    return Incoming("ehr.feed", 2, offset, b"key", value)


def dlq(item: Outgoing) -> dict[str, Any]:
    assert item[0] == DLQ
    doc: dict[str, Any] = json.loads(item[2])
    return doc


def events_handler(sink: MemorySink, bytes_max: int = 10_000) -> RecordsHandler:
    def unit(r: Incoming) -> Sequence[Outgoing]:
        origin = Origin(topic=r.topic, partition=r.partition, offset=r.offset, key=None)
        return key_document(r.value or b"", line_bytes_max=2048, origin=origin,
                            where=f"{r.topic} offset {r.offset}")

    return RecordsHandler("events", sink, unit, bytes_max=bytes_max,
                          bytes_setting="TEST_BYTES_MAX", payload_bytes_max=64)


def test_empty_oversized_and_undecodable_records_are_dlq_records_with_their_bytes() -> None:
    handler = events_handler(MemorySink(), bytes_max=100)
    (empty,) = handler.outputs(record(None))
    assert dlq(empty)["reason_code"] == "empty_record" and dlq(empty)["severity"] == "warning"
    (big,) = handler.outputs(record(b"{" + b"x" * 200 + b"}"))
    doc = dlq(big)
    assert doc["reason_code"] == "too_large" and "202 bytes exceeds 100" in str(doc["reason"])
    assert doc["context"] == {
        "format": "events", "payload_truncated": True, "payload_bytes": 202,
        "problems": [{"reason_code": "too_large", "place": "",
                      "detail": "record of 202 bytes exceeds 100 (TEST_BYTES_MAX): not read"}]}
    assert len(str(doc["payload"])) == 64  # cut at the DLQ payload bound, and said so
    (latin,) = handler.outputs(record(b"\xff\xfe{"))
    doc = dlq(latin)
    assert doc["reason_code"] == "invalid_json" and doc["payload_encoding"] == "base64"
    assert base64.b64decode(str(doc["payload"])) == b"\xff\xfe{"
    # Read again after a crash: the same dlq_id (the worker's DLQ view dedups by it).
    assert dlq(handler.outputs(record(None))[0])["dlq_id"] == dlq(empty)["dlq_id"]
    assert dlq(handler.outputs(record(None, offset=8))[0])["dlq_id"] != dlq(empty)["dlq_id"]


def test_a_record_the_connector_fails_on_is_dlqd_and_logged_without_its_content(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(r: Incoming) -> Sequence[Outgoing]:
        raise ValueError(f"cannot read {r.value!r}")

    handler = RecordsHandler("x12", MemorySink(), broken, bytes_max=1000,
                             bytes_setting="X", payload_bytes_max=1000)
    with caplog.at_level(logging.ERROR, "rcmflow.consume"):
        (item,) = handler.outputs(record(b"DOE^JANE secret"))
    doc = dlq(item)
    assert doc["reason_code"] == "internal_error" and doc["payload"] == "DOE^JANE secret"
    assert "ValueError" in caplog.text and "ehr.feed[2]@7" in caplog.text
    assert "JANE" not in caplog.text  # the exception's text may quote the input: not logged


def test_canonical_json_one_event_pretty_printed_or_json_lines() -> None:
    origin = Origin(topic="t", partition=0, offset=3, key=None)
    one = json.dumps(charge(100, "P1", event_id="E1"), indent=2).encode()
    (item,) = key_document(one, line_bytes_max=4096, origin=origin, where="t offset 3")
    assert item[:2] == (EVENTS, b"P1") and json.loads(item[2])["event_id"] == "E1"
    lines = b"\n".join([json.dumps(charge(100, "P1", event_id="E2")).encode(), b"",
                        b"not json", json.dumps(charge(5, "P2")).encode()])
    out = key_document(lines, line_bytes_max=4096, origin=origin, where="t offset 3")
    assert [o[0] for o in out] == [EVENTS, DLQ, EVENTS]
    assert "t offset 3 line 3: not valid JSON" in str(dlq(out[1])["reason"])
    (problem,) = dlq(out[1])["context"]["problems"]
    assert (problem["reason_code"], problem["place"]) == ("invalid_json", "line 3")


def test_ndjson_is_told_from_a_pretty_printed_resource() -> None:
    assert _looks_ndjson(b'{"a": 1}\n{"b": 2}\n')
    assert not _looks_ndjson(b'{"a": 1}\n')
    assert not _looks_ndjson(b'{\n  "resourceType": "ChargeItem"\n}\n')


async def test_an_output_the_broker_refuses_as_too_large_puts_its_record_in_the_dlq() -> None:
    class Picky(MemorySink):
        async def write(self, records: Sequence[Outgoing]) -> None:
            if any(r[0] == EVENTS and len(r[2]) > 400 for r in records):
                raise MessageSizeTooLargeError("too large")
            await super().write(records)

    sink = Picky()
    handler = events_handler(sink)
    small = json.dumps(charge(100, "S1", event_id="S1")).encode()
    large = json.dumps(charge(200, "L1", event_id="L1", source="x" * 500)).encode()
    tally = await handler.take([record(small, 1), record(large, 2), record(small, 3)])
    assert (tally.records, tally.events, tally.dlq) == (3, 2, 1)
    written = [item for write in sink.writes for item in write]
    assert [dlq(i)["reason_code"] for i in written if i[0] == DLQ] == ["output_too_large"]


async def test_a_broker_failure_is_brokerfailed_and_the_batch_is_sent_again() -> None:
    sink = MemorySink(fail=2)
    handler = events_handler(sink)
    options = ConsumeOptions(kafka=KafkaConnection.plaintext("127.0.0.1:1"), format="events",
                             topic="t", group_id="g", retry_max=2, backoff_max_s=0.01)
    consumer = TopicConsumer(handler, options)
    batch = [record(json.dumps(charge(100, "A1", event_id=f"R{n}")).encode(), n)
             for n in range(3)]
    tally = await consumer._take(batch)
    assert tally == Tally(records=3, events=3) and consumer.progress.write_failures == 2
    assert len(sink.writes) == 1  # one whole write once the broker answered
    sink.fail = 3
    with pytest.raises(BrokerFailed):
        await consumer._take(batch)


async def test_hl7_outcomes_without_an_ack_and_a_not_stored_message_is_brokerfailed(
        tmp_path: Path) -> None:
    sink = MemorySink()
    store = ReplayStore(tmp_path / "replay", 3600)
    try:
        intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="kafka:t",
                        dlq_payload_bytes_max=1024)
        handler = Hl7Handler(intake, sink, record_bytes_max=1_000_000,
                             payload_bytes_max=1024)
        dft = (SAMPLES / "hl7" / "ms_dft_p03_01_v28.hl7").read_bytes()
        batch = (SAMPLES / "hl7" / "pythonhl7_adt_a04_batch_v25.hl7").read_bytes()
        big_refused = (SAMPLES / "hl7" / "lfh_dft_p03_minimal_v26.hl7").read_bytes().replace(
            b"\rFT1", b"\rNTE|1||" + b"n" * 3000 + b"\rFT1", 1)
        tally = await handler.take([record(b"\x0b" + dft + b"\x1c\r", 1), record(batch, 2),
                                    record(big_refused, 3), record(dft, 4)])
        assert (tally.records, tally.events, tally.dlq, tally.replays) == (4, 2, 3, 1)
        written = [item for write in sink.writes for item in write]
        refused = [dlq(i) for i in written if i[0] == DLQ]
        assert [d["reason_code"] for d in refused] == ["no_account"] * 3
        # Two messages of one record: told apart in the context; the DLQ payload is cut.
        assert [d["context"].get("message") for d in refused] == [1, 2, None]
        assert refused[2]["context"]["payload_truncated"] is True
        assert len(str(refused[2]["payload"])) == 1024
        assert [i[3] for i in written if i[0] == RAW_HL7][-1] == (("rcm-status", b"refused"),)
        sink.fail = 1  # the broker does not take the next message: not final, sent again
        with pytest.raises(BrokerFailed):
            await handler.take([record(dft.replace(b"MSG00001", b"MSG09999"), 5)])
    finally:
        store.close()
