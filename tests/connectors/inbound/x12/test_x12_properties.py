"""Hypothesis: generated balanced 835s pass; any amount changed by any cents parks the set;
mutated real samples and random bytes never crash the reader and are always answered."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rcmflow.connectors.inbound.x12 import X12Limits, process_x12
from rcmflow.streams.events import ClaimAdjudicated, ProviderAdjustment
from rcmflow.streams.topics import DLQ, EVENTS, RAW_X12
from tests.connectors.inbound.x12.x12_build import (
    ClaimSpec,
    LineSpec,
    PlbSpec,
    envelope,
    remit_segments,
)

# IG validation is pyx12's and does not decide parking; off here it keeps examples fast.
FAST = X12Limits(guide_validation=False)
SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "x12"

cents = st.integers(min_value=0, max_value=5_000_000)
groups = st.sampled_from(["CO", "PR", "OA", "PI"])
reasons = st.sampled_from(["45", "1", "2", "3", "23", "42", "94", "253"])


@st.composite
def split(draw: st.DrawFn, total: int, parts_max: int = 3) -> list[tuple[str, str, int]]:
    """CAS amounts that add up to ``total`` exactly (negative amounts included)."""
    count = draw(st.integers(min_value=0 if total == 0 else 1, max_value=parts_max))
    amounts = [draw(st.integers(min_value=min(total, 0) - 50_000,
                                max_value=max(total, 0) + 50_000))
               for _ in range(max(count - 1, 0))]
    if count:
        amounts.append(total - sum(amounts))
    return [(draw(groups), draw(reasons), a) for a in amounts]


@st.composite
def claims(draw: st.DrawFn, n: int) -> ClaimSpec:
    charge = draw(cents)
    paid = draw(st.integers(min_value=0, max_value=charge))
    with_lines = draw(st.booleans())
    if not with_lines:
        return ClaimSpec(f"ACCT{n}", charge, paid, pcn=f"PCN{n}",
                         cas=draw(split(charge - paid)))
    # Lines carry the charge; the claim-level CAS takes whatever the lines did not pay.
    line_charge = [draw(st.integers(min_value=0, max_value=charge))]
    line_charge.append(charge - line_charge[0])
    lines = []
    line_paid_total = 0
    for k, lc in enumerate(line_charge):
        lp = draw(st.integers(min_value=0, max_value=lc))
        line_paid_total += lp
        lines.append(LineSpec(f"9921{k}", lc, lp, draw(split(lc - lp))))
    return ClaimSpec(f"ACCT{n}", charge, paid, pcn=f"PCN{n}",
                     cas=draw(split(line_paid_total - paid)), lines=lines)


@st.composite
def remits(draw: st.DrawFn) -> tuple[list[ClaimSpec], list[PlbSpec]]:
    count = draw(st.integers(min_value=0, max_value=4))
    found = [draw(claims(n)) for n in range(count)]
    plbs = [PlbSpec("1234567893", draw(st.sampled_from(["L6", "WO", "FB", "90", "CS"])),
                    f"REF{k}", draw(st.integers(min_value=-100_000, max_value=100_000)))
            for k in range(draw(st.integers(min_value=0, max_value=3)))]
    if not found and not plbs:
        plbs = [PlbSpec("1234567893", "L6", "REF", -100)]
    return found, plbs


#: Amounts that take part in the parking identities: BPR02, CLP03, CLP04, CAS and PLB amounts.
def money_positions(segs: list[list[str]]) -> list[tuple[int, int]]:
    found = []
    for i, seg in enumerate(segs):
        if seg[0] == "BPR":
            found.append((i, 2))
        elif seg[0] == "CLP":
            found += [(i, 3), (i, 4)]
        elif seg[0] == "CAS":
            found += [(i, k) for k in range(3, len(seg), 3)]
        elif seg[0] == "PLB":
            found += [(i, k) for k in range(4, len(seg), 2)]
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(remit=remits())
def test_generated_balanced_835_is_applied_and_nets_to_bpr02(
        remit: tuple[list[ClaimSpec], list[PlbSpec]]) -> None:
    found, plbs = remit
    segs = remit_segments(found, plbs)
    outcome = process_x12(envelope(segs), origin="file:gen", limits=FAST)
    assert outcome.ok(), [s.reason() for s in outcome.sets] + [str(outcome.problems)]
    adjudicated = [e for e in outcome.events if isinstance(e, ClaimAdjudicated)]
    provider = [e for e in outcome.events if isinstance(e, ProviderAdjustment)]
    assert len(adjudicated) == len(found) and len(provider) == len(plbs)
    bpr02 = sum(c.paid_cents for c in found) - sum(p.amount_cents for p in plbs)
    # The cash of the remit's events nets to BPR02 (ACCOUNTING.md).
    assert sum(e.paid_cents for e in adjudicated) - sum(e.amount_cents for e in provider) \
        == bpr02
    for event, spec in zip(adjudicated, found, strict=True):
        assert (event.account, event.charge_cents, event.paid_cents) == (
            spec.account, spec.charge_cents, spec.paid_cents)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(remit=remits(), data=st.data())
def test_perturbing_any_amount_parks_the_set(
        remit: tuple[list[ClaimSpec], list[PlbSpec]], data: st.DataObject) -> None:
    found, plbs = remit
    segs = remit_segments(found, plbs)
    i, k = data.draw(st.sampled_from(money_positions(segs)))
    delta = data.draw(st.integers(min_value=-100_000, max_value=100_000).filter(bool))
    from rcmflow.streams.money import cents_text, parse_cents

    segs[i][k] = cents_text(parse_cents(segs[i][k]) + delta)
    outcome = process_x12(envelope(segs), origin="file:gen", limits=FAST)
    (tset,) = outcome.sets
    assert tset.parked
    assert {p.reason_code for p in tset.problems} & {"x12_claim_unbalanced",
                                              "x12_transaction_unbalanced"}
    assert outcome.events == []
    records = list(outcome.records(FAST))
    assert [t for t, _, _ in records if t != RAW_X12] == [DLQ]


def test_a_good_set_goes_through_beside_a_parked_one() -> None:
    good = remit_segments([ClaimSpec("A1", 10000, 8000, cas=[("CO", "45", 2000)])],
                          trn02="GOOD")
    bad = remit_segments([ClaimSpec("A2", 10000, 8000, cas=[("CO", "45", 1999)])],
                         trn02="BAD")
    outcome = process_x12(envelope(good, bad), origin="file:two", limits=FAST)
    assert [s.parked for s in outcome.sets] == [False, True]
    assert [e.account for e in outcome.events] == ["A1"]
    (reason,) = [p.detail for p in outcome.sets[1].problems]
    assert reason == ("claim 1 (CLP01 A2): CLP03 100.00 - CLP04 80.00 = 20.00 but the CAS "
                      "amounts add up to 19.99")


def test_reversal_and_repayment_of_one_claim_get_distinct_keys() -> None:
    segs = remit_segments([
        ClaimSpec("A1", -10000, -8000, status="22", pcn="P1", cas=[("CO", "45", -2000)]),
        ClaimSpec("A1", 10000, 9000, status="1", pcn="P1", cas=[("CO", "45", 1000)]),
    ])
    outcome = process_x12(envelope(segs), origin="file:rev", limits=FAST)
    events = [e for e in outcome.events if isinstance(e, ClaimAdjudicated)]
    assert [e.outcome for e in events] == ["reversal", "processed"]
    assert len({e.event_id for e in events}) == 2
    assert all(e.payer_claim_control_number == "P1" and e.correlation_id == "TRACE1"
               for e in events)


def _samples() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SAMPLES.glob("835/*"))] or [
        envelope(remit_segments([ClaimSpec("A1", 100, 50, cas=[("CO", "45", 50)])]))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_samples_never_crash_and_are_always_answered(data: st.DataObject) -> None:
    raw = bytearray(data.draw(st.sampled_from(_samples())))
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete", "separator"]))
        at = data.draw(st.integers(min_value=0, max_value=max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[at] = data.draw(st.integers(min_value=0, max_value=255))
        elif op == "cut":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = data.draw(st.sampled_from([b"~", b"*", b":", b"\n", b"-1.5",
                                                    b"x" * 5000, b"CAS*CO*45*1~"]))
        elif op == "separator":  # the whole file written with another element separator
            raw = bytearray(bytes(raw).replace(b"*", data.draw(st.sampled_from(
                [b"|", b"~", b":", b"^", b""]))))
        elif raw:
            del raw[at:at + data.draw(st.integers(min_value=1, max_value=40))]
    _answered(bytes(raw))


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=2000))
def test_random_bytes_are_answered(raw: bytes) -> None:
    _answered(raw)


def _answered(raw: bytes) -> None:
    outcome = process_x12(raw, origin="file:fuzz", limits=FAST)
    records = list(outcome.records(FAST))
    topics = [t for t, _, _ in records]
    if outcome.problems:
        assert topics == [DLQ] and outcome.events == []
    else:
        assert topics.count(DLQ) == len(outcome.parked)
        assert topics.count(EVENTS) == len(outcome.events)
        assert topics.count(RAW_X12) == len(outcome.sets)
    for _, _, value in records:
        json.loads(value)
