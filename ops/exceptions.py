"""Errors of the operators' tools (the work queue, listings, the ops site)."""

from __future__ import annotations

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["BadCursor", "NoSuchItem", "ReplayRefused", "BadMoment", "UsersFileError",
           "NotSignedIn", "RefundRefused"]


class BadCursor(RcmflowError, ValueError):
    """An --after value this topic cannot have produced."""


class NoSuchItem(RcmflowError, LookupError):
    """No DLQ item with that id (or a prefix that names several)."""


class ReplayRefused(RcmflowError, ValueError):
    """A DLQ item that cannot be replayed (truncated payload, no path back in), or a state
    change the item's state does not allow; nothing was sent."""


class BadMoment(RcmflowError, ValueError):
    """A --since / --older-than value that is neither a duration (2h, 3d) nor an ISO date."""


class UsersFileError(RcmflowError, ValueError):
    """The ops site's users file cannot be read as one."""


class NotSignedIn(RcmflowError, PermissionError):
    """No valid login for a command that records who acted (the message says what to run)."""


class RefundRefused(RcmflowError, ValueError):
    """A refund decision the request's state, the policy or the user's roles do not allow;
    nothing was sent."""
