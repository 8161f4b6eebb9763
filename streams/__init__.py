"""Canonical events, posting rules and the pure domain core; the Faust agent that runs them.

The names below load on first use (PEP 562): importing a light submodule such as
``rcmflow.streams.topics`` (every operator command does) must not import the chart, the
core and the event models, a quarter of a second before the command does anything.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chart import ChartOfAccounts, load_chart
    from .core import Applied, apply, new_account
    from .events import EVENT_ADAPTER, Event, EventKind, event_digest
    from .postings import PostingDelta, PostingLine
    from .rejections import Rejection
    from .state import AccountHead, Balances

#: Each re-exported name -> the submodule that defines it.
_HOMES = {
    "ChartOfAccounts": "chart", "load_chart": "chart",
    "Applied": "core", "apply": "core", "new_account": "core",
    "EVENT_ADAPTER": "events", "Event": "events", "EventKind": "events",
    "event_digest": "events",
    "PostingDelta": "postings", "PostingLine": "postings",
    "Rejection": "rejections",
    "AccountHead": "state", "Balances": "state",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


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
