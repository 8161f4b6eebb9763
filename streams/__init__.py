"""Canonical events, posting rules and the pure domain core; the Faust agent that runs them."""

from rcmflow.streams.chart import ChartOfAccounts, load_chart
from rcmflow.streams.core import Applied, apply, new_account
from rcmflow.streams.events import EVENT_ADAPTER, Event, EventKind, event_digest
from rcmflow.streams.postings import PostingDelta, PostingLine
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.state import AccountHead, Balances

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
