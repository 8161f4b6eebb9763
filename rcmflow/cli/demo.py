"""Demo canonical events: a small hospital day that touches every posting rule.

Deterministic (fixed ids and times), so feeding it twice is all replays. It includes what a
real feed does wrong: replays, a conflicting re-send, invalid events and an unmapped revenue
code, so the DLQ and the suspense exception have something to show.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["demo_events", "demo_lines", "DEMO_ACCOUNTS"]

DEMO_ACCOUNTS = ["A1001", "A1002", "A1003", "A1004", "A1005", "provider:1234567890"]


def _at(day: int, hour: int = 9) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:00:00-05:00"


def _ev(account: str, event_id: str, kind: str, day: int, **fields: Any) -> dict[str, Any]:
    source = fields.pop("source", "demo")
    return {"schema_version": 1, "event_id": event_id, "account": account, "kind": kind,
            "occurred_at": _at(day), "source": source, **fields}


def _dims(**dims: str) -> dict[str, str]:
    return {"entity": "01", **dims}


def demo_events() -> list[dict[str, Any]]:
    """Valid events, in the order a day's feeds would deliver them."""
    com = _dims(payer="ACME-HEALTH", payer_class="COMMERCIAL")
    mcr = _dims(payer="MEDICARE-A", payer_class="MEDICARE")
    return [
        # A1001: ED visit, commercial; paid with contractual and patient responsibility.
        _ev("A1001", "DFT-1001-1", "charge_posted", 2, amount_cents=120_000,
            dimensions=_dims(revenue_code="0450", procedure_code="99284", encounter="V1001"),
            source="hl7"),
        _ev("A1001", "DFT-1001-2", "charge_posted", 2, amount_cents=35_000,
            dimensions=_dims(revenue_code="0300", procedure_code="80053", encounter="V1001"),
            source="hl7"),
        _ev("A1001", "837-1001", "claim_submitted", 3, claim_id="CLM1001",
            total_charge_cents=155_000, dimensions=com, source="x12-837",
            lines=[{"line_id": "1", "charge_cents": 120_000, "procedure_code": "99284",
                    "revenue_code": "0450"},
                   {"line_id": "2", "charge_cents": 35_000, "procedure_code": "80053",
                    "revenue_code": "0300"}]),
        _ev("A1001", "835-TRN9001-CLM1001", "claim_adjudicated", 12, claim_id="CLM1001",
            outcome="processed", status_code="1", payer_claim_control_number="PCN1001",
            charge_cents=155_000, paid_cents=90_000, patient_responsibility_cents=25_000,
            adjustments=[{"group": "CO", "reason": "45", "amount_cents": 40_000},
                         {"group": "PR", "reason": "1", "amount_cents": 15_000},
                         {"group": "PR", "reason": "2", "amount_cents": 10_000}],
            dimensions=com, correlation_id="TRN9001", source="x12-835"),
        _ev("A1001", "PAY-77001", "patient_payment", 20, amount_cents=15_000, channel="portal",
            reference="77001", source="portal"),
        # A1002: inpatient, Medicare; the patient overpays and is refunded.
        _ev("A1002", "DFT-1002-1", "charge_posted", 1, amount_cents=850_000,
            dimensions=_dims(revenue_code="0120", encounter="V1002"), source="hl7"),
        _ev("A1002", "837-1002", "claim_submitted", 5, claim_id="CLM1002",
            total_charge_cents=850_000, dimensions=mcr, source="x12-837"),
        _ev("A1002", "835-TRN9002-CLM1002", "claim_adjudicated", 14, claim_id="CLM1002",
            outcome="processed", status_code="1", payer_claim_control_number="PCN1002",
            charge_cents=850_000, paid_cents=600_000, patient_responsibility_cents=50_000,
            adjustments=[{"group": "CO", "reason": "45", "amount_cents": 200_000},
                         {"group": "PR", "reason": "1", "amount_cents": 50_000}],
            dimensions=mcr, correlation_id="TRN9002", source="x12-835"),
        _ev("A1002", "LBX-5501", "patient_payment", 21, amount_cents=60_000, channel="lockbox",
            reference="5501", source="lockbox"),
        _ev("A1002", "RFD-1002-1", "refund", 23, amount_cents=10_000, to="patient",
            reference="CHK-3301", source="ap"),
        # ... pays the same 250.00 twice; the refund of it is above the refund policy's
        # automatic 100.00, so it waits for an approval (`rcmflow refunds list`).
        _ev("A1002", "LBX-5502", "patient_payment", 24, amount_cents=25_000, channel="lockbox",
            reference="5502", source="lockbox"),
        _ev("A1002", "RFD-1002-2", "refund", 25, amount_cents=25_000, to="patient",
            reference="CHK-3302", source="ap", reason="duplicate lockbox payment"),
        # A1003: self-pay clinic visit; partly paid, the rest conceded and written off.
        _ev("A1003", "DFT-1003-1", "charge_posted", 4, amount_cents=25_000, self_pay=True,
            dimensions=_dims(revenue_code="0510", encounter="V1003"), source="hl7"),
        _ev("A1003", "POS-1003", "patient_payment", 4, amount_cents=20_000, channel="pos",
            source="pos"),
        _ev("A1003", "WO-1003-PC", "write_off", 18, amount_cents=4_600,
            reason="price_concession", source="billing"),
        _ev("A1003", "WO-1003-SB", "write_off", 25, amount_cents=400, reason="small_balance",
            source="billing"),
        # A1004: radiology claim denied (appealable: no entry), later written off as final.
        _ev("A1004", "DFT-1004-1", "charge_posted", 6, amount_cents=98_000,
            dimensions=_dims(revenue_code="0320", encounter="V1004"), source="hl7"),
        _ev("A1004", "837-1004", "claim_submitted", 7, claim_id="CLM1004",
            total_charge_cents=98_000, dimensions=com, source="x12-837"),
        _ev("A1004", "835-TRN9001-CLM1004", "claim_adjudicated", 12, claim_id="CLM1004",
            outcome="denied", status_code="4", payer_claim_control_number="PCN1004",
            charge_cents=98_000, paid_cents=0,
            adjustments=[{"group": "CO", "reason": "50", "amount_cents": 98_000}],
            dimensions=com, correlation_id="TRN9001", source="x12-835"),
        _ev("A1004", "WO-1004-DEN", "write_off", 26, amount_cents=98_000, reason="denial",
            source="billing"),
        # A1005: an unmapped revenue code (suspense + exception); a reversed, re-paid claim.
        _ev("A1005", "DFT-1005-1", "charge_posted", 8, amount_cents=50_000,
            dimensions=_dims(revenue_code="0450", encounter="V1005"), source="hl7"),
        _ev("A1005", "DFT-1005-2", "charge_posted", 8, amount_cents=7_500,
            dimensions=_dims(revenue_code="0999", encounter="V1005"), source="hl7"),
        _ev("A1005", "835-TRN9003-CLM1005", "claim_adjudicated", 15, claim_id="CLM1005",
            outcome="processed", status_code="1", payer_claim_control_number="PCN1005",
            charge_cents=57_500, paid_cents=30_000,
            adjustments=[{"group": "CO", "reason": "45", "amount_cents": 27_500}],
            dimensions=com, correlation_id="TRN9003", source="x12-835"),
        _ev("A1005", "835-TRN9004-CLM1005-R", "claim_adjudicated", 22, claim_id="CLM1005",
            outcome="reversal", status_code="22", payer_claim_control_number="PCN1005",
            charge_cents=-57_500, paid_cents=-30_000,
            adjustments=[{"group": "CO", "reason": "45", "amount_cents": -27_500}],
            dimensions=com, correlation_id="TRN9004", source="x12-835"),
        _ev("A1005", "835-TRN9004-CLM1005", "claim_adjudicated", 22, claim_id="CLM1005",
            outcome="processed", status_code="1", payer_claim_control_number="PCN1005B",
            charge_cents=57_500, paid_cents=35_000,
            adjustments=[{"group": "CO", "reason": "45", "amount_cents": 22_500}],
            dimensions=com, correlation_id="TRN9004", source="x12-835"),
        _ev("A1005", "STAT-1005", "account_status_changed", 27, status="billed",
            source="billing"),
        # Provider level (835 PLB): interest paid with the remittance.
        _ev("provider:1234567890", "835-TRN9003-PLB-L6", "provider_adjustment", 15,
            reason_code="L6", amount_cents=-1_250, correlation_id="TRN9003", source="x12-835"),
    ]


def demo_lines() -> list[tuple[str, bytes]]:
    """(key, value) messages for rcm.events: the valid events, then what real feeds add."""
    events = demo_events()
    lines = [(e["account"], json.dumps(e).encode()) for e in events]
    by_id = {e["event_id"]: e for e in events}
    # Interface engines replay: identical re-sends change nothing.
    for event_id in ("DFT-1001-1", "835-TRN9001-CLM1001", "LBX-5501", "DFT-1004-1"):
        e = by_id[event_id]
        lines.append((e["account"], json.dumps(e).encode()))
    # Same idempotency key, different amount: a conflict for the DLQ, not applied.
    conflict = dict(by_id["DFT-1002-1"], amount_cents=865_000)
    lines.append(("A1002", json.dumps(conflict).encode()))
    # Invalid events: a float amount, an unknown kind, a foreign currency, broken JSON.
    lines.append(("A1003", json.dumps(_ev("A1003", "BAD-1", "charge_posted", 9,
                                          amount_cents=99.5)).encode()))
    lines.append(("A1003", json.dumps(_ev("A1003", "BAD-2", "charge_teleported", 9,
                                          amount_cents=100)).encode()))
    lines.append(("A1001", json.dumps(_ev("A1001", "BAD-3", "patient_payment", 9,
                                          amount_cents=5_000, currency="EUR")).encode()))
    lines.append(("A1001", b'{"event_id": "BAD-4", "account": "A1001", "kind": '))
    return lines
