"""rcmflow: keeps patient billing and the ERP general ledger in agreement, in stream."""

__version__ = "0.1.0"
