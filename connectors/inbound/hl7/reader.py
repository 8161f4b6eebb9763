"""A lazy HL7 v2 reader: segments split once, a field split only when it is asked for.

Why not hl7apy or python-hl7 on the hot path: on `ms_dft_p03_01_v28.hl7` (19 segments, 5 KB)
hl7apy's ``parse_message`` (TOLERANT, find_groups=False) takes ~60 ms and python-hl7's
``hl7.parse`` ~2.7 ms on this machine, because both build every component of every segment;
rcmflow reads about a dozen fields of MSH, EVN, PID, PV1 and FT1, in ~0.05 ms this way.
hl7apy stays the reference: the tests check this reader against it field by field on every
public sample. Tolerant where real feeds need it: a UTF-8 BOM, LF or CRLF segment ends,
missing trailing separators, ``""`` (explicit null) read as empty, Z-segments ignored.
Strict where it matters: the message starts with MSH and its encoding characters are sane.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from rcmflow.connectors.inbound.exceptions import HL7ParseError

__all__ = [ "Hl7Message", "Segment", "read_message", "read_bytes",
           "normalise", "charset_of"]

_BOM = b"\xef\xbb\xbf"
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def charset_of(raw: bytes) -> str:
    """The codec ``normalise`` reads ``raw`` with: "utf-8", else "latin-1"."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def normalise(raw: bytes) -> str:
    """Text with CR segment ends and no BOM: what is parsed and what replays are compared by.

    Bytes that are not UTF-8 are read as Latin-1 (HL7 v2's customary default, MSH-18 often
    absent), so any byte string decodes and nothing is guessed away.
    """
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    text = raw.decode(charset_of(raw))
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r \t\x00")
    return text


@dataclass(frozen=True)
class Encoding:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str

    def unescape(self, value: str) -> str:
        if not self.escape or self.escape not in value:
            return value
        e = self.escape
        for code, char in (("F", self.field), ("S", self.component), ("T", self.subcomponent),
                           ("R", self.repetition)):
            value = value.replace(f"{e}{code}{e}", char)
        return value.replace(f"{e}E{e}", e)


class Segment:
    """One segment; ``field(n)`` is SEG-n as text, ``part(n, c, s)`` one (sub)component of
    its first repetition, unescaped."""

    __slots__ = ("name", "index", "_fields", "_enc")

    def __init__(self, name: str, index: int, fields: list[str], enc: Encoding) -> None:
        self.name = name
        self.index = index  # 1-based position among segments of this name
        self._fields = fields
        self._enc = enc

    def field(self, n: int) -> str:
        """SEG-n raw (still escaped, all repetitions); MSH-1 is the field separator."""
        if self.name == "MSH":
            if n == 1:
                return self._enc.field
            n -= 1
        value = self._fields[n] if 0 < n < len(self._fields) else ""
        return "" if value == '""' else value

    def repetitions(self, n: int) -> list[str]:
        return self.field(n).split(self._enc.repetition)

    def part(self, n: int, component: int = 1, subcomponent: int = 1) -> str:
        """SEG-n.component.subcomponent of the first repetition, unescaped and stripped."""
        value = self.field(n).split(self._enc.repetition, 1)[0]
        comps = value.split(self._enc.component)
        if component > len(comps):
            return ""
        subs = comps[component - 1].split(self._enc.subcomponent)
        if subcomponent > len(subs):
            return ""
        text = subs[subcomponent - 1].strip()
        return "" if text == '""' else self._enc.unescape(text)


@dataclass(frozen=True)
class Hl7Message:
    text: str
    encoding: Encoding
    segments: tuple[Segment, ...]
    #: The codec the bytes were read with: the ACK is written in it, so MSA-2 echoes MSH-10
    #: byte for byte (a Latin-1 control id re-encoded as UTF-8 is another id to the sender).
    charset: str = "utf-8"

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    @cached_property
    def message_type(self) -> tuple[str, str]:
        """(MSH-9.1, MSH-9.2), e.g. ("DFT", "P03")."""
        return self.msh.part(9, 1).upper(), self.msh.part(9, 2).upper()

    @cached_property
    def control_id(self) -> str:
        return self.msh.part(10)

    @property
    def version(self) -> str:
        return self.msh.part(12)


def read_bytes(raw: bytes, *, first_segment_only: bool = False) -> Hl7Message:
    """``read_message(normalise(raw))``, remembering the codec the bytes were read with;
    ``first_segment_only``: just the MSH (a frame's head, for its answer)."""
    text = normalise(raw)
    if first_segment_only:
        text = text.split("\r", 1)[0]
    return read_message(text, charset=charset_of(raw))


def read_message(text: str, *, charset: str = "utf-8") -> Hl7Message:
    """Split a normalised message (see ``normalise``) into segments; ``charset``: the codec
    its bytes were read with (``charset_of``)."""
    if not text.startswith("MSH"):
        raise HL7ParseError("the message does not start with an MSH segment")
    if len(text) < 8:
        raise HL7ParseError("the MSH segment is too short to hold its encoding characters")
    fs = text[3]
    enc_end = text.find(fs, 4)
    enc_chars = text[4:enc_end] if enc_end >= 0 else text[4:]
    if not 3 <= len(enc_chars) <= 5 or fs.isalnum() or fs in "\r\n":
        raise HL7ParseError(f"MSH-1/MSH-2 are not valid encoding characters: {text[3:9]!r}")
    chars = fs + enc_chars
    if len(set(chars)) != len(chars) or any(c.isalnum() or c in " \r" for c in chars):
        raise HL7ParseError(f"MSH-1/MSH-2 are not valid encoding characters: {text[3:9]!r}")
    enc = Encoding(field=fs, component=enc_chars[0], repetition=enc_chars[1],
                   escape=enc_chars[2] if len(enc_chars) > 2 else "",
                   subcomponent=enc_chars[3] if len(enc_chars) > 3 else "&")
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for number, line in enumerate(text.split("\r"), start=1):
        line = line.strip(" \t\x00")
        if not line:
            continue
        fields = line.split(fs)
        name = fields[0].strip().upper()
        if not _SEGMENT_NAME.match(name):
            raise HL7ParseError(f"segment {number} has no valid segment name")
        if name == "MSH" and segments:
            raise HL7ParseError("more than one MSH segment: send one message per frame")
        counts[name] = counts.get(name, 0) + 1
        segments.append(Segment(name, counts[name], fields, enc))
    return Hl7Message(text, enc, tuple(segments), charset)
