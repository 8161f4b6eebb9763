"""What `rcmflow audit --follow` tallies for the metrics beside its checks.

The follower reads rcm.postings from its start already (the ledger sums), so it can also keep
each entity's unapplied credit and suspense balance exactly, restart or not (a worker only
sees the changes since it started, and only of its partitions). It reads rcm.dlq and
rcm.postings.dlq from their start too, for the exception work queue's size and age.

Both are pure: records in, numbers out (``audit/ledger.py`` feeds them, tests feed them
directly). Labels are bounded (``BoundedLabel``): never an account.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

import orjson

from rcmflow.runtime.metrics import BoundedLabel, Metric, counter, gauge
from rcmflow.streams.denial_routing import DenialRouting, load_denial_routing
from rcmflow.streams.denials import WORKED_STATES
from rcmflow.streams.rules import bucket_effects
from rcmflow.streams.topics import DLQ, POSTINGS_DLQ

__all__ = ["DlqTally", "EntityBalances", "RefundTally", "AccountsByState", "DenialTally",
           "DLQ_ITEMS_TRACKED_MAX", "QUEUES", "REFUNDS_TRACKED_MAX"]

log = logging.getLogger("rcmflow.audit")

#: DLQ items the tally keeps (id, labels and age: ~200 bytes each). Past it, new items are
#: counted in ``rcmflow_audit_dlq_untracked_total`` and a warning is logged: a queue that
#: large is an incident the alert has long fired for.
DLQ_ITEMS_TRACKED_MAX = 500_000
#: The two queues, by the label value they get.
QUEUES = {DLQ: "dlq", POSTINGS_DLQ: "postings_dlq"}


class _Item(NamedTuple):
    labels: tuple[str, str, str, str, str]  # queue, stage, reason, entity, severity
    received_s: float


class DlqTally:
    """Every distinct DLQ item (by ``dlq_id``: a record written twice is one item), counted
    by queue, stage, reason, entity and severity, and the oldest one's age per queue.

    Open items only: ``state(dlq_id, done)`` is called for each record of the work queue's
    ``rcm.dlq.state``; an item whose newest state is done (resolved, or replayed with an
    outcome that needs no more work) leaves the counts, and comes back if a later state
    reopens it. A state may be read before its item (another topic): it is remembered."""

    def __init__(self, items_max: int = DLQ_ITEMS_TRACKED_MAX) -> None:
        self.items_max = items_max
        self.items: dict[str, _Item] = {}
        self.settled: dict[str, _Item] = {}
        self.done: set[str] = set()  # ids whose newest state is done (their items may come later)
        self.counts: dict[tuple[str, str, str, str, str], int] = {}
        self.untracked = 0
        self.unreadable = 0
        self._reasons = BoundedLabel()
        self._entities = BoundedLabel()

    def take(self, topic: str, value: bytes | None, timestamp_ms: int | None) -> None:
        """One rcm.dlq or rcm.postings.dlq record."""
        if value is None:
            return
        try:
            doc = orjson.loads(value)
            dlq_id = str(doc["dlq_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unreadable += 1
            return
        if dlq_id in self.items or dlq_id in self.settled:
            return
        if len(self.items) + len(self.settled) >= self.items_max:
            if not self.untracked:
                log.warning("audit: more than %d DLQ items; later ones are counted in "
                            "rcmflow_audit_dlq_untracked_total only", self.items_max)
            self.untracked += 1
            return
        context = doc.get("context") if isinstance(doc.get("context"), dict) else {}
        labels = (QUEUES.get(topic, "dlq"), str(doc.get("stage") or "unknown")[:32],
                  self._reasons(str(doc.get("reason_code") or "")),
                  self._entities(str(context.get("entity") or "")),
                  "warning" if doc.get("severity") == "warning" else "error")
        item = _Item(labels, _received_s(doc.get("received_at"), timestamp_ms))
        if dlq_id in self.done:
            self.settled[dlq_id] = item
            return
        self.items[dlq_id] = item
        self.counts[labels] = self.counts.get(labels, 0) + 1

    def state(self, dlq_id: str, done: bool) -> None:
        """The newest state record of an item: done (resolved or finished replaying) or not."""
        if done:
            if len(self.done) < self.items_max:
                self.done.add(dlq_id)
            self.settle(dlq_id)
        else:
            self.done.discard(dlq_id)
            self.reopen(dlq_id)

    def settle(self, dlq_id: str) -> None:
        """The item was replayed or resolved: no longer open."""
        item = self.items.pop(dlq_id, None)
        if item is not None:
            self.settled[dlq_id] = item
            self.counts[item.labels] -= 1

    def reopen(self, dlq_id: str) -> None:
        item = self.settled.pop(dlq_id, None)
        if item is not None:
            self.items[dlq_id] = item
            self.counts[item.labels] = self.counts.get(item.labels, 0) + 1

    def oldest_age_s(self, now_s: float) -> dict[str, float | None]:
        """Per queue, the age of its oldest open item (None: none open). A scan: at the
        tracked bound it takes well under a second, once per scrape."""
        oldest: dict[str, float] = {}
        for item in list(self.items.values()):
            queue = item.labels[0]
            if queue not in oldest or item.received_s < oldest[queue]:
                oldest[queue] = item.received_s
        return {queue: (max(0.0, now_s - oldest[queue]) if queue in oldest else None)
                for queue in QUEUES.values()}

    def families(self, now_s: float | None = None) -> list[Metric]:
        now_s = time.time() if now_s is None else now_s
        names = ("queue", "stage", "reason", "entity", "severity")
        return [
            gauge("rcmflow_audit_dlq_items", "Exception items (distinct dlq_id) in rcm.dlq "
                  "and rcm.postings.dlq still open (the work queue's rcm.dlq.state), by queue, "
                  "stage, reason, entity and severity",
                  [(dict(zip(names, labels, strict=True)), n)
                   for labels, n in list(self.counts.items())]),
            gauge("rcmflow_audit_dlq_oldest_item_age_seconds", "Age of the oldest open "
                  "exception item per queue (since it was received; NaN: none open)",
                  [({"queue": q}, age) for q, age in self.oldest_age_s(now_s).items()]),
            counter("rcmflow_audit_dlq_untracked", "Exception items past the tally's bound "
                    f"({self.items_max}), counted only here", [({}, self.untracked)]),
        ]


_AR_BUCKETS = frozenset({"insurance_ar", "patient_ar"})


class EntityBalances:
    """Unapplied credit, suspense and AR, per entity, summed over every distinct posting delta.

    Unapplied credit: the ``unapplied_credit`` bucket's growth (credits grow it). Suspense:
    lines posted to suspense because a mapping key was missing, net, credit-positive (an
    unmapped charge credits suspense instead of revenue; the reclassification to the mapped
    GL account takes it back out)."""

    def __init__(self) -> None:
        self.unapplied_credit: dict[str, int] = {}
        self.suspense: dict[str, int] = {}
        #: (entity, bucket) -> the insurance_ar / patient_ar total: AR by bucket and entity
        #: (its ages: `rcmflow aging --metrics-file`, docs/aging.md).
        self.ar: dict[tuple[str, str], int] = {}
        self._entities = BoundedLabel()

    def take(self, delta: dict[str, Any]) -> None:
        """One new posting delta (a re-send must not reach here: ``LedgerSums`` drops it)."""
        lines: Iterable[dict[str, Any]] = delta.get("lines") or ()
        for line in lines:
            entity = self._entities(str(line.get("entity") or delta.get("entity") or ""))
            amount = int(line["debit_cents"]) - int(line["credit_cents"])
            moved = bucket_effects([(str(line["bucket"]), amount)]).get("unapplied_credit")
            if moved:
                self.unapplied_credit[entity] = self.unapplied_credit.get(entity, 0) + moved
            if line["bucket"] in _AR_BUCKETS:  # debit-normal: debits grow them
                key = (entity, str(line["bucket"]))
                self.ar[key] = self.ar.get(key, 0) + amount
            if line.get("suspense"):
                self.suspense[entity] = self.suspense.get(entity, 0) - amount

    def families(self) -> list[Metric]:
        return [
            gauge("rcmflow_audit_unapplied_credit_cents", "Unapplied credit (money received, "
                  "not yet applied) per entity, in cents, over every posting delta",
                  [({"entity": e}, v) for e, v in list(self.unapplied_credit.items())]),
            gauge("rcmflow_audit_suspense_cents", "Net amount posted to suspense (unmapped "
                  "dimensions) per entity, in cents, credit-positive",
                  [({"entity": e}, v) for e, v in list(self.suspense.items())]),
            gauge("rcmflow_audit_ar_cents", "Accounts receivable per entity and ledger bucket "
                  "(insurance_ar, patient_ar), in cents, over every posting delta",
                  [({"entity": e, "bucket": b}, v) for (e, b), v in list(self.ar.items())]),
        ]


#: Pending refund requests the tally keeps (~100 bytes each); past it new ones are not
#: tracked and a warning is logged.
REFUNDS_TRACKED_MAX = 200_000
Entry = TypeVar("Entry")


class _ItemTally(Generic[Entry]):
    """What a tally keeps of one kind of rcm.accounts item (compacted: a key's newest record
    tells its state): an entry per key while ``_entry`` makes one, at most ``tracked_max``
    (past it new keys are left out, with a warning), dropped on a tombstone."""

    #: The item kind in the key (``<account>/<kind>/<id>``) and what the warning calls them.
    marker: bytes
    what: str

    def __init__(self, tracked_max: int) -> None:
        self.tracked_max = tracked_max
        self.items: dict[bytes, Entry] = {}

    def _entry(self, doc: dict[str, Any]) -> Entry | None:
        """The entry of an item record (None: not tracked now); KeyError, TypeError or
        ValueError: a record this version cannot read (ignored)."""
        raise NotImplementedError

    def take(self, key: bytes, value: bytes | None) -> None:
        """One rcm.accounts record; anything but this kind of item is ignored."""
        if self.marker not in key:
            return
        if value is None:
            self.items.pop(key, None)
            return
        try:
            entry = self._entry(orjson.loads(value))
        except (ValueError, KeyError, TypeError):
            return  # not a record this version can read
        if entry is None:
            self.items.pop(key, None)
        elif key in self.items or len(self.items) < self.tracked_max:
            self.items[key] = entry
        else:
            log.warning("more than %d %s: new ones are not in the metrics", self.tracked_max,
                        self.what)


class RefundTally(_ItemTally[tuple[str, int, float]]):
    """Refund requests waiting for approval, per entity: how many, how much, and the oldest
    one's age (the SLA's alert), from the refund items of rcm.accounts. Entries: entity,
    cents, requested at (Unix seconds)."""

    marker, what = b"/refund/", "pending refund requests"

    def __init__(self, tracked_max: int = REFUNDS_TRACKED_MAX) -> None:
        super().__init__(tracked_max)
        self._entities = BoundedLabel()

    def _entry(self, doc: dict[str, Any]) -> tuple[str, int, float] | None:
        if doc["state"] != "pending":
            return None
        return (self._entities(str(doc["entity"])), int(doc["amount_cents"]),
                datetime.fromisoformat(str(doc["requested_at"])).timestamp())

    def families(self, now_s: float | None = None) -> list[Metric]:
        now = time.time() if now_s is None else now_s
        counts: dict[str, int] = {}
        cents: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for entity, amount, since in list(self.items.values()):
            counts[entity] = counts.get(entity, 0) + 1
            cents[entity] = cents.get(entity, 0) + amount
            oldest[entity] = min(oldest.get(entity, since), since)
        return [
            gauge("rcmflow_refunds_pending", "Refund requests waiting for approval, per "
                  "entity", [({"entity": e}, n) for e, n in counts.items()]),
            gauge("rcmflow_refunds_pending_cents", "Amount of the refund requests waiting "
                  "for approval, per entity, in cents", [({"entity": e}, n)
                                                         for e, n in cents.items()]),
            gauge("rcmflow_refunds_pending_oldest_age_seconds", "Age of the oldest refund "
                  "request waiting for approval, per entity (against the policy's SLA)",
                  [({"entity": e}, max(now - s, 0.0)) for e, s in oldest.items()]),
        ]


class AccountsByState:
    """Accounts by entity and lifecycle state (``streams/lifecycle.py``; ``none``: no state
    yet), across every partition: the follower reads every head of rcm.accounts from its
    start, so each account is counted once, in the state of its newest head, restart or not.
    ``take`` gets an account's previous head (or None) and its new one (None: a tombstone)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self._entities = BoundedLabel()

    def _labels(self, head: bytes | None) -> tuple[str, str] | None:
        if head is None:
            return None
        doc = orjson.loads(head)
        lifecycle = doc.get("lifecycle") or {}
        return self._entities(str(doc.get("entity") or "")), str(lifecycle.get("state") or
                                                                  "none")

    def take(self, previous: bytes | None, head: bytes | None) -> None:
        before, after = self._labels(previous), self._labels(head)
        if before == after:
            return
        if before is not None:
            self.counts[before] = self.counts.get(before, 0) - 1
        if after is not None:
            self.counts[after] = self.counts.get(after, 0) + 1

    def families(self) -> list[Metric]:
        return [gauge("rcmflow_audit_accounts_by_state", "Accounts by entity and lifecycle "
                      "state (none: no state yet), from their newest head on rcm.accounts",
                      [({"entity": e, "state": s}, n)
                       for (e, s), n in list(self.counts.items())])]


def _received_s(received_at: Any, timestamp_ms: int | None) -> float:
    """When the item was received: its ``received_at``, else its record's timestamp, else
    now."""
    if isinstance(received_at, str):
        try:
            return datetime.fromisoformat(received_at).timestamp()
        except ValueError:
            pass
    if timestamp_ms is not None and timestamp_ms > 0:
        return timestamp_ms / 1000
    return time.time()


#: Denials the tally keeps (~150 bytes each); past it new ones are not tracked and a
#: warning is logged.
DENIALS_TRACKED_MAX = 500_000
#: Open-denial age buckets: (label, days at most; None: any older).
DENIAL_AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("0-30", 30), ("31-60", 60), ("61-90", 90), ("91-120", 120), ("120+", None))


class _Denial(NamedTuple):
    payer: str
    category: str
    state: str
    cents: int
    denied_s: float


class DenialTally(_ItemTally[_Denial]):
    """Denied claims and lines (the ``denial`` items of rcm.accounts), by payer, category
    (the routing table's, applied as read) and state, count and amount; and the open ones'
    amounts by age."""

    marker, what = b"/denial/", "denials"

    def __init__(self, routing: DenialRouting | None = None,
                 tracked_max: int = DENIALS_TRACKED_MAX) -> None:
        super().__init__(tracked_max)
        self.routing = routing or load_denial_routing()
        self._payers = BoundedLabel()

    def _entry(self, doc: dict[str, Any]) -> _Denial:
        route = self.routing.route(doc["carcs"], doc["rarcs"])
        return _Denial(self._payers(str(doc["payer"] or "-")), route.category,
                       str(doc["state"]), int(doc["amount_cents"]),
                       datetime.fromisoformat(str(doc["denied_at"])).timestamp())

    def families(self, now_s: float | None = None) -> list[Metric]:
        now = time.time() if now_s is None else now_s
        counts: dict[tuple[str, str, str], int] = {}
        cents: dict[tuple[str, str, str], int] = {}
        aged = {name: [0, 0] for name, _ in DENIAL_AGE_BUCKETS}
        for d in list(self.items.values()):
            labels = (d.payer, d.category, d.state)
            counts[labels] = counts.get(labels, 0) + 1
            cents[labels] = cents.get(labels, 0) + d.cents
            if d.state in WORKED_STATES:
                days = max(now - d.denied_s, 0.0) // 86_400
                name = next(n for n, upto in DENIAL_AGE_BUCKETS if upto is None or days <= upto)
                aged[name][0] += 1
                aged[name][1] += d.cents

        def rows(values: dict[tuple[str, str, str], int]) -> list[tuple[dict[str, str], int]]:
            return [({"payer": p, "category": c, "state": s}, n)
                    for (p, c, s), n in values.items()]
        return [
            gauge("rcmflow_denials", "Denied claims and service lines by payer, category "
                  "(the denial routing table's) and state (open, appealed, overturned, "
                  "upheld, resolved, written_off)", rows(counts)),
            gauge("rcmflow_denials_cents", "Amount denied by payer, category and state, in "
                  "cents", rows(cents)),
            gauge("rcmflow_denials_open", "Open denials (open or appealed) by age since the "
                  "denial, in days", [({"age": a}, v[0]) for a, v in aged.items()]),
            gauge("rcmflow_denials_open_cents", "Amount of the open denials by age since the "
                  "denial, in cents", [({"age": a}, v[1]) for a, v in aged.items()]),
        ]
