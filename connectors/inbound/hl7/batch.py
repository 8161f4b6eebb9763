"""`rcmflow ingest hl7 FILE...`: HL7 batch files (FHS/BHS ... BTS/FTS) and one-message files.

Each message goes through the same intake as MLLP (replay store, ACK discipline, DLQ), so a
file ingested twice publishes nothing new. The ACK code of every message is printed; the exit
code is 0 when all were AA, 1 when any was refused (its reason is in rcm.dlq), 2 when nothing
was tried (file too large, store held), 3 when the broker did not take a write (run again).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rcmflow.connectors.inbound.exceptions import ReplayStoreLocked
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection

if TYPE_CHECKING:
    from rich.console import Console

    from rcmflow.runtime.settings import Settings

__all__ = ["Batch", "split_batch", "ingest_hl7_files", "HL7_FILE_BYTES_MAX"]

#: A file is read whole; past this it is refused (split it).
HL7_FILE_BYTES_MAX = 256 * 1024 * 1024
_BATCH_SEGMENTS = ("FHS", "BHS", "BTS", "FTS")


@dataclass
class Batch:
    messages: list[bytes] = field(default_factory=list)
    #: BTS-1 counts as the file declares them (a mismatch is reported, not fatal).
    declared_counts: list[int] = field(default_factory=list)


def split_batch(data: bytes) -> Batch:
    """Messages of a file, in order: each starts at an MSH segment and runs to the next MSH
    or batch segment. Segment ends may be CR, LF or CRLF; a BOM and MLLP frame bytes are
    dropped."""
    text = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    # Captured MLLP traffic keeps its frame bytes: they only mark message ends here.
    text = text.replace(b"\x0b", b"\r").replace(b"\x1c", b"\r")
    batch = Batch()
    current: list[bytes] = []
    for segment in re.split(rb"\r\n|\r|\n", text):
        name = segment[:3]
        if name == b"MSH" or name.decode("latin-1") in _BATCH_SEGMENTS:
            if current:
                batch.messages.append(b"\r".join(current) + b"\r")
            current = []
            if name == b"BTS":
                count = segment.split(b"|")[1:2]
                if count and count[0].strip().isdigit():
                    batch.declared_counts.append(int(count[0]))
            if name != b"MSH":
                continue
        if segment.strip():
            # Text before the first MSH that is no batch segment stays a "message" of its
            # own, so the intake refuses it with the reason instead of it vanishing.
            current.append(segment)
    if current:
        batch.messages.append(b"\r".join(current) + b"\r")
    return batch


async def _ingest(settings: Settings, kafka: KafkaConnection, files: list[Path],
                  console: Console) -> ExitCode:
    from rcmflow.connectors.inbound.hl7.service import kafka_sink, new_intake, replay_dir

    store = ReplayStore(replay_dir(settings, "files"), settings.hl7_replay_retention_s)
    sink = kafka_sink(settings, kafka)
    refused = not_stored = 0
    try:
        await sink.start()
        for path in files:
            intake = new_intake(settings, sink, store, f"file:{path}")
            batch = split_batch(path.read_bytes())
            codes: Counter[str] = Counter()
            reasons: Counter[str | None] = Counter()
            events = 0
            for position, raw in enumerate(batch.messages, start=1):
                # Over RCMFLOW_MLLP_MESSAGE_BYTES_MAX: too_large, AR, as over MLLP.
                outcome = await intake.handle(raw, position=position)
                codes[outcome.code] += 1
                reasons[outcome.reason_code] += 1
                events += len(outcome.events)
                reason = f" {outcome.reason_code}" if outcome.reason_code else ""
                console.print(f"{path.name} #{position} MSH-10 {outcome.control_id or '-'}: "
                              f"{outcome.code}{reason}")
            if sum(batch.declared_counts) not in (0, len(batch.messages)):
                console.print(f"[yellow]{path.name}: BTS-1 declares "
                              f"{sum(batch.declared_counts)} messages, the file holds "
                              f"{len(batch.messages)}[/yellow]")
            refused += codes["AE"] + codes["AR"]
            not_stored += reasons["not_stored"]
            console.print(f"{path}: {len(batch.messages)} messages, {events} events; "
                          + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())))
    finally:
        await sink.stop()
        store.close()
    return (ExitCode.BROKER if not_stored else ExitCode.ATTENTION if refused
            else ExitCode.OK)


def ingest_hl7_files(settings: Settings, kafka: KafkaConnection, files: list[Path], *,
                     console: Console) -> ExitCode:
    too_big = [f for f in files if f.stat().st_size > HL7_FILE_BYTES_MAX]
    if too_big:
        console.print(f"[red]refused (over {HL7_FILE_BYTES_MAX} bytes, split them):[/red] "
                      f"{', '.join(map(str, too_big))}")
        return ExitCode.REFUSED
    try:
        return asyncio.run(_ingest(settings, kafka, files, console))
    except ReplayStoreLocked as exc:
        console.print(f"[red]{exc}[/red]")
        return ExitCode.REFUSED
