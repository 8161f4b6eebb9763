"""Source totals: what an inbound connector accepted, in money, per account, day and measure.

At accept time each connector records, for every unit it applied (an HL7 message, an X12
transaction set, a payment row, a FHIR resource), what the *source document* says in money,
read from the source's own amount fields (FT1-11, CLP04, CAS, PLB, the row's amount, ...),
never from the events it made of them: a mapping that drops or changes money then shows as a
difference. `rcmflow reconcile` sums the canonical events the unit lists into the same
measures (``event_amounts``) and compares.

Measures (integer cents, signed as the source signs them):

========================  ======================================================================
``charges``               charges net of credits / reversals (HL7 FT1, FHIR ChargeItem)
``billed``                claim totals submitted (837 CLM02; no ledger entry)
``payer_paid``            what the payer paid per claim (835 CLP04)
``adjusted``              835 CAS amounts of groups CO, OA, PI, CR (contractual and other)
``patient_responsibility``  835 CAS amounts of group PR
``provider_adjustments``  835 PLB amounts (positive = money back to the payer)
``payments``              patient payments (payment rows, FHIR PaymentReconciliation)
``refunds``               refunds (refund rows, negative PaymentReconciliation details)
``write_offs``            write-offs (write_off rows)
========================  ======================================================================

The day is the day the events carry as their effective date: ``occurred_at.date()`` in the
offset the source gave (the core posts on that day).

Attribution: where a source part maps one-to-one to an event (an FT1, an 835 claim or PLB, an
837 claim, a payment row, a FHIR ChargeItem or PaymentReconciliation detail) its amounts carry
that event's id (``SourceAmount.event_id``; ``"event"`` in the JSON). Only the label is shared
with the event, the cents are still the source's. Reconcile counts an attributed amount once
per event id, so a unit re-sent in part (a corrected 835 repeating some claims) is not counted
twice. Amounts without an id (records written before ids were kept) count per unit.

Where it is kept: the JSON raw records (rcm.raw.x12 / payments / fhir) carry it under
``source_totals``; rcm.raw.hl7 records stay the raw bytes as received and carry it, with
the message's status, in Kafka record headers (``HEADER_STATUS``, ``HEADER_TOTALS``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from rcmflow.streams.events import (
    ChargePosted,
    ChargeReversed,
    ClaimAdjudicated,
    ClaimSubmitted,
    Event,
    PatientPayment,
    ProviderAdjustment,
    Refund,
    WriteOff,
)

__all__ = ["MEASURES", "SourceAmount", "SourceTotals", "event_amounts", "HEADER_STATUS",
           "HEADER_TOTALS", "cas_measure"]

MEASURES = ("charges", "billed", "payer_paid", "adjusted", "patient_responsibility",
            "provider_adjustments", "payments", "refunds", "write_offs")
HEADER_STATUS = "rcm-status"  # applied | refused
HEADER_TOTALS = "rcm-source-totals"  # SourceTotals.to_json()


def cas_measure(group: str) -> str:
    """PR is what the patient owes; every other CAS group is an adjustment of the charge."""
    return "patient_responsibility" if group == "PR" else "adjusted"


@dataclass(frozen=True, slots=True)
class SourceAmount:
    account: str
    day: date
    measure: str
    cents: int
    event_id: str | None = None  # the event this part of the source became, if one


@dataclass
class SourceTotals:
    """One accepted unit: its amounts (summed per account, day, measure) and its events."""

    amounts: list[SourceAmount] = field(default_factory=list)
    event_ids: list[tuple[str, str]] = field(default_factory=list)  # (account, event id)

    def add(self, account: str, day: date, measure: str, cents: int,
            event_id: str | None = None) -> None:
        assert measure in MEASURES, measure
        self.amounts.append(SourceAmount(account, day, measure, cents, event_id))

    def by_event(self) -> dict[tuple[str, date, str, str | None], int]:
        """Sums per account, day, measure and the event id they are attributed to (or None)."""
        sums: dict[tuple[str, date, str, str | None], int] = {}
        for a in self.amounts:
            key = (a.account, a.day, a.measure, a.event_id)
            sums[key] = sums.get(key, 0) + a.cents
        return sums

    def summed(self) -> dict[tuple[str, date, str], int]:
        sums: dict[tuple[str, date, str], int] = {}
        for (account, day, measure, _), cents in self.by_event().items():
            sums[(account, day, measure)] = sums.get((account, day, measure), 0) + cents
        return sums

    def to_json(self) -> dict[str, Any]:
        return {"amounts": [{"account": a, "day": d.isoformat(), "measure": m, "cents": c}
                            | ({"event": e} if e is not None else {})
                            for (a, d, m, e), c in self.by_event().items() if c],
                "events": [list(pair) for pair in self.event_ids]}

    def split(self, bytes_max: int) -> list[SourceTotals]:
        """The same totals in parts whose JSON is at most about ``bytes_max`` each (a raw
        record must fit its topic whatever the unit's size): an event's amounts stay with
        it, in the order the events were listed; unattributed amounts go with the first."""
        by_event: dict[tuple[str, str], list[SourceAmount]] = {}
        first = SourceTotals()
        for a in self.amounts:
            if a.event_id is None:
                first.amounts.append(a)
            else:
                by_event.setdefault((a.account, a.event_id), []).append(a)
        parts, current = [first], first
        size = sum(_amount_bytes(a) for a in first.amounts)
        listed = set(self.event_ids)
        units = [(pair, True) for pair in self.event_ids] + [
            (pair, False) for pair in by_event if pair not in listed]
        for (account, event_id), is_listed in units:
            amounts = by_event.pop((account, event_id), [])
            cost = len(account) + len(event_id) + 8 + sum(_amount_bytes(a) for a in amounts)
            if size + cost > bytes_max and (current.amounts or current.event_ids):
                current, size = SourceTotals(), 0
                parts.append(current)
            if is_listed:
                current.event_ids.append((account, event_id))
            current.amounts.extend(amounts)
            size += cost
        return parts

    def header(self) -> bytes:
        return orjson.dumps(self.to_json())

    @classmethod
    def from_json(cls, doc: Any) -> SourceTotals:
        """Read back (raises KeyError / ValueError / TypeError on a malformed document)."""
        totals = cls()
        for x in doc["amounts"]:
            event = x.get("event")  # absent in records written before amounts were attributed
            totals.add(str(x["account"]), date.fromisoformat(x["day"]), str(x["measure"]),
                       int(x["cents"]), None if event is None else str(event))
        totals.event_ids = [(str(a), str(e)) for a, e in doc["events"]]
        return totals


def _amount_bytes(a: SourceAmount) -> int:
    """Bytes of one amount in ``to_json`` (as summed per event, an upper bound)."""
    return len(orjson.dumps({"account": a.account, "day": a.day.isoformat(), "measure": a.measure,
                             "cents": a.cents, "event": a.event_id})) + 1


def event_amounts(event: Event) -> Iterable[tuple[str, int]]:
    """(measure, cents) an event carries: the events' side of the comparison."""
    match event:
        case ChargePosted():
            yield "charges", event.amount_cents
        case ChargeReversed():
            yield "charges", -event.amount_cents
        case ClaimSubmitted():
            yield "billed", event.total_charge_cents
        case ClaimAdjudicated():
            yield "payer_paid", event.paid_cents
            for adj in event.all_adjustments():
                yield cas_measure(adj.group), adj.amount_cents
        case ProviderAdjustment():
            yield "provider_adjustments", event.amount_cents
        case PatientPayment():
            yield "payments", event.amount_cents
        case Refund():
            yield "refunds", event.amount_cents
        case WriteOff():
            yield "write_offs", event.amount_cents
