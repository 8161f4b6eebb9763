"""The fault runs' workload and oracle: independent of rcmflow, deterministic, complete, and
equal to what rcmflow's real connectors and core make of the same bytes.

The cross-check feeds every delivery, phase by phase and with its replays, through the
connectors' own in-memory paths (the HL7 intake with its replay store, ``process_x12``,
``process_payments``, ``process_fhir``) and the core's ``Processor`` over memory tables, and
compares buckets, posting ids and rcm.dlq (reason code, marker) with ``oracle.expect``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.model import Delivery, Expected, Workload
from tests.chaos.oracle import Ledger, expect, expect_through, posting_id
from tests.chaos.real_path import run_real
from tests.chaos.workload import generate

CHAOS = Path(__file__).resolve().parent
INDEPENDENT = ("model.py", "formats.py", "builder.py", "mishaps.py", "workload.py", "oracle.py")
FORMATS = {"hl7", "837", "835", "fhir", "csv", "jsonl"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found.add(node.module or "")
    return found


@pytest.mark.parametrize("name", INDEPENDENT)
def test_the_oracle_and_the_workload_import_nothing_of_rcmflow(name: str) -> None:
    imports = _imports(CHAOS / name)
    assert not {m for m in imports if m == "rcmflow" or m.startswith("rcmflow.")}
    own = {f"tests.chaos.{name[:-3]}" for name in INDEPENDENT if name != "oracle.py"}
    assert {m for m in imports if m.startswith("tests")} <= own, imports


def _format(delivery: Delivery) -> str:
    if delivery.channel == "mllp":
        return "hl7"
    suffix = delivery.name.rpartition(".")[2]
    return {"json": "fhir", "ndjson": "fhir"}.get(suffix, suffix)


def test_the_workload_is_the_same_for_a_seed_and_holds_every_kind_of_input() -> None:
    first, again, other = generate(1), generate(1), generate(2)
    assert first == again
    assert first.deliveries != other.deliveries
    names = [d.name for d in first.deliveries]
    assert len(names) == len(set(names))
    assert {_format(d) for d in first.deliveries} == FORMATS
    replays = [d for d in first.deliveries if d.replay_of is not None]
    assert 0.15 <= len(replays) / len(first.deliveries) <= 0.25
    by_name = {d.name: d for d in first.deliveries}
    assert all(by_name[d.replay_of].payload == d.payload and by_name[d.replay_of].phase <= d.phase
               for d in replays if d.replay_of is not None)
    labels = Counter(d.label for d in first.deliveries)
    for kind in ("hl7", "835", "payments", "fhir"):
        assert labels[f"conflict_{kind}"] >= 1, kind
    malformed = {_format(d) for d in first.deliveries if d.label.startswith("malformed")}
    assert malformed == FORMATS
    assert [d.phase for d in first.deliveries] == sorted(d.phase for d in first.deliveries)
    facts = [f for d in first.deliveries for f in d.facts]
    assert {f["kind"] for f in facts} >= {"charge", "claim", "adjudication", "plb", "payment",
                                           "refund", "write_off", "refused"}
    outcomes = {f["outcome"] for f in facts if f["kind"] == "adjudication"}
    assert outcomes == {"processed", "denied", "reversal"}
    assert {str(f["event_id"]).endswith(":entered-in-error") for f in facts
            if f["kind"] == "charge_reversal"} == {True, False}  # FHIR and HL7 credits
    markers = {str(f["marker"]) for f in facts}
    assert not [(a, b) for a in markers for b in markers if a != b and a in b]  # unambiguous
    reasons = {reason for reason, _ in expect(first).dlq}
    assert reasons >= {"conflict", "refund_exceeds_credit", "write_off_exceeds_balance",
                       "small_balance_over_threshold"}


def _unmatched(expected: Expected, records: list[dict[str, object]]
               ) -> tuple[list[str], set[tuple[str, str]]]:
    """DLQ records no expected (reason, marker) explains, and expected pairs no record has."""
    found: set[tuple[str, str]] = set()
    strays: list[str] = []
    for record in records:
        text = json.dumps(record)
        hits = {(reason, marker) for reason, marker in expected.dlq
                if record["reason_code"] == reason and marker in text}
        if not hits:
            strays.append(f"{record['reason_code']}: {str(record['reason'])[:160]}")
        found |= hits
    return strays, set(expected.dlq) - found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_oracle_equals_rcmflows_connectors_and_core(seed: int, tmp_path: Path) -> None:
    workload = generate(seed)
    expected = expect(workload)
    observed = asyncio.run(run_real(workload, tmp_path / "replay"))
    assert observed.balances == expected.balances
    assert observed.posting_ids == expected.posting_ids
    strays, missing = _unmatched(expected, observed.dlq)
    assert strays == [] and missing == set()


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_the_end_state_does_not_depend_on_the_order_within_a_phase(order: str,
                                                                    tmp_path: Path) -> None:
    """The runner's channels race within a phase: any order gives the oracle's answer."""
    workload = generate(4)
    rng = random.Random(4)
    deliveries: list[Delivery] = []
    for phase in workload.phases():
        if order == "reversed":
            phase.reverse()
        else:
            rng.shuffle(phase)
        deliveries += phase
    expected = expect(workload)
    observed = asyncio.run(run_real(Workload(workload.seed, tuple(deliveries)),
                                 tmp_path / "replay"))
    assert observed.balances == expected.balances
    assert observed.posting_ids == expected.posting_ids
    assert _unmatched(expected, observed.dlq) == ([], set())


def test_the_expectation_after_each_phase_is_what_the_real_path_holds_then(
        tmp_path: Path) -> None:
    """``expect_through``: what a runner may wait for before it sends the next phase."""
    workload = generate(5)
    for phase in range(len(workload.phases())):
        partial = Workload(workload.seed, tuple(d for d in workload.deliveries
                                                if d.phase <= phase))
        observed = asyncio.run(run_real(partial, tmp_path / f"replay{phase}"))
        expected = expect_through(workload, phase)
        assert observed.balances == expected.balances, phase
        assert observed.posting_ids == expected.posting_ids, phase
        assert _unmatched(expected, observed.dlq) == ([], set()), phase
    assert expect_through(workload, len(workload.phases()) - 1) == expect(workload)


def _ledger(*facts: dict[str, object]) -> Ledger:
    ledger = Ledger()
    for n, fact in enumerate(facts):
        ledger.take({"account": "A1", "event_id": f"e{n}", "marker": f"m{n}"} | fact)
    return ledger


def test_the_oracles_rules_are_the_documented_ones_worked_by_hand() -> None:
    """ACCOUNTING.md and ARCHITECTURE.md "Account state", computed by hand (not by rcmflow):
    a charge of 500.00; the 835 pays 300.00, CO-45 120.00, PR-2 50.00, OA-23 30.00 (no
    entry: it stays insurance AR); the patient pays 80.00 against 50.00 owed (30.00 becomes a
    credit balance); 20.00 of it is refunded; a small-balance write-off of 5.00 is not under
    the threshold and is refused."""
    ledger = _ledger(
        {"kind": "charge", "cents": 50_000},
        {"kind": "adjudication", "outcome": "processed", "charge": 50_000, "paid": 30_000,
         "adjustments": [["CO", "45", 12_000], ["PR", "2", 5_000], ["OA", "23", 3_000]]},
        {"kind": "payment", "cents": 8_000, "channel": "lockbox"},
        {"kind": "refund", "cents": 2_000, "to": "patient"},
        {"kind": "write_off", "cents": 500, "reason": "small_balance", "from_ar": "patient"},
    )
    assert ledger.accounts["A1"].balances() == {
        "gross_charges": 50_000, "payer_paid": 30_000, "contractual_adjustments": 12_000,
        "patient_responsibility": 5_000, "other_adjustments": 0, "denied": 0,
        "patient_paid": 8_000, "refunds": 2_000, "write_offs": 0, "insurance_ar": 3_000,
        "patient_ar": 0, "unapplied_credit": 1_000, "interest_income": 0,
        "payer_overpayments": 0, "balance": 2_000}
    assert ledger.dlq == {("small_balance_over_threshold", "m4")}
    assert len(ledger.posting_ids) == 4  # the refused write-off posts nothing


def test_a_denial_is_tracked_not_posted_and_its_reversal_untracks_it() -> None:
    ledger = _ledger(
        {"kind": "charge", "cents": 10_000},
        {"kind": "adjudication", "outcome": "denied", "charge": 10_000, "paid": 0,
         "adjustments": [["CO", "50", 10_000]]},
        {"kind": "adjudication", "outcome": "reversal", "charge": -10_000, "paid": 0,
         "adjustments": [["CO", "50", -10_000]]},
        {"kind": "adjudication", "outcome": "processed", "charge": 10_000, "paid": 10_000,
         "adjustments": []},
    )
    balances = ledger.accounts["A1"].balances()
    assert (balances["denied"], balances["insurance_ar"], balances["payer_paid"]) == (
        0, 0, 10_000)
    assert len(ledger.posting_ids) == 2  # the charge and the payment: denials move no money


def test_a_replay_changes_nothing_and_a_conflict_keeps_the_first_content() -> None:
    ledger = Ledger()
    charge = {"kind": "charge", "account": "A1", "event_id": "e1", "cents": 100,
              "marker": "M1"}
    for fact in (charge, charge, charge | {"cents": 200}):
        ledger.take(fact)
    assert ledger.accounts["A1"].balances()["gross_charges"] == 100
    assert ledger.dlq == {("conflict", "M1")}
    assert ledger.posting_ids == {posting_id("A1", "e1", ledger.chart.version)}


def test_plb_signs_follow_the_835() -> None:
    """A negative L6 is interest paid to the provider; a positive WO a takeback; 72 nothing."""
    ledger = Ledger()
    for n, (code, cents) in enumerate((("L6", -700), ("WO", 1_000), ("72", -1_000))):
        ledger.take({"kind": "plb", "account": "provider:P", "event_id": f"p{n}",
                     "code": code, "cents": cents, "marker": "T"})
    balances = ledger.accounts["provider:P"].balances()
    assert (balances["payer_paid"], balances["interest_income"],
            balances["payer_overpayments"]) == (-300, 700, -1_000)
    assert len(ledger.posting_ids) == 2
