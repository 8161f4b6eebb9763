"""The audit's bookkeeping on records in the orders a broker can hand them over (no broker:
the orders are made here, deterministically)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rcmflow.audit.ledger import Follower
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Record
from rcmflow.streams.topics import ACCOUNTS, DLQ, POSTINGS
from tests.audit.test_ledger import FORGED_CENTS, FORGED_DIFFERENCES, forged

BUCKETS = ("contractual_adjustments", "gross_charges", "insurance_ar", "interest_income",
           "other_adjustments", "patient_ar", "patient_paid", "payer_overpayments",
           "payer_paid", "refunds", "unapplied_credit", "write_offs")


def head(account: str, version: int, charges: int) -> Record:
    """A head after ``charges`` forged charges of FORGED_CENTS (patient_ar and
    gross_charges)."""
    balances = dict.fromkeys(BUCKETS, 0)
    balances["patient_ar"] = balances["gross_charges"] = FORGED_CENTS * charges
    value = json.dumps({"layout": 2, "account": account, "version": version,
                        "balances": balances}).encode()
    return Record(ACCOUNTS, 0, 0, account.encode(), value, 0)


def delta(account: str, version: int, posting_id: str) -> Record:
    return Record(POSTINGS, 0, 0, account.encode(), forged(account, version, posting_id), 0)


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Follower]:
    made = Follower(KafkaConnection.plaintext("127.0.0.1:1"), tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_a_newer_head_read_before_the_check_waits_for_its_own_deltas(
        follower: Follower) -> None:
    follower.take(delta("A1", 1, "p1"))
    follower.take(head("A1", 1, charges=1))
    follower.snapshot({0: 1})  # rcm.postings ends once head 1 was read: p1 is below
    follower.take(head("A1", 2, charges=2))  # written after p2, which is not read yet
    assert follower.ready({0: 1}) == [] and follower.mismatches == 0
    follower.take(delta("A1", 2, "p2"))
    follower.snapshot({0: 2})
    assert follower.ready({0: 2}) == []
    assert (follower.checked, follower.mismatches) == (1, 0)


def test_a_delta_newer_than_the_head_is_held_until_the_head(follower: Follower) -> None:
    follower.take(head("A1", 1, charges=1))
    follower.take(delta("A1", 1, "p1"))
    follower.take(delta("A1", 2, "p2"))  # its head is not written yet
    follower.snapshot({0: 2})
    assert follower.ready({0: 2}) == [] and follower.sums.in_flight == 1
    follower.take(head("A1", 2, charges=2))
    follower.snapshot({0: 2})
    assert follower.ready({0: 2}) == []
    assert (follower.mismatches, follower.sums.in_flight) == (0, 0)


def test_one_mismatch_one_record_with_the_same_id_whoever_finds_it(
        tmp_path: Path) -> None:
    ids = []
    for run in ("first", "second"):
        follower = Follower(KafkaConnection.plaintext("127.0.0.1:1"), tmp_path / run)
        try:
            follower.take(head("A1", 1, charges=1))
            follower.take(delta("A1", 1, "p1"))
            follower.take(delta("A1", 1, "forged"))
            follower.take(delta("A1", 1, "forged"))  # re-sent: the same delta
            follower.snapshot({0: 3})
            records = follower.ready({0: 3})
            follower.take(head("A1", 1, charges=1))  # the head written again: same mismatch
            follower.snapshot({0: 3})
            assert follower.ready({0: 3}) == []
            assert follower.mismatches == 1 and len(records) == 1
            topic, key, value = records[0]
            doc = json.loads(value)
            assert (topic, key, doc["reason_code"]) == (DLQ, b"A1", "ledger_mismatch")
            assert doc["context"]["differences_cents"] == FORGED_DIFFERENCES
            ids.append(doc["dlq_id"])
        finally:
            follower.close()
    assert ids[0] == ids[1]
