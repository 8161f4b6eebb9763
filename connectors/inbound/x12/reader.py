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
in the group, a set-level one that set only. Each is the core's ``Problem`` (reason code,
detail, place: 'segment 42', 'ST 0001', 'GS 1', 'ISA', or '' for the file as a whole).

The file is read as a stream (``X12Source``): decoded in chunks, repaired in chunks, and each
transaction set is handed over as soon as it is complete, so memory holds one set, not the
file. A source can be read more than once (a check pass, then a publish pass).
"""

from __future__ import annotations

import codecs
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import pyx12.errors
import pyx12.segment
import pyx12.x12file

from rcmflow.streams.rejections import Problem

__all__ = ["Problem", "Segment", "TransactionSet", "X12Document", "X12Source", "read_x12",
           "at_segment", "ISA_WIDTHS"]

#: Bytes read from the file at a time, and characters of its start read for the ISA.
CHUNK_BYTES = 1024 * 1024
_HEAD_CHARS = 64 * 1024

#: Problems and warnings kept per set (the counts of the rest are kept).
SET_PROBLEMS_KEPT = 100
SET_WARNINGS_KEPT = 50

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
        return self.line(element_sep) + terminator

    def line(self, element_sep: str) -> str:
        return element_sep.join(self.parts).rstrip(element_sep)


def at_segment(seg: Segment, code: str, detail: str) -> Problem:
    """A problem found in one segment, placed at it ('segment 42': its position in the
    file)."""
    return Problem(reason_code=code, detail=detail, place=f"segment {seg.number}")


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
    #: Each segment as written (elements joined by ``element_sep``, no terminator): one
    #: string a segment is ~5x smaller than ``Segment`` objects, for sets of 100,000s.
    lines: list[str] = field(default_factory=list)
    first_segment: int = 0  # the ST's position in the file
    component_sep: str = ""
    #: The first ``SET_PROBLEMS_KEPT`` / ``SET_WARNINGS_KEPT`` (a set can fail or warn once per
    #: segment), and how many there were.
    own_problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    own_problems_total: int = 0
    warnings_total: int = 0

    def problem(self, problem: Problem) -> None:
        self.own_problems_total += 1
        if len(self.own_problems) < SET_PROBLEMS_KEPT:
            self.own_problems.append(problem)

    def warn(self, text: str) -> None:
        self.warnings_total += 1
        if len(self.warnings) < SET_WARNINGS_KEPT:
            self.warnings.append(text)

    @property
    def problems_total(self) -> int:
        """How many problems ``problems`` stands for."""
        return (len(self.interchange.problems) + len(self.group.problems)
                + max(self.own_problems_total, len(self.own_problems)))

    @property
    def segments(self) -> Iterator[Segment]:
        """The segments, made one at a time from ``lines``."""
        sep, component = self.element_sep, self.component_sep
        for number, line in enumerate(self.lines, start=self.first_segment):
            yield Segment(number, tuple(line.split(sep)), component)

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
        return "".join(line + terminator + "\n" for line in self.lines)


@dataclass
class X12Document:
    #: Set when nothing in the file could be read as X12 (no ISA, too large, ...).
    file_problems: list[Problem] = field(default_factory=list)
    file_warnings: list[str] = field(default_factory=list)
    sets: list[TransactionSet] = field(default_factory=list)
    terminator: str = "~"


def decode(data: bytes) -> str:
    """X12 is ASCII in practice; 5010 allows more, so UTF-8 first, Latin-1 as the fallback."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class X12Source:
    """An X12 file read as a stream, as often as needed (``open_bytes`` opens it afresh).

    ``decode``'s rule holds for the whole file: one scan decides UTF-8 or Latin-1 first.
    ``bytes_read`` counts the bytes read by the passes so far (for progress).
    """

    def __init__(self, open_bytes: Callable[[], BinaryIO], *,
                 on_read: Callable[[], None] | None = None) -> None:
        self._open = open_bytes
        self._on_read = on_read
        self.bytes_read = 0
        self.codec = "utf-8"
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            for chunk in self._chunks():
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            self.codec = "latin-1"

    def _chunks(self) -> Iterator[bytes]:
        with self._open() as fh:
            first = True
            while chunk := fh.read(CHUNK_BYTES):
                if first and chunk.startswith(b"\xef\xbb\xbf"):
                    chunk = chunk[3:]
                first = False
                yield chunk

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes (a DLQ payload)."""
        with self._open() as fh:
            return fh.read(size)

    def text(self) -> Iterator[str]:
        """The file decoded, chunk by chunk; ``bytes_read`` advances as it is read."""
        decoder = codecs.getincrementaldecoder(self.codec)()
        for chunk in self._chunks():
            self.bytes_read += len(chunk)
            if self._on_read is not None:
                self._on_read()
            if text := decoder.decode(chunk):
                yield text
        if text := decoder.decode(b"", final=True):
            yield text

    def prepared(self, doc: X12Document) -> tuple[Iterator[str], list[Problem]] | None:
        """The text pyx12 can tokenise (chunks) and the ISA's own problems; None if it is
        not X12 (the reason is in ``doc.file_problems``)."""
        chunks = self.text()
        head = ""
        for chunk in chunks:
            head += chunk
            if len(head) >= _HEAD_CHARS + len(head) - len(head.lstrip()):
                break
        layout = _prepare(head, doc)
        if layout is None:
            return None
        isa, body, rejoin, problems = layout
        rest: Iterator[str] = _chain(body, chunks)
        if rejoin:
            rest = _rejoined(rest, doc.terminator)
        first = next(rest, "")
        lead = "" if first.startswith(("\n", "\r")) else "\n"
        return _chain(isa + lead + first, rest), problems

    def sets(self, doc: X12Document, *, segments_max: int) -> Iterator[TransactionSet]:
        """Every transaction set with its ``lines``, each as soon as it is complete (its
        envelopes' problems found later still reach it: they are shared). File problems go
        to ``doc``: the caller must look at them once the iterator is exhausted (the sets do
        not count)."""
        for tset, line in self.stream(doc, segments_max=segments_max):
            if line is None:
                yield tset
            else:
                tset.lines.append(line)

    def stream(self, doc: X12Document, *,
               segments_max: int) -> Iterator[tuple[TransactionSet, str | None]]:
        """The sets segment by segment: ``(set, line)`` for each of its segments (at most
        ``segments_max``), then ``(set, None)`` once it is complete; ``lines`` stays empty,
        so memory does not follow the set's size. File problems as for ``sets``."""
        prepared = self.prepared(doc)
        if prepared is None:
            return
        text, isa_problems = prepared
        try:
            reader = pyx12.x12file.X12Reader(ChunkReader(text))
        except pyx12.errors.X12Error as exc:
            doc.file_problems.append(Problem(reason_code="x12_unreadable",
                                             detail=f"pyx12 cannot read the file: {exc}"))
            return
        try:
            yield from _walk(reader, doc, isa_problems, segments_max)
        except pyx12.errors.X12Error as exc:
            doc.file_problems.append(Problem(reason_code="x12_unreadable",
                                             detail=f"pyx12 stopped reading: {exc}"))
        except (IndexError, KeyError, ValueError, TypeError, AttributeError) as exc:
            # pyx12's reader trips over some broken envelopes (a GE with no open GS): the
            # file's structure is unusable, so it is refused whole rather than guessed at.
            where = f"segment {reader.get_cur_line() + 1}"
            doc.file_problems.append(Problem(
                reason_code="x12_unreadable", place=where,
                detail=f"pyx12 could not read past {where}: {type(exc).__name__} (broken "
                "envelope nesting?)"))


class ChunkReader(io.TextIOBase):
    """A read-only text file over chunks of text (what pyx12 reads from)."""

    def __init__(self, chunks: Iterator[str]) -> None:
        super().__init__()
        self._chunks = chunks
        self._buffer = ""
        self._at = 0  # what of the buffer was read (no copy of the rest at each read)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        while size is None or size < 0 or len(self._buffer) - self._at < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer, self._at = self._buffer[self._at:] + chunk, 0
        end = len(self._buffer) if size is None or size < 0 else self._at + size
        out, self._at = self._buffer[self._at:end], min(end, len(self._buffer))
        return out


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    # ``first`` can be a whole chunk (1 MiB): not kept by this frame once handed over.
    pending = [first] if first else []
    del first
    while pending:
        yield pending.pop()
    yield from rest


def _rejoined(chunks: Iterator[str], terminator: str) -> Iterator[str]:
    """Segments stripped of the whitespace around them, one per line."""
    tail = ""
    for chunk in chunks:
        pieces = (tail + chunk).split(terminator)
        tail = pieces.pop()
        out = "".join(p.strip() + terminator + "\n" for p in pieces if p.strip())
        if out:
            yield out
    if tail.strip():
        yield tail.strip() + terminator + "\n"


def _prepare(text: str, doc: X12Document) -> tuple[str, str, bool, list[Problem]] | None:
    """From the start of the file: the ISA (padded to its widths), the rest of ``text``
    after its terminator, whether the segments must be re-joined, and the ISA's problems;
    None if it is not X12."""
    text = text.lstrip()
    if not text.startswith("ISA"):
        start = text[:3]
        doc.file_problems.append(Problem(
            reason_code="x12_no_interchange",
            detail=f"no ISA interchange header: the file starts with {start!r}; an X12 file must "
            "come in an ISA/GS envelope (a bare ST..SE cannot be checked or traced)"))
        return None
    sep = text[3:4]
    parts: list[str] = []
    pos = 4
    for _ in range(15):  # ISA01..ISA15 end at a separator each
        end = text.find(sep, pos)
        if end < 0 or end - pos > _HEAD_CHARS // 16:
            doc.file_problems.append(Problem(reason_code="x12_isa_unreadable", place="ISA",
                                             detail="the ISA segment does not have 16 elements"))
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
        doc.file_problems.append(Problem(reason_code="x12_isa_unreadable", place="ISA",
                                         detail="nothing after the ISA segment"))
        return None
    problems: list[Problem] = []
    terminator = text[after]
    body = text[after + 1:]
    rejoin = False
    if gap > after and not (text[gap].isalnum()):
        terminator = text[gap]
        doc.file_warnings.append(
            f"whitespace before every segment terminator {terminator!r}: segments re-joined")
        body = text[gap + 1:]
        rejoin = True
    if pos != ISA_LEN - 1:
        problems.append(Problem(
            reason_code="x12_isa_not_fixed_width", place="ISA",
            detail=f"the ISA is {pos + 1} characters; an ISA is fixed-width: {ISA_LEN} plus its "
            "terminator"))
        padded: list[str] = []
        for value, width in zip(parts, ISA_WIDTHS, strict=True):
            if len(value) > width:
                doc.file_problems.append(Problem(
                    reason_code="x12_isa_unreadable", place=f"ISA{len(padded) + 1:02d}",
                    detail=f"ISA element {len(padded) + 1:02d} is {len(value)} characters, at most "
                    f"{width} allowed"))
                return None
            padded.append(value.ljust(width))
        parts = padded
    doc.terminator = terminator
    return "ISA" + sep + sep.join(parts) + terminator, body, rejoin, problems


def read_x12(data: bytes, *, segments_max: int) -> X12Document:
    """Read every interchange, group and transaction set in ``data`` (all of it kept in
    memory: files are read with ``X12Source.sets``); never raises on input."""
    doc = X12Document()
    doc.sets = list(X12Source(lambda: io.BytesIO(data)).sets(doc, segments_max=segments_max))
    if doc.file_problems:
        doc.sets.clear()
    return doc


def _walk(reader: pyx12.x12file.X12Reader, doc: X12Document, isa_problems: list[Problem],
          segments_max: int) -> Iterator[tuple[TransactionSet, str | None]]:
    interchange = _Envelope("", list(isa_problems))
    group = _Envelope("")
    version = group_date = ""
    current: TransactionSet | None = None
    count = 0
    for count, raw in enumerate(_segments(reader), start=1):
        seg = Segment.of(count, raw, reader.subele_term or "")
        line: str | None = None
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
                current.problem(Problem(
                    reason_code="x12_se_missing", place=f"ST {current.st02[:9]}",
                    detail=f"ST {current.st02} has no SE before the next ST"))
                yield current, None
            current = TransactionSet(interchange, group, version, group_date,
                                     reader.ele_term or "*", seg.el(1), seg.el(2),
                                     first_segment=count,
                                     component_sep=reader.subele_term or "")
        if current is not None:
            # A set is the unit of work (checked whole, then applied or parked whole), so the
            # segment bound is per set: memory follows the largest set, not the file.
            if count - current.first_segment < segments_max:
                line = seg.line(current.element_sep)
            elif count - current.first_segment == segments_max:
                current.problem(Problem(
                    reason_code="x12_too_many_segments", place=f"ST {current.st02[:9]}",
                    detail=f"ST {current.st02[:9]}: more than {segments_max} segments "
                    "(RCMFLOW_X12_SEGMENTS_MAX): split the transaction set"))
        elif sid not in ("ISA", "GS", "GE", "IEA"):
            target = group if group.control else interchange
            target.problems.append(Problem(
                reason_code="x12_segment_outside_set", place=f"segment {count}",
                detail=f"segment {sid[:3]!r} (segment {count}) is outside any transaction set"))
        _attribute(reader.pop_errors(), interchange, group, current)
        if current is not None and line is not None:
            yield current, line
        if sid == "SE" and current is not None:
            yield current, None
            current = None
    reader.cleanup()
    _attribute(reader.pop_errors(), interchange, group, current)
    if current is not None:
        yield current, None


def _segments(reader: pyx12.x12file.X12Reader) -> Iterator[pyx12.segment.Segment]:
    yield from reader


def _attribute(errors: list[tuple[str, str, str, str | None, int | None]],
               interchange: _Envelope, group: _Envelope,
               current: TransactionSet | None) -> None:
    """pyx12's reader errors, each to the envelope it concerns (or a warning)."""
    for level, code, message, _value, line in errors:
        if level == "seg":
            # Trailing separators and a leading space are harmless; a bad segment id or an
            # empty segment means a segment could not be read.
            harmless = code == "SEG1" or message.startswith("Segment contains a leading")
            if harmless:
                if current is not None:
                    current.warn(f"pyx12: {message}")
                continue
            code_name = {"HL1": "x12_hl_count", "HL2": "x12_hl_parent", "LX": "x12_lx_number"}
            problem = Problem(reason_code=code_name.get(code, "x12_unreadable_segment"),
                              detail=f"pyx12: {message}",
                              place=f"segment {line}" if line else _place(level, current))
        else:
            problem = Problem(reason_code=_PYX12_CODES.get((level, code), f"x12_{level}_{code}"),
                              detail=f"pyx12: {message}",
                              place=_place(level, current, interchange, group))
        if level == "isa":
            interchange.problems.append(problem)
        elif level == "gs":
            group.problems.append(problem)
        elif current is not None:
            current.problem(problem)
        else:
            group.problems.append(problem)


def _place(level: str, current: TransactionSet | None, interchange: _Envelope | None = None,
           group: _Envelope | None = None) -> str:
    """Where a pyx12 envelope error is: the interchange, the group or the set it concerns."""
    if level == "isa" and interchange is not None:
        return f"ISA {interchange.control[:9]}".rstrip()
    if level == "gs" and group is not None:
        return f"GS {group.control[:9]}".rstrip()
    return f"ST {current.st02[:9]}" if current is not None else ""
