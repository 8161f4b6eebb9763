"""ERP connectors: every posting delta on rcm.postings reaches the ERP exactly once.

Layout (one module per ERP; adding an ERP is one module plus one line in ``ADAPTERS``):

- ``base``: the adapter interface. An adapter is an ``ErpAdapter``:
  ``open()`` / ``close()``; ``post_batch(deltas) -> [Outcome]`` with one outcome per delta,
  in order, each ``Posted`` (created now), ``AlreadyThere`` (the ERP had this posting id:
  done, not posted again) or ``Rejected(code, reason)`` (permanent: the reason is the ERP's
  own text; the delta goes to rcm.postings.dlq and the stream goes on). Transient trouble
  (timeouts, 5xx, connection errors, lock conflicts) raises ``TransientError`` for the call;
  a broken setup raises ``AdapterConfigError`` (the connector exits 4). ``read_journal(
  day_from=, day_to=)`` yields ``JournalEntry`` values (posting id, ERP reference, date, GL
  lines in cents) for reconciliation. ``post_each`` turns a one-entry ``post(delta)`` into
  ``post_batch`` for ERPs without a batch call.
- The duplicate guard is always the ERP's own: the posting id (deterministic, a re-sent delta
  is byte-identical) is sent as a unique key (Tryton: ``account.move.external_id`` with a
  UNIQUE constraint and the atomic ``post_external`` call; CSV: the posting-id column,
  scanned on start). Adapters must be race-free and crash-free by that key alone.
- ``mapping``: which GL accounts exist, from the same chart-of-accounts file as the posting
  rules (``RCMFLOW_COA``); an unmapped GL account is ``Rejected("unmapped_gl_account")``.
- ``runner``: the consumer loop behind ``rcmflow erp ADAPTER`` (its own consumer group
  ``<app_id>-erp-<adapter>`` on rcm.postings; offsets committed only after every delta
  before them was accepted or DLQ'd; backoff with jitter, a circuit breaker, lag in the
  progress log and the status file ``DATA_DIR/erp-<adapter>.status.json``).
- ``csv_journal``: a daily journal file a finance team can import.
- ``tryton``: Tryton (GNU Health's ERP) over JSON-RPC; ``tryton_module`` is the small
  Tryton module (``rcmflow_ext``) the Tryton server must have installed.

Money is int cents in rcmflow and ``Decimal`` at the ERP boundary; no float anywhere.
Logs name posting ids and account numbers only; DLQ records carry the whole delta.
"""

from __future__ import annotations

from rcmflow.connectors.erp.base import (
    AlreadyThere,
    ErpAdapter,
    JournalEntry,
    JournalLine,
    Outcome,
    Posted,
    Rejected,
    post_each,
)
from rcmflow.connectors.erp.exceptions import AdapterConfigError, TransientError

__all__ = [
    "AdapterConfigError",
    "AlreadyThere",
    "ErpAdapter",
    "JournalEntry",
    "JournalLine",
    "Outcome",
    "Posted",
    "Rejected",
    "TransientError",
    "post_each",
    "ADAPTERS",
]

#: Adapter name -> module under this package that has ``build(settings, chart)``.
ADAPTERS = {"csv": "csv_journal", "tryton": "tryton", "netsuite": "netsuite", "odoo": "odoo",
            "erpnext": "erpnext"}
