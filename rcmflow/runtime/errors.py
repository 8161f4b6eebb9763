"""The root of rcmflow's own exceptions: ``except RcmflowError`` catches every error rcmflow
raises on purpose (a refusal, a broker or ERP failure it names), and nothing else.

Errors that callers already catch as ``ValueError``, ``RuntimeError`` or ``OSError`` derive
from both (``class ChartError(RcmflowError, ValueError)``), so nothing that caught them
before misses them now. Plain Python only: the pure core imports it.
"""

from __future__ import annotations

__all__ = ["RcmflowError"]


class RcmflowError(Exception):
    """An error rcmflow raises on purpose, with a message that says what to do."""
