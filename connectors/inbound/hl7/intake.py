"""One HL7 message in, one ACK out: the order of writes that makes an AA mean something.

    read -> replay check -> map -> write (raw + events, or raw + DLQ) -> remember -> ACK

AA is built only after the broker acknowledged (acks=all) the raw message on rcm.raw.hl7
and every canonical event on rcm.events, and the replay store holds the message's key. A
refused message is written to rcm.raw.hl7 and rcm.dlq (with the raw bytes) before its AE/AR.
If the broker does not take the writes, the answer is AR ("not stored, send again"), never
AA. Shared by the MLLP listener, `rcmflow ingest hl7` and `rcmflow consume hl7` (which has
nobody to send the ACK to: it keeps the outcome, and a "not stored" stops its offset commit).

A message over ``message_bytes_max`` is refused as ``too_large`` (AR) on every path: the MLLP
decoder refuses it before it is a message, files and topic records here. DLQ records keep at
most ``dlq_payload_bytes_max`` of the message (RCMFLOW_DLQ_PAYLOAD_BYTES_MAX; the cut is said
in the context), so a refused message near the size bound still fits rcm.dlq.

The rcm.raw.hl7 record is the message's bytes as received; its headers say what became of
it (``rcm-status``: applied / refused) and, when applied, what its FT1s say in money with the
events it made (``rcm-source-totals``, connectors/inbound/totals.py), for `rcmflow reconcile`.

Logs carry MSH-10, the message type, account numbers and reason codes, never other fields
(patient data).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from rcmflow.connectors.inbound.exceptions import HL7ParseError, WriteFailed
from rcmflow.connectors.inbound.hl7.ack import AckCode, build_ack
from rcmflow.connectors.inbound.hl7.framing import HEAD_BYTES, FrameError
from rcmflow.connectors.inbound.hl7.mapping import (
    MappingConfig,
    map_message,
    source_key,
    source_totals,
)
from rcmflow.connectors.inbound.hl7.problems import Rejected, refused
from rcmflow.connectors.inbound.hl7.reader import (
    Hl7Message,
    charset_of,
    normalise,
    read_bytes,
    read_message,
)
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.connectors.inbound.totals import HEADER_STATUS, HEADER_TOTALS
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Outgoing, check_record_sizes, send
from rcmflow.runtime.settings import default_of
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.events import Event
from rcmflow.streams.rejections import Problem
from rcmflow.streams.topics import DLQ, EVENTS, RAW_HL7

__all__ = ["Sink", "Outcome", "Intake", "KafkaSink", "internal_error_ack"]

log = logging.getLogger("rcmflow.hl7")
#: MSH-10 is ST(199) since v2.7; longer (or garbled) header values are refused.
_HEADER_CHARS_MAX = 199

Record = Outgoing


class Sink(Protocol):
    async def write(self, records: Sequence[Record]) -> None:
        """Return only when the broker acknowledged every record (acks=all); else raise."""


@dataclass(frozen=True)
class Outcome:
    ack: bytes
    code: AckCode
    control_id: str
    reason_code: str | None  # None for a first AA; "replay" for an AA to a replay
    events: tuple[Event, ...] = ()


class Intake:
    def __init__(self, *, sink: Sink, store: ReplayStore, config: MappingConfig,
                 channel: str,
                 message_bytes_max: int = default_of("mllp_message_bytes_max"),
                 dlq_payload_bytes_max: int = default_of("dlq_payload_bytes_max")) -> None:
        assert message_bytes_max > 0 and dlq_payload_bytes_max > 0
        self._sink = sink
        self._store = store
        self._config = config
        self._channel = channel
        self._message_bytes_max = message_bytes_max
        self._dlq_payload_bytes_max = dlq_payload_bytes_max

    async def handle(self, raw: bytes, *, position: int = 0, partition: int = 0,
                     context: dict[str, object] | None = None) -> Outcome:
        """Answer one message. ``partition`` and ``position`` say where it was read (a file's
        message number, a topic's partition and offset): the DLQ origin; ``context`` is added
        to the DLQ record's context."""
        if len(raw) > self._message_bytes_max:
            return await self.handle_frame_error(FrameError(
                "too_large", f"message of {len(raw)} bytes exceeds the "
                f"{self._message_bytes_max} byte limit (RCMFLOW_MLLP_MESSAGE_BYTES_MAX)",
                raw[:HEAD_BYTES], len(raw)), position=position, partition=partition,
                context=context)

        async def refuse(msg: Hl7Message | None, rejected: Rejected,
                         digest: str | None = None) -> Outcome:
            return await self._refuse(msg, raw, rejected, digest=digest, position=position,
                                      partition=partition, extra=context)

        text = normalise(raw)
        try:
            msg = read_message(text, charset=charset_of(raw))
        except HL7ParseError as exc:
            problem = Problem(reason_code="unreadable", detail=str(exc))
            return await refuse(None, refused("AR", "decode", [problem]))
        header = _header_problems(msg)
        if header:
            return await refuse(msg, refused("AR", "decode", header))
        key = source_key(msg)
        digest = hashlib.sha256(text.encode()).hexdigest()
        async with self._store.claim(key):
            seen = self._store.get(key)
            if seen == digest:
                log.info("hl7 %s %s: replay, AA again", msg.control_id, _type(msg))
                return Outcome(build_ack(msg, "AA"), "AA", msg.control_id, "replay")
            if seen is not None:
                problem = Problem(reason_code="conflict", place="MSH^1^10",
                                  detail=f"MSH-10 {msg.control_id} from this sender was "
                                  "accepted before with different content")
                return await refuse(msg, refused("AE", "dedup", [problem]), digest)
            mapped = map_message(msg, self._config)
            if isinstance(mapped, Rejected):
                return await refuse(msg, mapped, digest)
            totals = source_totals(msg, self._config, mapped)
            records: list[Record] = [(RAW_HL7, key.encode(), raw, (
                (HEADER_STATUS, b"applied"), (HEADER_TOTALS, totals.header())))]
            records += [(EVENTS, e.account.encode(), e.model_dump_json().encode())
                        for e in mapped]
            try:
                await self._sink.write(records)
            except Exception as exc:  # any broker failure: not stored, so not AA
                return self._not_stored(msg, exc)
            self._store.put(key, digest)
        accounts = sorted({e.account for e in mapped})
        log.info("hl7 %s %s: AA, %d events for %s", msg.control_id, _type(msg), len(mapped),
                 ",".join(accounts) or "-")
        return Outcome(build_ack(msg, "AA"), "AA", msg.control_id, None, tuple(mapped))

    async def handle_frame_error(self, error: FrameError, *, position: int = 0,
                                 partition: int = 0,
                                 context: dict[str, object] | None = None) -> Outcome:
        """A frame that never became a message (too large, cut off, stray bytes): AR to the
        sender when it is still there, and the bytes we kept to the DLQ either way."""
        msg: Hl7Message | None = None
        try:
            msg = read_bytes(error.head, first_segment_only=True)
        except HL7ParseError:
            pass
        problem = Problem(reason_code=error.reason_code, detail=error.detail)
        # The framer kept only the head of these bytes: the context says so as dlq_record does.
        head = error.head[:self._dlq_payload_bytes_max]
        sized: dict[str, object] = {"payload_bytes": error.size_bytes,
                                    "payload_truncated": error.size_bytes > len(head)}
        return await self._refuse(msg, head, refused("AR", "decode", [problem]),
                                  position=position, partition=partition,
                                  extra=(context or {}) | sized, with_raw=False)

    async def _refuse(self, msg: Hl7Message | None, raw: bytes, rejected: Rejected, *,
                      position: int, partition: int, digest: str | None = None,
                      extra: dict[str, object] | None = None,
                      with_raw: bool = True) -> Outcome:
        key = source_key(msg) if msg is not None else None
        control_id = msg.control_id if msg is not None else ""
        digest = digest or hashlib.sha256(raw).hexdigest()
        # The raw record keeps the whole message; the DLQ record keeps at most
        # dlq_payload_bytes_max of it (its context then says the cut), to fit its topic.
        record = dlq_record(
            rejected.rejection,
            origin=Origin(topic=f"hl7:{self._channel}", partition=partition, offset=position,
                          key=key),
            payload=raw,
            payload_bytes_max=self._dlq_payload_bytes_max,
            received_at=datetime.now(UTC),
            context={
                "msh_10": control_id or None,
                "message_type": "^".join(msg.message_type) if msg is not None else None,
                "sending_application": msg.msh.field(3) if msg is not None else None,
                "sending_facility": msg.msh.field(4) if msg is not None else None,
                "ack_code": rejected.ack_code,
                **(extra or {}),
            },
            discriminator=digest,
        )
        records: list[Record] = [(DLQ, key.encode() if key else None,
                                  record.model_dump_json().encode())]
        if with_raw and key is not None:
            records.insert(0, (RAW_HL7, key.encode(), raw, ((HEADER_STATUS, b"refused"),)))
        try:
            await self._sink.write(records)
        except Exception as exc:
            return self._not_stored(msg, exc)
        log.warning("hl7 %s %s: %s %s (%s)", _cid(msg), _type(msg), rejected.ack_code,
                    rejected.reason_code, record.dlq_id)
        return Outcome(build_ack(msg, rejected.ack_code, rejected.problems), rejected.ack_code,
                       control_id, rejected.reason_code)

    def _not_stored(self, msg: Hl7Message | None, exc: Exception) -> Outcome:
        log.error("hl7 %s: not stored, AR (%s)", _cid(msg),
                  type(exc).__name__)
        problem = Problem(reason_code="not_stored",
                          detail="the message could not be stored; send it again")
        return Outcome(build_ack(msg, "AR", (problem,)), "AR",
                       msg.control_id if msg else "", "not_stored")


def internal_error_ack(raw: bytes) -> bytes:
    """AR for a message the intake failed on: nothing is known to be stored, send again."""
    try:
        msg: Hl7Message | None = read_bytes(raw, first_segment_only=True)
    except HL7ParseError:
        msg = None
    problem = Problem(reason_code="internal_error",
                      detail="internal error; the message was not stored, send it again")
    return build_ack(msg, "AR", (problem,))


def _header_problems(msg: Hl7Message) -> tuple[Problem, ...]:
    """MSH-9.1/9.2 and MSH-10 are what every answer and key is built from."""
    problems = [Problem(reason_code="missing_header_field", place=f"MSH^1^{where}",
                        detail=f"MSH-{where} is empty")
                for where, value in (("9", msg.message_type[0]), ("9.2", msg.message_type[1]),
                                     ("10", msg.control_id)) if not value]
    for where, value in (("9", "^".join(msg.message_type)), ("10", msg.control_id)):
        if len(value) > _HEADER_CHARS_MAX or not value.isprintable():
            problems.append(Problem(reason_code="invalid_header_field", place=f"MSH^1^{where}",
                                    detail=f"MSH-{where} is longer than {_HEADER_CHARS_MAX} "
                                    "characters or holds control characters"))
    return tuple(problems)


def _cid(msg: Hl7Message | None) -> str:
    """For logs: MSH-10 when the header checks passed (garbage can hold anything)."""
    return "-" if msg is None or _header_problems(msg) else msg.control_id


def _type(msg: Hl7Message | None) -> str:
    """For logs: a message type that passed the header checks, else a placeholder."""
    if msg is None or _header_problems(msg):
        return "-"
    return "^".join(msg.message_type)


def raw_record_bytes_max(message_bytes_max: int, ft1_max: int) -> int:
    """The largest rcm.raw.hl7 record an accepted message makes: the message, its key and
    record overhead, and the reconcile headers (< 512 bytes per FT1, at most ``ft1_max``)."""
    return message_bytes_max + ft1_max * 512 + 64 * 1024


class KafkaSink:
    """Writes through one long-lived producer with acks=all; each call waits for its acks."""

    def __init__(self, kafka: KafkaConnection, timeout_s: float,
                 record_bytes_max: int = raw_record_bytes_max(
                     default_of("mllp_message_bytes_max"), default_of("hl7_ft1_max"))) -> None:
        from aiokafka import AIOKafkaProducer

        # linger 0: a sender waits for each ACK, so there is nothing to batch with; 1 ms of
        # linger was a third of the ACK time (bench/inbound.py: 1,300 -> 2,100 messages/s).
        # max_request_size: aiokafka's 1 MiB default refused a message near the size bound
        # (AR "not stored", for ever); the bounds above make every accepted message fit.
        # request_timeout_ms at least 1 s: the producer cannot even bootstrap on less.
        self._producer = AIOKafkaProducer(**kafka.client_options(), acks="all", linger_ms=0,
                                          request_timeout_ms=max(1000, int(timeout_s * 1000)),
                                          max_request_size=record_bytes_max)
        self._timeout_s = timeout_s

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def write(self, records: Sequence[Record]) -> None:
        """RecordTooLarge, nothing sent, for a record larger than its topic takes (the same
        on every broker: Tansu would take it, Apache Kafka would not)."""
        check_record_sizes(records)
        futures = [await send(self._producer, record) for record in records]
        try:
            await asyncio.wait_for(asyncio.gather(*futures), self._timeout_s)
        except TimeoutError as exc:
            raise WriteFailed(f"broker did not acknowledge within {self._timeout_s}s") from exc
