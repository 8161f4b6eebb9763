"""A workload through rcmflow's real connectors and core, in memory (no broker, no worker).

Each delivery goes the way its channel takes it: the HL7 intake with its replay store (MLLP),
``process_x12`` / ``process_payments`` (the drop folder, by suffix; ``rcmflow ingest
payments``), ``process_fhir`` (``rcmflow ingest fhir``); after each phase the events go
through the core's ``Processor`` over memory tables, each in the partition of rcm.events
its account key takes (``PARTITIONS``), as the workers take them. X12 guide
validation is off (its messages are warnings on rcm.raw.x12, never in rcm.dlq; on, the
cross-check passes the same, 3x slower).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner

from rcmflow.connectors.inbound.fhir.ingest import process_fhir
from rcmflow.connectors.inbound.files import Record
from rcmflow.connectors.inbound.hl7.intake import Intake
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.connectors.inbound.payments.ingest import process_payments
from rcmflow.connectors.inbound.watch import PAYMENT_SUFFIXES
from rcmflow.connectors.inbound.x12.ingest import X12Limits, process_x12
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import DLQ, EVENTS
from tests.chaos.model import Delivery, Workload

__all__ = ["Observed", "run_real", "PARTITIONS"]

#: rcm.events partitions in a fault run (two workers share them).
PARTITIONS = list(range(8))


@dataclass
class _Sink:
    records: list[Record] = field(default_factory=list)

    async def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)


@dataclass
class Observed:
    balances: dict[str, dict[str, int]]
    posting_ids: set[str]
    dlq: list[dict[str, object]]
    #: What the connectors wrote (raw, events, DLQ), in order, phase by phase.
    phases: list[list[Record]] = field(default_factory=list)


def _file_records(delivery: Delivery) -> list[Record]:
    origin = f"file:{delivery.name}"
    if delivery.channel == "fhir":
        return process_fhir(delivery.payload, name=delivery.name, origin=origin).records()
    if delivery.name.endswith(PAYMENT_SUFFIXES):
        return process_payments(delivery.payload, name=delivery.name, origin=origin).records()
    limits = X12Limits(guide_validation=False)
    return list(process_x12(delivery.payload, origin=origin, limits=limits).records(limits))


async def run_real(workload: Workload, replay_dir: Path) -> Observed:
    store = ReplayStore(replay_dir, retention_s=3600)
    sink = _Sink()
    intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="mllp")
    processor = Processor(load_chart())
    tables = MemoryTables()
    postings: set[str] = set()
    dlq: list[bytes] = []
    written: list[list[Record]] = []
    offsets = dict.fromkeys(PARTITIONS, 0)
    place = DefaultPartitioner()
    position = 0
    try:
        for phase in workload.phases():
            records: list[Record] = []
            for delivery in phase:
                if delivery.channel == "mllp":
                    position += 1
                    await intake.handle(delivery.payload, position=position)
                    records += sink.records
                    sink.records.clear()
                else:
                    records += _file_records(delivery)
            written.append(records)
            messages = []
            for record in records:
                if record[0] == EVENTS:
                    # keyed by account, as the producer places it (two workers share them)
                    part = int(place(record[1], PARTITIONS, PARTITIONS))
                    messages.append(Message(EVENTS, part, offsets[part], record[1], record[2]))
                    offsets[part] += 1
                elif record[0] == DLQ:
                    dlq.append(record[2])
            result = processor.process(messages, tables)
            tables.write(result)
            postings |= {json.loads(v)["posting_id"] for _, _, v in result.postings}
            dlq += [v for _, _, v in result.dlq]
    finally:
        store.close()
    balances = {account: view["balances"] for account, view in tables.views().items()}
    return Observed(balances, postings, [json.loads(v) for v in dlq], written)
