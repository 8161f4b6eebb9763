"""The csv adapter: a daily journal file; exactly once through kill -9; rejections to the DLQ."""

from __future__ import annotations

import asyncio
import csv
import json
import random
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from rcmflow.connectors.erp.base import AlreadyThere, Posted, Rejected
from rcmflow.connectors.erp.csv_journal import CsvJournal, repair_tail
from rcmflow.runtime.faults import Faults
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.chart import load_chart
from rcmflow.streams.money import parse_cents
from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.topics import ERP_OUTCOMES
from tests.conftest import Broker, wait_until
from tests.connectors.erp.feed import (
    already_there_in_logs,
    dlq_records,
    feed_slowly,
    publish_deltas,
    real_deltas,
    run_in_process,
    start_connector,
    unmapped_copy,
)

DAY = date(2026, 11, 26)


def journal(folder: Path) -> CsvJournal:
    return CsvJournal(folder, load_chart(), today=lambda: DAY)


def rows(folder: Path) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for path in sorted(folder.glob("journal-*.csv")):
        with path.open(newline="") as handle:
            out.extend(csv.DictReader(handle))
    return out


def assert_journal_equals(folder: Path, deltas: list[PostingDelta]) -> None:
    """Each delta exactly once, every line with its amounts, every entry balanced."""
    got = rows(folder)
    by_id: dict[str, list[dict[str, str]]] = {}
    for row in got:
        by_id.setdefault(row["posting_id"], []).append(row)
    assert sorted(by_id) == sorted(d.posting_id for d in deltas)
    for delta in deltas:
        lines = by_id[delta.posting_id]
        assert [int(r["line_no"]) for r in lines] == list(range(1, len(delta.lines) + 1))
        assert [(r["gl_account"], parse_cents(r["debit"]), parse_cents(r["credit"]))
                for r in lines] == [(x.gl_account, x.debit_cents, x.credit_cents)
                                    for x in delta.lines]


async def test_post_twice_is_already_there_and_unmapped_is_rejected(tmp_path: Path) -> None:
    deltas = [PostingDelta.model_validate_json(v) for _, v in real_deltas(5)]
    bad = PostingDelta.model_validate_json(unmapped_copy(deltas[0].model_dump_json().encode())[1])
    adapter = journal(tmp_path)
    await adapter.open()
    first = await adapter.post_batch([*deltas, bad])
    assert [type(o) for o in first] == [Posted] * len(deltas) + [Rejected]
    assert "9999-NOPE" in first[-1].reason and first[-1].code == "unmapped_gl_account"
    await adapter.close()
    again = journal(tmp_path)  # a restart: the guard is the file itself
    await again.open()
    assert [type(o) for o in await again.post_batch(deltas)] == [AlreadyThere] * len(deltas)
    entries = [e async for e in again.read_journal()]
    await again.close()
    assert_journal_equals(tmp_path, deltas)
    assert {e.posting_id: e.total_cents for e in entries} == {
        d.posting_id: d.total_cents for d in deltas}
    assert all(e.posted for e in entries)


async def test_a_torn_write_is_cut_back_to_whole_entries(tmp_path: Path) -> None:
    deltas = [PostingDelta.model_validate_json(v) for _, v in real_deltas(3)]
    adapter = journal(tmp_path)
    await adapter.open()
    await adapter.post_batch(deltas)
    await adapter.close()
    path = next(tmp_path.glob("journal-*.csv"))
    whole = path.read_bytes()
    last_lines = len(deltas[-1].lines)
    lines = whole.splitlines(keepends=True)
    # kill -9 inside the write: the last entry has one whole line less and half a line.
    torn = b"".join(lines[:-1]) + lines[-1][:7]
    path.write_bytes(torn)
    assert repair_tail(path) > 0
    assert path.read_bytes() == b"".join(lines[:-last_lines])
    again = journal(tmp_path)
    await again.open()
    outcomes = await again.post_batch(deltas)
    await again.close()
    assert [type(o) for o in outcomes] == [AlreadyThere] * (len(deltas) - 1) + [Posted]
    assert path.read_bytes() == whole


async def test_one_writer_per_folder(tmp_path: Path) -> None:
    from rcmflow.connectors.erp.exceptions import AdapterConfigError

    first = journal(tmp_path)
    await first.open()
    with pytest.raises(AdapterConfigError):
        await journal(tmp_path).open()
    await first.close()


@pytest.mark.broker
def test_stream_to_journal_with_rejections(broker: Broker, tmp_path: Path) -> None:
    items = real_deltas(60)
    bad_key, bad = unmapped_copy(items[10][1])
    items.insert(20, (bad_key, bad))
    items.insert(30, (b"X1", b'{"not": "a delta"}'))
    publish_deltas(broker, items)
    good = [PostingDelta.model_validate_json(v) for _, v in items
            if v != bad and not v.startswith(b'{"not"')]
    progress = run_in_process(journal(tmp_path), broker, batch_max=25)
    assert (progress.posted, progress.rejected, progress.invalid) == (len(good), 1, 1)
    assert progress.lag == 0
    assert_journal_equals(tmp_path, good)
    dlq = dlq_records(broker)
    assert Counter(r["reason_code"] for r in dlq) == {"unmapped_gl_account": 1,
                                                      "invalid_delta": 1}
    rejected = next(r for r in dlq if r["reason_code"] == "unmapped_gl_account")
    assert "9999-NOPE" in rejected["reason"] and rejected["stage"] == "posting"
    assert rejected["context"]["account"] == bad_key.decode()
    assert rejected["context"]["amount_cents"] == PostingDelta.model_validate_json(
        bad).total_cents
    assert json.loads(rejected["payload"]) == json.loads(bad)
    # The core's rejection shape: each problem with its code, detail and place in the input.
    assert [(p["reason_code"], p["place"]) for p in rejected["context"]["problems"]] == [
        ("unmapped_gl_account", "")]
    invalid = next(r for r in dlq if r["reason_code"] == "invalid_delta")
    (problem,) = invalid["context"]["problems"]
    # Placed at a field pydantic names (which one first depends on its version).
    assert problem["place"] in {"not", *PostingDelta.model_fields}
    assert "not a posting delta" in problem["detail"]
    # A second run of the same group reads nothing new; a new group finds all already there.
    again = run_in_process(journal(tmp_path), broker, group="erp-test-2")
    assert (again.posted, again.already_there) == (0, len(good))
    assert_journal_equals(tmp_path, good)
    # Each outcome, with its time, on rcm.erp.outcomes (what `rcmflow trace` reads).
    outcomes = [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection,
                                                                    ERP_OUTCOMES))]
    assert Counter(o["outcome"] for o in outcomes) == {
        "posted": len(good), "rejected": 2, "already_there": len(good)}  # each group
    assert {o["posting_id"] for o in outcomes if o["outcome"] == "posted"} == {
        d.posting_id for d in good}
    assert all(o["adapter"] == "csv" and o["at"].startswith("20") for o in outcomes)


@pytest.mark.broker
@pytest.mark.slow
def test_kill_9_mid_stream_still_exactly_once(broker: Broker, tmp_path: Path) -> None:
    items = real_deltas(300, seed=5)
    half = len(items) // 2
    publish_deltas(broker, items[:half])
    deltas = [PostingDelta.model_validate_json(v) for _, v in items]
    folder, data = tmp_path / "journal", tmp_path / "data"
    env = {"RCMFLOW_ERP_CSV_DIR": str(folder), "RCMFLOW_ERP_BATCH_MAX": "5"}
    # Twice killed right after a write, before the commit (the redelivery window), ...
    for round_, calls in enumerate((3, 7)):
        proc = start_connector("csv", broker, data, round_, **env,
                                **Faults(erp_kill_after=calls).environment())
        assert proc.process.wait(60) == -9, proc.log_tail()
    # ... then three times from outside while it works and deltas keep arriving.
    feeder = feed_slowly(broker, items[half:], chunks=20, pause_s=0.9)
    rng = random.Random(3)
    mid_stream = 0
    for round_ in range(2, 5):
        before = len(rows(folder)) if folder.exists() else 0
        proc = start_connector("csv", broker, data, round_, **env)
        wait_until(lambda b=before, p=proc: (folder.exists() and len(rows(folder)) > b)
                   or not p.alive(), 60, "progress", proc.log_tail)
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.alive(), proc.log_tail()
        mid_stream += feeder.is_alive()
        proc.kill()
    assert mid_stream >= 2, "the stream ended before the kills: slow the feeder"
    feeder.join()
    final = start_connector("csv", broker, data, 99, "--idle-exit-s", "2", **env)
    assert final.process.wait(120) == 0, final.log_tail()
    assert_journal_equals(folder, deltas)
    assert already_there_in_logs(data) >= 5, "kills after a write must cause re-sends"
