"""`rcmflow ingest x12 FILE...`: read, check and publish X12 files, one report line per set."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from rcmflow.settings import Settings
from rcmflow.streams.topics import DLQ

from .ingest import FileOutcome, X12Limits, process_x12
from .publishing import (
    EXIT_BROKER,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_REJECTED,
    BrokerFailed,
    publish_records,
)
from .reader import Problem

__all__ = ["ingest_x12_files", "limits_from", "report_x12", "process_x12_path"]

#: Problems printed per set; all of them are in the DLQ record (up to 100) and .reason file.
PROBLEMS_SHOWN_MAX = 10


def limits_from(settings: Settings) -> X12Limits:
    return X12Limits(segments_max=settings.x12_segments_max,
                     guide_validation=settings.x12_guide_validation,
                     dlq_payload_bytes_max=settings.dlq_payload_bytes_max)


def process_x12_path(path: Path, settings: Settings, console: Console) -> FileOutcome:
    with console.status(f"reading {path.name}"):
        return process_x12(path.read_bytes(), origin=f"file:{path}", limits=limits_from(settings))


def ingest_x12_files(settings: Settings, servers: list[str], files: list[Path], *,
                     console: Console) -> int:
    """Publish every file; the exit code says whether anything was parked."""
    too_big = [f for f in files if f.stat().st_size > settings.x12_file_bytes_max]
    if too_big:
        _say(console, f"[red]refused (over {settings.x12_file_bytes_max} bytes, "
                      f"RCMFLOW_X12_FILE_BYTES_MAX):[/red] {', '.join(map(str, too_big))}")
        return EXIT_REFUSED
    code = EXIT_OK
    limits = limits_from(settings)
    for path in files:
        outcome = process_x12_path(path, settings, console)
        try:
            publish_records(servers, list(outcome.records(limits)), label=path.name,
                            console=console)
        except BrokerFailed as exc:
            _say(console, f"[red]{path}: the broker did not acknowledge ({exc}); run the same "
                          "command again (re-sending is safe)[/red]")
            return EXIT_BROKER
        report_x12(path, outcome, console)
        if not outcome.ok():
            code = EXIT_REJECTED
    return code


def report_x12(path: Path, outcome: FileOutcome, console: Console) -> None:
    """One line per transaction set: control numbers, counts and reasons (no patient data)."""
    if outcome.rejected:
        _say(console, f"{path}: [red]rejected[/red], nothing applied (record in {DLQ})")
        _problems(console, outcome.problems, "  ")
        return
    applied = sum(1 for s in outcome.sets if not s.parked)
    _say(console, f"{path}: {applied} of {_count(len(outcome.sets), 'transaction set')} "
                  f"applied, {_count(len(outcome.events), 'event')}")
    for s in outcome.sets:
        what = _count(s.claims, "claim") + (
            f", {_count(s.provider_adjustments, 'PLB amount')}" if s.provider_adjustments else "")
        notes = f"; {_count(len(s.warnings), 'warning')}" if s.warnings else ""
        if s.parked:
            _say(console, f"  ST {s.st02} ({s.st01}, trace {s.trace or '-'}): "
                          f"[yellow]parked in {DLQ}[/yellow] ({what}{notes})")
            _problems(console, s.problems, "    ")
        else:
            _say(console, f"  ST {s.st02} ({s.st01}, trace {s.trace or '-'}): {what} -> "
                          f"{_count(len(s.events), 'event')}{notes}")
    for w in outcome.warnings:
        _say(console, f"  [dim]{w}[/dim]")


def _say(console: Console, text: str) -> None:
    """One report line: never wrapped mid-path (logs and terminals alike), no auto-colour."""
    console.print(text, soft_wrap=True, highlight=False)


def _problems(console: Console, problems: list[Problem], indent: str) -> None:
    for p in problems[:PROBLEMS_SHOWN_MAX]:
        _say(console, f"{indent}{p.code}: {p.detail}")
    if len(problems) > PROBLEMS_SHOWN_MAX:
        _say(console, f"{indent}... {len(problems) - PROBLEMS_SHOWN_MAX} more (rcmflow dlq show)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
