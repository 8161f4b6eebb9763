"""FHIR values -> rcmflow values: account numbers, instants, idempotency keys.

Money (FHIR Money, exact or refused) is read by ``rcmflow.streams.money.money_cents``;
``money_code`` gives the DLQ reason code of a refusal.

Pure functions over the JSON as parsed by ``read_json`` (numbers as ``int`` or ``Decimal``,
never ``float``). Each returns a value or raises ``FhirValueError`` whose message says what is
wrong without quoting patient data (element paths, amounts, currencies, account numbers).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from rcmflow.connectors.inbound.exceptions import FhirValueError
from rcmflow.streams.events import PROVIDER_PREFIX
from rcmflow.streams.exceptions import MoneyError
from rcmflow.streams.money import Refusal

__all__ = [
    "read_json",
    "money_code",
    "account_from_reference",
    "account_from_subject",
    "instant",
    "identifier_key",
    "event_key",
    "DEFAULT_ACCOUNT_SYSTEMS",
    "dumps",
    "code_text",
]

#: The identifier system the facade writes on every Account (``facade/resources.py``).
DEFAULT_ACCOUNT_SYSTEMS = ("urn:rcmflow:account",)
#: Same rule as the canonical events' ``account`` field.
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._\-]{0,63}$")
#: A FHIR id ([A-Za-z0-9\-.]{1,64}) at the end of a literal reference "Account/<id>", with an
#: optional base URL before it and an optional "/_history/<v>" after it.
_ACCOUNT_REF = re.compile(
    r"^(?:.*/)?Account/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_PATIENT_REF = re.compile(r"^(?:.*/)?Patient/pat\.([A-Za-z0-9\-.]{1,60})$")
#: FHIR date / dateTime (R4 §2.24): a date alone, or a time with seconds and a zone.
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
#: Event ids longer than this become a digest (the canonical limit is 200).
_KEY_CHARS_MAX = 160


def code_text(value: Any, known: frozenset[str] | tuple[str, ...]) -> str:
    """A code for a reason: quoted when it is one of ``known``, else not echoed at all (a
    free-text value in a code field may be anything, a name included)."""
    return repr(value) if isinstance(value, str) and value in known else "(not a known code)"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(text: str | bytes) -> Any:
    """JSON with every number exact: fractions as ``Decimal`` (never float), integers as int;
    NaN/Infinity refused. Raises ``ValueError`` (also for nesting too deep to read)."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def money_code(exc: MoneyError) -> str:
    """The DLQ reason code of a FHIR Money refused by ``rcmflow.streams.money.money_cents``."""
    return "fhir_currency" if exc.refusal is Refusal.CURRENCY else "fhir_invalid_amount"


def account_from_reference(ref: Any, *, systems: tuple[str, ...]) -> str | None:
    """The account number a Reference names, or None when it names none.

    ``Account/<id>`` (relative, absolute, with ``_history``): the id, as the facade serves
    accounts with id = account number; or an ``identifier`` in one of ``systems``: its value.
    """
    if not isinstance(ref, dict):
        return None
    found: str | None = None
    literal = ref.get("reference")
    if isinstance(literal, str):
        match = _ACCOUNT_REF.match(literal)
        if match:
            found = match.group(1)
    ident = ref.get("identifier")
    if found is None and isinstance(ident, dict) and ident.get("system") in systems:
        value = ident.get("value")
        found = value if isinstance(value, str) else None
    if found is None:
        return None
    return _checked_account(found)


def account_from_subject(ref: Any) -> str | None:
    """The account a subject ``Patient/pat.<account>`` stands for (the facade's patient ids,
    ``facade.resources.patient_id_for``: one patient per account), else None."""
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    match = _PATIENT_REF.match(ref["reference"])
    return _checked_account(match.group(1)) if match else None


def _checked_account(value: str) -> str:
    if not _ACCOUNT.match(value) or value.startswith(PROVIDER_PREFIX):
        # Not echoed: what is not an account number may be anything, a name included.
        raise FhirValueError(f"an account number of {len(value)} characters is not one "
                             "rcmflow can key (letters, digits, ':._-', at most 64; not "
                             "provider:...)", "fhir_no_account")
    return value


def instant(value: Any, *, where: str) -> datetime:
    """A FHIR date (UTC midnight) or dateTime with its zone; partial dates are refused."""
    if not isinstance(value, str):
        raise FhirValueError(f"{where} is missing")
    if _DATE.match(value):
        try:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        except ValueError as exc:
            raise FhirValueError(f"{where} is not a date") from exc
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FhirValueError(f"{where} is not a date or dateTime with a zone") from exc
    if moment.tzinfo is None:
        raise FhirValueError(f"{where} has a time but no zone")
    return moment


def identifier_key(ident: Any) -> str | None:
    """``system|value`` of an Identifier with a value (system may be absent), else None."""
    if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
        return None
    if not ident["value"]:
        return None
    system = ident.get("system") if isinstance(ident.get("system"), str) else ""
    return f"{system}|{ident['value']}"


def event_key(kind: str, material: str) -> str:
    """``fhir:<kind>:<material>``; long material becomes a digest so ids stay bounded."""
    if len(material) > _KEY_CHARS_MAX or any(ord(c) < 32 for c in material):
        material = "sha256:" + hashlib.sha256(material.encode()).hexdigest()[:40]
    return f"fhir:{kind}:{material}"


#: Marks a Decimal while json.dumps runs; a per-process nonce, so no input string can fake it.
_MARK = "\x1edec" + secrets.token_hex(8) + ":"
_MARKED = re.compile('"' + re.escape(json.dumps(_MARK)[1:-1]) + r'([-+.0-9eE]+)"')


def _decimal_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _MARK + str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(doc: Any) -> str:
    """JSON text of a parsed document; Decimals keep their exact digits (never a float)."""
    try:
        # ASCII: a lone surrogate escape read from the input (\ud800) stays an escape.
        text = json.dumps(doc, ensure_ascii=True, separators=(",", ":"), allow_nan=False,
                          default=_decimal_default)
    except RecursionError:
        return '"(nested too deeply to write out)"'
    return _MARKED.sub(r"\1", text)
