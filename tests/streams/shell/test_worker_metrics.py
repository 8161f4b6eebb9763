"""The worker's new metrics from a processed batch (pure: the processor and ``Progress``,
the same calls ``Pipeline.handle`` makes once a batch is durable)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from rcmflow.runtime.metrics import LABEL_VALUES_MAX, OTHER, new_registry, render
from rcmflow.streams.chart import load_chart
from rcmflow.streams.fee_schedule import FeeSchedule
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Processor
from rcmflow.streams.shell.worker import Progress, worker_families
from tests.factories import adjudication, charge, messages, payment


def _samples(progress: Progress) -> dict[str, float]:
    text = render(new_registry(lambda: worker_families(progress))).decode()
    return {s.name + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("rcmflow_worker")}


def test_events_by_source_and_kind_postings_by_kind_and_latency() -> None:
    first = charge(10_000, source="hl7", account="A1")
    docs = [first, charge(2_000, source="hl7", account="A2"),
            adjudication(10_000, 8_000, [("CO", "45", 2_000)], account="A1", source="x12-835"),
            first,  # a replay: dropped, not counted as applied
            payment(500, account="A2", source="lockbox")]
    batch = messages(docs)  # record timestamps 1_795_000_000_000 ms
    tables = MemoryTables()
    result = Processor(load_chart()).process(batch, tables)
    assert result.counts.replays == 1 and result.counts.applied == 4
    progress = Progress()
    durable_at = 1_795_000_000.0 + 0.75  # the batch's acks came 750 ms after the records
    progress.note(result.applied, durable_at)
    got = _samples(progress)
    total = "rcmflow_worker_applied_events_total"
    assert got[f"{total}kind=charge_posted,source=hl7"] == 2
    assert got[f"{total}kind=claim_adjudicated,source=x12-835"] == 1
    assert got[f"{total}kind=patient_payment,source=lockbox"] == 1
    by_kind = "rcmflow_worker_postings_by_kind_total"
    assert got[f"{by_kind}kind=claim_adjudicated"] == 1
    assert got[f"{by_kind}kind=charge_posted"] == 2
    latency = "rcmflow_worker_event_to_posting_seconds"
    assert got[f"{latency}_count"] == len(result.postings) == 4
    assert got[f"{latency}_sum"] == 4 * 0.75
    assert got[f"{latency}_bucketle=0.5"] == 0 and got[f"{latency}_bucketle=1.0"] == 4
    assert got[f"{latency}_bucketle=+Inf"] == 4


def test_sources_are_bounded() -> None:
    """A feed sending a new source value per event cannot add a series per event."""
    docs = [charge(100, source=f"S{n}", account=f"A{n}") for n in range(LABEL_VALUES_MAX + 5)]
    result = Processor(load_chart()).process(messages(docs), MemoryTables())
    progress = Progress()
    progress.note(result.applied, 1_795_000_001.0)
    sources = {source for source, _ in progress.by_source_kind}
    assert len(sources) == LABEL_VALUES_MAX + 1 and OTHER in sources
    assert progress.by_source_kind[(OTHER, "charge_posted")] == 5


def test_contract_lines_and_variance_cents_by_payer() -> None:
    """One claim of payer P1: 99213 underpaid by 10.00, 99214 unpriced; one of an uncontracted
    payer (``streams/variance.py``)."""
    fees = FeeSchedule.model_validate({"version": "m1", "schedules": [
        {"name": "p1", "payer": "P1", "effective_from": "2026-01-01",
         "procedures": {"99213": {"amount_cents": 9500}}}]})

    def line(n: str, code: str, paid: int) -> dict[str, object]:
        return {"line_id": n, "procedure_code": code, "charge_cents": 15_000,
                "paid_cents": paid, "adjustments": [
                    {"group": "CO", "reason": "45", "amount_cents": 15_000 - paid}]}

    def claim(account: str, payer: str) -> dict[str, object]:
        return adjudication(30_000, 16_500, [], account=account, source="x12-835",
                            lines=[line("1", "99213", 8500), line("2", "99214", 8000)],
                            dimensions={"entity": "01", "payer": payer})

    docs = [claim("A1", "P1"), claim("A2", "P9")]
    result = Processor(load_chart(), fee_schedule=fees).process(messages(docs), MemoryTables())
    assert result.counts.applied == 2
    progress = Progress()
    progress.note_contract(result.contract)
    got = _samples(progress)
    lines = "rcmflow_worker_contract_lines_total"
    assert got[f"{lines}payer=P1,result=priced"] == 1
    assert got[f"{lines}payer=P1,result=underpaid"] == 1
    assert got[f"{lines}payer=P1,result=unpriced"] == 1
    assert got[f"{lines}payer=P9,result=uncontracted"] == 2
    assert got["rcmflow_worker_variance_cents_totaldirection=underpaid,payer=P1"] == 1000


def test_claims_adjudicated_by_payer_and_outcome_the_denial_rates_denominator() -> None:
    from tests.factories import event_doc

    def answer(account: str, payer: str, outcome: str, paid: int) -> dict[str, object]:
        return event_doc("claim_adjudicated", account, claim_id=f"C-{account}", outcome=outcome,
                         charge_cents=1_000, paid_cents=paid,
                         adjustments=[{"group": "CO", "reason": "45" if paid else "50",
                                       "amount_cents": 1_000 - paid}],
                         dimensions={"entity": "01", "payer": payer})
    docs = [answer("D1", "P1", "processed", 800), answer("D2", "P1", "denied", 0),
            answer("D3", "P1", "processed", 700), answer("D4", "P2", "denied", 0)]
    result = Processor(load_chart()).process(messages(docs), MemoryTables())
    progress = Progress()
    progress.note(result.applied, 1_795_000_001.0)
    got = _samples(progress)
    total = "rcmflow_worker_claims_adjudicated_total"
    assert got[f"{total}outcome=processed,payer=P1"] == 2
    assert got[f"{total}outcome=denied,payer=P1"] == 1
    assert got[f"{total}outcome=denied,payer=P2"] == 1
