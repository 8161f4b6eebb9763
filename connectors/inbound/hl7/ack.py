"""HL7 v2 original-mode ACKs: MSH + MSA (+ one ERR per problem).

Built as text, not through a parser, so a message that could not be read at all still gets
an answer (MSA-2 empty then). The ACK uses the standard encoding characters; values copied
from the inbound MSH are re-escaped. ERR is written in the shape of the inbound version:
v2.5+ ERR-2 location / ERR-3 code / ERR-4 severity / ERR-8 user message; before 2.5 the
single ERR-1 (ELD) field.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import UTC, datetime
from typing import Literal

from rcmflow.connectors.inbound.hl7.problems import CODE_TEXT, hl7_code
from rcmflow.connectors.inbound.hl7.reader import Hl7Message
from rcmflow.streams.rejections import Problem

__all__ = ["AckCode", "build_ack", "escape"]

AckCode = Literal["AA", "AE", "AR"]
_FS, _CS, _RS, _ES, _SS = "|", "^", "~", "\\", "&"
#: MSA-3 / ERR-8 texts are cut here: some receivers store them in fixed-width columns.
_TEXT_CHARS_MAX = 200
_DEFAULT_VERSION = "2.5"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ids = itertools.count(1)
_prefix = f"{os.getpid() % 10000:04d}"


def escape(text: str) -> str:
    """Make a value safe inside a field with the standard encoding characters."""
    out = text.replace(_ES, f"{_ES}E{_ES}")
    for char, code in ((_FS, "F"), (_CS, "S"), (_SS, "T"), (_RS, "R")):
        out = out.replace(char, f"{_ES}{code}{_ES}")
    # Control characters (0x0B, 0x1C would break the MLLP frame) become spaces.
    return _CONTROL.sub(" ", out)


def _hd(msg: Hl7Message, number: int) -> str:
    """An HD field (application / facility) copied component by component."""
    return _CS.join(escape(msg.msh.part(number, c)) for c in (1, 2, 3)).rstrip(_CS)


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return (2, 5)


def _err(problem: Problem, version: str) -> str:
    seg, _, rest = problem.place.partition("^")
    text = escape(problem.detail[:_TEXT_CHARS_MAX])
    code = hl7_code(problem)
    code_text = CODE_TEXT.get(code, "")
    if _version_tuple(version) < (2, 5):
        location = problem.place.replace("^", _CS)
        return f"ERR|{location}{_CS * (3 - location.count(_CS))}{code}" \
            f"{_SS}{code_text}{_SS}HL70357"
    location = f"{seg}{_CS}{rest}" if rest else seg
    return (f"ERR||{location}|{code}{_CS}{code_text}{_CS}HL70357|E||||{text}")


def build_ack(
    msg: Hl7Message | None,
    code: AckCode,
    problems: tuple[Problem, ...] = (),
    *,
    now: datetime | None = None,
) -> bytes:
    """The ACK for ``msg`` (None: the message could not be read)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S%z")
    control = f"ACK{_prefix}{next(_ids):012d}"
    if msg is not None:
        version = msg.version or _DEFAULT_VERSION
        trigger = escape(msg.message_type[1])
        header = [
            "MSH", f"{_CS}{_RS}{_ES}{_SS}", _hd(msg, 5), _hd(msg, 6), _hd(msg, 3), _hd(msg, 4),
            stamp, "", f"ACK{_CS}{trigger}{_CS}ACK" if trigger else "ACK", control,
            escape(msg.msh.part(11)) or "P", escape(version),
        ]
        acked = escape(msg.control_id)
    else:
        version = _DEFAULT_VERSION
        header = ["MSH", f"{_CS}{_RS}{_ES}{_SS}", "", "", "", "", stamp, "", "ACK", control,
                  "P", version]
        acked = ""
    text = escape(problems[0].detail[:_TEXT_CHARS_MAX]) if problems else ""
    segments = [_FS.join(header), _FS.join(["MSA", code, acked, text]).rstrip(_FS)]
    segments += [_err(p, version) for p in problems]
    # In the message's own codec: MSA-2 must be the sender's MSH-10 byte for byte. Our own
    # texts are ASCII; "?" stands in for anything else the codec cannot write.
    charset = msg.charset if msg is not None else "utf-8"
    return ("\r".join(segments) + "\r").encode(charset, errors="replace")
