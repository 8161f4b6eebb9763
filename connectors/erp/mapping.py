"""Which GL accounts exist: read from the same chart-of-accounts file the posting rules use.

A posting line naming a GL account the chart does not list for its entity is a permanent
error for the ERP connectors (``unmapped_gl_account`` in rcm.postings.dlq), never a crash.
"""

from __future__ import annotations

from collections.abc import Sequence

from rcmflow.connectors.erp.base import Rejected
from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.postings import PostingDelta

__all__ = ["gl_accounts", "all_gl_accounts", "unmapped_lines", "check_mapped"]

UNMAPPED_GL = "unmapped_gl_account"


def _codes(values: dict[str, str | dict[str, str]]) -> set[str]:
    codes: set[str] = set()
    for value in values.values():
        codes.update([value] if isinstance(value, str) else value.values())
    return codes


def gl_accounts(chart: ChartOfAccounts, entity: str) -> frozenset[str]:
    """The GL codes an entity's postings may name (defaults plus the entity's overrides)."""
    entry = chart.entities.get(entity)
    if entry is None:
        return frozenset()
    return frozenset(_codes(chart.defaults) | _codes(entry.overrides))


def all_gl_accounts(chart: ChartOfAccounts) -> frozenset[str]:
    codes = _codes(chart.defaults)
    for entry in chart.entities.values():
        codes |= _codes(entry.overrides)
    return frozenset(codes)


def unmapped_lines(chart: ChartOfAccounts, delta: PostingDelta) -> list[str]:
    known = gl_accounts(chart, delta.entity)
    return sorted({line.gl_account for line in delta.lines if line.gl_account not in known})


def check_mapped(chart: ChartOfAccounts, deltas: Sequence[PostingDelta]) -> dict[str, Rejected]:
    """Per posting id, the rejection of a delta naming a GL account the chart lacks."""
    out: dict[str, Rejected] = {}
    for delta in deltas:
        missing = unmapped_lines(chart, delta)
        if missing:
            out[delta.posting_id] = Rejected(
                delta.posting_id, UNMAPPED_GL,
                f"GL account(s) {', '.join(missing)} not in chart of accounts "
                f"{chart.version} for entity {delta.entity!r}")
    return out
