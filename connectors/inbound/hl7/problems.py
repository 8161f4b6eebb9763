"""Why a message was not accepted: what goes into the ACK's ERR segments and the DLQ record.

Codes are HL7 table 0357 (message error condition codes), so a sender's interface engine can
route on them; ``reason_code`` is rcmflow's stable DLQ code (``rcmflow dlq list`` shows it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rcmflow.streams.rejections import Stage

__all__ = [
    "Problem",
    "Rejected",
    "SEGMENT_SEQUENCE_ERROR",
    "REQUIRED_FIELD_MISSING",
    "DATA_TYPE_ERROR",
    "TABLE_VALUE_NOT_FOUND",
    "UNSUPPORTED_MESSAGE_TYPE",
    "DUPLICATE_KEY",
    "INTERNAL_ERROR",
    "CODE_TEXT",
]

SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
DUPLICATE_KEY = 205
INTERNAL_ERROR = 207

CODE_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    DUPLICATE_KEY: "Duplicate key identifier",
    INTERNAL_ERROR: "Application internal error",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``location`` is 'SEG^sequence^field' (e.g. 'FT1^2^11') or ''."""

    reason_code: str
    hl7_code: int
    location: str
    text: str

    def as_dict(self) -> dict[str, object]:
        return {"reason_code": self.reason_code, "hl7_code": self.hl7_code,
                "location": self.location, "text": self.text}


@dataclass(frozen=True)
class Rejected:
    """A message refused whole: AE (fix the content and resend) or AR (not processable here,
    or not stored: resend as is)."""

    ack_code: Literal["AE", "AR"]
    stage: Stage
    problems: tuple[Problem, ...]

    def __post_init__(self) -> None:
        assert self.problems, "a rejection names at least one problem"

    @property
    def reason_code(self) -> str:
        return self.problems[0].reason_code

    @property
    def reason(self) -> str:
        return "; ".join(p.text for p in self.problems)
