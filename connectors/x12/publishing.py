"""Publish a file's records with acks=all behind a progress bar; broker trouble is an exit code.

Shared by `rcmflow ingest x12`, `ingest payments` and `watch`. Every record is keyed and
deterministic, so publishing a file again after a broker failure is safe: events already
applied are replays, and DLQ records have deterministic ids.
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from rcmflow.kafka_io import publish

__all__ = ["publish_records", "BrokerFailed", "EXIT_OK", "EXIT_REJECTED", "EXIT_REFUSED",
           "EXIT_BROKER"]

EXIT_OK = 0  # everything went through
EXIT_REJECTED = 1  # published, but some sets / rows / files went to rcm.dlq
EXIT_REFUSED = 2  # refused before publishing: too large, unreadable path, bad settings
EXIT_BROKER = 3  # the broker did not acknowledge: re-run the same command, it is safe


class BrokerFailed(RuntimeError):
    """The broker did not acknowledge every record (nothing about the input is wrong)."""


def publish_records(servers: list[str], records: list[tuple[str, bytes | None, bytes]],
                    *, label: str, console: Console) -> int:
    """Send ``records`` with acks=all; returns how many were acknowledged."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"publishing {label}", total=len(records))
        try:
            return asyncio.run(publish(servers, records,
                                       on_acked=lambda n: progress.advance(task, n)))
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerFailed(f"{type(exc).__name__}: {exc}") from exc

