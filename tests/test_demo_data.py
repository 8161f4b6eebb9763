"""The demo's real-format files go through their connectors and leave account A3001 exact."""

from __future__ import annotations

from rich.console import Console

from rcmflow.cli.demo_sources import DEMO_ACCOUNT, DEMO_ACCOUNT_VERSION, HL7_FILE, X12_FILES
from rcmflow.connectors.inbound.hl7.mapping import map_message
from rcmflow.connectors.inbound.hl7.reader import normalise, read_message
from rcmflow.connectors.inbound.hl7.service import mapping_config
from rcmflow.connectors.inbound.x12.files import limits_from, process_x12_path
from rcmflow.runtime.settings import Settings
from rcmflow.streams.chart import load_chart
from rcmflow.streams.memory_tables import MemoryTables
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.topics import EVENTS


def test_the_demo_visit_applies_to_the_cent() -> None:
    settings = Settings()
    events = map_message(read_message(normalise(HL7_FILE.read_bytes())),
                         mapping_config(settings))
    assert isinstance(events, list), events
    values = [event.model_dump_json().encode() for event in events]
    for path in X12_FILES:
        outcome = process_x12_path(path, settings, Console(quiet=True))
        assert outcome.ok(), path
        values += [value for topic, _, value in outcome.records(limits_from(settings))
                   if topic == EVENTS]
    messages = [Message(EVENTS, 0, offset, DEMO_ACCOUNT.encode(), value)
                for offset, value in enumerate(values)]
    result = Processor(load_chart(None)).process(messages, MemoryTables())
    assert not result.dlq
    state = result.heads[(0, DEMO_ACCOUNT)]
    assert state.version == DEMO_ACCOUNT_VERSION
    b = state.balances
    assert (b.gross_charges, b.payer_paid, b.contractual_adjustments) == (15000, 9000, 4000)
    assert (b.insurance_ar, b.patient_ar, b.balance) == (0, 2000, 2000)
