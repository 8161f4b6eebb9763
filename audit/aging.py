"""AR aging (`rcmflow aging`): the open insurance and patient AR, in day buckets, tied to the
ledger to the cent. Pure: fed an account's posting deltas and items, no broker.

**Layers, first in first out.** An account's ``insurance_ar`` and ``patient_ar`` move only
through posting lines (``rules.py``), so its AR is aged from those lines: each delta's net
movement of a bucket (debits minus credits), in account-version order. A debit opens a layer
dated the delta's ``effective_date``; a credit closes the oldest open layers first (an
adjudication's credit closes its own claim's layers first, then the oldest). A credit larger
than what is open opens a negative layer: a **credit**, shown in its own column, never
netted away. The open layers therefore sum to the bucket by construction; ``--as-of D``
uses only the deltas dated on or before D, so it ages the AR the ledger held on D.

**Start dates** (the day an open layer's age counts from):

- insurance AR named by an adjudication (a takeback or reversal that reopened it): the
  adjudication's claim;
- other insurance AR (a charge): the first claim of the account submitted on or after the
  layer's date (and by the as-of date); none: **unbilled**, aged from the layer's date;
- a claim's start is its submission, or its first adjudication where rcmflow never saw it
  submitted (an 835 with no 837);
- patient AR: the first patient statement (a ``patient_statement_issued`` lifecycle step) on or
  after the layer's date and by the as-of date; none: the layer's date (the day patient
  responsibility arose: the charge, the PR reclass, the refund past the credit).

The dates are the events' own (``occurred_at``, in its offset, as the deltas carry it).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, NamedTuple

__all__ = ["AGE_BUCKETS", "CREDIT", "BY", "Kind", "ClaimInfo", "AccountLedger", "OpenItem",
           "AgingReport", "age_bucket", "account_ledger", "open_items", "aging_report",
           "ar_movements", "UNBILLED"]

#: The age buckets, in days since the start date: 0-30 (and a start after the as-of date),
#: 31-60, 61-90, 91-120, 121-180, over 180.
AGE_BUCKETS: tuple[str, ...] = ("0-30", "31-60", "61-90", "91-120", "121-180", "180+")
_UPPER = (30, 60, 90, 120, 180)
#: The column of negative open amounts (more credited than was open).
CREDIT = "credit"
#: Payer and payer class of insurance AR on no claim yet.
UNBILLED = "(unbilled)"
BY = ("payer", "payer_class", "entity")
Kind = Literal["insurance", "patient"]
_AR: dict[str, Kind] = {"insurance_ar": "insurance", "patient_ar": "patient"}
_KINDS: tuple[Kind, ...] = ("insurance", "patient")


def age_bucket(days: int) -> str:
    for upper, label in zip(_UPPER, AGE_BUCKETS, strict=False):
        if days <= upper:
            return label
    return AGE_BUCKETS[-1]


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value)
    return date.fromisoformat(text[:10])


class ClaimInfo(NamedTuple):
    claim_id: str
    #: Submission, else first adjudication; None: neither known.
    start: date | None
    payer: str | None
    payer_class: str | None


class Movement(NamedTuple):
    """One delta's net movement of one AR bucket (debit-positive)."""

    kind: Kind
    version: int
    day: date
    cents: int
    entity: str
    event_id: str
    event_kind: str


@dataclass
class AccountLedger:
    """What aging needs of one account: its AR movements in version order, its claims, which
    claim each adjudication answered, and the dates of its patient statements."""

    account: str
    movements: list[Movement]
    claims: dict[str, ClaimInfo] = field(default_factory=dict)
    adjudications: dict[str, str] = field(default_factory=dict)  # event id -> claim id
    statements: list[date] = field(default_factory=list)
    #: The head's (insurance_ar, patient_ar) where the head was read: what aging with no
    #: as-of date must sum to (``AgingReport.differences``).
    head_ar: tuple[int, int] | None = None


def ar_movements(delta: Mapping[str, Any]) -> list[Movement]:
    """A posting delta's net movement of ``insurance_ar`` and ``patient_ar`` (none for a
    delta that moves neither, or moves one back and forth to zero)."""
    net: dict[str, int] = {}
    entity: dict[str, str] = {}
    for line in delta.get("lines") or ():
        bucket = line["bucket"]
        if bucket in _AR:
            net[bucket] = net.get(bucket, 0) + int(line["debit_cents"]) - int(line["credit_cents"])
            entity.setdefault(bucket, str(line.get("entity") or delta.get("entity") or ""))
    return [Movement(_AR[b], int(delta["account_version"]), _day(delta["effective_date"]),
                     cents, entity[b], str(delta["event_id"]), str(delta.get("event_kind")))
            for b, cents in sorted(net.items()) if cents]


def account_ledger(snapshot: Mapping[str, Any], deltas: Iterable[Mapping[str, Any]]
                   ) -> AccountLedger:
    """From an account's assembled snapshot (``layout.assemble``: its claims with their
    adjudications and its transitions) and its posting deltas (any order, each once)."""
    moves = sorted((m for d in deltas for m in ar_movements(d)), key=lambda m: m.version)
    claims: dict[str, ClaimInfo] = {}
    adjudications: dict[str, str] = {}
    for claim_id, claim in (snapshot.get("claims") or {}).items():
        start = claim.get("submitted_at") or claim.get("first_adjudicated_at")
        firsts = [a.get("occurred_at") for a in claim.get("adjudications") or ()]
        if start is None and firsts:
            start = min(_day(f) for f in firsts if f is not None)
        payer = claim.get("payer")
        payer_class = claim.get("payer_class")
        for adj in claim.get("adjudications") or ():
            adjudications[str(adj["event_id"])] = str(claim_id)
            payer = payer or adj.get("payer")
        claims[str(claim_id)] = ClaimInfo(str(claim_id), None if start is None else _day(start),
                                          payer, payer_class)
    statements = sorted(_day(t["at"]) for t in snapshot.get("transitions") or ()
                        if t.get("state") == "patient_statement_issued")
    return AccountLedger(str(snapshot["account"]), moves, claims, adjudications, statements)


class OpenItem(NamedTuple):
    """Open AR of one account: of one claim (insurance) or one statement (patient), from one
    start date. ``bucket`` is an ``AGE_BUCKETS`` label, or ``CREDIT`` for a negative amount."""

    account: str
    kind: Kind
    entity: str
    claim_id: str | None
    payer: str | None
    payer_class: str | None
    statement: date | None
    start: date
    days: int
    bucket: str
    cents: int

    def to_json(self) -> dict[str, Any]:
        doc = self._asdict()
        doc["start"] = self.start.isoformat()
        doc["statement"] = None if self.statement is None else self.statement.isoformat()
        return doc


@dataclass
class _Layer:
    day: date
    cents: int
    entity: str
    claim_id: str | None


def _billed(ledger: AccountLedger, as_of: date | None) -> list[tuple[date, str]]:
    """The claims a charge can be billed on by ``as_of``: (start, claim id), in order."""
    return sorted((c.start, c.claim_id) for c in ledger.claims.values()
                  if c.start is not None and (as_of is None or c.start <= as_of))


def _claim_for(ledger: AccountLedger, move: Movement, billed: list[tuple[date, str]]
               ) -> str | None:
    if move.event_kind == "claim_adjudicated" and move.event_id in ledger.adjudications:
        return ledger.adjudications[move.event_id]
    at = bisect_left(billed, (move.day, ""))  # the first claim started on or after the day
    return billed[at][1] if at < len(billed) else None


def _layers(ledger: AccountLedger, kind: Kind, as_of: date | None) -> list[_Layer]:
    """The open layers of one AR bucket: they sum to the bucket's movements (by as_of).
    Open layers all have one sign (a movement closes the other sign's first), so a movement
    of the layers' own sign only appends: a long stay's thousands of charges cost linear."""
    billed = _billed(ledger, as_of) if kind == "insurance" else []
    open_: list[_Layer] = []
    for move in ledger.movements:
        if move.kind != kind or (as_of is not None and move.day > as_of):
            continue
        claim = _claim_for(ledger, move, billed) if kind == "insurance" else None
        left = move.cents
        sign = 1 if left > 0 else -1
        if open_ and open_[0].cents * sign < 0:
            # Close the other sign's layers: this movement's claim's first, then oldest first.
            order = [layer for layer in open_ if claim is not None and layer.claim_id == claim]
            order += [layer for layer in open_ if claim is None or layer.claim_id != claim]
            for layer in order:
                taken = min(abs(left), abs(layer.cents))
                layer.cents += sign * taken
                left -= sign * taken
                if left == 0:
                    break
            open_ = [layer for layer in open_ if layer.cents]
        if left:
            open_.append(_Layer(move.day, left, move.entity, claim))
    return open_


def open_items(ledger: AccountLedger, today: date, as_of: date | None = None) -> list[OpenItem]:
    """The account's open AR, aged at ``as_of`` (None: every movement, aged at ``today``).
    Per kind, the items' cents sum to the bucket's movements dated by ``as_of``."""
    at = today if as_of is None else as_of
    merged: dict[tuple[Any, ...], int] = {}
    for kind in _KINDS:
        for layer in _layers(ledger, kind, as_of):
            claim = ledger.claims.get(layer.claim_id or "")
            statement = None
            start = layer.day
            if kind == "insurance" and claim is not None and claim.start is not None:
                start = claim.start
            if kind == "patient":
                statement = next((s for s in ledger.statements
                                  if s >= layer.day and s <= at), None)
                start = statement or layer.day
            key = (kind, layer.entity, layer.claim_id, statement, start, layer.cents < 0)
            merged[key] = merged.get(key, 0) + layer.cents
    items = []
    for (kind, entity, claim_id, statement, start, _), cents in merged.items():
        claim = ledger.claims.get(claim_id or "")
        days = (at - start).days
        payer = (claim.payer if claim else UNBILLED) if kind == "insurance" else None
        payer_class = (claim.payer_class if claim else UNBILLED) if kind == "insurance" else None
        items.append(OpenItem(ledger.account, kind, entity, claim_id, payer, payer_class,
                              statement, start, days, CREDIT if cents < 0 else age_bucket(days),
                              cents))
    return sorted(items, key=lambda i: (i.kind, i.start, i.claim_id or "", i.cents))


def _group(item: OpenItem, by: str) -> str:
    if by == "entity":
        return item.entity or "(none)"
    if item.kind == "patient":
        return "patient"
    value = item.payer if by == "payer" else item.payer_class
    return value or "(unknown)"


@dataclass
class AgingReport:
    """The aged AR of every account: rows grouped ``by`` payer, payer class or entity, each
    with its kind (insurance / patient), the bucket columns, credits and a total."""

    as_of: date
    by: str
    items: list[OpenItem]
    #: Account -> its head's AR buckets, where read with no as-of date (the tie to check).
    heads: dict[str, dict[str, int]] = field(default_factory=dict)

    def differences(self) -> dict[str, dict[str, int]]:
        """Accounts whose aged AR differs from their head's buckets: bucket -> head minus
        aged, in cents. Empty by construction unless the ledger itself disagrees with the
        state (``rcmflow audit`` names that)."""
        aged = self.accounts()
        found = {}
        for account, head in self.heads.items():
            mine = aged.get(account, {"insurance_ar": 0, "patient_ar": 0})
            diff = {b: head[b] - mine[b] for b in head if head[b] != mine[b]}
            if diff:
                found[account] = diff
        return found

    def groups(self) -> list[dict[str, Any]]:
        rows: dict[tuple[str, str], dict[str, int]] = {}
        for item in self.items:
            row = rows.setdefault((item.kind, _group(item, self.by)),
                                  dict.fromkeys((*AGE_BUCKETS, CREDIT), 0))
            row[item.bucket] += item.cents
        return [{"kind": kind, self.by: key, "buckets": row, "total": sum(row.values())}
                for (kind, key), row in sorted(rows.items())]

    def totals(self) -> dict[str, Any]:
        columns = dict.fromkeys((*AGE_BUCKETS, CREDIT), 0)
        per_kind = {"insurance_ar": 0, "patient_ar": 0}
        for item in self.items:
            columns[item.bucket] += item.cents
            per_kind[f"{item.kind}_ar"] += item.cents
        return {"buckets": columns, **per_kind, "total": sum(columns.values())}

    def accounts(self) -> dict[str, dict[str, int]]:
        """Account -> its aged insurance_ar and patient_ar (what ties to its head)."""
        found: dict[str, dict[str, int]] = {}
        for item in self.items:
            row = found.setdefault(item.account, {"insurance_ar": 0, "patient_ar": 0})
            row[f"{item.kind}_ar"] += item.cents
        return dict(sorted(found.items()))

    def to_json(self, *, detail: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {"as_of": self.as_of.isoformat(), "by": self.by,
                               "buckets": [*AGE_BUCKETS, CREDIT], "groups": self.groups(),
                               "totals": self.totals(), "accounts": self.accounts(),
                               "differences": self.differences()}
        if detail:
            doc["items"] = [item.to_json() for item in self.items]
        return doc


def aging_report(ledgers: Iterable[AccountLedger], *, today: date, as_of: date | None = None,
                 by: str = "payer_class") -> AgingReport:
    if by not in BY:
        raise ValueError(f"--by {by!r}: one of {', '.join(BY)}")
    items: list[OpenItem] = []
    heads: dict[str, dict[str, int]] = {}
    for ledger in ledgers:
        items += open_items(ledger, today, as_of)
        if as_of is None and ledger.head_ar is not None:
            heads[ledger.account] = dict(zip(("insurance_ar", "patient_ar"), ledger.head_ar,
                                             strict=True))
    return AgingReport(today if as_of is None else as_of, by, items, heads)
