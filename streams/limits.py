"""The core's own limits, written once: the core and its callers that are handed no settings
(reconcile, tests) use these, and ``Settings`` takes them as the defaults of
``RCMFLOW_EVENT_BYTES_MAX``, ``_ACCOUNT_ITEMS_MAX`` and ``_DLQ_PAYLOAD_BYTES_MAX``.

No imports: the settings (and every operator command that reads them) load this module
without the core.
"""

from __future__ import annotations

__all__ = ["ACCOUNT_ITEMS_MAX", "EVENT_BYTES_MAX", "DLQ_PAYLOAD_BYTES_MAX"]

#: Items (charges, claims, adjudications, payments) one account may hold; past it the
#: events that would add one are refused. Cost does not depend on it: it bounds storage.
ACCOUNT_ITEMS_MAX = 10_000
#: Largest canonical event accepted (one JSON document); larger ones go to the DLQ.
EVENT_BYTES_MAX = 256 * 1024
#: Raw input kept in a DLQ record (the record's origin names the whole one on rcm.events).
DLQ_PAYLOAD_BYTES_MAX = 512 * 1024
