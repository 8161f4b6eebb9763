"""Input values quoted in messages: whole up to a bound, else cut and said so.

A number cut silently in a reason ("amount '12345678901234567890' is not a number" for a
25-digit amount) sends an operator looking for a value that is not in the input.
"""

from __future__ import annotations

__all__ = ["quoted", "SHOWN_CHARS_MAX"]

#: Characters of an input value a message repeats (a long value: its start and its length).
SHOWN_CHARS_MAX = 40


def quoted(text: str, chars_max: int = SHOWN_CHARS_MAX) -> str:
    """``repr(text)``, or for a longer text its first ``chars_max`` characters and a note
    saying it was cut and how long it was."""
    if len(text) <= chars_max:
        return repr(text)
    return f"{text[:chars_max]!r}... (cut; {len(text)} characters)"
