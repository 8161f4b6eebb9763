"""Payment, refund and write-off files (CSV or JSON lines) -> canonical events (issue 4)."""

from rcmflow.connectors.inbound.payments.money import MoneyError, format_cents, parse_cents

__all__ = ["MoneyError", "format_cents", "parse_cents"]
