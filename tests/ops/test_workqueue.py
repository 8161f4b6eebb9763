"""The exception work queue on a real broker with a real worker, as an operator runs it.

One stack for the module's story: an event refused by a chart threshold, replayed while the
worker is down (pending), the chart fixed and the worker back (applied: the balance moved
once), replayed again (a replay: nothing posted twice); then items resolved by hand with a
note, and a truncated payload refused. Every command is a fresh process reading the state
back from rcm.dlq.state: the queue survives restarts because it lives on the topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rcmflow.ops.accounts import posting_history
from rcmflow.ops.items import Filters
from rcmflow.ops.workqueue import QueueCursor, every_item, page
from rcmflow.runtime.kafka_io import log_ends, publish, read_topic
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import DLQ, EVENTS, POSTINGS_DLQ
from tests.conftest import PARTITIONS, Broker, Workers, wait_until
from tests.factories import charge, event_doc

pytestmark = pytest.mark.broker

SHIPPED_CHART = Path(__file__).resolve().parents[2] / "streams" / "chart_of_accounts.yaml"


def rcmflow(broker: Broker, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    base.update(RCMFLOW_BROKER=broker.url, COLUMNS="200", TERM="dumb",
                RCMFLOW_PARTITIONS=str(PARTITIONS), **env)
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=base,
                          capture_output=True, text=True, timeout=120)


def listed(broker: Broker, *args: str) -> dict[str, dict[str, Any]]:
    done = rcmflow(broker, "dlq", "list", "--json", *args)
    assert done.returncode == 0, done.stderr
    return {item["dlq_id"]: item for item in json.loads(done.stdout)}


def shown(broker: Broker, dlq_id: str) -> dict[str, Any]:
    done = rcmflow(broker, "dlq", "show", dlq_id)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def insurance_ar(broker: Broker, account: str) -> int:
    done = rcmflow(broker, "accounts", "show", account, "--json")
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["balances"]["insurance_ar"])


def test_an_item_is_replayed_after_its_cause_is_fixed_and_posts_once(
        broker: Broker, workers: Workers, tmp_path: Path) -> None:
    kafka = broker.connection
    wide = tmp_path / "chart.yaml"  # the fix: a small-balance threshold of $10, not $5
    # ... and revenue codes 099x mapped to the lab.
    wide.write_text(SHIPPED_CHART.read_text().replace(
        "small_balance_cents: 500", "small_balance_cents: 1000").replace(
        '  "030": LAB\n', '  "030": LAB\n  "099": LAB\n'))
    assert wide.read_text() != SHIPPED_CHART.read_text()
    first = workers.start("w1")
    write_off = event_doc("write_off", "Q1", event_id="Q1-WO", amount_cents=600,
                          reason="small_balance", from_ar="insurance")
    unmapped = charge(700, "Q2", event_id="Q2-CH", revenue_code="0999")  # -> suspense
    asyncio.run(publish(kafka, [(EVENTS, d["account"].encode(), json.dumps(d).encode())
                                for d in (charge(1000, "Q1", event_id="Q1-CH"), write_off,
                                          unmapped)]))

    def refused(code: bytes = b"small_balance_over_threshold") -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in asyncio.run(read_topic(kafka, DLQ))
                if r.value and code in r.value]

    wait_until(lambda: bool(refused()) and bool(refused(b"unmapped_dimension")), 90,
               "the write-off refused, the lab charge in suspense", first.log_tail)
    dlq_id = refused()[0]["dlq_id"]
    suspense_id = refused(b"unmapped_dimension")[0]["dlq_id"]
    assert insurance_ar(broker, "Q1") == 1000

    # Listed as open, with its age; each filter keeps it or leaves it out.
    item = listed(broker)[dlq_id]
    assert (item["queue"]["state"], item["queue"]["age"][-1]) == ("open", "s")
    assert dlq_id in listed(broker, "--reason", "small_balance_over_threshold", "--account",
                            "Q1", "--stage", "rules", "--entity", "01", "--source", "test",
                            "--since", "1h")
    for option, value in (("--older-than", "1h"), ("--account", "Q2"), ("--stage", "decode"),
                          ("--state", "resolved")):
        assert dlq_id not in listed(broker, option, value), option
    table = rcmflow(broker, "dlq", "list")
    assert dlq_id in table.stdout and "open" in table.stdout

    # The worker is down: the replay is sent, its outcome pending.
    first.stop()
    done = rcmflow(broker, "dlq", "replay", dlq_id, "--user", "ana", "--note",
                   "threshold raised to $10", "--wait", "1")
    assert done.returncode == 1 and "pending" in done.stdout, (done.stdout, done.stderr)
    assert listed(broker)[dlq_id]["queue"]["replay"]["outcome"] == "pending"

    # The chart fixed, the worker back: the retry is applied, the balance moves.
    second = workers.start("w2", RCMFLOW_COA=str(wide))
    wait_until(lambda: shown(broker, dlq_id)["queue"]["replay"]["outcome"] == "applied", 90,
               "the replay applied", second.log_tail)
    assert listed(broker)[dlq_id]["queue"]["replay"]["outcome"] == "applied", "read, not stored"
    assert insurance_ar(broker, "Q1") == 400

    # Replayed again: dedup holds, nothing posted twice.
    done = rcmflow(broker, "dlq", "replay", dlq_id, "--user", "bo", "--wait", "60")
    assert done.returncode == 0 and ": replay" in done.stdout, (done.stdout, done.stderr)
    assert insurance_ar(broker, "Q1") == 400
    deltas = asyncio.run(posting_history(kafka, "Q1"))
    assert [d["event_id"] for d in deltas] == ["Q1-CH", "Q1-WO"]
    assert dlq_id not in listed(broker), "done: off the default (todo) listing"
    assert dlq_id in listed(broker, "--state", "replayed")
    history = shown(broker, dlq_id)["queue"]["history"]
    assert [(s["by"], s["replay"]["outcome"]) for s in history] == [
        ("ana", "pending"), ("ana", "applied"), ("bo", "pending"), ("bo", "replay")]
    assert history[0]["note"] == "threshold raised to $10"

    # Resolving the suspense item posts its reclassification once; a replay after it, none.
    done = rcmflow(broker, "dlq", "resolve", suspense_id, "--note", "0999 is lab (chart)",
                   "--wait", "60")
    assert done.returncode == 0 and ": applied" in done.stdout, (done.stdout, done.stderr)
    again = rcmflow(broker, "dlq", "replay", suspense_id, "--wait", "60")
    assert again.returncode == 0 and ": replay" in again.stdout, (again.stdout, again.stderr)
    q2 = asyncio.run(posting_history(kafka, "Q2"))
    assert [d["event_id"] for d in q2] == ["Q2-CH", f"reclass:{suspense_id}"]
    assert [(ln["gl_account"], ln["debit_cents"], ln["credit_cents"])
            for ln in q2[1]["lines"]] == [("4010-LAB", 0, 700), ("2900", 700, 0)]
    assert insurance_ar(broker, "Q2") == 700

    # Items resolved by hand; a payload cut short is never re-sent.
    cut = dlq_record(Rejection(stage="validate", reason_code="invalid_event", detail="bad"),
                     origin=Origin(topic=EVENTS, partition=0, offset=99, key="Q3"),
                     payload=b"{" + b" " * 4000 + b"}", context={"account": "Q3"},
                     payload_bytes_max=1024)
    asyncio.run(publish(kafka, [(DLQ, b"Q3", cut.model_dump_json().encode())]))
    ends = asyncio.run(log_ends(kafka, EVENTS, list(range(PARTITIONS))))
    done = rcmflow(broker, "dlq", "replay", cut.dlq_id[:12])
    assert done.returncode == 2 and "cut to 1024" in done.stderr, done.stderr
    assert "Nothing was sent" in done.stderr
    time.sleep(0.5)
    assert asyncio.run(log_ends(kafka, EVENTS, list(range(PARTITIONS)))) == ends
    done = rcmflow(broker, "dlq", "resolve", cut.dlq_id, "--note", "re-sent from the EHR",
                   RCMFLOW_OPERATOR="cy")
    assert done.returncode == 0, done.stderr
    [step] = shown(broker, cut.dlq_id)["queue"]["history"]
    assert (step["state"], step["by"], step["note"]) == ("resolved", "cy",
                                                        "re-sent from the EHR")
    assert cut.dlq_id not in listed(broker)
    assert cut.dlq_id in listed(broker, "--state", "resolved", "--limit", "0")
    again = rcmflow(broker, "dlq", "resolve", cut.dlq_id, "--note", "twice")
    assert again.returncode == 2 and "resolved by cy" in again.stderr, again.stderr
    nonote = rcmflow(broker, "dlq", "resolve", dlq_id, "--note", " ")
    assert nonote.returncode == 2 and "needs a note" in nonote.stderr, nonote.stderr

    # Pages over both DLQ topics, a few rows at a time: every item once, newest first.
    erp = [dlq_record(Rejection(stage="posting", reason_code="closed_period", detail="closed"),
                      origin=Origin(topic="rcm.postings", partition=n % PARTITIONS, offset=n,
                                    key=f"Q{n}"), payload=b"{}",
                      context={"account": f"Q{n}", "adapter": "csv"}) for n in range(5)]
    for record in erp:  # interleaved in time with rcm.dlq records
        asyncio.run(publish(kafka, [(POSTINGS_DLQ, None, record.model_dump_json().encode())]))
        asyncio.run(publish(kafka, [(DLQ, None, dlq_record(
            Rejection(stage="validate", reason_code="invalid_event", detail="bad"),
            origin=Origin(topic=EVENTS, partition=0, offset=500 + len(record.dlq_id),
                          key=record.dlq_id), payload=b"{}",
            discriminator=record.dlq_id).model_dump_json().encode())]))
    everything = asyncio.run(every_item(kafka, Filters(state="all")))
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        rows, cursor = asyncio.run(page(kafka, Filters(state="all"), limit=3, after=cursor))
        seen += rows
        if cursor is None:
            break
        cursor = QueueCursor.decode(cursor.encode())  # as `--after` hands it back
    assert sorted(r["dlq_id"] for r in seen) == sorted(r["dlq_id"] for r in everything)
    assert len(everything) == 13 and {r["queue"]["topic"] for r in seen} == {DLQ, POSTINGS_DLQ}
    stamps = [r["queue"]["queued_at"] for r in seen]
    assert stamps == sorted(stamps, reverse=True)
