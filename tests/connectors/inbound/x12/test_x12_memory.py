"""Memory follows the work, not the transaction set: one ST/SE of thousands of claims (as a
large payer sends it) is checked and published a claim at a time, so the Python memory it
takes while its records are made does not grow with its claims.

Measured with tracemalloc over ``X12File.records()`` (every allocation the records need,
Python's own accounting, not the machine's RSS). Before claim-by-claim reading, a set of
12,000 claims peaked at ~22 MB applied, ~15 MB parked (its segments, claims and event ids
were held whole) and grew on with the set (412 MB RSS at 200,000 claims); now ~6 MB applied,
~9 MB parked (the bounded part window, a 1 MiB read chunk, the DLQ payload), the same at any
size (bench/RESULTS.md, "Ingest memory per file size", for RSS up to 200,000 claims in one
set).
"""

from __future__ import annotations

import json
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rcmflow.connectors.inbound.x12.ingest import X12File, X12Limits
from rcmflow.streams.topics import DLQ, EVENTS, RAW_X12
from tests.connectors.inbound.x12.x12_build import ClaimSpec, envelope, remit_segments

CLAIMS = 16_000
#: Peak Python allocations allowed while one set's records are made: the held-whole reading
#: took more here (~30 MB applied, ~20 MB parked), and more with every claim.
PEAK_BYTES_MAX = 12 * 1024 * 1024


@pytest.mark.parametrize("balanced", [True, False], ids=["applied", "every-claim-parked"])
def test_one_set_of_thousands_of_claims_is_read_in_bounded_memory(tmp_path: Path,
                                                                   balanced: bool) -> None:
    claims = [ClaimSpec(f"A{n:07d}", 12500, 10000, pcn=f"P{n:09d}",
                        cas=[("CO", "45", 2500 if balanced else 2400)]) for n in range(CLAIMS)]
    path = tmp_path / "one-set.835"
    path.write_bytes(envelope(remit_segments(claims, trn02="EFT-ONE")))
    x12 = X12File(path, X12Limits(guide_validation=False))
    topics: Counter[str] = Counter()
    tracemalloc.start()
    try:
        for topic, _, value in x12.records():
            topics[topic] += 1
            if topic == DLQ:
                dlq = json.loads(value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if balanced:
        assert x12.ok() and topics[EVENTS] == CLAIMS and not topics[DLQ]
    else:  # still parked whole, every problem counted, the first ones listed
        assert topics[DLQ] == 1 and not topics[EVENTS]
        assert dlq["context"]["problems_total"] == CLAIMS
        assert len(dlq["context"]["problems"]) == 100
    assert topics[RAW_X12] >= 2  # the set's text is in parts
    assert peak < PEAK_BYTES_MAX, f"{peak / 1e6:.1f} MB for one set of {CLAIMS} claims"


def test_a_file_changed_between_the_check_and_the_publish_is_a_read_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sets are published claim by claim after the check: a claim that changed since (a file
    rewritten while it was ingested) stops the file as unreadable (what was sent stays,
    re-sending is safe) rather than publishing what was never checked."""
    path = tmp_path / "changing.835"
    path.write_bytes(envelope(remit_segments([ClaimSpec("A1", 100, 100)], trn02="EFT-1")))
    x12 = X12File(path, X12Limits(guide_validation=False))
    check = x12._check

    def check_then_rewrite(*args: Any) -> Any:
        checked = check(*args)
        path.write_bytes(path.read_bytes().replace(b"CLP*A1*", b"CLP*A 1*"))
        return checked

    monkeypatch.setattr(x12, "_check", check_then_rewrite)
    with pytest.raises(OSError, match="changed since it was checked"):
        list(x12.records())
