"""bench.growth's smallest configuration: an event's cost does not grow with the account.

Layout 2 writes an account's head and only the items an event names. If it regressed to
whole-account snapshots (layout 1), the bytes an event writes would grow with the items the
account holds (~280 B each here): this fails then.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.growth import FLAT_TARGET, history_point
from bench.report import GROWTH_HEADING, render_growth_section
from rcmflow.streams.chart import load_chart

SMALL, LARGE = 10, 1_000


@pytest.mark.parametrize("backend", ["rocksdb", "memory"])
def test_event_cost_is_flat_in_account_history(backend: str, tmp_path: Path) -> None:
    chart = load_chart(None)
    small = history_point(SMALL, backend, 20, tmp_path, chart, items_max=LARGE + 500)
    large = history_point(LARGE, backend, 20, tmp_path, chart, items_max=LARGE + 500)

    assert large["items_min"] >= LARGE, "the account was not filled to its history"
    assert large["bytes_per_event"] <= FLAT_TARGET * small["bytes_per_event"], (small, large)
    # Encoding and writing do not grow with it either (CPU time: the OS's scheduling of
    # other processes does not count; a generous bound, whole snapshots cost ~4x here).
    assert large["cpu_us_median"] <= 2 * small["cpu_us_median"], (small, large)
    # The measurement sees the difference: the account as one record grows with it.
    assert large["layout1_bytes_per_event"] > 20 * large["bytes_per_event"]

    raw = {"started_at": "2026-01-01T00:00:00+00:00", "command": "test", "wall_s": 1.0,
           "machine": {"cores": 2, "cpu_model": "cpu", "ram_gib": 1, "python": "3",
                       "platform": "linux", "rocksdict": "0", "rcmflow_commit": "x"},
           "load_before": [0, 0, 0], "load_after": [0, 0, 0],
           "history": {"flat_range": [SMALL, LARGE], "flat_target": FLAT_TARGET,
                       "account_items_max": LARGE + 500, "rounds": 20,
                       "points": [small, large],
                       "ratios": {backend: {k: 1.0 for k in (
                           "us_median", "us_p99", "bytes_per_event", "us_median_all",
                           "bytes_per_event_all", "layout1_bytes_per_event")}}}}
    text = "\n".join(render_growth_section(raw, "x.json"))
    assert text.startswith(GROWTH_HEADING) and f"| {backend} | {large['items_min']:,}" in text
