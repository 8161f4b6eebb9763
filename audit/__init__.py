"""Proving the ledger: `rcmflow reconcile` (source totals, events, state and postings
compared)."""
