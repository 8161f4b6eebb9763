"""Errors of the audit (reconcile)."""

from __future__ import annotations

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["NotFresh", "TooLarge"]


class NotFresh(RcmflowError, ValueError):
    """``--into`` names a directory that holds something: a rebuild starts from nothing."""


class TooLarge(RcmflowError):
    """More posting ids than ``postings_max``: refused before memory runs out."""
