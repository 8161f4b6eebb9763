"""Which (account, event id) a file already used: the per-file duplicate check of the payment
and FHIR readers, in bounded, compact memory (files are read as a stream, this stays)."""

from __future__ import annotations

import hashlib

__all__ = ["SeenKeys", "BYTES_PER_KEY"]

#: Measured in CPython 3.11 (tests/connectors/inbound/test_seen_keys.py): a 16-byte ``bytes`` key
#: (49 B), an ``int`` value (32 B) and the dict's share (~70-100 B as it grows).
BYTES_PER_KEY = 200


class SeenKeys:
    """A 16-byte digest of each (account, event id) -> where it was first seen (a row number,
    an entry index) and a 4-byte digest of its event, enough to say whether a second one has
    "the same content" or "other content" (a 1 in 4 billion chance of calling other content
    the same, which only changes that wording: the row is refused either way)."""

    def __init__(self) -> None:
        self._first: dict[bytes, int] = {}

    def first(self, account: str, event_id: str, place: int,
              content: str) -> tuple[int, bool] | None:
        """``None`` (and the key remembered) the first time; else (first place, same content)."""
        key = hashlib.blake2b(f"{account}\x00{event_id}".encode(), digest_size=16).digest()
        body = int.from_bytes(hashlib.blake2b(content.encode(), digest_size=4).digest())
        seen = self._first.get(key)
        if seen is None:
            self._first[key] = place << 32 | body
            return None
        return seen >> 32, seen & 0xFFFFFFFF == body

    def __len__(self) -> int:
        return len(self._first)
