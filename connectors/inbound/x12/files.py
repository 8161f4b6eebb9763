"""`rcmflow ingest x12 FILE...`: read, check and publish X12 files, one report line per set."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from rcmflow.connectors.inbound.files import ingest_files, say
from rcmflow.connectors.inbound.x12.ingest import FileOutcome, X12File, X12Limits, process_x12
from rcmflow.connectors.inbound.x12.reader import Problem
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.settings import Settings
from rcmflow.streams.date_window import DateWindow
from rcmflow.streams.topics import DLQ

__all__ = ["ingest_x12_files", "limits_from", "report_x12", "process_x12_path"]

#: Problems printed per set; all of them are in the DLQ record (up to 100) and .reason file.
PROBLEMS_SHOWN_MAX = 10


def limits_from(settings: Settings) -> X12Limits:
    return X12Limits(segments_max=settings.x12_segments_max,
                     guide_validation=settings.x12_guide_validation,
                     dlq_payload_bytes_max=settings.dlq_payload_bytes_max,
                     guide_bytes_max=settings.x12_guide_bytes_max,
                     date_window=DateWindow.from_settings(settings))


def process_x12_path(path: Path, settings: Settings, console: Console) -> FileOutcome:
    with console.status(f"reading {path.name}"):
        return process_x12(path.read_bytes(), origin=f"file:{path}", limits=limits_from(settings))


def ingest_x12_files(settings: Settings, kafka: KafkaConnection, files: list[Path], *,
                     console: Console) -> ExitCode:
    """Publish every file; the exit code says whether anything was parked."""
    limits = limits_from(settings)
    return ingest_files(
        files, kafka=kafka, console=console, bytes_max=settings.x12_file_bytes_max,
        bytes_setting="RCMFLOW_X12_FILE_BYTES_MAX",
        open_file=lambda path: X12File(path, limits),
        report=lambda path, x12, console: report_x12(path, x12.outcome, console))


def report_x12(path: Path, outcome: FileOutcome, console: Console) -> None:
    """One line per transaction set: control numbers, counts and reasons (no patient data)."""
    if outcome.rejected:
        say(console, f"{path}: [red]rejected[/red], nothing applied (record in {DLQ})")
        _problems(console, outcome.problems, "  ")
        return
    applied = sum(1 for s in outcome.sets if not s.parked)
    say(console, f"{path}: {applied} of {_count(len(outcome.sets), 'transaction set')} "
                  f"applied, {_count(outcome.event_count, 'event')}")
    for s in outcome.sets:
        what = _count(s.claims, "claim") + (
            f", {_count(s.provider_adjustments, 'PLB amount')}" if s.provider_adjustments else "")
        warned = max(s.warnings_total, len(s.warnings))
        notes = f"; {_count(warned, 'warning')}" if warned else ""
        if s.parked:
            say(console, f"  ST {s.st02} ({s.st01}, trace {s.trace or '-'}): "
                          f"[yellow]parked in {DLQ}[/yellow] ({what}{notes})")
            _problems(console, s.problems, "    ", s.problems_total)
        else:
            say(console, f"  ST {s.st02} ({s.st01}, trace {s.trace or '-'}): {what} -> "
                          f"{_count(s.event_count, 'event')}{notes}")
    for w in outcome.warnings:
        say(console, f"  [dim]{w}[/dim]")


def _problems(console: Console, problems: list[Problem], indent: str,
              total: int | None = None) -> None:
    for p in problems[:PROBLEMS_SHOWN_MAX]:
        say(console, f"{indent}{p.reason_code}: {p.detail}")
    total = max(total or 0, len(problems))
    if total > PROBLEMS_SHOWN_MAX:
        say(console, f"{indent}... {total - PROBLEMS_SHOWN_MAX} more (rcmflow dlq show)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
