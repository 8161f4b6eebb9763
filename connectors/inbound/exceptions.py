"""Errors of the inbound connectors (HL7, X12, payments, FHIR, files and topics). A refused
*input* is not an exception: it is a ``Rejection`` value (streams.rejections) and a DLQ
record."""

from __future__ import annotations

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["BrokerFailed", "X12ChangedError", "FhirValueError", "FileError",
           "ReplayStoreLocked", "WriteFailed", "ValueProblem", "HL7ParseError"]


class BrokerFailed(RcmflowError, RuntimeError):
    """The broker did not acknowledge every record (nothing about the input is wrong): a
    file's ingest stops (re-sending is safe), `rcmflow consume` sends the batch again and
    commits none of its offsets.

    ``retryable`` is False when the same records would be refused again (a topic limit, an
    ACL): re-running cannot succeed until the broker's configuration changes."""

    def __init__(self, text: str, *, retryable: bool = True) -> None:
        super().__init__(text)
        self.retryable = retryable


class X12ChangedError(RcmflowError, OSError):
    """The file read again is not the file checked (it changed while it was being ingested):
    its sets are published as they are read, so what was published stays (re-sending the
    file is safe) and the rest is not guessed at."""


class FhirValueError(RcmflowError, ValueError):
    """A value rcmflow cannot take; the message is safe to print (no patient data).

    ``code`` is the DLQ reason code it becomes."""

    def __init__(self, message: str, code: str = "fhir_invalid_value") -> None:
        super().__init__(message)
        self.code = code


class FileError(RcmflowError, ValueError):
    """The file as a whole cannot be read (no header, missing required columns)."""


class ReplayStoreLocked(RcmflowError, RuntimeError):
    """Another process (another `rcmflow mllp` on this data dir) holds the store."""


class WriteFailed(RcmflowError, RuntimeError):
    """The broker did not acknowledge the writes in time."""


class ValueProblem(RcmflowError, ValueError):
    """A field value that cannot be read; the text says why (without echoing long input)."""


class HL7ParseError(RcmflowError, ValueError):
    """The bytes are not an HL7 v2 message rcmflow can read; the text says why."""
