"""Production-sized 835s: one transaction set of 50,000 claims goes through, every record it
makes stays under Kafka's default record limit (1 MiB), and a refusal no retry can cure is
said so (exit 2, the watch folder's rejected/) instead of "run again" for ever."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from rich.console import Console

from rcmflow.connectors.inbound.files import Record, publish_records
from rcmflow.connectors.inbound.totals import SourceTotals
from rcmflow.connectors.inbound.watch import watch
from rcmflow.connectors.inbound.x12.ingest import RAW_RECORD_BYTES_MAX, X12File, X12Limits
from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.runtime.settings import Settings
from rcmflow.streams.topics import DLQ, EVENTS, RAW_X12
from tests.conftest import Broker
from tests.connectors.inbound.x12.x12_build import ClaimSpec, envelope, many_claims, remit_segments

CLAIMS = 50_000
#: Apache Kafka's default max.message.bytes (a topic rcmflow did not create or size).
KAFKA_DEFAULT_RECORD_BYTES = 1048588


@pytest.fixture(scope="module")
def bulk_835(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ST/SE of 50,000 balanced claims (~6 MB), as a large payer sends it."""
    path = tmp_path_factory.mktemp("bulk") / "bulk.835"
    path.write_bytes(envelope(remit_segments(many_claims(CLAIMS), trn02="EFT-BULK")))
    return path


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RCMFLOW_")}
    return subprocess.run([sys.executable, "-m", "rcmflow.cli", *args], env=base | env,
                          capture_output=True, text=True, timeout=900)


def _limit_topic(broker: Broker, topic: str, record_bytes: int) -> None:
    """``topic`` as someone else configured it: its own max.message.bytes, in force before
    this returns (Kafka applies a config change asynchronously, after the admin's answer)."""
    async def alter() -> None:
        admin = AIOKafkaAdminClient(**broker.connection.client_options())
        await admin.start()
        resource = ConfigResource(ConfigResourceType.TOPIC, topic,
                                  configs={"max.message.bytes": str(record_bytes)})
        try:
            for response in await admin.alter_configs([resource]):
                for error_code, message, *_ in response.resources:
                    assert error_code == 0, f"alter {topic}: {error_code} {message}"
            for _ in range(200):
                if await _topic_config(admin, topic, "max.message.bytes") == str(record_bytes):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{topic}: max.message.bytes never became {record_bytes}")
        finally:
            await admin.close()

    asyncio.run(alter())


async def _topic_config(admin: AIOKafkaAdminClient, topic: str, name: str) -> str | None:
    described = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: None})])
    for response in described:
        for _error, _message, _type, _name, entries in response.resources:
            for entry in entries:
                if entry[0] == name:
                    return str(entry[1])
    return None


def test_every_record_of_a_50000_claim_set_is_bounded_and_states_every_claim(
        bulk_835: Path) -> None:
    """No broker: the records ``rcmflow ingest x12`` would publish, read as it reads."""
    x12 = X12File(bulk_835, X12Limits())
    sizes: Counter[str] = Counter()
    largest = 0
    parts: list[dict[str, object]] = []
    totals = SourceTotals()
    for topic, key, value in x12.records():
        sizes[topic] += 1
        largest = max(largest, len(key or b"") + len(value))
        if topic == RAW_X12:
            doc = json.loads(value)
            parts.append({"key": key, "part": doc["part"], "parts": doc["parts"]})
            assert doc["status"] == "applied"
            part = SourceTotals.from_json(doc["source_totals"])
            totals.amounts += part.amounts
            totals.event_ids += part.event_ids
    assert x12.ok()
    assert largest <= RAW_RECORD_BYTES_MAX
    assert sizes[EVENTS] == CLAIMS
    assert sizes[RAW_X12] == parts[0]["parts"] > 1
    assert [p["part"] for p in parts] == list(range(len(parts)))
    assert parts[0]["key"] == b"000000001:1:0001" and parts[1]["key"] == b"000000001:1:0001:1"
    # Taken together the parts state every claim once: CLP04 80.00, CO 15.00, PR 5.00 each.
    assert len(set(totals.event_ids)) == CLAIMS
    by_measure: Counter[str] = Counter()
    for (_, _, measure), cents in totals.summed().items():
        by_measure[measure] += cents
    assert by_measure == {"payer_paid": 8000 * CLAIMS, "adjusted": 1500 * CLAIMS,
                          "patient_responsibility": 500 * CLAIMS}
    assert x12.outcome.warnings == [
        f"implementation-guide validation skipped: the file is {bulk_835.stat().st_size} "
        "bytes, over RCMFLOW_X12_GUIDE_BYTES_MAX (2097152)"]


def test_a_parked_50000_claim_set_has_one_bounded_dlq_record(tmp_path: Path) -> None:
    """Every claim unbalanced: 50,000 problems, one DLQ record of bounded size and list."""
    path = tmp_path / "bad.835"
    claims = [ClaimSpec(f"BAD{k:06d}", 10000, 8000) for k in range(CLAIMS)]  # no CAS
    path.write_bytes(envelope(remit_segments(claims)))
    x12 = X12File(path, X12Limits())
    records = list(x12.records())
    [dlq] = [json.loads(v) for t, _, v in records if t == DLQ]
    assert not [t for t, _, _ in records if t == EVENTS]
    assert max(len(v) for _, _, v in records) <= RAW_RECORD_BYTES_MAX
    assert dlq["context"]["problems_total"] == CLAIMS
    assert len(dlq["context"]["problems"]) == 100
    assert len(dlq["payload"]) <= 512 * 1024 and dlq["context"]["payload_truncated"] is True
    [summary] = x12.outcome.sets
    assert summary.parked and summary.problems_total == CLAIMS and len(summary.problems) == 100


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.brokers("kafka")
def test_a_50000_claim_set_is_ingested_even_where_records_are_limited_to_1_mib(
        broker: Broker, bulk_835: Path) -> None:
    """On Apache Kafka only: Tansu enforces no record limit, so there the run proved only
    what the broker-free test above proves (every record bounded, every claim stated), at
    ~50 s of CI."""
    _limit_topic(broker, RAW_X12, KAFKA_DEFAULT_RECORD_BYTES)  # as if not sized by rcmflow
    done = _run("ingest", "x12", str(bulk_835), RCMFLOW_BROKER=broker.url)
    assert done.returncode == 0, done.stderr
    assert f"1 of 1 transaction set applied, {CLAIMS} events" in done.stderr
    # Not a terminal: the long file showed progress as periodic log lines.
    assert "publishing bulk.835: " in done.stderr
    events = asyncio.run(read_topic(broker.connection, EVENTS))
    assert len({r.key for r in events}) == CLAIMS
    raw = asyncio.run(read_topic(broker.connection, RAW_X12))
    assert raw and max(len(r.value or b"") for r in raw) <= RAW_RECORD_BYTES_MAX
    assert not asyncio.run(read_topic(broker.connection, DLQ))


@pytest.mark.broker
@pytest.mark.brokers("kafka")
def test_a_refusal_no_retry_cures_rejects_the_file_instead_of_run_again(
        broker: Broker, tmp_path: Path) -> None:
    """rcm.raw.x12 limited to 1 KB by its owner: the set's raw record can never go."""
    _limit_topic(broker, RAW_X12, 1024)
    data = envelope(remit_segments(many_claims(20)))
    path = tmp_path / "r.835"
    path.write_bytes(data)
    done = _run("ingest", "x12", str(path), RCMFLOW_BROKER=broker.url)
    assert done.returncode == 2, done.stderr
    assert "refused by the broker" in done.stderr and "running again cannot succeed" in done.stderr
    assert "run the same command again" not in done.stderr

    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "r.835").write_bytes(data)
    console = Console(file=io.StringIO(), width=200)
    assert watch(drop, Settings(), broker.connection, console, once=True) == 0
    assert not (drop / "r.835").exists()
    reason = (drop / "rejected" / "r.835.reason").read_text()
    assert reason.startswith("broker_refused: ") and "running again cannot succeed" in reason
    assert (drop / "rejected" / "r.835").read_bytes() == data


def test_a_broker_that_is_down_leaves_the_file_for_the_next_poll(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    data = envelope(remit_segments(many_claims(3)))
    (drop / "r.835").write_bytes(data)
    out = io.StringIO()
    down = KafkaConnection.plaintext("127.0.0.1:9")
    assert watch(drop, Settings(), down, Console(file=out, width=200), once=True) == 0
    assert (drop / "r.835").read_bytes() == data
    assert not (drop / "rejected").exists() and not (drop / "done").exists()
    assert "left in place, will retry" in out.getvalue()


@pytest.mark.broker
@pytest.mark.brokers("tansu")
def test_a_file_that_cannot_be_read_midway_is_not_blamed_on_the_broker(broker: Broker) -> None:
    """Files are read as they are sent: an OSError of the reading stays an OSError (watch
    leaves the file in place saying so), never "the broker did not acknowledge"."""
    def records() -> Iterator[Record]:
        yield RAW_X12, b"k", b"{}"
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(FileNotFoundError):
        publish_records(broker.connection, records())


@pytest.mark.broker
def test_reconcile_reads_a_set_split_into_parts_as_one_set(broker: Broker,
                                                          tmp_path: Path) -> None:
    """`rcmflow reconcile` unchanged: the parts of a 5,000-claim set's raw record state every
    claim once, and the events on rcm.events carry the same cents."""
    from rcmflow.audit.reconcile import reconcile
    from rcmflow.runtime.kafka_io import publish
    from tests.audit.test_reconcile_sources import CHART, source_findings, sums

    path = tmp_path / "r.835"
    path.write_bytes(envelope(remit_segments(many_claims(5000))))
    records = list(X12File(path, X12Limits(guide_validation=False)).records())
    assert sum(1 for t, _, _ in records if t == RAW_X12) > 1
    asyncio.run(publish(broker.connection, records))
    report = asyncio.run(reconcile(broker.connection, CHART))
    assert source_findings(report) == []
    assert sums(report) == {"payer_paid": (8000 * 5000, 8000 * 5000),
                            "adjusted": (1500 * 5000, 1500 * 5000),
                            "patient_responsibility": (500 * 5000, 500 * 5000)}
    assert report.counts["source_events_found"] == report.counts["source_events_listed"] == 5000
