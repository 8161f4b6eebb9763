"""Payment, refund and write-off files (CSV or JSON lines) -> canonical events."""
