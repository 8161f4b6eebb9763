"""A transaction set's rcm.raw.x12 parts, cut as the set is read (a bounded window).

A part closes when its text (the set's segments, as written) or its source totals (whole
claims: each claim's amounts with its event id) would pass their budget, so what is held is
one part's worth whatever the set's size. The check pass runs the same window without
keeping anything (``dry``), only to count the parts: part 0 says how many there are, and it is
published before the set has been read again.

A claim's cost is computed from an upper bound of its event id (the id's occurrence suffix,
``:2`` for a repeated claim, is known in the publish pass only), so both passes cut in the
same places.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Generic, TypeVar

import orjson

from rcmflow.connectors.inbound.totals import SourceTotals

__all__ = ["Part", "PartWindow", "Kept", "unit_cost", "id_bytes_bound"]

#: An amount's JSON in ``SourceTotals.to_json`` without its values.
_AMOUNT_JSON = len('{"account":"","day":"2026-03-02","measure":"","cents":,"event":""},')
#: ``:<occurrence>`` an event id may get beyond its key (at most 10 digits).
_OCCURRENCE_CHARS = 11


@dataclass
class Part:
    text: str
    totals: SourceTotals | None  # None for a parked set (it has no totals)


def id_bytes_bound(key: str) -> int:
    """JSON bytes an event id made of ``key`` and an occurrence can take at most."""
    return len(orjson.dumps(key)) + _OCCURRENCE_CHARS


def unit_cost(account: str, id_bytes: int, amounts: list[tuple[str, int]]) -> int:
    """Upper bound of a claim's (or PLB's) JSON in a part's source totals."""
    account_bytes = len(orjson.dumps(account))
    return account_bytes + id_bytes + 4 + sum(
        _AMOUNT_JSON + account_bytes + id_bytes + len(measure) + len(str(cents))
        for measure, cents in amounts)


@dataclass
class PartWindow:
    """Text and totals gathered until a part is full; ``dry``: counted only, nothing kept."""

    text_max: int
    totals_max: int | None  # None: text only (a parked set)
    dry: bool = False
    closed: int = 0  # parts closed so far
    _text: list[str] = field(default_factory=list)
    _text_bytes: int = 0
    _totals: SourceTotals = field(default_factory=SourceTotals)
    _totals_bytes: int = 0
    _units: int = 0

    def add_text(self, piece: str) -> list[Part]:
        """``piece`` (one segment and its terminator) added; the parts it closed."""
        done: list[Part] = []
        for chunk in _fitting(piece, self.text_max):
            cost = len(orjson.dumps(chunk)) - 2
            if self._text_bytes and self._text_bytes + cost > self.text_max:
                done.append(self._close())
            if not self.dry:
                self._text.append(chunk)
            self._text_bytes += cost
        return done

    def add_unit(self, account: str, event_id: str, day: date, amounts: list[tuple[str, int]],
                 cost: int) -> list[Part]:
        """One claim's (or PLB's) amounts, attributed to its event; the part it closed."""
        if self.totals_max is None:
            return []
        done: list[Part] = []
        if self._units and self._totals_bytes + cost > self.totals_max:
            done.append(self._close())
        if not self.dry:
            self._totals.event_ids.append((account, event_id))
            for measure, cents in amounts:
                self._totals.add(account, day, measure, cents, event_id)
        self._units += 1
        self._totals_bytes += cost
        return done

    def end(self) -> list[Part]:
        """The last part (a set has at least one)."""
        if self._text_bytes or self._units or not self.closed:
            return [self._close()]
        return []

    def _close(self) -> Part:
        part = Part("".join(self._text), None if self.totals_max is None else self._totals)
        self._text, self._text_bytes = [], 0
        self._totals, self._totals_bytes, self._units = SourceTotals(), 0, 0
        self.closed += 1
        return part


def _fitting(piece: str, bytes_max: int) -> list[str]:
    """``piece`` whole, or cut where its JSON would pass ``bytes_max`` (one huge segment)."""
    if len(piece) * 6 + 2 <= bytes_max or len(orjson.dumps(piece)) - 2 <= bytes_max:
        return [piece]
    out: list[str] = []
    start = 0
    while start < len(piece):
        window = bytes_max
        while len(orjson.dumps(piece[start:start + window])) - 2 > bytes_max:
            window = max(1, window // 2)
        out.append(piece[start:start + window])
        start += window
    return out


T = TypeVar("T")


class Kept(Generic[T]):
    """The first ``keep`` of what may be 100,000s (problems, warnings), and how many."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.items: list[T] = []
        self.total = 0

    def add(self, item: T) -> None:
        self.total += 1
        if len(self.items) < self.keep:
            self.items.append(item)
