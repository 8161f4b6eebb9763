"""`rcmflow reconcile` on the real broker with the csv journal: zero drift, then named drift."""

from __future__ import annotations

import asyncio
import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from rcmflow.audit.reconcile import Report, reconcile
from rcmflow.cli import app
from rcmflow.connectors.erp.csv_journal import CsvJournal
from rcmflow.runtime.kafka_io import publish
from rcmflow.streams.chart import load_chart
from rcmflow.streams.dlq import Origin, dlq_record
from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.topics import ACCOUNTS, EVENTS, POSTINGS, POSTINGS_DLQ
from tests.conftest import Broker
from tests.connectors.erp.feed import run_in_process
from tests.workload import Workload

pytestmark = pytest.mark.broker
CHART = load_chart()


class World:
    """A workload's events, and the deltas and snapshots the real core makes of them."""

    def __init__(self, accounts: int = 12, seed: int = 3) -> None:
        self.workload = Workload.build(accounts, seed=seed, conflicts=2, invalid=2)
        expected = self.workload.expected()
        self.deltas = [PostingDelta.model_validate_json(v) for v in expected.postings.values()]
        self.states = expected.states
        self.records = expected.records

    def publish(self, broker: Broker, *, skip_posting: str | None = None) -> None:
        items: list[tuple[str, bytes | None, bytes]] = [
            (EVENTS, k.encode(), v) for k, v in self.workload.values]
        items += [(POSTINGS, d.account.encode(), d.model_dump_json().encode())
                  for d in self.deltas if d.posting_id != skip_posting]
        items += [(ACCOUNTS, key, value) for (_, key), value in self.records.items()]
        asyncio.run(publish(broker.connection, items))


async def _write(folder: Path, deltas: list[PostingDelta]) -> None:
    journal = CsvJournal(folder, CHART)
    await journal.open()
    for start in range(0, len(deltas), 50):
        await journal.post_batch(deltas[start:start + 50])
    await journal.close()


def run(broker: Broker, folder: Path | None) -> Report:
    adapter = CsvJournal(folder, CHART) if folder else None
    return asyncio.run(reconcile(broker.connection, CHART, adapter=adapter,
                                 open_adapter=False))


def cli(broker: Broker, folder: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["reconcile", "--erp", "csv", *args], env={
        "RCMFLOW_BROKER": broker.url, "RCMFLOW_ERP_CSV_DIR": str(folder)})
    return result.exit_code, result.stdout


def drop_journal_rows(folder: Path, posting_id: str, keep_first: int = 0) -> int:
    """Delete (by hand, as someone in finance might) an entry's rows from the journal file."""
    removed = 0
    for path in folder.glob("journal-*.csv"):
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        kept, seen = [], 0
        for row in rows:
            if row[0] == posting_id:
                seen += 1
                if seen > keep_first:
                    removed += 1
                    continue
            kept.append(row)
        with path.open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(kept)
    return removed


def causes(report: Report) -> dict[str, int]:
    return dict(report.findings_by_cause)


def test_zero_drift_after_the_csv_connector(broker: Broker, tmp_path: Path) -> None:
    world = World()
    world.publish(broker)
    folder = tmp_path / "journal"
    progress = run_in_process(CsvJournal(folder, CHART), broker)
    assert progress.posted == len(world.deltas) and progress.rejected == 0
    report = run(broker, folder)
    assert report.errors == 0, report.findings[:5]
    assert set(causes(report)) <= {"suspense"}  # the workload uses unmapped revenue codes
    t = report.totals
    assert t.events_cents == t.postings_cents == t.erp_cents == sum(
        d.total_cents for d in world.deltas) > 0
    assert report.counts["postings"] == report.counts["erp_entries"] == len(world.deltas)
    assert report.counts["accounts"] == len(world.states)
    code, out = cli(broker, folder)
    assert code == 0, out
    assert "no differences" in out or "suspense" in out
    code, out = cli(broker, folder, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["account_days_differing"] == {}


def test_a_deleted_journal_entry_names_the_account(broker: Broker,
                                                  tmp_path: Path) -> None:
    world = World()
    world.publish(broker)
    folder = tmp_path / "journal"
    asyncio.run(_write(folder, world.deltas))
    victim, torn = world.deltas[3], next(d for d in world.deltas[4:] if len(d.lines) > 2)
    assert drop_journal_rows(folder, victim.posting_id) == len(victim.lines)
    assert drop_journal_rows(folder, torn.posting_id, keep_first=1) == len(torn.lines) - 1
    report = run(broker, folder)
    found = {(f.cause, f.account, f.posting_id) for f in report.findings}
    assert ("journal_entry_missing", victim.account, victim.posting_id) in found
    assert ("unposted", torn.account, torn.posting_id) in found
    assert report.errors == 2
    assert report.totals.postings_cents - report.totals.erp_cents == victim.total_cents + (
        torn.total_cents - torn.lines[0].debit_cents)
    gl_off = {gl for gl, s in report.gl.items() if "difference_cents" in s}
    assert {x.gl_account for x in victim.lines} & gl_off
    code, out = cli(broker, folder)
    assert code == 1
    assert victim.account in out and "journal_entry_missing" in out
    metrics_file = tmp_path / "textfile" / "rcmflow_reconcile.prom"
    metrics_file.parent.mkdir()
    doc = json.loads(cli(broker, folder, "--json", "--metrics-file", str(metrics_file))[1])
    assert doc["ok"] is False
    assert any(f["account"] == victim.account and f["cause"] == "journal_entry_missing"
               for f in doc["findings"])
    # The same run as metrics, for node_exporter's textfile collector: the differences by
    # cause, never an account.
    text = metrics_file.read_text()
    samples = {(s.name, s.labels.get("cause") or s.labels.get("side")): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("rcmflow_reconcile_findings", "journal_entry_missing")] == 1
    assert samples[("rcmflow_reconcile_findings", "unposted")] == 1
    assert samples[("rcmflow_reconcile_findings", "missing_posting")] == 0
    assert samples[("rcmflow_reconcile_ok", None)] == 0
    assert samples[("rcmflow_reconcile_total_cents", "postings")] == report.totals.postings_cents
    assert victim.account not in text


def test_a_dropped_posting_is_missing_and_its_journal_entry_extra(broker: Broker,
                                                                 tmp_path: Path) -> None:
    world = World()
    dropped = world.deltas[5]
    world.publish(broker, skip_posting=dropped.posting_id)
    folder = tmp_path / "journal"
    asyncio.run(_write(folder, world.deltas))  # the ERP got it, the topic lost it
    report = run(broker, folder)
    by_cause: dict[str, set[Any]] = {}
    for f in report.findings:
        by_cause.setdefault(f.cause, set()).add(f.account if f.cause != "journal_entry_extra"
                                                else f.posting_id)
    assert by_cause["missing_posting"] == {dropped.account}
    assert by_cause["journal_entry_extra"] == {dropped.posting_id}
    assert by_cause["state_differs"] == {dropped.account}  # snapshot ≠ Σ remaining deltas
    assert report.errors >= 3
    # without an ERP: the stream checks alone still name it
    bare = run(broker, None)
    assert {f.account for f in bare.findings if f.cause == "missing_posting"} == {
        dropped.account}


def test_a_dlqd_posting_is_named_as_such(broker: Broker, tmp_path: Path) -> None:
    world = World()
    world.publish(broker)
    refused = world.deltas[2]
    record = dlq_record(
        Rejection(stage="posting", reason_code="erp_rejected",
                  detail="period 2026-11 is closed"),
        origin=Origin(topic=POSTINGS, partition=0, offset=2, key=refused.account),
        payload=refused.model_dump_json().encode(),
        context={"posting_id": refused.posting_id, "account": refused.account,
                 "amount_cents": refused.total_cents}, discriminator="csv")
    asyncio.run(publish(broker.connection, [(POSTINGS_DLQ, refused.account.encode(),
                                              record.model_dump_json().encode())]))
    folder = tmp_path / "journal"
    asyncio.run(_write(folder, [d for d in world.deltas if d is not refused]))
    report = run(broker, folder)
    assert [(f.cause, f.account) for f in report.findings if f.severity == "error"] == [
        ("dlq", refused.account)]
    assert any("period 2026-11 is closed" in f.detail for f in report.findings)
    assert report.totals.postings_cents == report.totals.erp_cents + report.totals.dlq_cents


def _delete_move_by_sql(server: Any, posting_id: str) -> None:
    """A journal entry deleted by hand in the ERP's database (Tryton refuses it over RPC
    once posted, so this is what "by hand" has to mean for a posted move)."""
    import psycopg

    conninfo = server.postgres.conninfo
    conninfo = (conninfo.replace("dbname=postgres", f"dbname={server.db}")
                if "dbname=" in conninfo else conninfo.rsplit("/", 1)[0] + f"/{server.db}")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM account_move WHERE external_id = %s",
                           (posting_id,)).fetchone()
        assert row is not None
        conn.execute("DELETE FROM account_move_line WHERE move = %s", (row[0],))
        conn.execute("DELETE FROM account_move WHERE id = %s", (row[0],))


def test_tryton_zero_drift_then_a_deleted_move_names_the_account(
        broker: Broker, tryton: Any) -> None:
    from tests.connectors.erp.conftest import adapter_for

    world = World(accounts=8, seed=9)
    world.publish(broker)
    progress = run_in_process(adapter_for(tryton), broker)
    assert progress.posted == len(world.deltas) and progress.rejected == 0
    report = asyncio.run(reconcile(broker.connection, CHART, adapter=adapter_for(tryton)))
    assert report.errors == 0, report.findings[:5]
    assert report.totals.erp_cents == report.totals.postings_cents > 0
    assert report.counts["erp_entries"] == len(world.deltas)
    victim = world.deltas[4]
    _delete_move_by_sql(tryton, victim.posting_id)
    report = asyncio.run(reconcile(broker.connection, CHART, adapter=adapter_for(tryton)))
    assert [(f.cause, f.account, f.posting_id) for f in report.ordered()
            if f.severity == "error"] == [
        ("journal_entry_missing", victim.account, victim.posting_id)]
    assert report.totals.postings_cents - report.totals.erp_cents == victim.total_cents


def test_source_records_without_their_events_are_named(broker: Broker) -> None:
    """rcm.raw.payments rows and rcm.raw.x12 sets the connectors applied must be events,
    carrying the cents the sources stated."""
    from rcmflow.connectors.inbound.payments.ingest import process_payments
    from rcmflow.connectors.inbound.x12.ingest import X12Limits, process_x12
    from tests.connectors.inbound.x12.x12_build import ClaimSpec, envelope, remit_segments

    rows = ("type,account,amount,date,reference\n"
            "payment,S1001,125.50,2026-11-20,REF-1\n"
            "payment,S1002,20.00,2026-11-20,REF-2\n"
            "refund,S1003,5.00,2026-11-21,REF-3\n")
    payments = process_payments(rows.encode(), name="day.csv", origin="file:day.csv").records()
    remit = envelope(remit_segments([ClaimSpec("S2001", 80000, 45000, pcn="P1",
                                               cas=[("CO", "45", 35000)]),
                                     ClaimSpec("S2002", 10000, 10000, pcn="P2")],
                                    trn02="EFT-9"), isa13="000000301")
    x12 = list(process_x12(remit, origin="file:r.835",
                           limits=X12Limits(guide_validation=False)).records(
        X12Limits(guide_validation=False)))
    assert sum(1 for t, _, _ in x12 if t == EVENTS) == 2
    dropped_payment = next(v for t, _, v in payments if t == EVENTS and b"S1002" in v)
    dropped_claim = next(v for t, _, v in x12 if t == EVENTS and b"S2002" in v)
    everything = [*payments, *x12]

    def source_findings(items: list[tuple[str, bytes | None, bytes]]) -> list[Any]:
        asyncio.run(publish(broker.connection, items))
        report = run(broker, None)
        return [(f.account, f.detail) for f in report.findings
                if f.cause == "source_event_missing"]

    assert source_findings([r for r in everything if r[2] not in (
        dropped_payment, dropped_claim)]) != []
    found = source_findings([])  # nothing new: the same two are missing
    assert [a for a, _ in found] == ["S1002", "S2002"], found
    assert "payment:lockbox:REF-2" in found[0][1] and "x12-835:" in found[1][1]
    differs = {(f.account, f.amount_cents) for f in run(broker, None).findings
               if f.cause == "source_amount_differs"}
    assert differs == {("S1002", 2000), ("S2002", 10000)}  # the payment; CLP04 paid
    assert source_findings([(t, k, v) for t, k, v in everything if v in (
        dropped_payment, dropped_claim)]) == []  # they arrive late: all accounted for


@pytest.mark.brokers("tansu")
@pytest.mark.parametrize("kind", ["netsuite", "odoo", "erpnext"])
def test_reconcile_reads_a_cloud_erp_back(kind: str, broker: Broker) -> None:
    """Each cloud ERP's journal read back and compared. On Tansu only: what differs by kind
    is the ERP side (its fake, over HTTP); reading the topics is the same code on both
    brokers, which the csv and Tryton tests above run on both (the Kafka runs were ~1 min)."""
    from tests.connectors.erp.test_cloud_adapters import make

    world = World(accounts=6, seed=4)
    world.publish(broker)
    case = make(kind)

    async def post_all() -> None:
        await case.adapter.open()
        await case.adapter.post_batch(world.deltas)
        await case.adapter.close()

    asyncio.run(post_all())
    report = asyncio.run(reconcile(broker.connection, CHART, adapter=case.adapter))
    assert report.errors == 0 and report.counts["erp_entries"] == len(world.deltas)
    victim = world.deltas[1]
    fake: Any = case.fake
    if kind == "netsuite":
        del fake.entries[victim.posting_id]
    elif kind == "odoo":
        move = fake.xmlids[("rcmflow", victim.posting_id)]["res_id"]
        fake.moves[move]["state"] = "draft"  # "reset to draft" by an accountant
    else:
        name = next(n for n, e in fake.entries.items() if e["rcm_posting_id"] ==
                    victim.posting_id)
        fake.entries[name]["accounts"][0]["debit"] = Decimal("0.01")
    report = asyncio.run(reconcile(broker.connection, CHART, adapter=case.adapter))
    want = {"netsuite": "journal_entry_missing", "odoo": "unposted",
            "erpnext": "amount_differs"}[kind]
    assert [(f.cause, f.account) for f in report.ordered() if f.severity == "error"] == [
        (want, victim.account)]


def test_too_many_postings_are_refused_up_front(broker: Broker) -> None:
    from rcmflow.audit.exceptions import TooLarge

    World(accounts=4).publish(broker)
    with pytest.raises(TooLarge):
        asyncio.run(reconcile(broker.connection, CHART, postings_max=3))
