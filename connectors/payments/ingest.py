"""A payment file -> events for good rows, rcm.dlq records (row number + reason) for bad ones.

``process_payments`` is pure; ``ingest_payment_files`` publishes. Good rows go through even
when others in the same file are bad. Each row is also kept as received on rcm.raw.payments;
an applied row's record also carries what it says in money and its event (``source_totals``,
connectors/totals.py), for `rcmflow reconcile`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from rich.console import Console

from rcmflow.connectors.files import Record, WholeFile, ingest_files, say
from rcmflow.kafka_connection import KafkaConnection
from rcmflow.settings import Settings
from rcmflow.streams.date_window import DEFAULT_WINDOW, DateWindow
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.topics import DLQ, EVENTS, RAW_PAYMENTS

from .rows import FileError, PaymentEvent, RawRow, RowError, read_rows, row_event, row_totals

__all__ = ["PaymentsOutcome", "process_payments", "ingest_payment_files", "Rejected"]


@dataclass(frozen=True)
class Rejected:
    row: int  # 0 for the file as a whole
    code: str
    detail: str
    payload: str | bytes  # bytes: a file rejected whole, kept as received
    account: str | None = None


@dataclass
class PaymentsOutcome:
    origin: str
    events: list[tuple[RawRow, PaymentEvent]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.rejected

    def reason_text(self) -> str:
        lines = [f"{len(self.events)} rows published as events, {len(self.rejected)} rejected"]
        lines += [f"{r.code}: {r.detail}" for r in self.rejected]
        return "\n".join(lines + self.warnings) + "\n"

    def records(self, payload_bytes_max: int = 512 * 1024) -> list[Record]:
        out: list[Record] = []
        for row, event in self.events:
            out.append((RAW_PAYMENTS, event.event_id.encode(), orjson.dumps(
                {"origin": self.origin, "row": row.number, "status": "applied",
                 "fields": row.fields, "source_totals": row_totals(row, event).to_json()})))
            out.append((EVENTS, event.account.encode(), event.model_dump_json().encode()))
        received = datetime.now(UTC)
        for r in self.rejected:
            payload = r.payload if isinstance(r.payload, bytes) else r.payload.encode()
            cut = len(payload) > payload_bytes_max
            record = dlq_record(
                stage="decode", reason_code=r.code,
                reason=f"{self.origin.removeprefix('file:')} {r.detail}",
                origin=Origin(topic=self.origin, partition=0, offset=r.row, key=None),
                payload=payload[:payload_bytes_max], received_at=received,
                context={"row": r.row, **({"account": r.account} if r.account else {}),
                         **({"payload_cut": {"bytes": len(payload), "kept": payload_bytes_max}}
                            if cut else {})},
            )
            out.append((DLQ, None, record.model_dump_json().encode()))
        return out


def process_payments(data: bytes, *, name: str, origin: str, channel: str = "lockbox",
                     rows_max: int = 1_000_000,
                     date_window: DateWindow = DEFAULT_WINDOW) -> PaymentsOutcome:
    """Every row of a CSV / JSON-lines payment file, as an event or a rejection."""
    outcome = PaymentsOutcome(origin=origin)
    try:
        warnings, rows = read_rows(data, name=name)
    except FileError as exc:
        # The file as received (base64 in the DLQ record when it is not UTF-8).
        outcome.rejected.append(Rejected(0, "file_unreadable", f"file: {exc}", data))
        return outcome
    outcome.warnings.extend(warnings)
    first_row: dict[tuple[str, str], tuple[int, str]] = {}
    count = 0
    for item in rows:
        count += 1
        if count > rows_max:
            outcome.rejected.append(Rejected(0, "rows_max", f"rows past {rows_max} were not "
                                             "read (RCMFLOW_PAYMENTS_ROWS_MAX): split the file",
                                             ""))
            break
        if isinstance(item, RowError):
            outcome.rejected.append(Rejected(_row_of(item), item.code, item.detail, ""))
            continue
        event = row_event(item, channel=channel, date_window=date_window)
        account = item.fields.get("account") or None
        if isinstance(event, RowError):
            outcome.rejected.append(Rejected(item.number, event.code, event.detail, item.text,
                                             account))
            continue
        key = (event.account, event.event_id)
        digest = event.model_dump_json()
        if key in first_row:
            seen_row, seen_digest = first_row[key]
            same = "the same content" if seen_digest == digest else "other content"
            outcome.rejected.append(Rejected(
                item.number, "row_duplicate_reference",
                f"row {item.number}: reference {event.event_id.split(':')[-1]!r} for account "
                f"{event.account} was already used in row {seen_row} ({same})", item.text,
                account))
            continue
        first_row[key] = (item.number, digest)
        outcome.events.append((item, event))
    return outcome


def _row_of(error: RowError) -> int:
    words = error.detail.split()
    return int(words[1]) if len(words) > 1 and words[0] == "row" and words[1].isdigit() else 0


def ingest_payment_files(settings: Settings, kafka: KafkaConnection, files: list[Path], *,
                         channel: str, console: Console) -> int:
    """Publish every file; the exit code says whether anything was rejected."""
    return ingest_files(
        files, kafka=kafka, console=console, bytes_max=settings.payments_file_bytes_max,
        bytes_setting="RCMFLOW_PAYMENTS_FILE_BYTES_MAX",
        open_file=lambda path: WholeFile(
            path, lambda p: process_payments(p.read_bytes(), name=p.name, origin=f"file:{p}",
                                             channel=channel,
                                             rows_max=settings.payments_rows_max,
                                             date_window=DateWindow.from_settings(settings)),
            lambda outcome: outcome.records(settings.dlq_payload_bytes_max)),
        report=lambda path, whole, console: report_payments(path, whole.outcome, console))


def report_payments(path: Path, outcome: PaymentsOutcome, console: Console) -> None:
    """Counts and the reasons (row numbers and columns only: no names, no PHI)."""
    say(console, f"{path}: {len(outcome.events)} rows published to {EVENTS}"
                  + (f", [yellow]{len(outcome.rejected)} to {DLQ}[/yellow]"
                     if outcome.rejected else ""))
    for r in outcome.rejected[:10]:
        say(console, f"  {r.code}: {r.detail}")
    if len(outcome.rejected) > 10:
        say(console, f"  ... {len(outcome.rejected) - 10} more (rcmflow dlq list)")
    for w in outcome.warnings:
        say(console, f"  [dim]{w}[/dim]")
