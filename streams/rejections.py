"""Errors as values: why an event, a message or a posting was not applied."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Stage", "Rejection"]

Stage = Literal["decode", "validate", "dedup", "rules", "posting", "facade"]


class Rejection(BaseModel):
    """Something rcmflow refused, with a machine code and a sentence a person can act on.

    ``reason_code`` is stable (dashboards and ``rcmflow dlq`` filter on it); ``detail``
    says what was wrong with this one.
    """

    model_config = ConfigDict(frozen=True)

    stage: Stage
    reason_code: str
    detail: str
