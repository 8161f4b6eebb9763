"""Fuzzing the HL7 intake: mutated real samples, random bytes, huge fields, wrong separators,
truncations. Nothing crashes, every input is answered: AA with its writes, or AE/AR with a DLQ
record holding the bytes received."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcmflow.connectors.inbound.hl7.intake import Intake, Outcome, Record
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.connectors.inbound.totals import HEADER_STATUS, HEADER_TOTALS, SourceTotals
from rcmflow.streams.topics import DLQ, EVENTS, RAW_HL7

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "hl7"
REAL = [p.read_bytes() for p in sorted(SAMPLES.iterdir())]


class MemorySink:
    def __init__(self) -> None:
        self.writes: list[list[Record]] = []

    async def write(self, records: Sequence[Record]) -> None:
        self.writes.append(list(records))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "delete", "insert", "huge", "separator",
                                   "truncate"]))
        if op == "replace":
            data[at:at + 3] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 200))]
        elif op == "insert":
            data[at:at] = draw(st.binary(max_size=50))
        elif op == "huge":
            data[at:at] = b"9" * draw(st.integers(1_000, 200_000))
        elif op == "separator":
            old, new = draw(st.sampled_from([(b"|", b"^"), (b"^", b"|"), (b"&", b"~"),
                                             (b"\r", b"\n"), (b"\r", b"")]))
            data = bytearray(bytes(data).replace(old, new, draw(st.integers(1, 50))))
        else:
            del data[at:]
    return bytes(data)


inputs = st.one_of(mutated(), st.binary(max_size=2_000),
                   st.builds(lambda b: b"MSH|^~\\&|" + b, st.binary(max_size=500)))


def check_answered(raw: bytes, outcome: Outcome, sink: MemorySink, writes_before: int) -> None:
    assert not any(c < 0x20 and c != 0x0D for c in outcome.ack), "control bytes in the ACK"
    # The ACK is in the message's own codec (UTF-8, else Latin-1): MSA-2 echoes MSH-10's bytes.
    from rcmflow.connectors.inbound.hl7.reader import charset_of
    segments = outcome.ack.decode(charset_of(raw)).split("\r")
    assert segments[0].startswith("MSH|^~\\&|")
    msa = next(s for s in segments if s.startswith("MSA|")).split("|")
    assert msa[1] == outcome.code in ("AA", "AE", "AR")
    new = sink.writes[writes_before:]
    if outcome.code == "AA":
        if outcome.reason_code == "replay":
            assert new == []
        else:
            (records,) = new
            assert records[0][:3] == (RAW_HL7, records[0][1], raw)
            headers = dict(records[0][3])  # type: ignore[misc]
            assert headers[HEADER_STATUS] == b"applied"
            totals = SourceTotals.from_json(json.loads(headers[HEADER_TOTALS]))
            assert totals.event_ids == [(e.account, e.event_id) for e in outcome.events]
            assert [r[0] for r in records[1:]] == [EVENTS] * len(outcome.events)
        return
    assert any(line.startswith("ERR|") for line in segments)
    (records,) = new
    if records[0][0] == RAW_HL7:  # refused: kept as received, and said so
        assert records[0][2:] == (raw, ((HEADER_STATUS, b"refused"),))
    dlq = json.loads(records[-1][2])
    assert records[-1][0] == DLQ and dlq["reason_code"] == outcome.reason_code
    payload = (dlq["payload"].encode() if dlq["payload_encoding"] == "utf-8"
               else base64.b64decode(dlq["payload"]))
    assert payload == raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(st.lists(inputs, min_size=1, max_size=4))
def test_every_input_is_answered_and_nothing_crashes(batch: list[bytes]) -> None:
    sink = MemorySink()
    with tempfile.TemporaryDirectory() as tmp:
        store = ReplayStore(Path(tmp), 3600)
        intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="fuzz")
        try:
            for raw in batch:
                before = len(sink.writes)
                outcome = asyncio.run(intake.handle(raw))
                check_answered(raw, outcome, sink, before)
        finally:
            store.close()


def test_refused_then_corrected_then_the_refused_one_again() -> None:
    """Only accepted messages are remembered: a corrected re-send with the same MSH-10 goes
    through; the old refused content after that is a conflict."""
    bad = b"MSH|^~\\&|EHR|GEN|||20261120||DFT^P03|K1|P|2.5\rPID|1\rFT1|1||||20261120|CG|X|||1|5\r"
    good = bad.replace(b"PID|1\r", b"PID|1" + b"|" * 17 + b"ACC9\r")
    sink = MemorySink()
    with tempfile.TemporaryDirectory() as tmp:
        store = ReplayStore(Path(tmp), 3600)
        intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="t")
        try:
            codes = [asyncio.run(intake.handle(m)) for m in (bad, good, good, bad)]
        finally:
            store.close()
    assert [(o.code, o.reason_code) for o in codes] == [
        ("AE", "no_account"), ("AA", None), ("AA", "replay"), ("AE", "conflict")]


def test_an_intake_failure_is_answered_ar_and_the_connection_lives_on(
    tmp_path: Path,
) -> None:
    from rcmflow.connectors.inbound.hl7.framing import frame
    from rcmflow.connectors.inbound.hl7.listener import ListenerLimits, MllpListener

    class BrokenStore(ReplayStore):
        def put(self, key: str, digest: str) -> None:
            raise OSError("disk full")

    async def run() -> list[bytes]:
        store = BrokenStore(tmp_path / "replay", 3600)
        intake = Intake(sink=MemorySink(), store=store, config=MappingConfig(), channel="t")
        listener = MllpListener(intake, ListenerLimits())
        port = await listener.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        msg = (b"MSH|^~\\&|EHR|GEN|||20261120||ADT^A08|Z1|P|2.5\rPID|1\r")
        answers = []
        for _ in range(2):
            writer.write(frame(msg))
            answers.append(await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 10))
        writer.close()
        await listener.stop()
        store.close()
        return answers

    for answer in asyncio.run(run()):
        assert b"MSA|AR|Z1|internal error" in answer
