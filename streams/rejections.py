"""Errors as values: why an event, a message, a file's row or a posting was not applied.

One shape for every refusal in rcmflow, from the HL7 listener to the ERP connector: a
``Rejection`` (the stage, a stable reason code, a sentence a person can act on) with the
``Problem``s found and where in the input each one is. Connectors add what their protocol
needs beside it (an HL7 ACK code, a file's row) and turn it into the DLQ record with
``streams.dlq.dlq_record``: the one place a refusal becomes an rcm.dlq record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Stage", "Severity", "Problem", "Rejection"]

Stage = Literal["decode", "validate", "dedup", "rules", "posting", "contract", "facade"]
Severity = Literal["error", "warning"]


class Problem(BaseModel):
    """One thing wrong with the input and where it is: ``place`` in the input's own terms
    ('FT1^2^11', 'detail[1]', 'row 7', 'CLP at segment 42'); '' for the input as a whole."""

    model_config = ConfigDict(frozen=True)

    reason_code: str
    detail: str
    place: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


class Rejection(BaseModel):
    """Something rcmflow refused, with a machine code and a sentence a person can act on.

    ``reason_code`` is stable (dashboards and ``rcmflow dlq`` filter on it); ``detail``
    says what was wrong with this one; ``problems`` lists each thing found, with its place
    (empty when the detail says it all). ``severity`` "warning": accepted, with something
    ignored that a person should know of.
    """

    model_config = ConfigDict(frozen=True)

    stage: Stage
    reason_code: str
    detail: str
    problems: tuple[Problem, ...] = ()
    severity: Severity = "error"

    @classmethod
    def of(cls, stage: Stage, problems: Sequence[Problem],
           severity: Severity = "error") -> Rejection:
        """A rejection for these problems: the first one's code, every one's detail."""
        assert problems, "a rejection names at least one problem"
        return cls(stage=stage, reason_code=problems[0].reason_code,
                   detail="; ".join(p.detail for p in problems), problems=tuple(problems),
                   severity=severity)
