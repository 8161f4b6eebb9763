"""HL7 v2 scalar values read exactly: quantities and timestamps.

Amounts (FT1-11, FT1-12) are read by ``rcmflow.streams.money.parse_cents``; quantities by
the same rules for decimal text (``parse_decimal``), so an NM field is read one way.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from rcmflow.connectors.inbound.exceptions import ValueProblem
from rcmflow.streams.exceptions import MoneyError
from rcmflow.streams.money import parse_decimal

__all__ = [ "parse_quantity", "parse_timestamp"]

_DTM = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$"
)


def parse_quantity(text: str, what: str = "quantity") -> int:
    """FT1-10: a whole number of units ('2', '2.0'); empty means 1."""
    if not text.strip():
        return 1
    try:
        value = parse_decimal(text, what)
    except MoneyError as exc:
        raise ValueProblem(str(exc)) from exc
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
