"""HL7 v2 -> canonical events: every public sample with its expected outcome, the mapping
options, and the reader checked field by field against hl7apy (the reference parser)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rcmflow.connectors.inbound.exceptions import HL7ParseError
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig, map_message
from rcmflow.connectors.inbound.hl7.problems import Rejected, hl7_code
from rcmflow.connectors.inbound.hl7.reader import normalise, read_message
from rcmflow.streams.date_window import DateWindow
from rcmflow.streams.events import (
    AccountStatusChanged,
    ChargePosted,
    ChargeReversed,
    Event,
    WorkflowStep,
)

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "hl7"


def sample_messages(name: str) -> list[str]:
    """The messages of a sample file (batch headers FHS/BHS/BTS/FTS dropped)."""
    from rcmflow.connectors.inbound.hl7.batch import split_batch

    return [normalise(m) for m in split_batch((SAMPLES / name).read_bytes()).messages]


def mapped(text: str, config: MappingConfig | None = None) -> list[Event] | Rejected:
    return map_message(read_message(normalise(text.encode())), config or MappingConfig())


# Expectations written from reading the files (see VERIFY.md), not from the code's output:
# (kind, account, amount_cents, quantity, procedure, department) per event, or the reason.
DFT_CHARGES = [("charge_posted", "4000776", 10000, 2, "71045", "RAD-1"),
               ("charge_posted", "4000776", 12000, 1, "99011", None)]
EXPECTED: dict[str, list[Any]] = {
    "ms_dft_p03_01_v28.hl7": [DFT_CHARGES],
    "ms_dft_p03_02_v28.hl7": [DFT_CHARGES],
    # EVN-2 (the event's date) is 2029-08-01: past today + RCMFLOW_DATE_FUTURE_DAYS (366).
    "ms_bar_p01_01_v28.hl7": [("AE", "date_out_of_range", ["date_out_of_range"])],
    "ms_adt_a04_01_v28.hl7": [("AE", "date_out_of_range", ["date_out_of_range"])],
    "ms_adt_a04_v23_bom.hl7": [[("account_status_changed", "123456789", "open"),
                                ("workflow_step", "123456789", "registration_complete")]],
    "pythonhl7_adt_a01_hnam_v23.hl7": [[("account_status_changed", "O75622322", "open"),
                                        ("workflow_step", "O75622322",
                                         "registration_complete")]],
    # PID-18 and PV1-19 empty: parked, with the reason.
    "lfh_dft_p03_minimal_v26.hl7": [("AE", "no_account", ["no_account", "no_amount"])],
    "pythonhl7_adt_a04_batch_v25.hl7": [("AE", "no_account", ["no_account"])] * 2,
}


def summary(event: Event) -> tuple[object, ...]:
    if isinstance(event, AccountStatusChanged):
        return (event.kind.value, event.account, event.status)
    if isinstance(event, WorkflowStep):
        return (event.kind.value, event.account, event.step)
    assert isinstance(event, ChargePosted)
    d = event.dimensions
    return (event.kind.value, event.account, event.amount_cents, event.quantity,
            d.procedure_code, d.department)


def test_every_sample_has_an_expectation() -> None:
    assert sorted(p.name for p in SAMPLES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_outcome(name: str) -> None:
    messages = sample_messages(name)
    assert len(messages) == len(EXPECTED[name])
    for text, expected in zip(messages, EXPECTED[name], strict=True):
        result = map_message(read_message(text), MappingConfig())
        if isinstance(expected, tuple):
            assert isinstance(result, Rejected)
            assert (result.ack_code, result.reason_code) == expected[:2]
            assert [p.reason_code for p in result.problems] == expected[2]
        else:
            assert not isinstance(result, Rejected), result
            assert [summary(e) for e in result] == expected


def test_dft_sample_charges_in_detail() -> None:
    (text,) = sample_messages("ms_dft_p03_01_v28.hl7")
    first, second = map_message(read_message(text), MappingConfig())  # type: ignore[misc]
    assert isinstance(first, ChargePosted) and isinstance(second, ChargePosted)
    assert first.event_id.endswith("|MSG00001:ft1-1") and first.event_id.startswith("hl7:IMMAPP|")
    assert first.correlation_id == "MSG00001" and first.source == "hl7"
    assert first.currency == "USD" and first.dimensions.encounter == "40007716"
    assert first.occurred_at.isoformat() == "2019-11-22T00:00:00+00:00"
    assert sum(e.amount_cents for e in (first, second)) == 22000


def test_the_2029_samples_map_once_the_window_reaches_2029() -> None:
    later = MappingConfig(date_window=DateWindow(date(1990, 1, 1), 3660))
    for name in ("ms_bar_p01_01_v28.hl7", "ms_adt_a04_01_v28.hl7"):
        (text,) = sample_messages(name)
        refused = map_message(read_message(text), MappingConfig())
        assert isinstance(refused, Rejected) and refused.problems[0].place == "EVN^1^2"
        assert refused.problems[0].detail.startswith("EVN-2 2029-08-01 is after the latest")
        result = map_message(read_message(text), later)
        assert not isinstance(result, Rejected)
        registered = [("workflow_step", "4000776", "registration_complete")] \
            if "adt_a04" in name else []  # a BAR P01 opens an account, it registers nobody
        assert [summary(e) for e in result] == [
            ("account_status_changed", "4000776", "open"), *registered]


def test_missing_account_is_explained_in_the_error() -> None:
    (text,) = sample_messages("lfh_dft_p03_minimal_v26.hl7")
    result = map_message(read_message(text), MappingConfig())
    assert isinstance(result, Rejected)
    assert result.problems[0].place == "PID^1^18"
    assert "PID-18 and PV1-19 are empty" in result.problems[0].detail
    assert result.problems[1].place == "FT1^1^11"


# --- synthetic DFTs for the options -------------------------------------------------------

def dft(*ft1s: str, pid18: str = "ACC1^^^HOSP^AN", pv1_19: str = "V77",
        version: str = "2.5") -> str:
    segments = [
        f"MSH|^~\\&|EHR|GEN|RCM|GEN|20261120103000-0500||DFT^P03|C1|P|{version}",
        "EVN|P03|20261120103000-0500",
        "|".join(["PID", "1", "", "MRN1^^^HOSP^MR", "", "DOE^JANE", "", "19800101", "F"]
                 + [""] * 9 + [pid18]),
        "|".join(["PV1", "1", "O"] + [""] * 16 + [pv1_19]),
        *ft1s,
    ]
    return "\r".join(segments) + "\r"


def ft1(n: int, kind: str = "CG", qty: str = "1", ext: str = "100.00", unit: str = "",
        extra: str = "") -> str:
    return f"FT1|{n}|T{n}||20261120|20261120|{kind}|CDM{n}^Item^L|||{qty}|{ext}|{unit}|ED{extra}"


def test_credit_codes_and_negative_amounts_reverse() -> None:
    events = mapped(dft(ft1(1), ft1(2, "CD", ext="-40.00"), ft1(3, "CR", ext="15"),
                        ft1(4, "CG", qty="-1", ext="-25.50")))
    assert not isinstance(events, Rejected)
    assert [(type(e), e.amount_cents) for e in events] == [  # type: ignore[union-attr]
        (ChargePosted, 10000), (ChargeReversed, 4000), (ChargeReversed, 1500),
        (ChargeReversed, 2550)]


def test_transaction_type_mapping_is_configurable() -> None:
    text = dft(ft1(1, "PY"))
    refused = mapped(text)
    assert isinstance(refused, Rejected) and refused.reason_code == "unmapped_transaction_type"
    assert refused.problems[0].place == "FT1^1^6" and hl7_code(refused.problems[0]) == 103
    site = MappingConfig(ft1_types={"CG": "charge", "PY": "credit"})
    (event,) = mapped(text, site)  # type: ignore[misc]
    assert isinstance(event, ChargeReversed) and event.amount_cents == 10000


def test_amount_sub_component_and_unit_times_quantity() -> None:
    events = mapped(dft(ft1(1, qty="3", ext="", unit="12.25&USD"), ft1(2, ext="100&USD")))
    assert [(e.amount_cents, e.quantity) for e in events] == [(3675, 3), (10000, 1)]  # type: ignore[union-attr]


def test_lf_line_ends_and_bom_read_like_cr() -> None:
    text = dft(ft1(1))
    lf = ("\ufeff" + text.replace("\r", "\n")).encode("utf-8")
    crlf = text.replace("\r", "\r\n").encode("utf-8")
    expected = mapped(text)
    for raw in (lf, crlf):
        assert map_message(read_message(normalise(raw)), MappingConfig()) == expected


def test_account_source_fallback_and_order() -> None:
    (from_pid,) = mapped(dft(ft1(1)))  # type: ignore[misc]
    (from_pv1,) = mapped(dft(ft1(1), pid18=""))  # type: ignore[misc]
    (pv1_first,) = mapped(dft(ft1(1)), MappingConfig(account_fields=("PV1-19",)))  # type: ignore[misc]
    assert (from_pid.account, from_pv1.account, pv1_first.account) == ("ACC1", "V77", "V77")
    only_pid = mapped(dft(ft1(1), pid18=""), MappingConfig(account_fields=("PID-18",)))
    assert isinstance(only_pid, Rejected) and only_pid.reason_code == "no_account"


@pytest.mark.parametrize("bad_ft1, reason, location", [
    (ft1(1, ext="10.005"), "invalid_amount", "FT1^1^11"),
    (ft1(1, ext="1,000.00"), "invalid_amount", "FT1^1^11"),
    (ft1(1, ext="", unit=""), "no_amount", "FT1^1^11"),
    (ft1(1, ext="0.00"), "invalid_amount", "FT1^1^11"),
    (ft1(1, qty="1.5"), "invalid_amount", "FT1^1^10"),
    (ft1(1, qty="0"), "invalid_quantity", "FT1^1^10"),
    (ft1(1, ext="5&EURO"), "invalid_currency", "FT1^1^11"),
    (ft1(1).replace("|20261120|20261120|", "|2026-11-20|20261120|"), "invalid_timestamp",
     "FT1^1^4"),
    # Past the events' bound: refused where it is read (it was invalid_event at FT1^1).
    (ft1(1, ext="99999999999.99"), "invalid_amount", "FT1^1^11"),
    (ft1(1, ext="١٢"), "invalid_amount", "FT1^1^11"),  # Arabic-Indic digits: once read as 12
    (ft1(1, qty="١"), "invalid_amount", "FT1^1^10"),
])
def test_one_bad_ft1_refuses_the_whole_message(bad_ft1: str, reason: str, location: str) -> None:
    result = mapped(dft(ft1(2), bad_ft1.replace("FT1|1|", "FT1|1|", 1)))
    assert isinstance(result, Rejected) and result.ack_code == "AE"
    assert (result.reason_code, result.problems[0].place) == (reason, location.replace(
        "FT1^1", "FT1^2"))


def test_a_dft_without_ft1_and_unsupported_types() -> None:
    no_ft1 = mapped(dft())
    assert isinstance(no_ft1, Rejected) and no_ft1.reason_code == "no_ft1"
    oru = mapped(dft(ft1(1)).replace("DFT^P03", "ORU^R01"))
    assert isinstance(oru, Rejected) and oru.ack_code == "AR"
    assert oru.reason_code == "unsupported_message_type" and hl7_code(oru.problems[0]) == 200


def test_adt_a08_is_accepted_without_events() -> None:
    text = dft().replace("DFT^P03", "ADT^A08").replace("EVN|P03", "EVN|A08")
    assert mapped(text) == []


@pytest.mark.parametrize("raw", [b"", b"PID|1||x", b"MSH", b"MSHabcdefgh", b"MSH|^^^^|x",
                                 b"MSH|^~\\&|A\r#$%|x"])
def test_unreadable_input_raises_a_parse_error(raw: bytes) -> None:
    with pytest.raises(HL7ParseError):
        read_message(normalise(raw))


# --- the reader against hl7apy -------------------------------------------------------------

#: The fields rcmflow reads (hl7apy re-formats others, e.g. SI '0001' -> '1').
MAPPED_FIELDS = {"MSH": {3, 4, 5, 6, 7, 9, 10, 11, 12}, "EVN": {2}, "PID": {18}, "PV1": {19},
                 "FT1": {4, 6, 7, 10, 11, 12, 13, 25, 41}}


def _apy_fields(segment: Any) -> dict[int, str]:
    """Field number -> ER7 text of the first repetition, as hl7apy reads it."""
    out: dict[int, str] = {}
    for child in segment.children:
        if child.name is None:  # a field past the version's definition
            continue
        number = int(child.name.rsplit("_", 1)[1])
        if number in MAPPED_FIELDS[segment.name]:
            out.setdefault(number, child.to_er7())
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reader_agrees_with_hl7apy_on_every_mapped_field(name: str) -> None:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    for text in sample_messages(name):
        ours = read_message(text)
        reference = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT,
                                  find_groups=False)
        theirs = [s for s in reference.children if s.name in ("MSH", "EVN", "PID", "PV1", "FT1")]
        mine = [s for s in ours.segments if s.name in ("MSH", "EVN", "PID", "PV1", "FT1")]
        assert [s.name for s in theirs] == [s.name for s in mine]
        compared = 0
        for apy, seg in zip(theirs, mine, strict=True):
            for number, er7 in _apy_fields(apy).items():
                # hl7apy writes no trailing empty (sub)components; nor do we compare them.
                expected = "" if er7 == '""' else er7.rstrip("^&")
                assert seg.repetitions(number)[0].rstrip("^&") == expected, (name, number)
                compared += 1
        assert compared >= 7


def test_split_batch_reads_batches_lf_files_and_captured_mllp_traffic() -> None:
    from rcmflow.connectors.inbound.hl7.batch import split_batch
    from rcmflow.connectors.inbound.hl7.framing import frame

    batch = split_batch((SAMPLES / "pythonhl7_adt_a04_batch_v25.hl7").read_bytes())
    assert [m.split(b"|")[9] for m in batch.messages] == [b"12334456778890",
                                                         b"12334456778891"]
    assert batch.declared_counts == [2]
    one, two = dft(ft1(1)).encode(), dft(ft1(1)).replace("|C1|", "|C2|").encode()
    for data in (one + two, (one + two).replace(b"\r", b"\n"), frame(one) + frame(two),
                 b"\xef\xbb\xbf" + one.replace(b"\r", b"\r\n") + two):
        assert [read_message(normalise(m)).control_id for m in split_batch(data).messages] == [
            "C1", "C2"]


def test_source_totals_read_the_ft1_amounts_not_the_events() -> None:
    """Charges positive, credit types and negative amounts negative, on the FT1-4 day (else
    the message's), summed per account and day; the events are listed, not summed."""
    from datetime import date

    from rcmflow.connectors.inbound.hl7.mapping import source_totals

    text = ("MSH|^~\\&|EHR|GEN|||20261120230000-0500||DFT^P03|T1|P|2.5\r"
            "PID|1" + "|" * 17 + "ACC7\r"
            "FT1|1|||20261119||CG|X|||2||60.00\r"  # unit 60.00 x 2
            "FT1|2|||20261119||CD|X|||1|25.50\r"  # a credit type
            "FT1|3|||||CG|X|||1|-10.00\r"  # a negative charge: a reversal, on the MSH-7 day
            "FT1|4|||20261120||CG|X|||1|7.25\r")
    msg = read_message(normalise(text.encode()))
    events = map_message(msg, MappingConfig())
    assert isinstance(events, list) and len(events) == 4
    totals = source_totals(msg, MappingConfig(), events)
    assert totals.summed() == {("ACC7", date(2026, 11, 19), "charges"): 12000 - 2550,
                               ("ACC7", date(2026, 11, 20), "charges"): 725 - 1000}
    assert totals.event_ids == [("ACC7", e.event_id) for e in events]
    assert {e.occurred_at.date() for e in events} == {date(2026, 11, 19), date(2026, 11, 20)}
    # each FT1's amount is labelled with the event it became (the id, not its cents)
    assert [a.event_id for a in totals.amounts] == [e.event_id for e in events]
    assert [a.cents for a in totals.amounts] == [12000, -2550, -1000, 725]


# --- plausible dates ----------------------------------------------------------------------

def test_dates_outside_the_window_refuse_the_message_with_ae() -> None:
    """A charge dated 0001-01-01 or 9999-12-31 is a typo, not money: AE at the field the
    date came from, naming the date, the window and the settings; 1990-01-01 itself is in."""
    window = DateWindow(date(1990, 1, 1), 366)
    config = MappingConfig(date_window=window)
    latest = window.latest()
    for when, ok in (("00010101", False), ("99991231", False), ("19891231", False),
                     ("19900101", True), (latest.strftime("%Y%m%d"), True)):
        result = mapped(dft(ft1(1), ft1(2).replace("||20261120|20261120|",
                                                  f"||{when}|{when}|")), config)
        if ok:
            assert not isinstance(result, Rejected), (when, result)
            continue
        assert isinstance(result, Rejected), when
        (problem,) = result.problems
        assert (result.ack_code, problem.reason_code, problem.place, hl7_code(problem)) == (
            "AE", "date_out_of_range", "FT1^2^4", 102)
        day = f"{when[:4]}-{when[4:6]}-{when[6:]}"
        assert problem.detail.startswith(f"FT1-4 (FT1 #2) {day} is ")
        for part in ("1990-01-01", latest.isoformat(), "RCMFLOW_DATE_EARLIEST",
                     "RCMFLOW_DATE_FUTURE_DAYS=366"):
            assert part in problem.detail, (part, problem.detail)


def test_the_day_after_the_latest_date_is_refused_from_the_message_time() -> None:
    """No FT1-4: the event carries EVN-2, and the refusal points there."""
    config = MappingConfig(date_window=DateWindow(date(1990, 1, 1), 0))
    from datetime import UTC, datetime, timedelta

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y%m%d")
    text = dft(ft1(1).replace("||20261120|20261120|", "||||")).replace(
        "EVN|P03|20261120103000-0500", f"EVN|P03|{tomorrow}120000+0000")
    refused = mapped(text, config)
    assert isinstance(refused, Rejected) and refused.reason_code == "date_out_of_range"
    assert refused.problems[0].place == "EVN^1^2"
    assert not isinstance(mapped(text, MappingConfig(date_window=DateWindow(
        date(1990, 1, 1), 1))), Rejected)
