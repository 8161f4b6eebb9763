"""DLQ records: the original payload, the stage, a readable reason and business context.

Each record has a deterministic id (stage + where the input was read), so a record written
again after a crash is recognisably the same one. Payloads are kept up to a bound
(``payload_bytes_max``; the context then says ``payload_truncated`` and the whole size): a
DLQ record must fit its topic, and its origin names where the whole input is. The DLQ is an
operator view and may hold PHI; it is never logged.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from rcmflow.streams.rejections import Rejection, Severity, Stage

__all__ = ["Origin", "DlqRecord", "dlq_record", "WarningTally", "PLACES_MAX"]


class Origin(BaseModel):
    model_config = ConfigDict(frozen=True)
    topic: str
    partition: int
    offset: int
    key: str | None


class DlqRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    dlq_id: str
    severity: Severity
    stage: Stage
    reason_code: str
    reason: str
    origin: Origin
    received_at: datetime | None
    context: dict[str, Any]
    payload: str
    payload_encoding: Literal["utf-8", "base64"]


def dlq_record(
    rejection: Rejection,
    *,
    origin: Origin,
    payload: bytes,
    received_at: datetime | None = None,
    context: dict[str, Any] | None = None,
    discriminator: str = "",
    payload_bytes_max: int | None = None,
    identity: str | None = None,
    input_bytes: int | None = None,
) -> DlqRecord:
    """The rcm.dlq record of a refusal: the one place a ``Rejection`` becomes a record (its
    problems go to ``context.problems``). ``discriminator`` tells apart several records from
    one input.

    The payload is cut to ``payload_bytes_max``; then ``context.payload_truncated`` says so
    and ``context.payload_bytes`` gives the whole input's size: ``input_bytes`` when the
    caller holds only the input's start (a file or an X12 set read as a stream), else the
    payload's length.

    The id is deterministic: by default from the place (origin topic, partition, offset), so
    a record written again after a crash is the same exception. ``identity`` replaces the
    place where the same input arriving again at another place is the same exception (the
    worker's refusal of an event: the same bytes under the same key, refused for the same
    reason, are one item to work however often a file is re-sent)."""
    stage, reason_code, severity = rejection.stage, rejection.reason_code, rejection.severity
    if rejection.problems:
        context = (context or {}) | {"problems": [p.as_dict() for p in rejection.problems]}
    where = identity if identity is not None else (
        f"{origin.topic}|{origin.partition}|{origin.offset}")
    material = f"{stage}|{reason_code}|{where}|"
    whole = max(len(payload), input_bytes or 0)
    if payload_bytes_max is not None and whole > payload_bytes_max:
        context = (context or {}) | {"payload_truncated": True, "payload_bytes": whole}
        payload = payload[:payload_bytes_max]
    dlq_id = "dlq_" + hashlib.sha256((material + discriminator).encode()).hexdigest()[:24]
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    return DlqRecord(
        dlq_id=dlq_id,
        severity=severity,
        stage=stage,
        reason_code=reason_code,
        reason=rejection.detail,
        origin=origin,
        received_at=received_at,
        context=context or {},
        payload=text,
        payload_encoding=encoding,  # type: ignore[arg-type]
    )


#: Places named in one aggregated warning record (the count says how many there were).
PLACES_MAX = 20


@dataclass
class _Kind:
    count: int
    places: list[str]
    offset: int
    reason: str
    payload: bytes
    context: dict[str, Any]


class WarningTally:
    """Warnings of one kind (``reason_code``) from one input, as one DLQ record per kind.

    A file of 200,000 ignored entries is one record (``context.count`` 200000, the first
    ``PLACES_MAX`` places in ``context.places``, the first one's payload and reason) instead of
    200,000. Only warnings are tallied (inputs that carry no money for rcmflow); each error
    stays a record of its own, to be worked. Memory: one entry per reason code. The record's id
    depends on the input and the first place only, so a re-sent file gives the same record.
    """

    def __init__(self, places_max: int = PLACES_MAX) -> None:
        self._kinds: dict[str, _Kind] = {}
        self._places_max = places_max

    def add(self, reason_code: str, *, place: str, offset: int, reason: str, payload: bytes,
            context: dict[str, Any] | None = None) -> None:
        kind = self._kinds.get(reason_code)
        if kind is None:
            self._kinds[reason_code] = _Kind(1, [place], offset, reason, payload,
                                             context or {})
            return
        kind.count += 1
        if len(kind.places) < self._places_max:
            kind.places.append(place)

    @property
    def total(self) -> int:
        """Warnings tallied (of every kind)."""
        return sum(k.count for k in self._kinds.values())

    def counts(self) -> dict[str, int]:
        return {code: k.count for code, k in self._kinds.items()}

    def records(self, *, stage: Stage, origin: str, received_at: datetime | None,
                payload_bytes_max: int | None = None) -> list[DlqRecord]:
        """One record per reason code, in the order the kinds were first met."""
        out = []
        for code, k in self._kinds.items():
            more = k.count - len(k.places)
            where = ", ".join(k.places) + (f" and {more} more" if more else "")
            out.append(dlq_record(
                Rejection(stage=stage, reason_code=code, severity="warning",
                          detail=f"{k.count} × {code} ({where}); the first: {k.reason}"),
                origin=Origin(topic=origin, partition=0, offset=k.offset, key=None),
                payload=k.payload, received_at=received_at,
                context=k.context | {"count": k.count, "places": k.places,
                                     "places_more": more},
                discriminator="tally", payload_bytes_max=payload_bytes_max))
        return out
