"""HL7 v2 scalar values read exactly: money to integer cents, quantities, timestamps.

Money goes text -> Decimal -> int, never through float; a value that is not a whole number
of cents is refused (it would have to be rounded, and the ledger does not round).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation

from rcmflow.runtime.shown import quoted

__all__ = ["ValueProblem", "parse_cents", "parse_quantity", "parse_timestamp"]

#: NM as HL7 defines it: optional sign, digits, optional decimal point. No exponent,
#: no thousands separator, no currency sign.
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_NUMBER_CHARS_MAX = 20
_DTM = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$"
)


class ValueProblem(ValueError):
    """A field value that cannot be read; the text says why (without echoing long input)."""


def _number(text: str, what: str) -> Decimal:
    if len(text) > _NUMBER_CHARS_MAX:
        raise ValueProblem(f"{what} {quoted(text)} is longer than the {_NUMBER_CHARS_MAX} "
                           "characters a number may have")
    if not _NUMBER.match(text):
        raise ValueProblem(f"{what} {quoted(text)} is not a number")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
        raise ValueProblem(f"{what} {text!r} is not a number") from exc


def parse_cents(text: str, what: str = "amount") -> int:
    """'100' / '100.5' / '-12.34' -> signed cents; the caller passes only the first
    (sub)component, so '100&USD' arrives here as '100'."""
    value = _number(text.strip(), what) * 100
    if value != value.to_integral_value():
        raise ValueProblem(f"{what} {text!r} has fractions of a cent")
    return int(value)


def parse_quantity(text: str, what: str = "quantity") -> int:
    """FT1-10: a whole number of units ('2', '2.0'); empty means 1."""
    if not text.strip():
        return 1
    value = _number(text.strip(), what)
    if value != value.to_integral_value():
        raise ValueProblem(f"{what} {text!r} is not a whole number of units")
    return int(value)


def parse_timestamp(text: str, default_tz: tzinfo = UTC,
                    what: str = "timestamp") -> datetime:
    """DTM/TS 'YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]' -> an aware datetime.

    Without an offset the sending system's zone is assumed (settings: hl7_timezone).
    """
    match = _DTM.match(text.strip())
    if not match:
        raise ValueProblem(f"{what} {text[:30]!r} is not an HL7 date/time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        tz: tzinfo = default_tz
        if offset:
            sign = -1 if offset[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        micro = int((fraction or "0").ljust(6, "0"))
        return datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                        int(minute or 0), int(second or 0), micro, tzinfo=tz)
    except ValueError as exc:
        raise ValueProblem(f"{what} {text[:30]!r} is not a valid date/time") from exc
