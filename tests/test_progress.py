"""Progress of long work: a log (not a terminal) gets periodic plain lines and a final one."""

from __future__ import annotations

import io

from rich.console import Console

from rcmflow.runtime.progress import progress


def test_a_log_gets_plain_lines_with_the_share_done_and_a_final_line() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    with progress(console, "reading day.csv", total=4_000_000, unit="bytes",
                  every_s=0.0) as advance:
        advance(1_000_000)
        advance(3_000_000)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("reading day.csv: 1.0 MB of 4.0 MB (25%)")
    assert lines[-1].startswith("reading day.csv: done, 4.0 MB of 4.0 MB (100%)")


def test_short_work_prints_nothing_in_a_log() -> None:
    buf = io.StringIO()
    with progress(Console(file=buf, force_terminal=False), "listing", every_s=60.0) as advance:
        advance(10)
    assert buf.getvalue() == ""
