"""Plausible dates: the one check every connector and the worker make on an event's date.

A payment dated 0001-01-01 or 9999-12-31 is a typo or a placeholder, not money that moved:
posted, it lands in a ledger period nobody reconciles, and a portal cannot show it. Each
connector refuses a date outside the window in its own way (HL7 AE, an X12 set parked, a
payment row or a FHIR resource rejected) with the reason built here, and the worker refuses
such an event too (rcm.dlq), for events sent straight to rcm.events.

The window is ``[earliest, today + future_days]``, both ends included, on the date as the
source wrote it (the event's own offset). ``today`` is the UTC date of the one who judges;
the worker passes the day of the record's timestamp, so a batch read again after a crash is
judged the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["DATE_OUT_OF_RANGE", "EARLIEST_DEFAULT", "FUTURE_DAYS_DEFAULT", "FUTURE_DAYS_MAX",
           "DateWindow", "DEFAULT_WINDOW"]

#: The reason code of every refusal, in every connector and in rcm.dlq.
DATE_OUT_OF_RANGE = "date_out_of_range"
EARLIEST_DEFAULT = date(1990, 1, 1)
FUTURE_DAYS_DEFAULT = 366
#: Ten years ahead at most: keeps ``today + future_days`` far from ``date.max``.
FUTURE_DAYS_MAX = 3660


@dataclass(frozen=True)
class DateWindow:
    earliest: date = EARLIEST_DEFAULT
    future_days: int = FUTURE_DAYS_DEFAULT

    def __post_init__(self) -> None:
        assert 0 <= self.future_days <= FUTURE_DAYS_MAX, self.future_days

    @classmethod
    def from_settings(cls, settings: Settings) -> DateWindow:
        return cls(settings.date_earliest, settings.date_future_days)

    def latest(self, today: date | None = None) -> date:
        return (today or datetime.now(UTC).date()) + timedelta(days=self.future_days)

    def problem(self, when: date | datetime, field: str, *,
                today: date | None = None) -> str | None:
        """None when ``when`` is inside the window; else why not, naming ``field`` (where
        the date came from), the date, the window and the settings that set it."""
        day = when.date() if isinstance(when, datetime) else when
        latest = self.latest(today)
        if self.earliest <= day <= latest:
            return None
        side = "before the earliest" if day < self.earliest else "after the latest"
        return (f"{field} {day.isoformat()} is {side} accepted date: dates from "
                f"{self.earliest.isoformat()} to {latest.isoformat()} are taken "
                f"(RCMFLOW_DATE_EARLIEST={self.earliest.isoformat()}, today + "
                f"RCMFLOW_DATE_FUTURE_DAYS={self.future_days})")


#: The settings' defaults, for callers (and tests) that were given no window.
DEFAULT_WINDOW = DateWindow()
