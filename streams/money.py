"""Money: amounts read to exact integer cents, and cents written out. The one place for both.

Read, with one set of rules (every refusal is a ``MoneyError`` whose ``refusal`` says which
rule, and whose message names the field and shows the value):

- ``parse_cents``: decimal text (HL7 NM, X12 R, payment-file columns, ERP strings, the CSV
  journal). An optional sign, ASCII digits, an optional point: no exponent, no thousands
  separator, no currency sign, no NaN/Infinity. Surrounding whitespace is ignored; past
  ``TEXT_CHARS_MAX`` characters the text is refused unread.
- ``number_cents``: a JSON number read exactly (``int``, or ``Decimal`` as
  ``json.loads(..., parse_float=Decimal)`` and ijson give it). Here an exponent is fine (JSON
  has it: ``1.25E+2``); a float is a ``TypeError`` (the JSON was read lossily: a bug, not input).
- ``money_cents``: a FHIR Money (``{"value": <JSON number>, "currency": "USD"}``).

Shared by all three: an amount is whole cents (``12.340`` is fine, ``12.345`` is refused,
never rounded) and at most ``AMOUNT_CENTS_MAX`` either way (the canonical events' bound, so a
dollars-as-cents mix-up is refused where it is read). The sign is kept; whether a negative or
zero amount means anything is the caller's rule. No float anywhere, and no ``Decimal``
arithmetic either (its 28-digit context would round): digits and exponents, as integers.

Written:

- ``cents_text``: ``-1234.50``, the machine spelling (CSV journal, reasons that quote an
  amount as a source document spells it, test input); the inverse of ``parse_cents``.
- ``cents_decimal``: ``Decimal('-1234.50')``, always two places, for JSON payloads (ERP
  requests, FHIR Money served by the facade).
- ``cents_for_people``: ``-1,234.50``, for tables and reports an operator reads.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Any

from rcmflow.runtime.shown import quoted
from rcmflow.streams.exceptions import MoneyError

__all__ = [
    "AMOUNT_CENTS_MAX",
    "TEXT_CHARS_MAX",
    "Refusal",
    "parse_cents",
    "parse_decimal",
    "number_cents",
    "money_cents",
    "cents_text",
    "cents_decimal",
    "cents_for_people",
]

#: Characters of decimal text read (HL7's bound for NM; ``-10000000000.00`` is 15): longer
#: text is refused before any conversion, so a huge value costs nothing.
TEXT_CHARS_MAX = 20
#: Sign, ASCII digits (``\d`` would admit other scripts' digits), optional point and
#: fraction; at least one digit.
_DECIMAL_TEXT = re.compile(r"([+-]?)(?=\.?[0-9])([0-9]*)(?:\.([0-9]*))?")
#: No single amount beyond ten billion dollars: past it the amount (and its event) is
#: refused, so an upstream unit mix-up (dollars sent as cents of cents) cannot reach the
#: ledger. The canonical events' bound (``events.Cents``) is this one.
AMOUNT_CENTS_MAX = 1_000_000_000_000

#: Digits of the whole part past which a value cannot be in range (AMOUNT_CENTS_MAX // 100
#: has 11): checked before any integer is built from the digits.
_WHOLE_DIGITS_MAX = len(str(AMOUNT_CENTS_MAX // 100))


class Refusal(StrEnum):
    """Why an amount was refused: one value per rule."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    NOT_DECIMAL = "not_decimal"
    NOT_NUMBER = "not_number"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    FRACTION_OF_A_CENT = "fraction_of_a_cent"
    MISSING = "missing"
    CURRENCY = "currency"


def _decimal_text(text: str, what: str) -> tuple[str, str, str]:
    """(sign, whole digits, fraction digits) of decimal text, or a ``MoneyError``."""
    value = text.strip()
    if not value:
        raise MoneyError(f"{what} is empty", Refusal.EMPTY)
    if len(value) > TEXT_CHARS_MAX:
        raise MoneyError(f"{what} {quoted(value)} is longer than the {TEXT_CHARS_MAX} "
                         "characters a number may have", Refusal.TOO_LONG)
    match = _DECIMAL_TEXT.fullmatch(value)
    if match is None:
        raise MoneyError(f"{what} {quoted(value)} is not a decimal number like 1234.56",
                         Refusal.NOT_DECIMAL)
    sign, whole, fraction = match.groups()
    return sign, whole, fraction or ""


def parse_cents(text: str, what: str = "amount") -> int:
    """``"1234.5"`` -> ``123450``, ``" -0.01 "`` -> ``-1``; raises ``MoneyError``.

    ``what`` names the field in the message (``"FT1-11 extended amount"``)."""
    sign, whole, fraction = _decimal_text(text, what)
    return _cents(sign == "-", whole + fraction, -len(fraction), what, text.strip())


def parse_decimal(text: str, what: str = "number") -> Decimal:
    """Decimal text read by the same rules as an amount (length, shape), exactly, for the
    numbers beside amounts (HL7 FT1-10 and X12 SV104 quantities); raises ``MoneyError``."""
    _decimal_text(text, what)
    return Decimal(text.strip())  # from text Decimal is exact: no context, no rounding


def number_cents(value: Any, what: str = "amount", *, text_too: bool = False) -> int:
    """A JSON number read exactly (``int`` or ``Decimal``) -> cents; raises ``MoneyError``.

    ``text_too``: a string is read as decimal text (``parse_cents``), for the APIs that send
    amounts as JSON strings (NetSuite's SuiteQL); otherwise a string is not a number."""
    if isinstance(value, float):
        raise TypeError(f"{what} is a float: read JSON with parse_float=Decimal")
    if isinstance(value, str) and text_too:
        return parse_cents(value, what)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise MoneyError(f"{what} is not a JSON number", Refusal.NOT_NUMBER)
    if isinstance(value, int):
        if abs(value) > AMOUNT_CENTS_MAX // 100:  # compared as is: no product of a huge int
            # str() of an int past 4300 digits raises; a shown value stops at 40 anyway.
            shown = str(value) if value.bit_length() < 4000 else "(over 1000 digits)"
            raise _out_of_range(what, shown)
        return value * 100
    if not value.is_finite():
        raise MoneyError(f"{what} is not a finite number", Refusal.NOT_FINITE)
    negative, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    return _cents(bool(negative), "".join(map(str, digits)), exponent, what, str(value))


def _cents(negative: bool, digits: str, exponent: int, what: str, shown: str) -> int:
    """The cents of ``±digits × 10**exponent``, by integer arithmetic on a bounded number
    of digits (a JSON number may carry thousands of digits or an exponent of a billion)."""
    significant = digits.lstrip("0")
    if not significant:
        return 0
    kept = significant.rstrip("0")
    exponent += len(significant) - len(kept)  # now kept × 10**exponent, no trailing zeros
    if len(kept) + exponent > _WHOLE_DIGITS_MAX:
        raise _out_of_range(what, shown)
    if exponent < -2:
        raise MoneyError(f"{what} {quoted(shown)} has a fraction of a cent",
                         Refusal.FRACTION_OF_A_CENT)
    cents = int(kept + "0" * (exponent + 2))  # at most 13 digits: both bounds checked above
    if cents > AMOUNT_CENTS_MAX:
        raise _out_of_range(what, shown)
    return -cents if negative else cents


def _out_of_range(what: str, shown: str) -> MoneyError:
    return MoneyError(f"{what} {quoted(shown)} is out of range (at most "
                      f"{cents_text(AMOUNT_CENTS_MAX)} either way)", Refusal.OUT_OF_RANGE)


def money_cents(money: Any, *, where: str, currencies: frozenset[str]) -> tuple[int, str]:
    """A FHIR Money as (integer cents, currency); exact or refused, never rounded.

    ``currencies`` are the ones the ledger takes (its chart's currency): a Money without a
    currency, or with another, is refused (``Refusal.CURRENCY``), since converting is not
    rcmflow's job."""
    if not isinstance(money, dict):
        raise MoneyError(f"{where} is missing", Refusal.MISSING)
    value = money.get("value")
    currency = money.get("currency")
    if value is None:
        raise MoneyError(f"{where}.value is missing", Refusal.MISSING)
    if not isinstance(currency, str) or not currency:
        raise MoneyError(f"{where}.currency is missing: rcmflow does not guess a currency",
                         Refusal.CURRENCY)
    if currency not in currencies:
        shown = repr(currency) if re.fullmatch(r"[A-Z]{3}", currency) else "(not ISO 4217)"
        raise MoneyError(f"{where}.currency {shown} is not a currency the ledger takes "
                         f"({', '.join(sorted(currencies))})", Refusal.CURRENCY)
    return number_cents(value, f"{where}.value"), currency


def _checked(cents: int) -> int:
    assert isinstance(cents, int) and not isinstance(cents, bool), f"cents, not {cents!r}"
    return cents


def cents_text(cents: int) -> str:
    """``-123450`` -> ``"-1234.50"``: machine text, two places, no separators."""
    whole, part = divmod(abs(_checked(cents)), 100)
    return f"{'-' if cents < 0 else ''}{whole}.{part:02d}"


def cents_decimal(cents: int) -> Decimal:
    """``1250`` -> ``Decimal('12.50')``: exactly two places (built from text: no rounding)."""
    return Decimal(cents_text(cents))


def cents_for_people(cents: int) -> str:
    """``-123456`` -> ``"-1,234.56"``: what an operator reads in a table or a report."""
    whole, part = divmod(abs(_checked(cents)), 100)
    return f"{'-' if cents < 0 else ''}{whole:,}.{part:02d}"
