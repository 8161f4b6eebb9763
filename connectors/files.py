"""File ingest shared by `rcmflow ingest x12|payments|fhir` and `watch`: size check, publish
with acks=all behind a progress bar, report, exit code.

Every record is keyed and deterministic, so publishing a file again after a broker failure is
safe: events already applied are replays, and DLQ records have deterministic ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

from aiokafka.errors import KafkaError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from rcmflow.kafka_connection import KafkaConnection
from rcmflow.kafka_io import Outgoing, RecordTooLarge, check_record_sizes, publish

__all__ = ["ingest_files", "publish_records", "say", "BrokerFailed", "Record", "EXIT_OK",
           "EXIT_REJECTED", "EXIT_REFUSED", "EXIT_BROKER"]

EXIT_OK = 0  # everything went through
EXIT_REJECTED = 1  # published, but some sets / rows / files went to rcm.dlq
EXIT_REFUSED = 2  # refused before publishing: too large, unreadable path, bad settings
EXIT_BROKER = 3  # the broker did not acknowledge: re-run the same command, it is safe


#: One record shape for every connector: (topic, key, value[, headers]).
Record = Outgoing


class _Outcome(Protocol):
    def ok(self) -> bool: ...


Outcome = TypeVar("Outcome", bound=_Outcome)


class BrokerFailed(RuntimeError):
    """The broker did not acknowledge every record (nothing about the input is wrong)."""


def publish_records(kafka: KafkaConnection, records: list[Record],
                    *, label: str, console: Console) -> int:
    """Send ``records`` with acks=all; returns how many were acknowledged. RecordTooLarge,
    before anything is sent, when a record is larger than its topic takes."""
    check_record_sizes(records)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"publishing {label}", total=len(records))
        try:
            return asyncio.run(publish(kafka, records,
                                       on_acked=lambda n: progress.advance(task, n)))
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerFailed(f"{type(exc).__name__}: {exc}") from exc


def ingest_files(
    files: list[Path], *, kafka: KafkaConnection, console: Console, bytes_max: int,
    bytes_setting: str, read: Callable[[Path], Outcome],
    records: Callable[[Outcome], Iterable[Record]],
    report: Callable[[Path, Outcome, Console], None],
) -> int:
    """Read, publish and report each file in turn; the exit code of the whole run.

    Files over ``bytes_max`` refuse the run before anything is published (split them); a
    broker failure stops it (what was published stays, re-running is safe).
    """
    too_big = [f for f in files if f.stat().st_size > bytes_max]
    if too_big:
        say(console, f"[red]refused (over {bytes_max} bytes, {bytes_setting}; split them):"
                     f"[/red] {escape(', '.join(map(str, too_big)))}")
        return EXIT_REFUSED
    code = EXIT_OK
    for path in files:
        with console.status(f"reading {escape(path.name)}"):
            outcome = read(path)
        try:
            publish_records(kafka, list(records(outcome)), label=path.name, console=console)
        except RecordTooLarge as exc:
            say(console, f"[red]{escape(str(path))}: refused, nothing published: "
                         f"{escape(str(exc))}; split the file[/red]")
            return EXIT_REFUSED
        except BrokerFailed as exc:
            say(console, f"[red]{escape(str(path))}: the broker did not acknowledge "
                         f"({escape(str(exc))}); run the same command again (re-sending is "
                         "safe)[/red]")
            return EXIT_BROKER
        report(path, outcome, console)
        if not outcome.ok():
            code = EXIT_REJECTED
    return code


def say(console: Console, text: str) -> None:
    """One report line: never wrapped mid-path (logs and terminals alike), no auto-colour."""
    console.print(text, soft_wrap=True, highlight=False)
