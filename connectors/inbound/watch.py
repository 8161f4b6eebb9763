"""`rcmflow watch DIR`: a drop folder for 835/837 and payment files.

Each file that has stopped growing is read, published, then moved to ``done/`` (everything
went through) or ``rejected/`` with ``<name>.reason`` beside it (anything parked or rejected;
the sets or rows that did go through are listed too, and dropping the repaired file again is
safe: what was applied replays as nothing). Hidden files and ``*.part``/``*.tmp`` are left
alone, so senders can write under a temporary name and rename.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from rcmflow.connectors.inbound.exceptions import BrokerFailed
from rcmflow.connectors.inbound.files import publish_file, say
from rcmflow.connectors.inbound.payments.ingest import open_payments, report_payments
from rcmflow.connectors.inbound.x12.files import limits_from, report_x12
from rcmflow.connectors.inbound.x12.ingest import X12File
from rcmflow.runtime.exit_codes import ExitCode
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_preflight import access_error
from rcmflow.runtime.settings import Settings

__all__ = ["watch", "handle_file", "PAYMENT_SUFFIXES"]

PAYMENT_SUFFIXES = (".csv", ".jsonl", ".ndjson")
_SKIP_SUFFIXES = (".part", ".tmp", ".reason")


def _ready(folder: Path, sizes: dict[Path, int]) -> list[Path]:
    """Files whose size did not change since the last look (a sender may still be writing)."""
    ready = []
    seen: dict[Path, int] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix in _SKIP_SUFFIXES:
            continue
        size = path.stat().st_size
        seen[path] = size
        if sizes.get(path) == size:
            ready.append(path)
    sizes.clear()
    sizes.update(seen)
    return ready


def _move(path: Path, target: Path, reason: str | None) -> Path:
    target.mkdir(exist_ok=True)
    dest = target / path.name
    if dest.exists():  # never overwrite an earlier drop of the same name
        dest = target / f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}{path.suffix}"
    shutil.move(str(path), dest)
    if reason is not None:
        dest.with_name(dest.name + ".reason").write_text(reason)
    return dest


def handle_file(path: Path, settings: Settings, kafka: KafkaConnection, console: Console) -> Path:
    """Process one file and move it; returns where it went. Raises ``BrokerFailed``."""
    folder = path.parent
    is_payment = path.suffix.lower() in PAYMENT_SUFFIXES
    limit = settings.payments_file_bytes_max if is_payment else settings.x12_file_bytes_max
    if path.stat().st_size > limit:
        return _move(path, folder / "rejected",
                     f"file_too_large: {path.stat().st_size} bytes, at most {limit}\n")
    size = path.stat().st_size
    try:
        if is_payment:
            payments = open_payments(path, settings)
            publish_file(kafka, payments, path=path, size=size, console=console)
            report_payments(path, payments, console)
            ok, reason = payments.ok(), payments.reason_text()
        else:
            x12 = X12File(path, limits_from(settings))
            publish_file(kafka, x12, path=path, size=size, console=console)
            report_x12(path, x12.outcome, console)
            ok, reason = x12.ok(), x12.outcome.reason_text()
    except BrokerFailed as exc:
        if exc.retryable or access_error(exc.__cause__ or exc, kafka, "watch", operation="WRITE"):
            raise  # a retry may succeed / an ACL is missing (watch stops, saying which)
        # The next poll would meet the same refusal: say why and move the file aside.
        return _move(path, folder / "rejected",
                     f"broker_refused: {exc}; running again cannot succeed until the broker's "
                     "or topic's configuration changes (what was published stays; dropping "
                     "the file again after the change is safe)\n")
    return _move(path, folder / "done", None) if ok else _move(path, folder / "rejected", reason)


def watch(folder: Path, settings: Settings, kafka: KafkaConnection, console: Console, *,
          once: bool = False, stop: Callable[[], bool] = lambda: False) -> ExitCode:
    """Poll ``folder`` until Ctrl-C (or ``stop()``); ``once``: handle what is there and return.

    A broker failure leaves the file where it is (it is tried again next poll).
    """
    sizes: dict[Path, int] = {}
    if once:
        _ready(folder, sizes)  # a file present now is complete for a one-shot run
    while True:
        for path in _ready(folder, sizes):
            try:
                dest = handle_file(path, settings, kafka, console)
            except BrokerFailed as exc:
                denied = access_error(exc.__cause__, kafka, "watch", operation="WRITE") \
                    if exc.__cause__ is not None else None
                if denied is not None:  # an ACL removed: no retry fixes it
                    say(console, f"[red]rcmflow {escape(str(denied))}; {path.name} left in "
                                 "place[/red]")
                    return ExitCode.REFUSED
                say(console, f"[red]{path.name}: broker did not acknowledge ({exc}); "
                              "left in place, will retry[/red]")
                continue
            except OSError as exc:  # unreadable or vanished: the next files still get their turn
                say(console, f"[red]{path.name}: {type(exc).__name__}: {exc.strerror}; left "
                              "in place[/red]")
                continue
            say(console, f"  -> {dest.parent.name}/{dest.name}")
        if once or stop():
            return ExitCode.OK
        time.sleep(settings.watch_poll_s)
