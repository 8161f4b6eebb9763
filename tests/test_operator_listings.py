"""`rcmflow accounts` and `rcmflow dlq` as an operator runs them: real broker, real process.

Listings come a page at a time (newest first, ``--limit``/``--after``): paging through shows
every record exactly once. Ids are printed whole at 80 columns, and `dlq show` takes a unique
prefix of one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from rcmflow.runtime.kafka_io import publish
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import ACCOUNTS, DLQ
from tests.conftest import Broker
from tests.workload import Workload

pytestmark = pytest.mark.broker


def rcmflow(broker: Broker, *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(RCMFLOW_BROKER=broker.url, COLUMNS=str(columns), TERM="dumb")
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def page_through(broker: Broker, *command: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of a listing (--json), following the `more: ... --after X` hints."""
    pages: list[list[dict[str, Any]]] = []
    after: list[str] = []
    while True:
        done = rcmflow(broker, *command, "--json", "--limit", str(limit), *after)
        assert done.returncode == 0, done.stderr
        pages.append(json.loads(done.stdout))
        more = re.search(r"--after (\S+)", done.stderr)
        if more is None:
            return pages
        after = ["--after", more.group(1)]
        assert len(pages) < 100, "the listing never ended"


def _dlq_records(count: int, reason: str = "invalid_event") -> list[tuple[str, None, bytes]]:
    return [(DLQ, None, dlq_record(
        Rejection(stage="validate", reason_code=reason, detail=f"event {n} is wrong"),
        origin=Origin(topic="rcm.events", partition=n % 4, offset=n, key=f"A{n}"),
        payload=b"{}", context={"account": f"A{n}"}).model_dump_json().encode())
        for n in range(count)]


def test_dlq_list_pages_show_every_record_once_newest_first(broker: Broker) -> None:
    records = _dlq_records(237)
    records.insert(100, records[5])  # written again (a retry after a crash): same dlq_id
    asyncio.run(publish(broker.connection, records[:-1]))
    time.sleep(0.05)  # the newest a few milliseconds later than the rest
    asyncio.run(publish(broker.connection, records[-1:]))
    pages = page_through(broker, "dlq", "list", limit=50)
    ids = [r["dlq_id"] for page in pages for r in page]
    assert len(pages) >= 5 and all(len(page) <= 50 for page in pages)
    assert sorted(set(ids)) == sorted({json.loads(v)["dlq_id"] for _, _, v in records})
    assert len(ids) <= 238 and len(set(ids)) == 237
    # Newest first: the last record published is the first shown.
    assert ids[0] == json.loads(records[-1][2])["dlq_id"]


def test_dlq_list_by_reason_reads_back_until_the_page_is_full(broker: Broker) -> None:
    rare = _dlq_records(3, reason="conflict")
    asyncio.run(publish(broker.connection, rare + _dlq_records(400)))
    done = rcmflow(broker, "dlq", "list", "--reason", "conflict", "--json", "--limit", "10")
    assert done.returncode == 0, done.stderr
    assert {r["dlq_id"] for r in json.loads(done.stdout)} == {
        json.loads(v)["dlq_id"] for _, _, v in rare}
    assert "--after" not in done.stderr  # nothing further back


def test_dlq_ids_whole_at_80_columns_and_show_takes_a_prefix(broker: Broker) -> None:
    records = _dlq_records(29)
    # The widest columns the worker writes: the reason must still be readable at 80.
    records.append((DLQ, None, dlq_record(
        Rejection(stage="posting", reason_code="unmapped_dimension", severity="warning",
                  detail="no GL account for gross_revenue[revenue code 0999]: posted to "
                  "suspense 2900"),
        origin=Origin(topic="rcm.events", partition=0, offset=999, key="provider:1234567890"),
        payload=b"{}", context={"account": "provider:1234567890"}).model_dump_json().encode()))
    asyncio.run(publish(broker.connection, records))
    ids = {json.loads(v)["dlq_id"] for _, _, v in records}
    listed = rcmflow(broker, "dlq", "list", columns=80)
    assert listed.returncode == 0, listed.stderr
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    assert "no GL account for gross_revenue[revenue code 0999]: posted" in listed.stdout
    assert ids <= set(re.findall(r"dlq_[0-9a-f]{24}", listed.stdout)), listed.stdout
    one = sorted(ids)[0]
    shown = rcmflow(broker, "dlq", "show", one[:12])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["dlq_id"] == one
    ambiguous = rcmflow(broker, "dlq", "show", "dlq_")
    assert ambiguous.returncode == 1
    assert "30 DLQ records start with 'dlq_'" in ambiguous.stderr, ambiguous.stderr
    assert len(set(re.findall(r"dlq_[0-9a-f]{24}", ambiguous.stderr)) & ids) == 20
    missing = rcmflow(broker, "dlq", "show", "dlq_zzz")
    assert missing.returncode == 1 and "no DLQ record 'dlq_zzz'" in missing.stderr


async def _tombstone(broker: Broker, key: bytes) -> None:
    producer = AIOKafkaProducer(**broker.connection.client_options(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(ACCOUNTS, key=key, value=None)
    finally:
        await producer.stop()


def test_accounts_list_pages_show_each_account_once_at_its_newest(broker: Broker) -> None:
    expected = Workload.build(accounts=70, seed=11, conflicts=0, invalid=0).expected()
    records = [(ACCOUNTS, key, value) for (_, key), value in expected.records.items()]
    heads = [(t, k, v) for t, k, v in records if b"/" not in k]
    # Older heads first (compaction has not run), then the real records, then one deletion.
    older = [(t, k, json.dumps(json.loads(v) | {"version": 0}).encode()) for t, k, v in heads]
    removed = heads[3][1]
    asyncio.run(publish(broker.connection, older + records))
    asyncio.run(_tombstone(broker, removed))
    pages = page_through(broker, "accounts", "list", limit=15)
    listed = [a["account"] for page in pages for a in page]
    assert len(listed) == len(set(listed)) == len(heads) - 1
    assert set(listed) == {k.decode() for _, k, _ in heads} - {removed.decode()}
    versions = {a["account"]: a["version"] for page in pages for a in page}
    assert versions == {a: s["version"] for a, s in expected.states.items()
                        if a != removed.decode()}


def test_accounts_history_of_an_unknown_account_fails_as_show_does(broker: Broker) -> None:
    for command in ("show", "history"):
        done = rcmflow(broker, "accounts", command, "NOPE")
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "no account 'NOPE'" in done.stderr, (command, done.stderr)
