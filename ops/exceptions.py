"""Errors of the operators' tools (the work queue, listings, the ops site)."""

from __future__ import annotations

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["BadCursor", "UsersFileError"]


class BadCursor(RcmflowError, ValueError):
    """An --after value this topic cannot have produced."""


class UsersFileError(RcmflowError, ValueError):
    """The ops site's users file cannot be read as one."""
