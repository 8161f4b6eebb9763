"""Exact money parsing: a decimal string becomes integer cents, or a reason why not.

Used by the payment files and the X12 readers alike. No float anywhere: the text goes
through ``Decimal`` and must land on a whole cent ("12.345" is refused, "12.340" is fine).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from rcmflow.runtime.shown import quoted

__all__ = ["MoneyError", "parse_cents", "format_cents"]

#: Sign, ASCII digits, optional fraction. No exponent, no thousands separators, no currency sign:
#: anything clever in an amount column is more likely a mistake than a format.
_AMOUNT = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
#: Digits before the point; past it the value cannot be a real amount (and Decimal stays fast).
_DIGITS_MAX = 15


class MoneyError(ValueError):
    """An amount that is not an exact number of cents; the message says why."""


def parse_cents(text: str) -> int:
    """``"1234.5"`` -> ``123450``; raises ``MoneyError`` for anything not exact to the cent."""
    value = text.strip()
    if not value:
        raise MoneyError("amount is empty")
    if not _AMOUNT.match(value):
        raise MoneyError(f"amount {quoted(value)} is not a decimal number like 1234.56")
    if len(value.lstrip("+-").split(".")[0]) > _DIGITS_MAX:
        raise MoneyError(f"amount {quoted(value)} has more than {_DIGITS_MAX} integer digits")
    try:
        cents = Decimal(value) * 100
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise MoneyError(f"amount {quoted(value)} is not a number") from exc
    if cents != cents.to_integral_value():
        raise MoneyError(f"amount {value!r} has a fraction of a cent")
    return int(cents)


def format_cents(cents: int) -> str:
    """``-123450`` -> ``"-1234.50"``: the inverse of ``parse_cents`` (for reasons and tests)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"
