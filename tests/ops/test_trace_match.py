"""How a trace decides what belongs to a unit, and how lag names groups: pure, no broker
(the wiring is tests/ops/test_trace_lag_pipeline.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rcmflow.connectors.inbound import totals
from rcmflow.ops import unit
from rcmflow.ops.lag import facade_lag, group_role, rcmflow_groups
from rcmflow.ops.trace import parse_since
from rcmflow.ops.unit import (
    Needles,
    Step,
    Trace,
    match_dlq,
    match_event,
    match_posting,
    match_raw,
)
from rcmflow.runtime.kafka_io import Record
from rcmflow.streams.topics import (
    ACCOUNTS,
    DLQ,
    EVENTS,
    POSTINGS,
    POSTINGS_DLQ,
    RAW_HL7,
    RAW_PAYMENTS,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
HL7_KEY = "EHR|HOSP|MSG42"
FT1 = [f"hl7:{HL7_KEY}:ft1-1", f"hl7:{HL7_KEY}:ft1-2"]


def _rec(topic: str, value: object, *, key: str | None = None, offset: int = 0,
         headers: tuple[tuple[str, bytes], ...] = ()) -> Record:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Record(topic, 1, offset, key.encode() if key else None, raw, 1_000 + offset, headers)


def _hl7_raw() -> Record:
    summed = {"amounts": [{"account": "A1", "day": "2026-03-01", "measure": "charges",
                           "cents": 15000}],
              "events": [["A1", FT1[0]], ["A1", FT1[1]]]}
    return _rec(RAW_HL7, b"MSH|^~\\&|EHR|HOSP|||||DFT^P03|MSG42\rPID|1||MRN||DOE^JANE",
                key=HL7_KEY, headers=(("rcm-status", b"applied"),
                                      ("rcm-source-totals", json.dumps(summed).encode())))


def test_the_raw_header_names_are_the_connectors() -> None:
    assert (unit.HEADER_STATUS, unit.HEADER_TOTALS) == (totals.HEADER_STATUS, totals.HEADER_TOTALS)


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", NOW - timedelta(days=7)), ("12h", NOW - timedelta(hours=12)),
    ("30m", NOW - timedelta(minutes=30)), ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-03-01T08:00:00+02:00", datetime(2026, 3, 1, 6, tzinfo=UTC)), ("all", None)])
def test_since_takes_durations_dates_and_all(text: str, expected: datetime | None) -> None:
    assert parse_since(text, NOW) == expected


def test_a_bad_since_is_refused_with_the_forms_it_takes() -> None:
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("last week", NOW)


def test_an_hl7_message_found_by_msh10_brings_all_its_events_and_no_phi() -> None:
    needles = Needles("MSG42")
    step = match_raw(_hl7_raw(), needles)
    assert step is not None and step.summary["msh_10"] == "MSG42"
    assert needles.event_ids == set(FT1)
    assert step.payload is None and "DOE" not in json.dumps(step.to_json())
    shown = match_raw(_hl7_raw(), Needles("MSG42"), payloads=True)
    assert shown is not None and "DOE^JANE" in shown.payload


def test_a_message_found_through_one_event_brings_only_that_event() -> None:
    needles = Needles(FT1[1])
    assert match_raw(_hl7_raw(), needles) is not None
    assert needles.event_ids == set()  # the query itself is the event followed
    assert match_raw(_hl7_raw(), Needles("MSG4")) is None  # no prefix matches


def test_a_payment_is_found_by_its_reference_and_by_its_batch() -> None:
    row = {"origin": "file:day.csv", "row": 3, "status": "applied",
           "fields": {"reference": "LBX-7", "batch": "B-0310", "name": "Jane Doe"},
           "source_totals": {"amounts": [], "events": [["A1", "payment:lockbox:LBX-7"]]}}
    for query in ("LBX-7", "B-0310", "payment:lockbox:LBX-7"):
        step = match_raw(_rec(RAW_PAYMENTS, row, key="payment:lockbox:LBX-7"), Needles(query))
        assert step is not None, query
        assert "Jane" not in json.dumps(step.to_json())
    event = {"event_id": "payment:lockbox:LBX-7", "account": "A1", "kind": "patient_payment",
             "amount_cents": 2000, "correlation_id": "B-0310", "dimensions": {"entity": "01"}}
    for query in ("LBX-7", "B-0310"):
        needles = Needles(query)
        step = match_event(_rec(EVENTS, event, offset=9), needles)
        assert step is not None and step.summary["amount_cents"] == 2000
        assert needles.event_places == {(1, 9)}
    assert match_event(_rec(EVENTS, event), Needles("LBX")) is None


def test_a_posting_id_names_its_event() -> None:
    delta = {"posting_id": "pst_1", "account": "A1", "event_id": FT1[0],
             "event_kind": "charge_posted", "account_version": 1,
             "lines": [{"gl_account": "1200", "debit_cents": 10000, "credit_cents": 0},
                       {"gl_account": "4000", "debit_cents": 0, "credit_cents": 10000}]}
    needles = Needles("pst_1")
    step = match_posting(_rec(POSTINGS, delta), needles)
    assert step is not None and step.summary["amount_cents"] == 10000
    assert needles.event_ids == {FT1[0]} and needles.posting_ids == {"pst_1"}
    assert match_posting(_rec(POSTINGS, delta), Needles("pst_2")) is None


def _dlq(context: dict[str, object], origin: dict[str, object]) -> dict[str, object]:
    return {"dlq_id": "dlq_x", "stage": "posting", "reason_code": "r", "severity": "error",
            "reason": "why", "origin": origin, "context": context, "payload": "{}"}


def test_dlq_records_are_the_units_by_id_context_or_origin_never_by_account() -> None:
    needles = Needles("MSG42", event_ids={FT1[0]}, posting_ids={"pst_1"},
                      event_places={(2, 5)})
    here = {"topic": EVENTS, "partition": 2, "offset": 5, "key": "A1"}
    elsewhere = {"topic": EVENTS, "partition": 2, "offset": 6, "key": "A1"}
    assert match_dlq(_rec(DLQ, _dlq({"msh_10": "MSG42"}, elsewhere)), needles)
    assert match_dlq(_rec(DLQ, _dlq({"account": "A1"}, here)), needles)
    assert match_dlq(_rec(DLQ, _dlq({"event_id": FT1[0]}, elsewhere)), needles)
    refused = match_dlq(_rec(POSTINGS_DLQ, _dlq({"posting_id": "pst_1", "adapter": "csv"},
                                                elsewhere)), needles)
    assert refused is not None and refused.stage == "posting_dlq"
    assert match_dlq(_rec(DLQ, _dlq({"account": "MSG42"}, elsewhere)), needles) is None


def test_the_latency_runs_from_the_first_source_record_to_the_last_timestamped_one() -> None:
    found = Trace("q", None, [
        Step("event", EVENTS, 0, 0, 1_500, {}), Step("raw", RAW_HL7, 0, 0, 1_000, {}),
        Step("posting", POSTINGS, 0, 0, 2_250, {}),
        Step("erp", POSTINGS, 0, 0, None, {"outcome": "taken"})])
    assert (found.latency_ms, found.latency_to) == (1_250, "posting")
    assert found.erp_outcomes() == {"taken": 1}


def test_groups_are_named_by_their_role() -> None:
    assert group_role("rcmflow", "rcmflow") == ("worker", EVENTS)
    assert group_role("rcmflow", "rcmflow-erp-tryton") == ("erp tryton", POSTINGS)
    assert group_role("rcmflow", "rcmflow-consume-hl7-ehr.dft") == ("consume hl7", "ehr.dft")
    assert group_role("rcmflow", "someone-else") == ("other", None)
    # The workers' group is shown before it exists; other applications' groups are not.
    assert rcmflow_groups("rcmflow", ["other-app", "rcmflow-erp-csv"], ["mine"]) == [
        "mine", "rcmflow", "rcmflow-erp-csv"]


class _Ends:
    async def end(self, topic: str) -> dict[int, int]:
        assert topic == ACCOUNTS
        return {0: 10, 1: 4}

    async def start(self, topic: str) -> dict[int, int]:
        return {0: 0, 1: 0}


def test_the_facade_progress_is_read_from_its_store(tmp_path: Path) -> None:
    store = tmp_path / "read.sqlite"
    db = sqlite3.connect(store)
    db.execute("CREATE TABLE offsets (partition INTEGER PRIMARY KEY, next_offset INTEGER)")
    db.execute("INSERT INTO offsets VALUES (0, 7)")
    db.commit()
    db.close()
    found = asyncio.run(facade_lag(_Ends(), store))  # type: ignore[arg-type]
    assert [(p.partition, p.committed, p.lag) for p in found.partitions] == [
        (0, 7, 3), (1, None, 4)]
    assert found.total_lag == 7
    missing = asyncio.run(facade_lag(_Ends(), tmp_path / "none.sqlite"))  # type: ignore[arg-type]
    assert missing.total_lag is None and "no facade store" in (missing.note or "")


def test_lag_and_trace_say_run_again_when_the_broker_is_down(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    env.update(RCMFLOW_BROKER="127.0.0.1:9", RCMFLOW_DATA_DIR=str(tmp_path))
    for args in (("lag",), ("trace", "MSG42")):
        done = subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "run the same command again" in " ".join(done.stderr.split())


def test_a_unit_past_the_ids_bound_is_said_to_be_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unit, "IDS_MAX", 2)
    needles = Needles("MSG42")
    needles.add(needles.event_ids, ["e1", "e2", "e2"])
    assert not needles.overflowed
    needles.add(needles.event_ids, ["e3"])
    assert needles.overflowed and needles.event_ids == {"e1", "e2"}
