"""File ingest shared by `rcmflow ingest x12|payments|fhir` and `watch`: size check, publish
with acks=all as the file is read, progress, report, exit code.

A connector hands over a ``FileIngest``: its ``records()`` reads the file as it goes and
yields what to publish, so memory is bounded by the unit of work (a row, a resource, a
transaction set), not by the file. What the report needs (counts, the first problems) is kept
small on the ingest object and read once ``records()`` is exhausted.

Every record is keyed and deterministic, so publishing a file again after a broker failure is
safe: events already applied are replays, and DLQ records have deterministic ids. Only a
failure that re-sending can cure is answered "run again": a record the topic cannot take is
a DLQ record instead (``fit``), and a broker refusal no retry can change (a topic's smaller
``max.message.bytes``, a missing ACL) refuses the file with the cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar, runtime_checkable

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from rich.console import Console
from rich.markup import escape

from rcmflow.connectors.inbound.exceptions import BrokerFailed
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import RECORD_OVERHEAD_BYTES, Outgoing, publish, record_size
from rcmflow.runtime.progress import progress
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Problem, Rejection
from rcmflow.streams.topics import DLQ, record_bytes_max

__all__ = ["ingest_files", "publish_records", "say", "fit", "FileIngest",
           "ReadsAhead", "ReadPosition", "Record"]


#: Bytes of a record kept in the DLQ record that stands for it when its topic cannot take it.
TOO_LARGE_PAYLOAD_BYTES = 64 * 1024

#: Broker refusals the same records would meet again: a topic's record limit, an ACL.
NOT_RETRYABLE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError,
                 TopicAuthorizationFailedError, ClusterAuthorizationFailedError)

#: One record shape for every connector: (topic, key, value[, headers]).
Record = Outgoing


class FileIngest(Protocol):
    """One file being read and published (see the module docstring)."""

    def records(self) -> Iterator[Record]: ...

    def ok(self) -> bool: ...

    @property
    def bytes_read(self) -> int: ...


@runtime_checkable
class ReadsAhead(Protocol):
    """A ``FileIngest`` that reads much before its first record (a check pass): it calls
    ``on_progress`` as it reads, so the progress display moves before anything is sent."""

    on_progress: Callable[[], None] | None


Ingest = TypeVar("Ingest", bound=FileIngest)
class ReadPosition:
    """How far a streamed file has been read, for progress (``FileIngest.bytes_read``): the
    open file's position while it is read, its size once read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._done = 0

    @property
    def bytes(self) -> int:
        file = self._file
        if file is not None and not file.closed:
            self._done = file.tell()
        return self._done

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        with self.path.open("rb") as file:
            self._file = file
            yield file
        self._file = None
        self._done = self.path.stat().st_size


def fit(record: Record, *, origin: str) -> Record:
    """``record``, or a DLQ record standing for it when its topic cannot take it (the
    connectors keep their records within bounds; this is the net under them)."""
    topic = record[0]
    size, limit = record_size(record), record_bytes_max(topic)
    if size + RECORD_OVERHEAD_BYTES <= limit:
        return record
    key = record[1]
    dlq = dlq_record(
        Rejection.of("validate", [Problem(
            reason_code="record_too_large",
            detail=f"{origin.removeprefix('file:')}: a record for {topic} of {size} bytes is "
            f"larger than the {limit} bytes that topic takes; nothing of it was applied")]),
        origin=Origin(topic=origin, partition=0, offset=0,
                      key=key.decode(errors="replace") if key else None),
        payload=record[2], received_at=datetime.now(UTC),
        context={"topic": topic, "record_bytes": size, "topic_bytes_max": limit},
        discriminator=f"{topic}|{key!r}", payload_bytes_max=TOO_LARGE_PAYLOAD_BYTES)
    return DLQ, key, dlq.model_dump_json().encode()


def publish_records(kafka: KafkaConnection, records: Iterable[Record], *,
                    on_acked: Callable[[int], None] | None = None) -> int:
    """Send ``records`` (any iterable: a generator is read as it is sent) with acks=all;
    returns how many were acknowledged. BrokerFailed when the broker did not take them."""
    try:
        return asyncio.run(publish(kafka, _reading(records), on_acked=on_acked))
    except _ReadFailed as exc:
        raise exc.cause from None  # the input could not be read: not the broker's doing
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerFailed(f"{type(exc).__name__}: {exc}",
                           retryable=not isinstance(exc, NOT_RETRYABLE)) from exc


class _ReadFailed(Exception):
    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _reading(records: Iterable[Record]) -> Iterator[Record]:
    """``records``, with an OSError of the reading (a file read as it is sent) told apart
    from the broker's."""
    it = iter(records)
    while True:
        try:
            record = next(it)
        except StopIteration:
            return
        except OSError as exc:
            raise _ReadFailed(exc) from exc
        yield record


def publish_file(kafka: KafkaConnection, ingest: FileIngest, *, path: Path, size: int,
                 console: Console) -> int:
    """Publish one file's records behind a progress display (bytes of the file read)."""
    origin = f"file:{path}"
    with progress(console, f"publishing {path.name}", total=size, unit="bytes") as advance:
        shown = 0

        def sync() -> None:
            nonlocal shown
            if ingest.bytes_read > shown:
                advance(ingest.bytes_read - shown)
                shown = ingest.bytes_read

        def acked(_: int) -> None:
            sync()

        if isinstance(ingest, ReadsAhead):
            ingest.on_progress = sync

        return publish_records(kafka, (fit(r, origin=origin) for r in ingest.records()),
                               on_acked=acked)


def ingest_files(
    files: list[Path], *, kafka: KafkaConnection, console: Console, bytes_max: int,
    bytes_setting: str, open_file: Callable[[Path], Ingest],
    report: Callable[[Path, Ingest, Console], None],
) -> ExitCode:
    """Read, publish and report each file in turn; the exit code of the whole run.

    Files over ``bytes_max`` refuse the run before anything is published (split them); a
    broker failure stops it (what was published stays, re-running is safe).
    """
    too_big = [f for f in files if f.stat().st_size > bytes_max]
    if too_big:
        say(console, f"[red]refused (over {bytes_max} bytes, {bytes_setting}; split them):"
                     f"[/red] {escape(', '.join(map(str, too_big)))}")
        return ExitCode.REFUSED
    code = ExitCode.OK
    for path in files:
        ingest = open_file(path)
        try:
            publish_file(kafka, ingest, path=path, size=path.stat().st_size, console=console)
        except OSError as exc:  # the file went away or became unreadable while being read
            say(console, f"[red]{escape(str(path))}: cannot be read ({type(exc).__name__}: "
                         f"{escape(str(exc.strerror or exc))}); what was read before is "
                         "published, re-sending the file is safe[/red]")
            return ExitCode.REFUSED
        except BrokerFailed as exc:
            if not exc.retryable:
                say(console, f"[red]{escape(str(path))}: refused by the broker "
                             f"({escape(str(exc))}); running again cannot succeed until the "
                             "broker's or topic's configuration changes (what was published "
                             "stays; re-sending after the change is safe)[/red]")
                return ExitCode.REFUSED
            say(console, f"[red]{escape(str(path))}: the broker did not acknowledge "
                         f"({escape(str(exc))}); run the same command again (re-sending is "
                         "safe)[/red]")
            return ExitCode.BROKER
        report(path, ingest, console)
        if not ingest.ok():
            code = ExitCode.ATTENTION
    return code


def say(console: Console, text: str) -> None:
    """One report line: never wrapped mid-path (logs and terminals alike), no auto-colour."""
    console.print(text, soft_wrap=True, highlight=False)
