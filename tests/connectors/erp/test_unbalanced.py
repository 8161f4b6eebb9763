"""An unbalanced delta on rcm.postings never reaches the ERP: the connector posts only what
validates as a PostingDelta (balanced to the cent), and parks the rest in rcm.postings.dlq.

rcm.postings is a topic anyone with WRITE can append to; the ERP's books must not take a
one-sided entry from it, however it got there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rcmflow.streams.postings import PostingDelta
from tests.conftest import Broker
from tests.connectors.erp.feed import dlq_records, publish_deltas, real_deltas, run_in_process
from tests.connectors.erp.test_csv import assert_journal_equals, journal


def _one_cent_off(value: bytes) -> bytes:
    """A real delta with its first debit one cent larger, under a posting id of its own."""
    doc = json.loads(value)
    debit = next(line for line in doc["lines"] if line["debit_cents"] > 0)
    debit["debit_cents"] += 1
    doc["posting_id"] += "-tampered"
    return json.dumps(doc).encode()


@pytest.mark.broker
def test_a_delta_one_cent_off_is_parked_not_posted(broker: Broker, tmp_path: Path) -> None:
    items = real_deltas(20)
    key, value = items[7]
    tampered = _one_cent_off(value)
    items.insert(12, (key, tampered))
    publish_deltas(broker, items)
    progress = run_in_process(journal(tmp_path), broker, batch_max=10)
    good = [PostingDelta.model_validate_json(v) for _, v in items if v != tampered]
    assert (progress.posted, progress.invalid) == (len(good), 1)
    assert_journal_equals(tmp_path, good)  # every entry balanced; the tampered one absent
    (parked,) = dlq_records(broker)
    assert parked["reason_code"] == "invalid_delta" and "unbalanced" in parked["reason"]
    assert json.loads(parked["payload"])["posting_id"].endswith("-tampered")
