"""Errors of the operators' tools (the work queue, listings, the ops site)."""

from __future__ import annotations

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["UsersFileError"]


class UsersFileError(RcmflowError, ValueError):
    """The ops site's users file cannot be read as one."""
