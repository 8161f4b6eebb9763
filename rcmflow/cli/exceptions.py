"""Errors of the command-line layer."""

from __future__ import annotations

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["BadCursor"]


class BadCursor(RcmflowError, ValueError):
    """An --after value this topic cannot have produced."""
