# ruff: noqa
# Run with the package of commit ac27971 installed in /tmp/oldpkg (pip install --no-deps --target).
"""Generate tests/samples/layout1/store.json with rcmflow at commit ac27971 (layout 1)."""
import json, sys
sys.path.insert(0, "/tmp/oldpkg")          # the old package first
sys.path.insert(1, "/work/main")           # tests.workload (the workload generator only)
import rcmflow
assert rcmflow.__file__.startswith("/tmp/oldpkg"), rcmflow.__file__
from aiokafka.partitioner import DefaultPartitioner
from rcmflow.streams.chart import load_chart
from rcmflow.streams.processor import Message, Processor
from rcmflow.streams.state import state_json
from rcmflow.streams.dedup import DedupEntry
from rcmflow.streams.topics import EVENTS

from tests.factories import adjudication, charge, event_doc, payment
PARTITIONS = 4
docs = []
for n in range(8):
    a = f"L{n:03d}"
    docs += [charge(10_000 + n, a, event_id=f"{a}-CH1", dimensions={"entity": "01", "revenue_code": "0450"}),
             charge(2_000, a, event_id=f"{a}-CH2", self_pay=True, dimensions={"entity": "01", "revenue_code": "0300"}),
             event_doc("charge_reversed", a, event_id=f"{a}-REV", amount_cents=500, reverses_event_id=f"{a}-CH2", dimensions={"entity": "01", "revenue_code": "0450"}),
             event_doc("claim_submitted", a, event_id=f"{a}-CLM", claim_id=f"{a}-C1", total_charge_cents=10_000 + n,
                       lines=[{"line_id": "1", "charge_cents": 10_000 + n}], dimensions={"entity": "01", "payer": "P", "payer_class": "COMMERCIAL"}),
             adjudication(10_000 + n, 6_000, [("CO", "45", 3_000 + n), ("PR", "1", 1_000)], a, claim_id=f"{a}-C1", event_id=f"{a}-ADJ", correlation_id="TRN-1"),
             payment(700, a, event_id=f"{a}-PAY", channel="portal")]
docs.append(event_doc("provider_adjustment", "provider:1234567890", event_id="PLB-1", reason_code="L6", amount_cents=-250))
part = DefaultPartitioner()
events, per_partition = [], {p: [] for p in range(PARTITIONS)}
for d in docs:
    key, value = d["account"].encode(), json.dumps(d).encode()
    p = part(key, list(range(PARTITIONS)), list(range(PARTITIONS)))
    per_partition[p].append(Message(EVENTS, p, len(per_partition[p]), key, value, 1_795_000_000_000))
    events.append([d["account"], value.decode()])
accounts, dedup, next_offsets = [], [], {}
for p, messages in per_partition.items():
    states, entries = {}, {}
    result = Processor(load_chart()).process(messages, lambda q, a: None, lambda q, k: None)
    assert not result.dlq, result.dlq
    for (q, account), state in result.state_writes.items():
        accounts.append([q, account, state_json(state).decode()])
    for (q, key), value in result.dedup_writes.items():
        dedup.append([q, key.hex(), value.decode()])
    next_offsets[p] = len(messages)
json.dump({"made_by": "rcmflow at commit ac27971 (layout 1), /tmp/gen_layout1.py in its session: "
           "its pure Processor over these events, per partition as Apache Kafka's default partitioner "
           "places them; accounts = the rcm.accounts records (state_json), dedup = the dedup "
           "changelog records", "partitions": PARTITIONS, "events": events, "accounts": accounts,
           "dedup": dedup, "next_offsets": next_offsets},
          open("/work/main/tests/samples/layout1/store.json", "w"), indent=1)
print(len(events), len(accounts), len(dedup))
