"""X12 bytes -> transaction sets, each with the structural problems that park it.

pyx12's ``X12Reader`` does the tokenising and the envelope arithmetic (SE01, SE02 = ST02, GE01,
GE02 = GS06, IEA01, IEA02 = ISA13, missing trailers, unreadable segment ids). This module adds
what pyx12 refuses outright with an unhelpful message, so the reason names the real defect:

* no ISA at all (a bare ST..SE): the whole file is refused;
* an ISA that is not fixed-width: an interchange error (every set in it parks); the ISA is
  padded to its fixed widths only so that the rest can still be read and reported;
* whitespace *before* each segment terminator (``\\n~`` layouts): read as a warning, the
  segments are re-joined so pyx12 can tokenise them.

An interchange-level problem parks every set in the interchange, a group-level one every set
in the group, a set-level one that set only.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyx12.errors
import pyx12.segment
import pyx12.x12file

__all__ = ["Problem", "Segment", "TransactionSet", "X12Document", "read_x12", "ISA_WIDTHS"]

#: Fixed widths of ISA01..ISA16: an ISA is 106 characters with its terminator.
ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
ISA_LEN = 3 + sum(ISA_WIDTHS) + len(ISA_WIDTHS)  # 'ISA' + elements + separators = 105

# pyx12 logs segment contents (patient names included) at error level: keep it quiet.
logging.getLogger("pyx12").setLevel(logging.CRITICAL)

#: (pyx12 level, pyx12 code) -> our stable reason code.
_PYX12_CODES = {
    ("st", "2"): "x12_se_missing",
    ("st", "3"): "x12_se_control_number",
    ("st", "4"): "x12_se_count",
    ("st", "23"): "x12_st_duplicate",
    ("gs", "3"): "x12_ge_missing",
    ("gs", "4"): "x12_ge_control_number",
    ("gs", "5"): "x12_ge_count",
    ("gs", "6"): "x12_gs_duplicate",
    ("isa", "001"): "x12_iea_control_number",
    ("isa", "021"): "x12_iea_count",
    ("isa", "023"): "x12_iea_missing",
    ("isa", "024"): "x12_unterminated_loop",
    ("isa", "025"): "x12_isa_duplicate",
}


@dataclass(frozen=True)
class Problem:
    """Why a transaction set cannot be applied: a stable code and the numbers."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment as plain strings (pyx12's objects cost ~2 KB a segment; these ~200 B)."""

    number: int  # 1-based position in the file
    parts: tuple[str, ...]  # parts[0] is the segment id, then the elements as written
    component_sep: str

    @classmethod
    def of(cls, number: int, seg: pyx12.segment.Segment, component_sep: str) -> Segment:
        return cls(number, (seg.get_seg_id() or "", *(c.format() for c in seg.elements)),
                   component_sep)

    @property
    def id(self) -> str:
        return self.parts[0]

    def el(self, position: int, component: int | None = None) -> str:
        """Element ``position`` (1-based), or one of its components; "" when absent."""
        if position >= len(self.parts):
            return ""
        value = self.parts[position]
        if component is not None:
            pieces = value.split(self.component_sep) if self.component_sep else [value]
            value = pieces[component - 1] if component <= len(pieces) else ""
        return value.strip()

    def text(self, element_sep: str, terminator: str) -> str:
        return element_sep.join(self.parts).rstrip(element_sep) + terminator


@dataclass
class _Envelope:
    control: str
    problems: list[Problem] = field(default_factory=list)


@dataclass
class TransactionSet:
    interchange: _Envelope
    group: _Envelope
    version: str  # GS08
    group_date: str  # GS04, CCYYMMDD
    element_sep: str
    st01: str
    st02: str
    segments: list[Segment] = field(default_factory=list)
    own_problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        """Everything that parks this set: its own, its group's and its interchange's."""
        return self.interchange.problems + self.group.problems + self.own_problems

    @property
    def isa13(self) -> str:
        return self.interchange.control

    @property
    def gs06(self) -> str:
        return self.group.control

    def raw(self, terminator: str) -> str:
        return "".join(s.text(self.element_sep, terminator) + "\n" for s in self.segments)


@dataclass
class X12Document:
    #: Set when nothing in the file could be read as X12 (no ISA, too large, ...).
    file_problems: list[Problem] = field(default_factory=list)
    file_warnings: list[str] = field(default_factory=list)
    sets: list[TransactionSet] = field(default_factory=list)
    terminator: str = "~"
    #: The text pyx12 read (after layout repairs), for the implementation-guide pass.
    text: str = ""


def decode(data: bytes) -> str:
    """X12 is ASCII in practice; 5010 allows more, so UTF-8 first, Latin-1 as the fallback."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _prepare(text: str, doc: X12Document) -> tuple[str, list[Problem]] | None:
    """The text pyx12 can tokenise and the ISA's own problems; None if it is not X12."""
    text = text.lstrip()
    if not text.startswith("ISA"):
        start = text[:3]
        doc.file_problems.append(Problem(
            "x12_no_interchange",
            f"no ISA interchange header: the file starts with {start!r}; an X12 file must "
            "come in an ISA/GS envelope (a bare ST..SE cannot be checked or traced)"))
        return None
    sep = text[3:4]
    parts: list[str] = []
    pos = 4
    for _ in range(15):  # ISA01..ISA15 end at a separator each
        end = text.find(sep, pos)
        if end < 0:
            doc.file_problems.append(Problem("x12_isa_unreadable",
                                             "the ISA segment does not have 16 elements"))
            return None
        parts.append(text[pos:end])
        pos = end + 1
    isa16, after = text[pos:pos + 1], pos + 1
    parts.append(isa16)
    # The terminator follows ISA16; a run of whitespace before it is a layout quirk.
    gap = after
    while gap < len(text) and text[gap] in " \r\n\t":
        gap += 1
    if gap >= len(text) or not isa16:
        doc.file_problems.append(Problem("x12_isa_unreadable", "nothing after the ISA segment"))
        return None
    problems: list[Problem] = []
    terminator = text[after]
    body = text[after + 1:]
    if gap > after and not (text[gap].isalnum()):
        terminator = text[gap]
        doc.file_warnings.append(
            f"whitespace before every segment terminator {terminator!r}: segments re-joined")
        body = text[gap + 1:]
        pieces = [p.strip() for p in body.split(terminator)]
        body = "".join(p + terminator + "\n" for p in pieces if p)
    if pos != ISA_LEN - 1:
        problems.append(Problem(
            "x12_isa_not_fixed_width",
            f"the ISA is {pos + 1} characters; an ISA is fixed-width: {ISA_LEN} plus its "
            "terminator"))
        padded: list[str] = []
        for value, width in zip(parts, ISA_WIDTHS, strict=True):
            if len(value) > width:
                doc.file_problems.append(Problem(
                    "x12_isa_unreadable",
                    f"ISA element {len(padded) + 1:02d} is {len(value)} characters, at most "
                    f"{width} allowed"))
                return None
            padded.append(value.ljust(width))
        parts = padded
    doc.terminator = terminator
    isa = "ISA" + sep + sep.join(parts) + terminator
    return isa + ("\n" if not body.startswith(("\n", "\r")) else "") + body, problems


def read_x12(data: bytes, *, segments_max: int) -> X12Document:
    """Read every interchange, group and transaction set in ``data``; never raises on input."""
    doc = X12Document()
    prepared = _prepare(decode(data), doc)
    if prepared is None:
        return doc
    text, isa_problems = prepared
    doc.text = text
    try:
        reader = pyx12.x12file.X12Reader(io.StringIO(text))
    except pyx12.errors.X12Error as exc:
        doc.file_problems.append(Problem("x12_unreadable", f"pyx12 cannot read the file: {exc}"))
        return doc
    try:
        _walk(reader, doc, isa_problems, segments_max)
    except pyx12.errors.X12Error as exc:
        doc.sets.clear()
        doc.file_problems.append(Problem("x12_unreadable", f"pyx12 stopped reading: {exc}"))
    except (IndexError, KeyError, ValueError, TypeError, AttributeError) as exc:
        # pyx12's reader trips over some broken envelopes (a GE with no open GS): the file's
        # structure is unusable, so it is refused whole rather than guessed at.
        doc.sets.clear()
        doc.file_problems.append(Problem(
            "x12_unreadable",
            f"pyx12 could not read past segment {reader.get_cur_line() + 1}: "
            f"{type(exc).__name__} (broken envelope nesting?)"))
    return doc


def _walk(reader: pyx12.x12file.X12Reader, doc: X12Document, isa_problems: list[Problem],
          segments_max: int) -> None:
    interchange = _Envelope("", list(isa_problems))
    group = _Envelope("")
    version = group_date = ""
    current: TransactionSet | None = None
    count = 0
    for count, raw in enumerate(_segments(reader), start=1):
        if count > segments_max:
            doc.sets.clear()
            doc.file_problems.append(Problem(
                "x12_too_many_segments",
                f"more than {segments_max} segments (RCMFLOW_X12_SEGMENTS_MAX): split the file"))
            return
        seg = Segment.of(count, raw, reader.subele_term or "")
        sid = seg.id
        if sid == "ISA":
            if count > 1:
                interchange = _Envelope(seg.el(13))
            else:
                interchange.control = seg.el(13)
        elif sid == "GS":
            group = _Envelope(seg.el(6))
            version, group_date = seg.el(8), seg.el(4)
        elif sid == "ST":
            if current is not None:
                current.own_problems.append(Problem(
                    "x12_se_missing", f"ST {current.st02} has no SE before the next ST"))
            current = TransactionSet(interchange, group, version, group_date,
                                     reader.ele_term or "*", seg.el(1), seg.el(2))
            doc.sets.append(current)
        if current is not None:
            current.segments.append(seg)
        elif sid not in ("ISA", "GS", "GE", "IEA"):
            target = group if group.control else interchange
            target.problems.append(Problem(
                "x12_segment_outside_set",
                f"segment {sid[:3]!r} (segment {count}) is outside any transaction set"))
        _attribute(reader.pop_errors(), interchange, group, current)
        if sid == "SE":
            current = None
    reader.cleanup()
    _attribute(reader.pop_errors(), interchange, group, current)


def _segments(reader: pyx12.x12file.X12Reader) -> Iterator[pyx12.segment.Segment]:
    yield from reader


def _attribute(errors: list[tuple[str, str, str, str | None, int | None]],
               interchange: _Envelope, group: _Envelope,
               current: TransactionSet | None) -> None:
    """pyx12's reader errors, each to the envelope it concerns (or a warning)."""
    for level, code, message, _value, _line in errors:
        if level == "seg":
            # Trailing separators and a leading space are harmless; a bad segment id or an
            # empty segment means a segment could not be read.
            harmless = code == "SEG1" or message.startswith("Segment contains a leading")
            if harmless:
                if current is not None:
                    current.warnings.append(f"pyx12: {message}")
                continue
            code_name = {"HL1": "x12_hl_count", "HL2": "x12_hl_parent", "LX": "x12_lx_number"}
            problem = Problem(code_name.get(code, "x12_unreadable_segment"), f"pyx12: {message}")
        else:
            problem = Problem(_PYX12_CODES.get((level, code), f"x12_{level}_{code}"),
                              f"pyx12: {message}")
        if level == "isa":
            interchange.problems.append(problem)
        elif level == "gs":
            group.problems.append(problem)
        elif current is not None:
            current.own_problems.append(problem)
        else:
            group.problems.append(problem)
