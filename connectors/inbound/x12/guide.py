"""pyx12 implementation-guide validation, kept as warnings.

Real 835s rarely pass the guide (a missing PER*BL, BPR16, an unusual code) and those details
do not change the money, so they never park a set: each message is kept on the set's record.
pyx12 4.0.0 has maps for 835 (004010X091A1, 005010X221A1) but none for 005010X222A2 or
005010X223A3, so 837s are not guide-validated.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any, TextIO

import pyx12.params
import pyx12.x12n_document

__all__ = ["guide_warnings", "GUIDE_WARNINGS_MAX"]

#: Messages kept per transaction set; the count of the rest is kept too.
GUIDE_WARNINGS_MAX = 50

logging.getLogger("pyx12").setLevel(logging.CRITICAL)


def guide_warnings(text: str | io.TextIOBase | TextIO) -> tuple[dict[str, list[str]], str | None]:
    """ST02 -> pyx12's guide messages for that set, and a note when validation could not run.

    pyx12 keeps a report of every segment (~3 KB of memory and ~0.8 ms each): callers run it
    on files up to RCMFLOW_X12_GUIDE_BYTES_MAX only."""
    report = io.StringIO()
    source: Any = io.StringIO(text) if isinstance(text, str) else text
    try:
        pyx12.x12n_document.x12n_document(pyx12.params.params(), source, None, None,
                                          None, fd_json=report)
        doc = json.loads(report.getvalue() or "{}")
    except Exception as exc:  # noqa: BLE001 - pyx12 raises bare engine errors on odd input
        return {}, f"implementation-guide validation did not run: {type(exc).__name__}: {exc}"
    found: dict[str, list[str]] = {}
    for interchange in doc.get("interchanges", []):
        for group in interchange.get("groups", []):
            for tset in group.get("transactions", []):
                messages = found.setdefault(str(tset.get("trn_set_control_num")), [])
                messages.extend(_messages(tset))
    for st02, messages in found.items():
        if len(messages) > GUIDE_WARNINGS_MAX:
            found[st02] = messages[:GUIDE_WARNINGS_MAX] + [
                f"... {len(messages) - GUIDE_WARNINGS_MAX} more guide messages"]
    return found, None


def _messages(node: dict[str, Any], where: str = "") -> list[str]:
    out = [f"pyx12 guide: {where}{e['err_str']}" for e in node.get("errors", [])
           if e.get("err_str")]
    for seg in node.get("segments", []):
        at = f"{seg.get('seg_id')}@segment {seg.get('cur_line')}: "
        out.extend(_messages(seg, at))
        for element in seg.get("elements", []):
            out.extend(_messages(element, at))
    return out
