"""A payment file -> events for good rows, rcm.dlq records (row number + reason) for bad ones.

``payment_items`` reads a file row by row; ``PaymentsIngest`` publishes them as they are read
(`rcmflow ingest payments`, `rcmflow watch`), ``process_payments`` collects them (a record
consumed from Kafka, tests). Good rows go through even when others in the same file are bad.
Each row is also kept as received on rcm.raw.payments; an applied row's record also carries
what it says in money and its event (``source_totals``, connectors/inbound/totals.py), for
`rcmflow reconcile`.

Memory: one row at a time, plus ``SeenKeys`` (the per-file duplicate check, ~200 bytes per
applied row, so at most ~200 MB at RCMFLOW_PAYMENTS_ROWS_MAX's default of 1,000,000 rows)
and the first ``REASONS_KEPT`` rejections for the report. Every row rejection is an error
(each row carries money): payment files have no warnings to aggregate in rcm.dlq.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import orjson
from rich.console import Console

from rcmflow.connectors.inbound.exceptions import FileError
from rcmflow.connectors.inbound.files import (
    ReadPosition,
    Record,
    ingest_files,
    say,
)
from rcmflow.connectors.inbound.payments.rows import (
    PaymentEvent,
    RawRow,
    read_rows,
    row_event,
    row_number,
    row_problem,
    row_totals,
)
from rcmflow.connectors.inbound.seen import SeenKeys
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.settings import Settings, default_of
from rcmflow.streams.date_window import DEFAULT_WINDOW, DateWindow
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Problem, Rejection
from rcmflow.streams.topics import DLQ, EVENTS, RAW_PAYMENTS

__all__ = ["PaymentsOutcome", "PaymentsIngest", "process_payments", "payment_items",
           "open_payments", "ingest_payment_files", "report_payments", "Rejected",
           "REASONS_KEPT"]

#: Rejections kept for the report and the watch folder's ``.reason`` file; all of them are
#: in rcm.dlq.
REASONS_KEPT = 100
#: Defaults of the settings that bound a file (RCMFLOW_DLQ_PAYLOAD_BYTES_MAX,
#: RCMFLOW_PAYMENTS_ROWS_MAX), for calls made without Settings.
PAYLOAD_BYTES_MAX: int = default_of("dlq_payload_bytes_max")
ROWS_MAX: int = default_of("payments_rows_max")


@dataclass(frozen=True)
class Rejected:
    """A row refused, or the file as a whole (``row`` 0): why, as the core's ``Rejection``
    (stage "decode", its one problem placed at the row: 'row 7', or '' for the file), and
    what of it rcm.dlq keeps."""

    row: int
    rejection: Rejection
    payload: str | bytes  # bytes: a file rejected whole, kept as received (its start)
    account: str | None = None
    #: The whole file's size when ``payload`` is only its start.
    size: int | None = None

    @classmethod
    def of(cls, problem: Problem, payload: str | bytes, account: str | None = None, *,
           size: int | None = None) -> Rejected:
        return cls(row_number(problem), Rejection.of("decode", [problem]), payload, account,
                   size)


Item: TypeAlias = tuple[RawRow, PaymentEvent] | Rejected


def payment_items(stream: BinaryIO, *, name: str, channel: str = "lockbox",
                  rows_max: int = ROWS_MAX, warnings: list[str] | None = None,
                  payload_bytes_max: int = PAYLOAD_BYTES_MAX,
                  date_window: DateWindow = DEFAULT_WINDOW) -> Iterator[Item]:
    """Every row of a CSV / JSON-lines payment file as it is read: an event or a rejection.
    File-level warnings (ignored columns) are appended to ``warnings``."""
    try:
        found, rows = read_rows(stream, name=name)
    except FileError as exc:
        # The file as received, its start (base64 in the DLQ record when it is not UTF-8).
        size = stream.seek(0, io.SEEK_END)
        stream.seek(0)
        yield Rejected.of(Problem(reason_code="file_unreadable", detail=f"file: {exc}"),
                          stream.read(payload_bytes_max), size=size)
        return
    if warnings is not None:
        warnings.extend(found)
    seen = SeenKeys()
    count = 0
    for item in rows:
        count += 1
        if count > rows_max:
            yield Rejected.of(Problem(reason_code="rows_max",
                                      detail=f"rows past {rows_max} were not read "
                                      "(RCMFLOW_PAYMENTS_ROWS_MAX): split the file"), "")
            return
        if isinstance(item, Problem):
            yield Rejected.of(item, "")
            continue
        event = row_event(item, channel=channel, date_window=date_window)
        account = item.fields.get("account") or None
        if isinstance(event, Problem):
            yield Rejected.of(event, item.text, account)
            continue
        earlier = seen.first(event.account, event.event_id, item.number, event.model_dump_json())
        if earlier is not None:
            seen_row, same = earlier
            yield Rejected.of(row_problem(
                item.number, "row_duplicate_reference",
                f"row {item.number}: reference {event.event_id.split(':')[-1]!r} for account "
                f"{event.account} was already used in row {seen_row} "
                f"({'the same content' if same else 'other content'})"), item.text, account)
            continue
        yield item, event


def item_records(item: Item, *, origin: str, received_at: datetime,
                 payload_bytes_max: int = PAYLOAD_BYTES_MAX) -> list[Record]:
    """What one row publishes: its raw record and event, or its DLQ record."""
    if not isinstance(item, Rejected):
        row, event = item
        return [(RAW_PAYMENTS, event.event_id.encode(), orjson.dumps(
                    {"origin": origin, "row": row.number, "status": "applied",
                     "fields": row.fields, "source_totals": row_totals(row, event).to_json()})),
                (EVENTS, event.account.encode(), event.model_dump_json().encode())]
    r = item
    payload = r.payload if isinstance(r.payload, bytes) else r.payload.encode()
    context: dict[str, Any] = {"row": r.row, **({"account": r.account} if r.account else {})}
    record = dlq_record(
        r.rejection.model_copy(
            update={"detail": f"{origin.removeprefix('file:')} {r.rejection.detail}"}),
        origin=Origin(topic=origin, partition=0, offset=r.row, key=None),
        payload=payload, received_at=received_at, context=context,
        payload_bytes_max=payload_bytes_max, input_bytes=r.size)  # r.size: only its start read
    return [(DLQ, None, record.model_dump_json().encode())]


@dataclass
class PaymentsOutcome:
    """A whole file's rows, in memory (a Kafka record's file, tests): ``process_payments``."""

    origin: str
    events: list[tuple[RawRow, PaymentEvent]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.rejected

    def records(self, payload_bytes_max: int = PAYLOAD_BYTES_MAX) -> list[Record]:
        received = datetime.now(UTC)
        out: list[Record] = []
        items: list[Item] = [*self.events, *self.rejected]
        for item in items:
            out += item_records(item, origin=self.origin, received_at=received,
                                payload_bytes_max=payload_bytes_max)
        return out


def process_payments(data: bytes, *, name: str, origin: str, channel: str = "lockbox",
                     rows_max: int = ROWS_MAX,
                     date_window: DateWindow = DEFAULT_WINDOW) -> PaymentsOutcome:
    """Every row of a CSV / JSON-lines payment file, as an event or a rejection."""
    outcome = PaymentsOutcome(origin=origin)
    for item in payment_items(io.BytesIO(data), name=name, channel=channel, rows_max=rows_max,
                              warnings=outcome.warnings, payload_bytes_max=len(data),
                              date_window=date_window):
        if isinstance(item, Rejected):
            outcome.rejected.append(item)
        else:
            outcome.events.append(item)
    return outcome


class PaymentsIngest:
    """One payment file published as it is read (connectors/inbound/files.FileIngest): only counts,
    the file's warnings and the first ``REASONS_KEPT`` rejections stay for the report."""

    def __init__(self, path: Path, *, channel: str = "lockbox", rows_max: int = ROWS_MAX,
                 payload_bytes_max: int = PAYLOAD_BYTES_MAX,
                 date_window: DateWindow = DEFAULT_WINDOW) -> None:
        self.path = path
        self.origin = f"file:{path}"
        self._channel, self._rows_max, self._payload_max = channel, rows_max, payload_bytes_max
        self._date_window = date_window
        self._position = ReadPosition(path)
        self.events = 0
        self.rejected = 0
        self.first_rejected: list[Rejected] = []
        self.warnings: list[str] = []

    @property
    def bytes_read(self) -> int:
        return self._position.bytes

    def records(self) -> Iterator[Record]:
        received = datetime.now(UTC)
        with self._position.open() as file:
            for item in payment_items(file, name=self.path.name, channel=self._channel,
                                      rows_max=self._rows_max, warnings=self.warnings,
                                      payload_bytes_max=self._payload_max,
                                      date_window=self._date_window):
                if isinstance(item, Rejected):
                    self.rejected += 1
                    if len(self.first_rejected) < REASONS_KEPT:
                        self.first_rejected.append(item)
                else:
                    self.events += 1
                yield from item_records(item, origin=self.origin, received_at=received,
                                        payload_bytes_max=self._payload_max)

    def ok(self) -> bool:
        return not self.rejected

    def reason_text(self) -> str:
        lines = [f"{self.events} rows published as events, {self.rejected} rejected"]
        lines += [f"{r.rejection.reason_code}: {r.rejection.detail}"
                  for r in self.first_rejected]
        if self.rejected > len(self.first_rejected):
            lines.append(f"... {self.rejected - len(self.first_rejected)} more in {DLQ} "
                         f"(rcmflow dlq list)")
        return "\n".join(lines + self.warnings) + "\n"


def open_payments(path: Path, settings: Settings, channel: str = "lockbox") -> PaymentsIngest:
    """A payment file ready to publish, with the settings' bounds."""
    return PaymentsIngest(path, channel=channel, rows_max=settings.payments_rows_max,
                          payload_bytes_max=settings.dlq_payload_bytes_max,
                          date_window=DateWindow.from_settings(settings))


def ingest_payment_files(settings: Settings, kafka: KafkaConnection, files: list[Path], *,
                         channel: str, console: Console) -> ExitCode:
    """Publish every file; the exit code says whether anything was rejected."""
    return ingest_files(
        files, kafka=kafka, console=console, bytes_max=settings.payments_file_bytes_max,
        bytes_setting="RCMFLOW_PAYMENTS_FILE_BYTES_MAX",
        open_file=lambda path: open_payments(path, settings, channel),
        report=report_payments)


def report_payments(path: Path, ingest: PaymentsIngest, console: Console) -> None:
    """Counts and the reasons (row numbers and columns only: no names, no PHI)."""
    say(console, f"{path}: {ingest.events} rows published to {EVENTS}"
                  + (f", [yellow]{ingest.rejected} to {DLQ}[/yellow]"
                     if ingest.rejected else ""))
    for r in ingest.first_rejected[:10]:
        say(console, f"  {r.rejection.reason_code}: {r.rejection.detail}")
    if ingest.rejected > 10:
        say(console, f"  ... {ingest.rejected - 10} more (rcmflow dlq list)")
    for w in ingest.warnings:
        say(console, f"  [dim]{w}[/dim]")
