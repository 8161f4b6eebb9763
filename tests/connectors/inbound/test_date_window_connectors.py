"""Plausible dates at every connector (pure, no broker): a payment dated 0001-01-01 or an
835 paid on 9999-12-31 is refused where it enters, with the date, the field, the window and
the settings in the reason; the earliest date itself is taken, the day before is not.
(HL7: tests/connectors/inbound/hl7/test_hl7_mapping.py; the worker:
tests/streams/test_date_window.py.)
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from rcmflow.connectors.inbound.fhir.mapping import Mapped, MappingOptions, Refused, map_resource
from rcmflow.connectors.inbound.fhir.values import dumps, read_json
from rcmflow.connectors.inbound.payments.ingest import process_payments
from rcmflow.connectors.inbound.x12.ingest import X12Limits, process_x12
from rcmflow.streams.date_window import DATE_OUT_OF_RANGE, DateWindow
from tests.connectors.inbound.x12.x12_build import (
    ClaimSpec,
    claim_segments,
    envelope,
    remit_segments,
)

WINDOW = DateWindow(date(1990, 1, 1), 366)
LATEST = WINDOW.latest()
AFTER = LATEST + timedelta(days=1)
#: (date, taken?) at each edge of the window and far past both.
EDGES = [(date(1, 1, 1), False), (date(1989, 12, 31), False), (date(1990, 1, 1), True),
         (LATEST, True), (AFTER, False), (date(9999, 12, 31), False)]


def _says_why(text: str, day: date, field: str) -> None:
    assert f"{field} {day.isoformat()} is " in text, text
    for part in ("1990-01-01", LATEST.isoformat(), "RCMFLOW_DATE_EARLIEST",
                 "RCMFLOW_DATE_FUTURE_DAYS"):
        assert part in text, (part, text)


@pytest.mark.parametrize("day,taken", EDGES)
def test_an_835_paid_outside_the_window_is_parked(day: date, taken: bool) -> None:
    data = envelope(remit_segments([ClaimSpec("A1", 10_000, 8_000, cas=[("CO", "45", 2_000)])],
                                   paid_on=day.isoformat().replace("-", "")))
    (tset,) = process_x12(data, origin="file:r.835",
                          limits=X12Limits(guide_validation=False, date_window=WINDOW)).sets
    if taken:
        assert not tset.parked and len(tset.events) == 1, tset.problems
        return
    assert tset.parked and not tset.events
    (problem,) = tset.problems
    assert problem.reason_code == DATE_OUT_OF_RANGE
    _says_why(problem.detail, day, "835 payment date (BPR16, else DTM*405, else GS04)")


def test_an_837_created_outside_the_window_is_parked() -> None:
    segments = claim_segments([("A1", 5_000, [("99213", 5_000)])])
    for seg in segments:
        if seg[0] == "BHT":
            seg[4] = "99991231"
    (tset,) = process_x12(envelope(segments, functional_id="HC", version="005010X222A1"),
                          origin="file:c.837", limits=X12Limits(date_window=WINDOW)).sets
    assert tset.parked and [p.reason_code for p in tset.problems] == [DATE_OUT_OF_RANGE]
    _says_why(tset.problems[0].detail, date(9999, 12, 31), "837 creation date (BHT04)")


def test_payment_rows_outside_the_window_are_rejected_row_by_row() -> None:
    rows = "".join(f"payment,A{n},10.00,{day.isoformat()},REF{n}\n"
                   for n, (day, _) in enumerate(EDGES, start=2))
    out = process_payments(("type,account,amount,date,reference\n" + rows).encode(),
                           name="day.csv", origin="file:day.csv", date_window=WINDOW)
    taken = [n for n, (_, ok) in enumerate(EDGES, start=2) if ok]
    assert [item.number for item, _ in out.events] == taken
    assert [(r.row, r.rejection.reason_code) for r in out.rejected] == [
        (n, DATE_OUT_OF_RANGE) for n, (_, ok) in enumerate(EDGES, start=2) if not ok]
    first = out.rejected[0]
    assert first.rejection.detail.startswith("row 2: ")
    _says_why(first.rejection.detail, date(1, 1, 1), "date")


def test_the_payments_default_window_refuses_year_one_and_9999() -> None:
    """Called without a window (as before this check), the settings' defaults hold."""
    rows = "payment,A1,1.00,0001-01-01,R1\npayment,A2,1.00,9999-12-31,R2\n"
    out = process_payments(("type,account,amount,date,reference\n" + rows).encode(),
                           name="d.csv", origin="file:d.csv")
    assert not out.events
    assert [r.rejection.reason_code for r in out.rejected] == [DATE_OUT_OF_RANGE] * 2


CHARGE: dict[str, Any] = {
    "resourceType": "ChargeItem", "id": "c1", "status": "billable",
    "code": {"coding": [{"system": "https://www.nubc.org/CodeSystem/RevenueCodes",
                         "code": "0450"}]},
    "subject": {"reference": "Patient/p1"}, "account": [{"reference": "Account/F1"}],
    "occurrenceDateTime": "2026-03-01T10:00:00Z", "quantity": {"value": 1},
    "priceOverride": {"value": 125.5, "currency": "USD"}}
PAYMENT: dict[str, Any] = {
    "resourceType": "PaymentReconciliation", "id": "p1", "status": "active",
    "created": "2026-03-02", "paymentDate": "2026-03-02", "outcome": "complete",
    "paymentAmount": {"value": 40, "currency": "USD"},
    "detail": [{"type": {"coding": [{"code": "payment"}]},
                "request": {"reference": "Account/F1"},
                "amount": {"value": 40.0, "currency": "USD"}}]}


@pytest.mark.parametrize("day,taken", EDGES)
def test_a_fhir_charge_dated_outside_the_window_is_rejected(day: date, taken: bool) -> None:
    doc = copy.deepcopy(CHARGE)
    doc["occurrenceDateTime"] = datetime.combine(day, datetime.min.time(), UTC).isoformat()
    result = map_resource(read_json(dumps(doc)), full_url=None,
                          options=MappingOptions(date_window=WINDOW))
    if taken:
        assert isinstance(result, Mapped) and len(result.events) == 1, result
        return
    assert isinstance(result, Refused) and result.rejection.reason_code == DATE_OUT_OF_RANGE
    assert result.rejection.severity == "error" and result.account == "F1"
    _says_why(result.rejection.detail, day, "the charge's date (occurrence[DateTime|Period.start], "
              "else enteredDate)")


def test_a_fhir_payment_dated_outside_the_window_is_rejected() -> None:
    doc = copy.deepcopy(PAYMENT)
    doc["paymentDate"] = "9999-12-31"
    result = map_resource(read_json(dumps(doc)), full_url=None,
                          options=MappingOptions(date_window=WINDOW))
    assert isinstance(result, Mapped) and not result.events
    (refused,) = result.refused
    (problem,) = refused.rejection.problems
    assert (problem.reason_code, problem.place) == (DATE_OUT_OF_RANGE, "detail[0]")
    _says_why(problem.detail, date(9999, 12, 31), "paymentDate")
