"""ACKs as a sender's interface engine reads them: MSH swapped, MSA, one ERR per problem."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args, get_type_hints

from rcmflow.connectors.inbound.hl7.ack import build_ack, escape
from rcmflow.connectors.inbound.hl7.framing import FrameError
from rcmflow.connectors.inbound.hl7.problems import CODE_TEXT, HL7_CODE_BY_REASON
from rcmflow.connectors.inbound.hl7.reader import read_message
from rcmflow.streams.rejections import Problem

HL7_SOURCES = Path(__file__).resolve().parents[4] / "connectors" / "inbound" / "hl7"
NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
MSG = ("MSH|^~\\&|EHR^1.2.3^ISO|GEN|RCM|GENFAC|20261120103000||DFT^P03|CTRL42|P|{v}\r"
       "PID|1\r")


def segments(ack: bytes) -> list[list[str]]:
    return [s.split("|") for s in ack.decode().split("\r") if s]


def test_aa_swaps_sender_and_receiver_and_echoes_msh_10() -> None:
    msh, msa = segments(build_ack(read_message(MSG.format(v="2.5")), "AA", now=NOW))
    assert msh[:6] == ["MSH", "^~\\&", "RCM", "GENFAC", "EHR^1.2.3^ISO", "GEN"]
    assert msh[6] == "20261126070000+0000" and msh[8] == "ACK^P03^ACK"
    assert msh[10:12] == ["P", "2.5"]
    assert msa == ["MSA", "AA", "CTRL42"]


def test_ae_carries_an_err_per_problem_in_the_v25_shape() -> None:
    problems = (Problem(reason_code="no_account", place="PID^1^18",
                        detail="no account number: PID-18 empty"),
                Problem(reason_code="invalid_amount", place="FT1^2^11",
                        detail="FT1-11 '1|2' is not a number"))
    _, msa, err1, err2 = segments(build_ack(read_message(MSG.format(v="2.5")), "AE", problems))
    assert msa == ["MSA", "AE", "CTRL42", "no account number: PID-18 empty"]
    assert err1[2:5] == ["PID^1^18", "101^Required field missing^HL70357", "E"]
    assert err1[8] == "no account number: PID-18 empty"
    assert err2[2] == "FT1^2^11" and err2[8] == "FT1-11 '1\\F\\2' is not a number"


def test_before_v25_the_error_goes_in_err_1() -> None:
    problems = (Problem(reason_code="no_account", place="PID^1^18", detail="no account"),)
    *_, err = segments(build_ack(read_message(MSG.format(v="2.3")), "AE", problems))
    assert err == ["ERR", "PID^1^18^101&Required field missing&HL70357"]


def test_an_unreadable_message_still_gets_an_ack() -> None:
    ack = build_ack(None, "AR", (Problem(reason_code="unreadable", detail="no MSH"),))
    msh, msa, err = segments(ack)
    assert msh[0] == "MSH" and msh[8] == "ACK"
    assert msa == ["MSA", "AR", "", "no MSH"]


def test_escape_covers_every_delimiter() -> None:
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"


def _latin1_dft(control_id: str, body: str = "FT1|1|||20261120||CG|CDM1|||1|12.50||ED") -> bytes:
    return "\r".join([
        f"MSH|^~\\&|EHR|GEN|RCM|GEN|20261120103000||DFT^P03|{control_id}|P|2.5|||||8859/1",
        "EVN|P03|20261120103000", "PID|1||MRN1" + "|" * 15 + "A77", "PV1|1|O", body,
    ]).encode("latin-1") + b"\r"


def _msa_2(ack: bytes) -> bytes:
    msa = next(s for s in ack.split(b"\r") if s.startswith(b"MSA|"))
    return msa.split(b"|")[2]


def test_a_latin_1_control_id_is_echoed_byte_for_byte() -> None:
    """MSH-18 8859/1, MSH-10 'CTRLÉ1' (0xC9): MSA-2 is those bytes, not UTF-8's C3 89, on
    every answer the intake gives (AA, AE, and a frame too large to read whole)."""
    import asyncio
    import tempfile
    from collections.abc import Sequence
    from pathlib import Path

    from rcmflow.connectors.inbound.hl7.framing import FrameError
    from rcmflow.connectors.inbound.hl7.intake import Intake, Record, internal_error_ack
    from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
    from rcmflow.connectors.inbound.hl7.replay import ReplayStore

    class Sink:
        async def write(self, records: Sequence[Record]) -> None:
            pass

    accepted, refused = _latin1_dft("CTRLÉ1"), _latin1_dft("CTRLÉ2", "FT1|1|||20261120||ZZ")
    assert b"CTRL\xc91" in accepted
    with tempfile.TemporaryDirectory() as tmp:
        store = ReplayStore(Path(tmp), 3600)
        intake = Intake(sink=Sink(), store=store, config=MappingConfig(), channel="t")

        async def answers() -> list[tuple[str, bytes]]:
            ok = await intake.handle(accepted)
            bad = await intake.handle(refused)
            big = await intake.handle_frame_error(FrameError(
                "too_large", "too large", _latin1_dft("CTRLÉ3")[:80], 10**7))
            return [(ok.code, ok.ack), (bad.code, bad.ack), (big.code, big.ack)]

        try:
            got = asyncio.run(answers())
        finally:
            store.close()
    assert [(code, _msa_2(ack)) for code, ack in got] == [
        ("AA", b"CTRL\xc91"), ("AE", b"CTRL\xc92"), ("AR", b"CTRL\xc93")]
    assert _msa_2(internal_error_ack(_latin1_dft("CTRLÉ4"))) == b"CTRL\xc94"
    # A UTF-8 message keeps its UTF-8 bytes.
    utf8 = _latin1_dft("X").replace(b"|X|", "|CTRLÉ5|".encode())
    assert _msa_2(internal_error_ack(utf8)) == "CTRLÉ5".encode()


def test_every_reason_code_the_connector_gives_has_its_table_0357_code() -> None:
    """The ERR code is looked up from the reason code: one missing from the table would go
    out as 207 (internal error) instead of telling the sender what to fix."""
    source = "\n".join(p.read_text() for p in HL7_SOURCES.glob("*.py"))
    given = set(re.findall(r'reason_code="(\w+)"', source))
    given |= set(re.findall(r'problems\.add\("(\w+)"', source))
    given |= set(get_args(get_type_hints(FrameError)["reason_code"]))
    assert {"conflict", "no_ft1", "unmapped_transaction_type", "too_large"} <= given
    assert given <= HL7_CODE_BY_REASON.keys(), given - HL7_CODE_BY_REASON.keys()
    assert set(HL7_CODE_BY_REASON.values()) <= CODE_TEXT.keys()
