"""`--since` / `--older-than`: a duration back from now (``90m``, ``2h``, ``3d``, ``1w``) or
an ISO date or date-time (``2026-12-01``, ``2026-12-01T08:00:00Z``; without a zone: UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from rcmflow.ops.exceptions import BadMoment

__all__ = ["moment", "age_text"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,7})\s*([smhdw])\s*$")


def moment(text: str, now: datetime) -> datetime:
    """The moment ``text`` names: ``now`` minus a duration, or an ISO date (its midnight,
    UTC) or date-time."""
    found = _DURATION.match(text.lower())
    if found:
        return now - timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadMoment(f"{text[:40]!r} is neither a duration (90m, 2h, 3d, 1w) nor an ISO "
                        "date (2026-12-01, 2026-12-01T08:00:00Z)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def age_text(seconds: float) -> str:
    """An age for people: 45s, 12m, 5h, 3d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"
