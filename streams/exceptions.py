"""Errors of the pure core and its Faust shell (money, chart of accounts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rcmflow.runtime.exceptions import RcmflowError

if TYPE_CHECKING:
    from rcmflow.streams.money import Refusal

__all__ = ["MoneyError", "UpgradeNeeded", "ChartError", "RefundPolicyError", "FeeScheduleError",
           "DenialRoutingError",
           "UPGRADE_COMMAND"]

#: What an operator runs once when a table holds records of an older rcmflow.
UPGRADE_COMMAND = "rcmflow upgrade"


class MoneyError(RcmflowError, ValueError):
    """An amount that is not an exact number of cents in range; the message says why and is
    safe to print (field names, amounts and currency codes only)."""

    def __init__(self, message: str, refusal: Refusal) -> None:
        super().__init__(message)
        self.refusal = refusal


class UpgradeNeeded(RcmflowError, ValueError):
    """A table record written by an older rcmflow, which this version does not read."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} was written by an older rcmflow and is not read by this "
                         f"version: stop the workers and run `{UPGRADE_COMMAND}` once, then "
                         "start them again")


class ChartError(RcmflowError, ValueError):
    """The mapping file is missing, unreadable or inconsistent."""


class RefundPolicyError(RcmflowError, ValueError):
    """The refund approval policy file is missing, unreadable or inconsistent."""


class FeeScheduleError(RcmflowError, ValueError):
    """The fee schedule file is missing, unreadable or inconsistent."""


class DenialRoutingError(RcmflowError, ValueError):
    """The denial routing table is missing, unreadable or names unknown categories."""
