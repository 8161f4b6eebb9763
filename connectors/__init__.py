"""Inbound parsers and listeners, ERP adapters (issues 4 and 6)."""
