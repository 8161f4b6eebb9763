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
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .rejections import Stage

__all__ = ["Origin", "DlqRecord", "dlq_record"]


class Origin(BaseModel):
    model_config = ConfigDict(frozen=True)
    topic: str
    partition: int
    offset: int
    key: str | None


class DlqRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    dlq_id: str
    severity: Literal["error", "warning"]
    stage: Stage
    reason_code: str
    reason: str
    origin: Origin
    received_at: datetime | None
    context: dict[str, Any]
    payload: str
    payload_encoding: Literal["utf-8", "base64"]


def dlq_record(
    *,
    stage: Stage,
    reason_code: str,
    reason: str,
    origin: Origin,
    payload: bytes,
    received_at: datetime | None = None,
    context: dict[str, Any] | None = None,
    severity: Literal["error", "warning"] = "error",
    discriminator: str = "",
    payload_bytes_max: int | None = None,
    identity: str | None = None,
) -> DlqRecord:
    """Build a record; ``discriminator`` tells apart several records from one input.

    The id is deterministic: by default from the place (origin topic, partition, offset), so
    a record written again after a crash is the same exception. ``identity`` replaces the
    place where the same input arriving again at another place is the same exception (the
    worker's refusal of an event: the same bytes under the same key, refused for the same
    reason, are one item to work however often a file is re-sent)."""
    where = identity if identity is not None else (
        f"{origin.topic}|{origin.partition}|{origin.offset}")
    material = f"{stage}|{reason_code}|{where}|"
    if payload_bytes_max is not None and len(payload) > payload_bytes_max:
        context = (context or {}) | {"payload_truncated": True, "payload_bytes": len(payload)}
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
        reason=reason,
        origin=origin,
        received_at=received_at,
        context=context or {},
        payload=text,
        payload_encoding=encoding,  # type: ignore[arg-type]
    )
