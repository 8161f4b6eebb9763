"""`rcmflow ingest events`: JSON-lines files of canonical events -> rcm.events.

The ingester only finds each event's account (the partition key); validation is the worker's.
A line it cannot key is answered, not dropped: it goes to rcm.dlq with the file and line number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from rcmflow.connectors.inbound.exceptions import BrokerFailed
from rcmflow.connectors.inbound.files import publish_records
from rcmflow.runtime.exceptions import RecordTooLarge
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import Outgoing
from rcmflow.runtime.progress import progress
from rcmflow.runtime.settings import Settings
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Problem, Rejection
from rcmflow.streams.topics import DLQ, EVENTS

__all__ = ["ingest_event_files", "key_lines", "key_line", "key_document",
           "INGEST_FILE_BYTES_MAX"]

#: Largest file `ingest events` reads; past it the file is refused whole (split it).
INGEST_FILE_BYTES_MAX = 2 * 1024**3


def key_line(line: bytes, *, line_bytes_max: int, origin: Origin, where: str,
             place: str = "", discriminator: str = "",
             payload_bytes_max: int | None = None) -> Outgoing:
    """One stripped, non-empty line (one canonical event as JSON): (rcm.events, account, line),
    or an rcm.dlq record saying why it cannot be keyed: a rejection whose problem is placed
    at ``place`` ("line 7"; "" for a record that is one event). ``where`` and ``place`` start
    the DLQ reason ("day.jsonl line 7"); ``origin`` and ``discriminator`` make its
    deterministic dlq_id."""
    reason = None
    account = None
    if len(line) > line_bytes_max:
        reason = ("too_large", f"line of {len(line)} bytes exceeds {line_bytes_max}")
    else:
        try:
            doc = json.loads(line)
        except ValueError as exc:  # not JSON, or not UTF-8 (UnicodeDecodeError)
            reason = ("invalid_json", f"not valid JSON: {exc}")
        else:
            account = doc.get("account") if isinstance(doc, dict) else None
            if not isinstance(account, str) or not account:
                reason = ("no_account", "not a JSON object with an \"account\" string")
    if reason is None:
        assert isinstance(account, str)
        return EVENTS, account.encode(), line
    code, detail = reason
    problem = Problem(reason_code=code, detail=detail, place=place)
    record = dlq_record(Rejection(stage="decode", reason_code=code,
                                  detail=f"{' '.join(filter(None, (where, place)))}: {detail}",
                                  problems=(problem,)),
                        origin=origin, payload=line, discriminator=discriminator,
                        payload_bytes_max=payload_bytes_max)
    return DLQ, None, record.model_dump_json().encode()


def key_lines(path: Path, line_bytes_max: int,
              payload_bytes_max: int | None = None) -> Iterator[Outgoing]:
    """(topic, key, value) per non-empty line: rcm.events, or rcm.dlq with the reason (and at
    most ``payload_bytes_max`` of the line)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if line:
                yield key_line(line, line_bytes_max=line_bytes_max, where=path.name,
                               place=f"line {number}",
                               origin=Origin(topic=f"file:{path}", partition=0, offset=number,
                                             key=None),
                               payload_bytes_max=payload_bytes_max)


def key_document(data: bytes, *, line_bytes_max: int, origin: Origin,
                 where: str, payload_bytes_max: int | None = None) -> list[Outgoing]:
    """A record of canonical events (`rcmflow consume events`): one JSON object (compact or
    pretty-printed), else JSON lines, each line as ``key_line``. DLQ ids tell lines apart by
    number."""
    text = data.strip()
    if b"\n" in text and text.startswith(b"{"):
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None  # JSON lines (or a broken object: each line says why)
        if isinstance(whole, dict):
            return [key_line(text, line_bytes_max=line_bytes_max, origin=origin,
                             where=where, discriminator="line 1",
                             payload_bytes_max=payload_bytes_max)]
    out: list[Outgoing] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line:
            out.append(key_line(line, line_bytes_max=line_bytes_max, origin=origin,
                                where=where, place=f"line {number}",
                                discriminator=f"line {number}",
                                payload_bytes_max=payload_bytes_max))
    return out


def ingest_event_files(settings: Settings, kafka: KafkaConnection, files: list[Path],
                       *, console: Console) -> ExitCode:
    """Publish every file; returns the exit code (1 when any line went to the DLQ)."""
    too_big = [f for f in files if f.stat().st_size > INGEST_FILE_BYTES_MAX]
    if too_big:
        console.print(f"[red]refused (over {INGEST_FILE_BYTES_MAX} bytes, split them):[/red] "
                      f"{', '.join(map(str, too_big))}")
        return ExitCode.REFUSED
    rejected_total = 0
    for path in files:
        try:
            counts = _publish_file(settings, kafka, path, console)
        except RecordTooLarge as exc:  # not reachable with the settings' bounds; never "again"
            console.print(f"{escape(str(path))}: refused: {escape(str(exc))}", soft_wrap=True,
                          highlight=False)
            return ExitCode.REFUSED
        except BrokerFailed as exc:
            # As `ingest x12|payments|fhir`: what was acked stays, re-sending is safe; "again"
            # only where again can succeed.
            if not exc.retryable:
                console.print(f"{escape(str(path))}: refused by the broker ({escape(str(exc))});"
                              " running again cannot succeed until the broker's or topic's "
                              "configuration changes", soft_wrap=True, highlight=False)
                return ExitCode.REFUSED
            console.print(f"{escape(str(path))}: the broker did not acknowledge "
                          f"({escape(str(exc))}); run the same command again (re-sending is "
                          "safe)", soft_wrap=True, highlight=False)
            return ExitCode.BROKER
        rejected_total += counts[DLQ]
        console.print(f"{path}: {counts[EVENTS]} events published to {EVENTS}"
                      + (f", {counts[DLQ]} lines to {DLQ}" if counts[DLQ] else ""))
    return ExitCode.ATTENTION if rejected_total else ExitCode.OK


def _publish_file(settings: Settings, kafka: KafkaConnection, path: Path,
                  console: Console) -> dict[str, int]:
    counts = {EVENTS: 0, DLQ: 0}

    def counted() -> Iterator[Outgoing]:
        for item in key_lines(path, settings.event_bytes_max, settings.dlq_payload_bytes_max):
            counts[item[0]] += 1
            yield item

    with progress(console, f"publishing {path.name}", unit="lines") as advance:
        publish_records(kafka, counted(), on_acked=advance)
    return counts
