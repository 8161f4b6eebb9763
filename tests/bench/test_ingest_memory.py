"""bench.ingest_memory at its smallest: the real CLI ingests each kind of file against the
embedded broker and the bench records its peak memory, time and counts."""

from __future__ import annotations

import json
from pathlib import Path

from bench.ingest_memory import KINDS, SECTION, main, markdown


def test_the_bench_measures_each_kind_of_file_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    assert main(["--max-mb", "0.02", "--out", str(out), "--tmp", str(tmp_path)]) == 0
    raw = json.loads(out.read_text())
    assert [r["kind"] for r in raw["rows"]] == list(KINDS)
    for row in raw["rows"]:
        assert row["exit"] == 0, row["last_lines"]
        assert row["count"] > 10 and 0 < row["bytes"] <= 0.03 * 1024 * 1024
        assert 20 < row["peak_rss_mb"] < 1_000 and row["seconds"] > 0
    text = markdown(raw, "run.json")
    assert text.startswith(SECTION) and "| payments | 0.02 |" in text
