"""The ``csv`` adapter: a daily journal file a finance team can import.

Files ``journal-YYYY-MM-DD.csv`` (the UTC day the connector wrote the rows) in
``RCMFLOW_ERP_CSV_DIR``, one row per posting line, amounts as decimal strings with two
digits (never floats). A journal entry is the rows sharing a ``posting_id``
(``line_no`` 1..``line_count``).

- **Never a half line, never half an entry.** A batch is appended with one ``O_APPEND``
  write and fsync'd before its deltas count as posted. On start the newest file's tail is
  repaired: a trailing partial line, or a trailing entry with fewer rows than its
  ``line_count`` (a kill -9 mid-write), is cut off; its delta was never reported posted,
  so it is written again.
- **Duplicate guard: the posting id.** On start the posting ids of the last
  ``erp_csv_dedup_days`` days' files are loaded; a delta already in them is ``AlreadyThere``.
  Past that window a re-sent delta would be written again (reconciliation shows it).
- One writer per folder: a lock file; a second ``rcmflow erp csv`` on the same folder exits
  with a configuration error.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rcmflow.connectors.erp.base import (
    AlreadyThere,
    JournalEntry,
    JournalLine,
    Outcome,
    Posted,
    approval_text,
)
from rcmflow.connectors.erp.exceptions import AdapterConfigError
from rcmflow.connectors.erp.mapping import check_mapped
from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.money import cents_text, parse_cents
from rcmflow.streams.postings import PostingDelta

if TYPE_CHECKING:
    from rcmflow.runtime.settings import Settings

__all__ = ["CsvJournal", "COLUMNS", "build"]

COLUMNS = ("posting_id", "line_no", "line_count", "effective_date", "entity", "gl_account",
           "debit", "credit", "currency", "memo", "department", "payer_class", "account",
           "event_kind", "correlation_id", "reverses_posting_id", "approval")
PREFIX, SUFFIX = "journal-", ".csv"
#: Deltas per write (one fsync each).
BATCH_MAX = 1000


def _flat(text: str | None) -> str:
    """One physical line per row: the tail repair reads the file line by line."""
    return (text or "").replace("\r", " ").replace("\n", " ")


def _day_of(path: Path) -> date | None:
    name = path.name
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        return None
    try:
        return date.fromisoformat(name[len(PREFIX):-len(SUFFIX)])
    except ValueError:
        return None


class CsvJournal:
    name = "csv"
    batch_max = BATCH_MAX

    def __init__(self, folder: Path, chart: ChartOfAccounts, *, dedup_days: int = 7,
                 today: Any = None) -> None:
        self.folder = folder
        self.chart = chart
        self.dedup_days = dedup_days
        self._today = today or (lambda: datetime.now(UTC).date())
        self.seen: dict[date, set[str]] = {}
        self._lock_fd: int | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise AdapterConfigError(f"another csv connector writes {self.folder}") from exc
        self._lock_fd = fd
        files = self._files()
        if files:
            repair_tail(files[-1][1])
        oldest = self._today() - timedelta(days=self.dedup_days)
        for day, path in files:
            if day >= oldest:
                self.seen[day] = {row["posting_id"] for row in _rows(path)}

    async def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- posting --------------------------------------------------------------------------
    def _known(self, posting_id: str) -> bool:
        return any(posting_id in ids for ids in self.seen.values())

    async def post_batch(self, deltas: Sequence[PostingDelta]) -> list[Outcome]:
        assert len(deltas) <= self.batch_max
        day = self._today()
        if day not in self.seen:
            self.seen[day] = set()
            for old in [d for d in self.seen if d < day - timedelta(days=self.dedup_days)]:
                del self.seen[old]
        rejected = check_mapped(self.chart, deltas)
        outcomes: list[Outcome] = []
        fresh: list[PostingDelta] = []
        batch_ids: set[str] = set()
        for delta in deltas:
            assert sum(x.debit_cents for x in delta.lines) == sum(
                x.credit_cents for x in delta.lines), "unbalanced delta reached the ERP"
            if delta.posting_id in rejected:
                outcomes.append(rejected[delta.posting_id])
            elif self._known(delta.posting_id) or delta.posting_id in batch_ids:
                outcomes.append(AlreadyThere(delta.posting_id, self._path(day).name))
            else:
                fresh.append(delta)
                batch_ids.add(delta.posting_id)
                outcomes.append(Posted(delta.posting_id, self._path(day).name))
        if fresh:
            self._append(self._path(day), fresh)
            self.seen[day].update(batch_ids)
        return outcomes

    def _path(self, day: date) -> Path:
        return self.folder / f"{PREFIX}{day.isoformat()}{SUFFIX}"

    def _append(self, path: Path, deltas: list[PostingDelta]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        new = not path.exists() or path.stat().st_size == 0
        if new:
            writer.writerow(COLUMNS)
        for delta in deltas:
            for n, line in enumerate(delta.lines, 1):
                writer.writerow([
                    delta.posting_id, n, len(delta.lines), delta.effective_date.isoformat(),
                    _flat(line.entity), _flat(line.gl_account), cents_text(line.debit_cents),
                    cents_text(line.credit_cents), delta.currency, _flat(line.memo),
                    _flat(line.department), _flat(line.payer_class), _flat(delta.account),
                    _flat(delta.event_kind), _flat(delta.correlation_id),
                    _flat(delta.reverses_posting_id), _flat(approval_text(delta))])
        data = buffer.getvalue().encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    # -- reading back ---------------------------------------------------------------------
    def _files(self) -> list[tuple[date, Path]]:
        found = [(_day_of(p), p) for p in self.folder.glob(f"{PREFIX}*{SUFFIX}")]
        return sorted((day, p) for day, p in found if day is not None)

    async def read_journal(self, *, day_from: date | None = None,
                           day_to: date | None = None) -> AsyncIterator[JournalEntry]:
        """Entries by effective date (files are scanned whole: they are per write day)."""
        for _, path in self._files():
            for entry in _entries(path):
                if day_from is not None and entry.effective_date < day_from:
                    continue
                if day_to is not None and entry.effective_date > day_to:
                    continue
                yield entry


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _entries(path: Path) -> list[JournalEntry]:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in _rows(path):
        groups.setdefault(row["posting_id"], []).append(row)
    out = []
    for posting_id, rows in groups.items():
        out.append(JournalEntry(
            posting_id=posting_id, erp_ref=path.name,
            effective_date=date.fromisoformat(rows[0]["effective_date"]),
            entity=rows[0]["entity"],
            lines=tuple(JournalLine(r["gl_account"], parse_cents(r["debit"], "debit"),
                                    parse_cents(r["credit"], "credit")) for r in rows),
            posted=len(rows) == int(rows[0]["line_count"])))
    return out


def repair_tail(path: Path) -> int:
    """Cut a partial last line and a last entry missing rows; returns bytes cut."""
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
    lines = data[:keep].decode("utf-8").splitlines(keepends=True)
    if len(lines) > 1:
        rows = list(csv.reader(line for line in lines[1:]))
        last_id, count = rows[-1][0], int(rows[-1][2])
        tail = 0
        while tail < len(rows) and rows[-1 - tail][0] == last_id:
            tail += 1
        if tail != count:
            keep -= sum(len(line.encode("utf-8")) for line in lines[-tail:])
    cut = len(data) - keep
    if cut:
        with path.open("r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return cut


def build(settings: Settings, chart: ChartOfAccounts) -> CsvJournal:
    folder = settings.erp_csv_dir or settings.data_dir / "journal"
    return CsvJournal(folder, chart, dedup_days=settings.erp_csv_dedup_days)
