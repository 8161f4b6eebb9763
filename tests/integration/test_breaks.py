"""Each guarantee broken on purpose does the damage a user would see, and only then.

Three test-only switches (``Faults.break_*``, docs/testing.md "Breaking a guarantee on
purpose") turn one guarantee off in a real process. Each test runs the same steps with the
switch off ("kept") and on ("broken"): kept, nothing is lost or doubled; broken, the damage
shows where a user (or a fault run's oracle) would look. So a check that stays green when a
guarantee is gone is caught here first.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError

from rcmflow.connectors.inbound.hl7.intake import Intake, KafkaSink
from rcmflow.connectors.inbound.hl7.listener import ListenerLimits, MllpListener
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.runtime.broker import free_port
from rcmflow.runtime.faults import Faults
from rcmflow.runtime.kafka_io import committed_offsets, publish, read_topic
from rcmflow.streams.postings import PostingDelta
from rcmflow.streams.topics import EVENTS, RAW_HL7
from tests.conftest import PARTITIONS, Broker, WorkerProcess, Workers, wait_until
from tests.connectors.erp.feed import publish_deltas, real_deltas, start_connector
from tests.connectors.erp.test_csv import rows
from tests.connectors.inbound.hl7.test_hl7_listener import Client, dft, errs, msa
from tests.factories import charge
from tests.workload import Observed

pytestmark = pytest.mark.broker

KEPT_OR_BROKEN = pytest.mark.parametrize("broken", [False, True], ids=["kept", "broken"])


def _committed(broker: Broker, group: str = "rcmflow") -> int:
    try:
        return sum(asyncio.run(committed_offsets(broker.connection, group, EVENTS,
                                                 range(PARTITIONS))).values())
    except GroupCoordinatorNotAvailableError:  # Kafka, before the group's first join
        return 0


@KEPT_OR_BROKEN
def test_break_dedup_applies_a_replay_twice(broker: Broker, workers: Workers,
                                            broken: bool) -> None:
    """A charge sent twice (an interface engine's re-send): kept, the account holds it once
    and rcm.postings has one delta; broken, the account holds it twice and its posting id
    comes a second time with other content (what the ERP's duplicate guard would hide)."""
    doc = charge(12_345, "BRK-D1", event_id="BRK-D1-CH")
    value = json.dumps(doc).encode()
    asyncio.run(publish(broker.connection, [(EVENTS, b"BRK-D1", value)] * 2))
    worker = workers.start("w1", **Faults(break_dedup=broken).environment())
    # Offsets are committed only once the states are on the broker (the write order).
    wait_until(lambda: _committed(broker) == 2, 90, "both records committed", worker.log_tail)
    observed = Observed.read(broker.connection)
    balances = observed.states["BRK-D1"]["balances"]
    (posted,) = observed.postings.values()
    if broken:
        assert balances["gross_charges"] == balances["insurance_ar"] == 2 * 12_345
        assert len(posted) == 2, "one posting id, sent twice with other contents"
    else:
        assert balances["gross_charges"] == balances["insurance_ar"] == 12_345
        assert len(posted) == 1


@KEPT_OR_BROKEN
def test_break_erp_commit_first_loses_a_posting_to_a_kill(broker: Broker, tmp_path: Path,
                                                          broken: bool) -> None:
    """`rcmflow erp csv` killed right before its second ERP call, then run to the end: kept,
    every posting is in the journal exactly once (the uncommitted chunk is read again);
    broken, the chunk whose offsets were committed before the call never reaches the ERP."""
    items = real_deltas(4, seed=21)
    publish_deltas(broker, items)
    wanted = sorted(PostingDelta.model_validate_json(v).posting_id for _, v in items)
    folder, data = tmp_path / "journal", tmp_path / "data"
    env = {"RCMFLOW_ERP_CSV_DIR": str(folder), "RCMFLOW_ERP_BATCH_MAX": "2"}
    first = start_connector("csv", broker, data, 0, **env, **Faults(
        erp_kill_before=2, break_erp_commit_first=broken).environment())
    assert first.process.wait(60) == -9, first.log_tail()
    final = start_connector("csv", broker, data, 1, "--idle-exit-s", "2", **env)
    assert final.process.wait(120) == 0, final.log_tail()
    journal = [row["posting_id"] for row in rows(folder) if row["line_no"] == "1"]
    assert len(journal) == len(set(journal)), "a posting twice in the ERP"
    missing = set(wanted) - set(journal)
    if broken:
        assert 1 <= len(missing) <= 2, "the killed call's chunk (batch max 2) is lost"
    else:
        assert sorted(journal) == wanted


@KEPT_OR_BROKEN
def test_break_mllp_ack_first_loses_an_acked_message_to_a_kill(
        broker: Broker, workers: Workers, tmp_path: Path, broken: bool) -> None:
    """`rcmflow mllp` killed right after its first ACK: the sender got AA either way (so it
    never sends the message again); kept, the message and its event are on the broker;
    broken, they are nowhere: an accepted charge is lost."""
    port = free_port()
    log = tmp_path / "mllp.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "rcmflow.cli", "mllp", "--port", str(port)],
            env=workers.env(**Faults(mllp_kill_after_ack=1,
                                     break_mllp_ack_first=broken).environment()),
            stdout=out, stderr=subprocess.STDOUT)
    listener = WorkerProcess("mllp", log, process)
    try:
        async def send() -> tuple[str, str]:
            for _ in range(300):
                try:
                    client = await Client.connect(port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail(f"the listener never listened\n{listener.log_tail()}")
            answer = msa(await client.send(dft("BRK-M1", "BRK-M1", "125.00")))
            client.writer.close()
            return answer

        assert asyncio.run(send()) == ("AA", "BRK-M1")
        assert process.wait(30) == -9, listener.log_tail()
    finally:
        listener.kill()
    events = [json.loads(r.value) for r in asyncio.run(read_topic(broker.connection, EVENTS))]
    raw = asyncio.run(read_topic(broker.connection, RAW_HL7))
    charges = [e for e in events if e["account"] == "BRK-M1"]
    if broken:
        assert (charges, raw) == ([], []), "an ACKed message was stored after all"
    else:
        assert [e["amount_cents"] for e in charges] == [12_500] and len(raw) == 1


@KEPT_OR_BROKEN
async def test_break_mllp_ack_first_acks_what_the_broker_never_took(
        broker: Broker, tmp_path: Path, broken: bool) -> None:
    """The broker goes away between two messages: kept, the second is answered AR "send it
    again" (the sender keeps it and resends); broken, it is answered AA, so the sender drops
    a message that is on no broker."""
    sink = KafkaSink(broker.connection, 3)
    await sink.start()
    store = ReplayStore(tmp_path / "replay", 3600)
    intake = Intake(sink=sink, store=store, config=MappingConfig(), channel="mllp")
    listener = MllpListener(intake, ListenerLimits(),
                            faults=Faults(break_mllp_ack_first=broken))
    port = await listener.start("127.0.0.1", 0)
    try:
        client = await Client.connect(port)
        assert msa(await client.send(dft("BRK-OK"))) == ("AA", "BRK-OK")
        broker.stop()
        ack = await client.send(dft("BRK-LOST"))
        if broken:
            assert msa(ack) == ("AA", "BRK-LOST") and errs(ack) == []
        else:
            assert msa(ack) == ("AR", "BRK-LOST")
            assert "send it again" in errs(ack)[0][8]
        await client.close()
    finally:
        await listener.stop()
        await sink.stop()
        store.close()
