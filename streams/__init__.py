"""Canonical events, posting rules and the pure domain core; the Faust agent that runs them."""

from .chart import ChartOfAccounts, load_chart
from .core import Applied, apply, new_account
from .events import EVENT_ADAPTER, Event, EventKind, event_digest
from .postings import PostingDelta, PostingLine
from .rejections import Rejection
from .state import AccountHead, Balances

__all__ = [
    "EVENT_ADAPTER",
    "AccountHead",
    "Applied",
    "Balances",
    "ChartOfAccounts",
    "Event",
    "EventKind",
    "PostingDelta",
    "PostingLine",
    "Rejection",
    "apply",
    "event_digest",
    "load_chart",
    "new_account",
]
