"""Progress of long work (a large file, a reconcile, a listing): one way for every command.

On a terminal, a rich progress bar (transient: it leaves the report lines clean). Elsewhere
(CI, a service log, a pipe) one plain line every ``every_s`` seconds, and one at the end if
the work took longer than that, so a log shows that something is moving and how far it got.
Work shorter than ``every_s`` prints nothing in a log.

    with progress(console, "reading day.csv", total=size, unit="bytes") as advance:
        for chunk in ...:
            advance(len(chunk))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["progress", "Advance", "LOG_EVERY_S"]

#: Seconds between two log lines when the console is not a terminal.
LOG_EVERY_S = 5.0

Advance = Callable[[int], None]


@contextmanager
def progress(console: Console, label: str, *, total: int | None = None,
             unit: str = "records", every_s: float = LOG_EVERY_S) -> Iterator[Advance]:
    """Report ``advance(n)`` calls: a bar on a terminal, periodic log lines elsewhere.

    ``unit="bytes"`` shows sizes (MB) instead of counts; ``total=None`` shows a count only.
    """
    if console.is_terminal:
        amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
        with Progress(TextColumn("{task.description}"), BarColumn(), amount,
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)
        return
    started = time.monotonic()
    count, next_line = 0, started + every_s

    def advance(n: int) -> None:
        nonlocal count, next_line
        count += n
        now = time.monotonic()
        if now >= next_line:
            next_line = now + every_s
            _log(console, label, count, total, unit, now - started)

    yield advance
    elapsed = time.monotonic() - started
    if elapsed >= every_s:
        _log(console, label, count, total, unit, elapsed, done=True)


def _log(console: Console, label: str, count: int, total: int | None, unit: str,
         elapsed: float, *, done: bool = False) -> None:
    amount = _amount(count, unit)
    if total:
        amount += f" of {_amount(total, unit)} ({100 * count // total}%)"
    console.print(f"{label}: {'done, ' if done else ''}{amount}, {elapsed:.0f} s",
                  soft_wrap=True, highlight=False, markup=False)


def _amount(n: int, unit: str) -> str:
    if unit == "bytes":
        return f"{n / 1_000_000:.1f} MB"
    return f"{n:,} {unit}"
