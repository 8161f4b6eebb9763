"""Every public X12 sample in tests/samples/x12: applied, parked or rejected as VERIFY.md says.

Expectations were written from the files and VERIFY.md (the segments, the balancing table and
the envelope findings), not from what the code prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rcmflow.connectors.inbound.x12 import X12Limits, process_x12
from rcmflow.streams.events import ClaimAdjudicated, ClaimSubmitted, ProviderAdjustment
from rcmflow.streams.topics import DLQ, EVENTS, RAW_X12

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "x12"


@dataclass
class Expect:
    """Per set (ST02): None = applied, else the reason codes that must be among its problems."""

    sets: dict[str, set[str] | None]
    #: account -> (charge, paid) cents of its claim-adjudicated events, in file order.
    claims: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: provider account -> PLB (code, cents).
    plb: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    #: Substrings the parked sets' reasons must carry (the numbers of the failing identity).
    reason_has: tuple[str, ...] = ()
    file_problem: str | None = None


EXPECTED: dict[str, Expect] = {
    # --- balanced, envelope fine: applied (IG messages stay warnings) ---
    "835/lfh_5010_managed-care.835": Expect(
        {"112233": None},
        claims={"5554555444": [(80000, 45000)], "8765432112": [(120000, 49500)]}),
    "835/lfh_5010_medicare-part-a.835": Expect(
        {"1234": None},
        claims={"666123": [(21136697, 13801840)], "777777": [(1500000, 1198033)]},
        plb={"provider:6543210903": [("CV", -127)]}),
    "835/lfh_5010_secondary-payment.835": Expect(
        {"1234": None},
        claims={"L0004828311": [(1032364, 91200)], "0001000053": [(75150, 31000)]}),
    "835/lfh_5010_tertiary-payment.835": Expect(
        {"0001": None}, claims={"0001000054": [(176650, 18750)]}),
    "835/lfh_5010_cob-contractual-adjustment.835": Expect(
        {"0001": None}, claims={"0001000055": [(54100, 3400)]}),
    "835/pyx12_5010_mult_loops_denial.835": Expect(
        {"0001": None}, claims={"2005555A": [(91539, 0)]}),
    "835/edi835parser_5010_uhc_legacy.835": Expect(
        {"000000064": None},
        claims={"001-18573-358": [(34128, 8892)], "001-18604-358": [(81624, 26107)]}),
    # --- balanced but the CLP01 is a placeholder with spaces: not an account number ---
    "835/edi835parser_5010_emedny.835": Expect(
        {"1740": {"x12_invalid_account"}}, reason_has=("'PATIENT ACCOUNT NUMBER'",)),
    # --- transaction level does not balance ---
    "835/pyx12_4010_simple_reversal_plb.835": Expect(
        {"40731": {"x12_transaction_unbalanced"}},
        reason_has=("BPR02 5950.21", "sum of CLP04 -510.25", "sum of PLB -977.94", "467.69")),
    "835/affect_5010_interest_malformed_plb.835": Expect(
        {"1002": {"x12_se_count", "x12_unreadable_segment"},
         "1001": {"x12_se_count", "x12_unreadable_segment", "x12_transaction_unbalanced"}},
        reason_has=("SE count of 46", "I count 55", "SE count of 96", "I count 109",
                    "BPR02 141.13", "151.43")),
    "835/tigershark_4010_pipe_example.835": Expect(
        {"0001": {"x12_se_count", "x12_transaction_unbalanced"}},
        reason_has=("SE count of 43", "I count 47", "BPR02 12345.67", "12561.86")),
    "835/tigershark_4010_pipe_two_st.835": Expect(
        {"0001": {"x12_ge_count", "x12_se_count", "x12_transaction_unbalanced"},
         "0002": {"x12_ge_count", "x12_se_count"}},
        reason_has=("GE count of 1", "I count 2", "BPR02 12345.67", "= 200.02")),
    # --- envelope defects park every set they cover ---
    "835/editools_5010_single_line_ge_count_wrong.835": Expect(
        {"112235": {"x12_ge_count"}}, reason_has=("GE count of 10", "I count 1")),
    "835/editools_5010_two_st_ge_count_wrong.835": Expect(
        {"112233": {"x12_ge_count", "x12_ge_control_number"},
         "112299": {"x12_ge_count", "x12_ge_control_number"}},
        reason_has=("GE count of 10", "I count 2", "GE id=2 does not match GS id=1")),
    "835/affect_5010_nevada_medicaid_3st.835": Expect(
        {"0001": {"x12_isa_not_fixed_width", "x12_iea_control_number"},
         "0002": {"x12_isa_not_fixed_width", "x12_iea_control_number"},
         "0003": {"x12_isa_not_fixed_width", "x12_iea_control_number"}},
        reason_has=("the ISA is 71 characters", "IEA id=100000301 does not match ISA "
                    "id=100000300")),
    "835/edi835parser_no_envelope_bcbsnc.835": Expect({}, file_problem="x12_no_interchange"),
    # --- 837: envelope fine, CLM02 = sum of the lines ---
    "837/lfh_837p_5010_example1.837": Expect({"0021": None}),
    "837/lfh_837i_5010_institutional-claim.837i": Expect({"987654": None}),
    "837/lfh_837i_5010_two-claims-single-provider.837i": Expect({"987654": None}),
}


def _sample(name: str) -> Path:
    return SAMPLES / name


def test_every_sample_has_an_expectation() -> None:
    on_disk = {str(p.relative_to(SAMPLES)) for p in SAMPLES.glob("*/*") if p.is_file()}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_outcome(name: str) -> None:
    expect = EXPECTED[name]
    path = _sample(name)
    outcome = process_x12(path.read_bytes(), origin=f"file:{path}", limits=X12Limits())
    if expect.file_problem:
        assert [p.reason_code for p in outcome.problems] == [expect.file_problem]
        assert outcome.sets == [] and outcome.events == []
        records = list(outcome.records(X12Limits()))
        assert [t for t, _, _ in records] == [DLQ]
        return
    assert outcome.problems == []
    assert {s.st02: (None if not s.parked else {p.reason_code for p in s.problems})
            for s in outcome.sets}.keys() == expect.sets.keys()
    for s in outcome.sets:
        wanted = expect.sets[s.st02]
        if wanted is None:
            assert not s.parked, s.reason()
        else:
            assert s.parked and wanted <= {p.reason_code for p in s.problems}, s.reason()
    reasons = " ".join(s.reason() for s in outcome.sets)
    for text in expect.reason_has:
        assert text in reasons
    adjudicated: dict[str, list[tuple[int, int]]] = {}
    plb: dict[str, list[tuple[str, int]]] = {}
    for event in outcome.events:
        if isinstance(event, ClaimAdjudicated):
            adjudicated.setdefault(event.account, []).append((event.charge_cents,
                                                              event.paid_cents))
        elif isinstance(event, ProviderAdjustment):
            plb.setdefault(event.account, []).append((event.reason_code, event.amount_cents))
    if name.startswith("835/"):
        assert adjudicated == expect.claims
        assert plb == expect.plb
    # What is published: events only from applied sets, one DLQ record per parked set, and a
    # raw record (with its warnings) for every set.
    records = list(outcome.records(X12Limits()))
    topics = [t for t, _, _ in records]
    assert topics.count(EVENTS) == len(outcome.events)
    assert topics.count(DLQ) == len(outcome.parked)
    assert topics.count(RAW_X12) == len(outcome.sets)
    for topic, _, value in records:
        if topic == DLQ:
            doc = json.loads(value)
            assert doc["context"]["problems"] and doc["payload"].startswith("ST")


def test_parked_set_dlq_record_names_the_identity_and_numbers() -> None:
    path = _sample("835/pyx12_4010_simple_reversal_plb.835")
    outcome = process_x12(path.read_bytes(), origin=f"file:{path}", limits=X12Limits())
    (record,) = [json.loads(v) for t, _, v in outcome.records(X12Limits()) if t == DLQ]
    assert record["stage"] == "validate"
    assert record["reason_code"] == "x12_transaction_unbalanced"
    assert "BPR02 5950.21 != sum of CLP04 -510.25 - sum of PLB -977.94 = 467.69" in \
        record["reason"]
    assert record["origin"]["topic"] == f"file:{path}"
    assert record["context"]["trace"] and record["context"]["transaction_set"] == "40731"


def test_tertiary_unbalanced_service_line_is_folded_with_a_warning() -> None:
    """SVC02 24599.00 (a mangled SVC01) - SVC03 1766.50 != CAS 1579.00: the claim balances,
    so it is applied with the line's CAS kept at claim level and a warning."""
    path = _sample("835/lfh_5010_tertiary-payment.835")
    outcome = process_x12(path.read_bytes(), origin=f"file:{path}", limits=X12Limits())
    (event,) = outcome.events
    assert isinstance(event, ClaimAdjudicated)
    assert event.lines == ()
    assert [(a.group, a.reason, a.amount_cents) for a in event.adjustments] == [
        ("OA", "23", 157900)]
    assert any("line detail folded" in w for w in outcome.sets[0].warnings)


def test_secondary_payment_keeps_service_lines_and_their_cas() -> None:
    path = _sample("835/lfh_5010_secondary-payment.835")
    outcome = process_x12(path.read_bytes(), origin=f"file:{path}", limits=X12Limits())
    second = next(e for e in outcome.events if e.account == "0001000053")
    assert isinstance(second, ClaimAdjudicated)
    assert second.patient_responsibility_cents == 22000
    assert [(ln.charge_cents, ln.paid_cents, [(a.group, a.reason, a.amount_cents)
                                              for a in ln.adjustments])
            for ln in second.lines] == [
        (16650, 3000, [("OA", "23", 13650)]),
        (58500, 28000, [("PR", "1", 15000), ("PR", "2", 7000), ("CO", "42", 8500)])]
    assert second.correlation_id == "0012524965"
    assert outcome.sets[0].warnings, "pyx12 guide messages are kept as warnings"


def test_denial_clp02_4_is_a_denied_outcome() -> None:
    path = _sample("835/pyx12_5010_mult_loops_denial.835")
    (event,) = process_x12(path.read_bytes(), origin="file:x", limits=X12Limits()).events
    assert isinstance(event, ClaimAdjudicated)
    assert event.outcome == "denied" and event.status_code == "4"
    assert sum(a.amount_cents for a in event.all_adjustments()) == 91539


def test_837_samples_become_claim_submitted_events() -> None:
    two = _sample("837/lfh_837i_5010_two-claims-single-provider.837i")
    events = process_x12(two.read_bytes(), origin="file:x", limits=X12Limits()).events
    assert all(isinstance(e, ClaimSubmitted) for e in events)
    got = [(e.account, e.total_charge_cents, [(ln.revenue_code, ln.procedure_code,
                                               ln.charge_cents, ln.units) for ln in e.lines],
            e.dimensions.payer, e.dimensions.payer_class) for e in events
           if isinstance(e, ClaimSubmitted)]
    assert got == [
        ("756048Q", 8995, [("0305", "85025", 1339, 1), ("0730", "93005", 7656, 3)],
         "99999", None),
        ("756049Q", 5000, [("0300", "85087", 5000, 1)], "99999", None),
    ]
    prof = _sample("837/lfh_837p_5010_example1.837")
    (claim,) = process_x12(prof.read_bytes(), origin="file:x", limits=X12Limits()).events
    assert isinstance(claim, ClaimSubmitted)
    assert (claim.account, claim.total_charge_cents, claim.dimensions.payer,
            claim.dimensions.payer_class) == ("26463774", 10000, "999996666", "COMMERCIAL")
    assert [(ln.procedure_code, ln.charge_cents) for ln in claim.lines] == [
        ("99213", 4000), ("87070", 1500), ("99214", 3500), ("86663", 1000)]


def test_resent_file_produces_identical_events() -> None:
    path = _sample("835/lfh_5010_medicare-part-a.835")
    first = process_x12(path.read_bytes(), origin="file:a", limits=X12Limits())
    again = process_x12(path.read_bytes(), origin="file:b", limits=X12Limits())
    assert [e.model_dump_json() for e in first.events] == [
        e.model_dump_json() for e in again.events]
    assert len({(e.account, e.event_id) for e in first.events}) == len(first.events)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_applied_sets_state_what_their_segments_say_in_money(name: str) -> None:
    """rcm.raw.x12 source_totals, read from CLP04 / CAS / PLB / CLM02, list every event of
    the set, and each event carries the cents attributed to it per account, day and measure
    (the public samples' mappings lose nothing). Parked sets state nothing."""
    from rcmflow.connectors.inbound.totals import event_amounts

    outcome = process_x12((SAMPLES / name).read_bytes(), origin=f"file:{name}",
                          limits=X12Limits())
    for s in outcome.sets:
        if s.parked:
            assert s.totals.amounts == [] and s.totals.event_ids == []
            continue
        assert s.totals.event_ids == [(e.account, e.event_id) for e in s.events]
        carried: dict[tuple[object, ...], int] = {}
        for e in s.events:
            for measure, cents in event_amounts(e):
                key = (e.account, e.occurred_at.date(), measure, e.event_id)
                carried[key] = carried.get(key, 0) + cents
        assert {k: c for k, c in s.totals.by_event().items() if c} == {
            k: c for k, c in carried.items() if c}
    raw = [json.loads(v) for t, _, v in outcome.records(X12Limits()) if t == RAW_X12]
    assert [("source_totals" in r) for r in raw] == [r["status"] == "applied" for r in raw]


def test_remark_codes_are_read_from_lq_and_moa() -> None:
    """RARCs: LQ*HE on each service line, MOA/MIA remark elements on the claim."""
    path = _sample("835/pyx12_5010_mult_loops_denial.835")
    (event,) = process_x12(path.read_bytes(), origin="file:x", limits=X12Limits()).events
    assert isinstance(event, ClaimAdjudicated)
    assert [(ln.line_id, ln.remark_codes) for ln in event.lines] == [
        ("1", ("N14",)), ("2", ("N14",)), ("3", ("N14",))]
    assert '"remark_codes":["N14"]' in event.model_dump_json()
    medicare = _sample("835/lfh_5010_medicare-part-a.835")
    events = process_x12(medicare.read_bytes(), origin="file:x", limits=X12Limits()).events
    remarks = {e.account: e.remark_codes for e in events if isinstance(e, ClaimAdjudicated)}
    assert remarks == {"666123": (), "777777": ("MA02",)}
    # No remarks: the event's JSON is what it was before the field (same replay digest).
    plain = next(e for e in events if e.account == "666123")
    assert "remark_codes" not in plain.model_dump_json()
