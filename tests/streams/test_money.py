"""Money read and written one way: every spelling of whole cents is exact, every malformed
amount is refused with its rule and the field's name, nothing is rounded, no float.

The cases of the four parsers this module replaced (HL7 values, payment files and X12, FHIR
Money, the cloud ERP answers) are kept here, with the properties of the one set of rules.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rcmflow.connectors.inbound.fhir import read_json
from rcmflow.runtime.shown import SHOWN_CHARS_MAX
from rcmflow.streams.exceptions import MoneyError
from rcmflow.streams.money import (
    AMOUNT_CENTS_MAX,
    TEXT_CHARS_MAX,
    Refusal,
    cents_decimal,
    cents_for_people,
    cents_text,
    money_cents,
    number_cents,
    parse_cents,
    parse_decimal,
)

USD = frozenset({"USD"})
CENTS = st.integers(min_value=-AMOUNT_CENTS_MAX, max_value=AMOUNT_CENTS_MAX)
PAST = st.integers(min_value=AMOUNT_CENTS_MAX + 1, max_value=10**40)


def refusal(parse: object, *args: object) -> Refusal:
    with pytest.raises(MoneyError) as refused:
        parse(*args)  # type: ignore[operator]
    return refused.value.refusal


# -- written, and read back ------------------------------------------------------------------

@given(CENTS)
def test_every_spelling_written_reads_back_exactly(cents: int) -> None:
    assert parse_cents(cents_text(cents)) == cents
    assert number_cents(cents_decimal(cents)) == cents
    assert parse_cents(cents_for_people(cents).replace(",", "")) == cents
    assert cents_decimal(cents).as_tuple().exponent == -2
    assert format(cents_decimal(cents), "f") == cents_text(cents)


@pytest.mark.parametrize("cents, text, people", [
    (0, "0.00", "0.00"), (5, "0.05", "0.05"), (-5, "-0.05", "-0.05"),
    (123450, "1234.50", "1,234.50"), (-123456789, "-1234567.89", "-1,234,567.89"),
    (AMOUNT_CENTS_MAX, "10000000000.00", "10,000,000,000.00")])
def test_the_two_spellings(cents: int, text: str, people: str) -> None:
    assert (cents_text(cents), cents_for_people(cents)) == (text, people)
    assert cents_decimal(cents) == Decimal(text)


@pytest.mark.parametrize("write", [cents_text, cents_decimal, cents_for_people])
@pytest.mark.parametrize("value", [True, 1.5, "12", None])
def test_only_integer_cents_are_written(write: object, value: object) -> None:
    with pytest.raises(AssertionError):
        write(value)  # type: ignore[operator]


# -- decimal text (HL7 NM, X12 R, payment files, ERP strings) --------------------------------

@given(cents=CENTS, zeros=st.integers(0, 4), plus=st.booleans(), lead=st.integers(0, 3))
def test_decimal_strings_parse_to_exact_cents(cents: int, zeros: int, plus: bool,
                                              lead: int) -> None:
    text = cents_text(cents) + "0" * zeros
    if plus and cents >= 0:
        text = "+" + text
    if lead:
        sign = text[0] if text[0] in "+-" else ""
        text = sign + "0" * lead + text[len(sign):]
    if len(text) > TEXT_CHARS_MAX:  # padding past the bound: refused unread, not misread
        assert refusal(parse_cents, text) is Refusal.TOO_LONG
        return
    assert parse_cents(text) == cents
    # Shorter spellings of the same amount: "12.5", "12".
    if cents % 10 == 0:
        assert parse_cents(cents_text(cents)[:-1]) == cents
    if cents % 100 == 0:
        assert parse_cents(cents_text(cents)[:-3]) == cents


@given(cents=CENTS, shape=st.sampled_from(["{}", "+{}", "{}0", "{}000", " {} "]))
def test_any_amount_in_cents_reads_back_exactly(cents: int, shape: str) -> None:
    text = cents_text(cents)
    if text.startswith("-"):
        shape = shape.replace("+", "")
    assert parse_cents(shape.format(text)) == cents


@pytest.mark.parametrize("text, cents", [
    ("100", 10000), ("100.5", 10050), ("0.01", 1), (".5", 50), ("-12.34", -1234),
    ("  7.00 ", 700), ("00012", 1200), ("1.", 100), ("-0.00", 0), ("+.01", 1),
    ("00000000000000012.50", 1250),  # zero-padded to 20 characters: fixed-width exports
])
def test_amount_shapes_real_feeds_send(text: str, cents: int) -> None:
    assert parse_cents(text) == cents


@given(cents=st.integers(min_value=-AMOUNT_CENTS_MAX, max_value=AMOUNT_CENTS_MAX // 10),
       sub=st.integers(min_value=1, max_value=9), more=st.integers(min_value=0, max_value=3))
def test_a_fraction_of_a_cent_is_refused_not_rounded(cents: int, sub: int, more: int) -> None:
    text = cents_text(cents) + "0" * more + str(sub)
    if len(text) > TEXT_CHARS_MAX:
        return
    with pytest.raises(MoneyError, match="a fraction of a cent") as refused:
        parse_cents(text, "FT1-11")
    assert refused.value.refusal is Refusal.FRACTION_OF_A_CENT
    assert str(refused.value).startswith(f"FT1-11 '{text}'")


@pytest.mark.parametrize("text, why", [
    ("", Refusal.EMPTY), (" ", Refusal.EMPTY), ("\t\r\n", Refusal.EMPTY),
    ("1e3", Refusal.NOT_DECIMAL), ("1E-2", Refusal.NOT_DECIMAL), ("1,000.00", Refusal.NOT_DECIMAL),
    ("$10", Refusal.NOT_DECIMAL), ("$5", Refusal.NOT_DECIMAL), ("10.00 USD", Refusal.NOT_DECIMAL),
    ("0x10", Refusal.NOT_DECIMAL), ("1_000", Refusal.NOT_DECIMAL), ("nan", Refusal.NOT_DECIMAL),
    ("NaN", Refusal.NOT_DECIMAL), ("inf", Refusal.NOT_DECIMAL),
    ("Infinity", Refusal.NOT_DECIMAL), ("--1", Refusal.NOT_DECIMAL), ("+-1", Refusal.NOT_DECIMAL),
    ("- 5", Refusal.NOT_DECIMAL), ("1 000", Refusal.NOT_DECIMAL), ("1.2.3", Refusal.NOT_DECIMAL),
    ("12.3.4", Refusal.NOT_DECIMAL), ("abc", Refusal.NOT_DECIMAL), (".", Refusal.NOT_DECIMAL),
    ("-", Refusal.NOT_DECIMAL), ("١٢", Refusal.NOT_DECIMAL), ("１２", Refusal.NOT_DECIMAL),
    ("1" * 25, Refusal.TOO_LONG), ("12.50000000000000000000", Refusal.TOO_LONG),
    ("10000000000.01", Refusal.OUT_OF_RANGE), ("-99999999999.99", Refusal.OUT_OF_RANGE),
    ("9999999999999999", Refusal.OUT_OF_RANGE), ("12.345", Refusal.FRACTION_OF_A_CENT),
    ("0.001", Refusal.FRACTION_OF_A_CENT),
])
def test_clever_amounts_are_refused_with_the_field_name(text: str, why: Refusal) -> None:
    with pytest.raises(MoneyError, match="FT1-11") as refused:
        parse_cents(text, "FT1-11")
    assert refused.value.refusal is why


@given(text=st.text(max_size=30))
@example("١٢")
@example("12\u00a0")
def test_any_text_is_exact_cents_or_a_money_error(text: str) -> None:
    try:
        value = parse_cents(text)
    except MoneyError:
        return
    assert isinstance(value, int) and abs(value) <= AMOUNT_CENTS_MAX
    assert Decimal(text.strip()) * 100 == value
    assert text.strip().lstrip("+-").replace(".", "").isascii()


@given(cents=PAST, negative=st.booleans())
def test_amounts_past_the_bound_are_refused(cents: int, negative: bool) -> None:
    sign = "-" if negative else ""
    text = f"{sign}{cents // 100}.{cents % 100:02d}"
    why = Refusal.TOO_LONG if len(text) > TEXT_CHARS_MAX else Refusal.OUT_OF_RANGE
    assert refusal(parse_cents, text) is why
    assert refusal(number_cents, Decimal(text)) is Refusal.OUT_OF_RANGE
    assert refusal(number_cents, Decimal(f"{sign}{cents}E-2")) is Refusal.OUT_OF_RANGE
    if cents % 100 == 0:
        assert refusal(number_cents, int(f"{sign}{cents // 100}")) is Refusal.OUT_OF_RANGE


def test_the_bound_itself_is_money() -> None:
    top = cents_text(AMOUNT_CENTS_MAX)
    assert parse_cents(top) == AMOUNT_CENTS_MAX and parse_cents("-" + top) == -AMOUNT_CENTS_MAX
    assert number_cents(AMOUNT_CENTS_MAX // 100) == AMOUNT_CENTS_MAX


@given(st.text("0123456789", min_size=21, max_size=SHOWN_CHARS_MAX).filter(
    lambda t: t[0] != "0"))
def test_a_long_amount_is_repeated_whole(amount: str) -> None:
    with pytest.raises(MoneyError) as refused:
        parse_cents(amount, "FT1-11")
    assert f"'{amount}'" in str(refused.value)
    assert "longer than the 20 characters" in str(refused.value)


def test_a_value_past_the_shown_bound_is_said_to_be_cut() -> None:
    amount = "9" * 500
    with pytest.raises(MoneyError) as refused:
        parse_cents(amount)
    message = str(refused.value)
    assert "cut; 500 characters" in message and "9" * SHOWN_CHARS_MAX in message
    assert "9" * (SHOWN_CHARS_MAX + 1) not in message


@pytest.mark.parametrize("text, value", [("2", Decimal(2)), ("2.0", Decimal("2.0")),
                                         ("-1", Decimal(-1)), (" 2.5 ", Decimal("2.5"))])
def test_numbers_beside_amounts_read_by_the_same_rules(text: str, value: Decimal) -> None:
    assert parse_decimal(text, "FT1-10 quantity") == value


@pytest.mark.parametrize("text", ["1e2", "NaN", "sNaN", "١", "1" * 21, "", "2 units"])
def test_numbers_beside_amounts_are_refused_like_amounts(text: str) -> None:
    with pytest.raises(MoneyError, match="FT1-10"):
        parse_decimal(text, "FT1-10 quantity")


# -- JSON numbers (FHIR, the ERPs' answers) --------------------------------------------------

def _spellings(cents: int, zeros: int, exponent: int) -> list[str]:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    out = [f"{sign}{whole}.{part:02d}" + "0" * zeros,
           # scientific: the digits of the cents with the point moved by an exponent
           f"{sign}{abs(cents)}E-2", f"{sign}{abs(cents)}e{-2 + 0}",
           f"{sign}{abs(cents) * 10**exponent}E-{2 + exponent}"]
    if part == 0:
        out.append(f"{sign}{whole}")  # a JSON integer
    return out


def _read(text: str) -> int:
    doc = read_json('{"value": ' + text + ', "currency": "USD"}')
    return money_cents(doc, where="m", currencies=USD)[0]


@given(cents=CENTS, zeros=st.integers(0, 20), exponent=st.integers(0, 30))
def test_every_json_spelling_of_whole_cents_is_exact(cents: int, zeros: int,
                                                     exponent: int) -> None:
    for text in _spellings(cents, zeros, exponent):
        assert _read(text) == cents, text


@given(cents=CENTS, tail=st.integers(1, 9), more=st.integers(0, 40))
def test_a_json_fraction_of_a_cent_is_refused_even_past_28_digits(cents: int, tail: int,
                                                                   more: int) -> None:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    text = f"{sign}{whole}.{part:02d}" + "0" * more + str(tail)
    with pytest.raises(MoneyError, match="fraction of a cent") as caught:
        _read(text)
    assert caught.value.refusal is Refusal.FRACTION_OF_A_CENT


@given(cents=PAST, negative=st.booleans())
def test_json_amounts_past_the_limit_are_refused(cents: int, negative: bool) -> None:
    sign = "-" if negative else ""
    for text in (f"{sign}{cents // 100}.{cents % 100:02d}", f"{sign}{cents}E-2"):
        with pytest.raises(MoneyError, match="out of range"):
            _read(text)


@pytest.mark.parametrize("value, why", [
    ('"12.00"', Refusal.NOT_NUMBER), ("true", Refusal.NOT_NUMBER), ("[1]", Refusal.NOT_NUMBER),
    ("{}", Refusal.NOT_NUMBER), ("null", Refusal.MISSING), ("1e999999999", Refusal.OUT_OF_RANGE),
    ("-1E+400", Refusal.OUT_OF_RANGE), ("1E-999999999", Refusal.FRACTION_OF_A_CENT),
])
def test_json_values_that_are_not_money(value: str, why: Refusal) -> None:
    with pytest.raises(MoneyError) as caught:
        _read(value)
    assert caught.value.refusal is why


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("-Infinity"), Decimal("sNaN")])
def test_json_readers_that_admit_nan_still_get_no_money(value: Decimal) -> None:
    assert refusal(number_cents, value) is Refusal.NOT_FINITE


@pytest.mark.parametrize("text, cents", [
    ("0e999999999", 0), ("-0E+999999999", 0), ("0E-999999999", 0),
    ("1" + "0" * 5000 + "E-5000", 100), ("0." + "0" * 5000, 0)])
def test_huge_exponents_and_long_digit_runs_cost_nothing(text: str, cents: int) -> None:
    # 0e999999999 once meant 0 * 10**999999999: the FHIR connector hung on one resource.
    started = time.monotonic()
    assert number_cents(json.loads(text, parse_float=Decimal)) == cents
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("value", ["1E+999990", "-1E+999999999", "1" * 4000])
def test_huge_numbers_are_refused_without_being_built(value: str) -> None:
    # An ERP answer of 1E+999990 took the old reader over a minute (a million-digit int).
    started = time.monotonic()
    assert refusal(number_cents, Decimal(value)) is Refusal.OUT_OF_RANGE
    assert refusal(number_cents, int(value) if value.isdigit() else Decimal(value)) \
        is Refusal.OUT_OF_RANGE
    assert time.monotonic() - started < 1.0


def test_an_integer_too_long_to_print_is_still_refused_by_its_rule() -> None:
    with pytest.raises(MoneyError, match="over 1000 digits") as refused:
        number_cents(10**5000)
    assert refused.value.refusal is Refusal.OUT_OF_RANGE


def test_a_float_is_a_type_error_not_an_amount() -> None:
    with pytest.raises(TypeError, match="parse_float=Decimal"):
        number_cents(12.5)


def test_strings_are_amounts_only_where_an_api_sends_them() -> None:
    assert refusal(number_cents, "12.50") is Refusal.NOT_NUMBER
    assert number_cents("12.50", "NetSuite debit", text_too=True) == 1250
    assert number_cents(" .5", text_too=True) == 50
    for bad in ["1.005", "0.001", "NaN", "Infinity", "abc", "1E+2"]:
        with pytest.raises(MoneyError, match="NetSuite debit"):
            number_cents(bad, "NetSuite debit", text_too=True)


@given(cents=CENTS)
def test_erp_strings_and_short_decimals_read_exactly(cents: int) -> None:
    text = format(cents_decimal(cents), "f")
    assert number_cents(text, text_too=True) == cents
    assert number_cents(Decimal(text).normalize()) == cents  # "12.5", "1E+2" forms


# -- FHIR Money ------------------------------------------------------------------------------

@pytest.mark.parametrize("money, why, says", [
    ({"value": 10}, Refusal.CURRENCY, "m.currency is missing"),
    ({"value": 10, "currency": "EUR"}, Refusal.CURRENCY, "m.currency 'EUR' is not a currency"),
    ({"value": 10, "currency": "usd"}, Refusal.CURRENCY, "m.currency (not ISO 4217)"),
    ({"currency": "USD"}, Refusal.MISSING, "m.value is missing"),
    (None, Refusal.MISSING, "m is missing"),
    ({"value": "10", "currency": "USD"}, Refusal.NOT_NUMBER, "m.value is not a JSON number"),
])
def test_currency_and_value_are_required(money: object, why: Refusal, says: str) -> None:
    with pytest.raises(MoneyError) as caught:
        money_cents(money, where="m", currencies=USD)
    assert caught.value.refusal is why and str(caught.value).startswith(says)


def test_a_fhir_money_reads_as_cents_and_currency() -> None:
    assert money_cents({"value": Decimal("12.30"), "currency": "USD"}, where="m",
                       currencies=USD) == (1230, "USD")


# -- found by the mutation run (RELIABILITY.md): what a refusal says -------------------------

@pytest.mark.parametrize("value, says", [
    (10**12, "paid '1000000000000' is out of range"),
    (Decimal("Infinity"), "paid is not a finite number"),
    (Decimal("1.005"), "paid '1.005' has a fraction of a cent"),
    (Decimal("123456789012.5"), "paid '123456789012.5' is out of range"),
])
def test_a_refused_json_number_names_its_field_and_value(value: object, says: str) -> None:
    with pytest.raises(MoneyError) as refused:
        number_cents(value, "paid")
    assert str(refused.value).startswith(says)


def test_an_unnamed_field_is_called_amount_or_number() -> None:
    with pytest.raises(MoneyError, match="^amount 'x' "):
        parse_cents("x")
    with pytest.raises(MoneyError, match="^amount is not a JSON number"):
        number_cents("x")
    with pytest.raises(MoneyError, match="^number 'x' "):
        parse_decimal("x")


def test_an_empty_currency_is_missing_and_another_names_the_ones_taken() -> None:
    with pytest.raises(MoneyError, match=r"^m\.currency is missing"):
        money_cents({"value": 10, "currency": ""}, where="m", currencies=USD)
    with pytest.raises(MoneyError, match=r"is not a currency the ledger takes \(CAD, USD\)$"):
        money_cents({"value": 10, "currency": "EUR"}, where="m",
                    currencies=frozenset({"USD", "CAD"}))
