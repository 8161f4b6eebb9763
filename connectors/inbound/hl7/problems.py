"""Why a message was not accepted, in HL7's terms beside the core ``Rejection``.

A refusal is the core value (streams/rejections.py): a ``Rejection`` whose ``Problem``s have
their place as 'SEG^sequence^field' ('FT1^2^11', or '' for the message as a whole). They
become the ACK's ERR segments and the DLQ record's ``context.problems``. HL7 adds two things:
the ACK code (``Rejected.ack_code``: AE or AR) and, per problem, the HL7 table 0357 code
(message error condition codes) the ERR segment carries, so a sender's interface engine can
route on it; ``hl7_code`` looks it up from the problem's reason code (rcmflow's stable DLQ
code, which `rcmflow dlq list` shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rcmflow.streams.date_window import DATE_OUT_OF_RANGE
from rcmflow.streams.rejections import Problem, Rejection, Stage

__all__ = [
    "Rejected",
    "refused",
    "hl7_code",
    "HL7_CODE_BY_REASON",
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

#: Every reason code the HL7 connector gives, with its table 0357 code (a test checks that
#: none is missing: an unknown one would be sent as 207).
HL7_CODE_BY_REASON: dict[str, int] = {
    # not a message, or a frame that never became one
    "unreadable": SEGMENT_SEQUENCE_ERROR,
    "bytes_outside_frame": SEGMENT_SEQUENCE_ERROR,
    "bad_frame_end": SEGMENT_SEQUENCE_ERROR,
    "truncated_frame": SEGMENT_SEQUENCE_ERROR,
    # a field that must be there is empty
    "missing_header_field": REQUIRED_FIELD_MISSING,
    "no_account": REQUIRED_FIELD_MISSING,
    "no_timestamp": REQUIRED_FIELD_MISSING,
    "no_ft1": REQUIRED_FIELD_MISSING,
    "no_amount": REQUIRED_FIELD_MISSING,
    # a field that is there and wrong
    "invalid_header_field": DATA_TYPE_ERROR,
    "invalid_account": DATA_TYPE_ERROR,
    "invalid_timestamp": DATA_TYPE_ERROR,
    DATE_OUT_OF_RANGE: DATA_TYPE_ERROR,
    "value_too_long": DATA_TYPE_ERROR,
    "invalid_amount": DATA_TYPE_ERROR,
    "invalid_currency": DATA_TYPE_ERROR,
    "invalid_quantity": DATA_TYPE_ERROR,
    "invalid_event": DATA_TYPE_ERROR,
    "unmapped_transaction_type": TABLE_VALUE_NOT_FOUND,
    "unsupported_message_type": UNSUPPORTED_MESSAGE_TYPE,
    "conflict": DUPLICATE_KEY,
    # bounds and failures on our side
    "too_large": INTERNAL_ERROR,
    "too_many_ft1": INTERNAL_ERROR,
    "not_stored": INTERNAL_ERROR,
    "internal_error": INTERNAL_ERROR,
}


def hl7_code(problem: Problem) -> int:
    """The table 0357 code of a problem, for its ERR segment."""
    return HL7_CODE_BY_REASON.get(problem.reason_code, INTERNAL_ERROR)


@dataclass(frozen=True)
class Rejected:
    """A message refused whole: AE (fix the content and resend) or AR (not processable here,
    or not stored: resend as is), and the refusal itself."""

    ack_code: Literal["AE", "AR"]
    rejection: Rejection

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.rejection.problems

    @property
    def reason_code(self) -> str:
        return self.rejection.reason_code


def refused(ack_code: Literal["AE", "AR"], stage: Stage,
            problems: Sequence[Problem]) -> Rejected:
    """A refusal naming these problems (at least one): the first one's code is the reason."""
    return Rejected(ack_code, Rejection.of(stage, problems))
