"""The commands' contract without a broker: documented exit codes, limits, plain errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rcmflow.connectors.inbound.x12 import X12Limits, process_x12
from rcmflow.streams.topics import RAW_X12
from tests.connectors.inbound.x12.x12_build import ClaimSpec, envelope, remit_segments

#: Nothing listens here: a command that reaches for the broker fails at once.
NO_BROKER = "127.0.0.1:9"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args],
                          env=base | {"RCMFLOW_BROKER": NO_BROKER} | env,
                          capture_output=True, text=True, timeout=120)


def _remit(tmp_path: Path) -> Path:
    path = tmp_path / "r.835"
    path.write_bytes(envelope(remit_segments([ClaimSpec("A1", 100, 100)])))
    return path


def test_help_documents_the_exit_codes() -> None:
    for command in (("ingest", "x12"), ("ingest", "payments")):
        shown = _run(*command, "--help")
        assert shown.returncode == 0
        for code in ("0 ", "1 ", "2 ", "3 "):
            assert f"  {code}" in shown.stdout, (command, code)
    assert "rejected/" in _run("watch", "--help").stdout


def test_a_file_over_the_size_limit_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "big.835"
    path.write_bytes(b"ISA" + b"*" * 5000)
    done = _run("ingest", "x12", str(path), RCMFLOW_X12_FILE_BYTES_MAX="1024")
    assert done.returncode == 2
    assert "refused (over 1024 bytes" in done.stderr


def test_an_unreachable_broker_is_exit_3_and_says_re_running_is_safe(tmp_path: Path) -> None:
    done = _run("ingest", "x12", str(_remit(tmp_path)))
    assert done.returncode == 3, done.stderr
    assert "run the same command again (re-sending is safe)" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_segment_bound_is_per_set_a_larger_set_is_parked_the_others_go() -> None:
    """The set is the unit of work (memory follows the largest set), so a file of many sets
    may hold more segments than the bound; only a set over it is parked."""
    claims = [ClaimSpec(f"A{n}", 100, 100) for n in range(20)]
    big = remit_segments(claims)  # ~100 segments
    data = envelope(big, remit_segments(claims[:2], trn02="EFT-2"),  # ~14 segments each
                    remit_segments(claims[2:4], trn02="EFT-3"))
    outcome = process_x12(data, origin="file:x", limits=X12Limits(segments_max=30))
    assert outcome.problems == []
    first, *rest = outcome.sets
    assert first.parked and [p.reason_code for p in first.problems][0] == "x12_too_many_segments"
    assert "split the transaction set" in first.problems[0].detail
    assert [s.parked for s in rest] == [False, False]
    kept = [json.loads(value)["segments"] for topic, _, value in outcome.records(X12Limits())
            if topic == RAW_X12]
    assert sum(len(text.splitlines()) for text in kept) < 30 + 2 * 30


def test_an_unknown_transaction_set_is_parked_not_guessed() -> None:
    segs = [["ST", "270", "0001"], ["BHT", "0022", "13"], ["SE", "", "0001"]]
    (tset,) = process_x12(envelope(segs, functional_id="HS", version="005010X279A1"),
                          origin="file:x", limits=X12Limits()).sets
    assert tset.parked
    assert [p.reason_code for p in tset.problems] == ["x12_unsupported_set"]


def test_a_huge_set_keeps_every_published_record_bounded() -> None:
    data = envelope(remit_segments([ClaimSpec(f"A{n}", 100, 100) for n in range(3000)],
                                   bpr02_cents=1))
    limits = X12Limits(guide_validation=False, dlq_payload_bytes_max=64 * 1024)
    records = list(process_x12(data, origin="file:x", limits=limits).records(limits))
    assert len(data) > 2 * 64 * 1024
    assert {t for t, _, _ in records} == {"rcm.raw.x12", "rcm.dlq"}
    assert all(len(v) < 2 * 64 * 1024 for _, _, v in records)
