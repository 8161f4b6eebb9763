"""A posting delta is balanced or it is not one: the model refuses the rest.

The ERP connector trusts this validator for what it reads from rcm.postings (it posts what
validates), so it must hold on its own, not only behind the posting rules' own checks."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from rcmflow.streams.postings import PostingDelta

amounts = st.integers(min_value=1, max_value=10**12)


def _delta(debits: list[int], credits: list[int]) -> dict[str, Any]:
    line = {"gl_account": "1200", "bucket": "patient_ar", "memo": "charge", "entity": "01"}
    lines = ([line | {"debit_cents": d, "credit_cents": 0} for d in debits]
             + [line | {"gl_account": "4000", "debit_cents": 0, "credit_cents": c}
                for c in credits])
    return {"posting_id": "p-1", "account": "A1", "entity": "01",
            "effective_date": date(2026, 11, 2).isoformat(), "currency": "USD",
            "lines": lines, "event_id": "E1", "event_kind": "charge_posted",
            "correlation_id": None, "account_version": 1, "coa_version": "2026.1"}


@given(st.lists(amounts, min_size=1, max_size=6), st.lists(amounts, min_size=1, max_size=6))
def test_a_delta_is_accepted_exactly_when_its_debits_equal_its_credits(
        debits: list[int], credits: list[int]) -> None:
    doc = _delta(debits, credits)
    if sum(debits) == sum(credits):
        assert PostingDelta.model_validate(doc).total_cents == sum(debits)
    else:
        with pytest.raises(ValidationError, match="unbalanced posting"):
            PostingDelta.model_validate_json(json.dumps(doc))


@given(st.lists(amounts, min_size=1, max_size=6))
def test_one_cent_off_is_refused(debits: list[int]) -> None:
    credits = [*debits[:-1], debits[-1] + 1]
    with pytest.raises(ValidationError, match="unbalanced posting"):
        PostingDelta.model_validate(_delta(debits, credits))


@pytest.mark.parametrize("debit, credit", [(0, 0), (5, 5)])
def test_a_line_is_a_debit_or_a_credit_not_both_nor_zero(debit: int, credit: int) -> None:
    doc = _delta([10], [10])
    doc["lines"].append(doc["lines"][0] | {"debit_cents": debit, "credit_cents": credit})
    with pytest.raises(ValidationError, match="either a debit or a credit"):
        PostingDelta.model_validate(doc)
