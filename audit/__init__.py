"""Proving the ledger: `rcmflow reconcile` (source totals, events, state and postings
compared), `rcmflow rebuild` and `rcmflow digest` (the state rebuilt from rcm.events, and one
hash of it to compare with the live state's)."""
