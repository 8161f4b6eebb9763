"""ACKs as a sender's interface engine reads them: MSH swapped, MSA, one ERR per problem."""

from __future__ import annotations

from datetime import UTC, datetime

from rcmflow.connectors.hl7.ack import build_ack, escape
from rcmflow.connectors.hl7.problems import Problem
from rcmflow.connectors.hl7.reader import read_message

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
    problems = (Problem("no_account", 101, "PID^1^18", "no account number: PID-18 empty"),
                Problem("invalid_amount", 102, "FT1^2^11", "FT1-11 '1|2' is not a number"))
    _, msa, err1, err2 = segments(build_ack(read_message(MSG.format(v="2.5")), "AE", problems))
    assert msa == ["MSA", "AE", "CTRL42", "no account number: PID-18 empty"]
    assert err1[2:5] == ["PID^1^18", "101^Required field missing^HL70357", "E"]
    assert err1[8] == "no account number: PID-18 empty"
    assert err2[2] == "FT1^2^11" and err2[8] == "FT1-11 '1\\F\\2' is not a number"


def test_before_v25_the_error_goes_in_err_1() -> None:
    problems = (Problem("no_account", 101, "PID^1^18", "no account"),)
    *_, err = segments(build_ack(read_message(MSG.format(v="2.3")), "AE", problems))
    assert err == ["ERR", "PID^1^18^101&Required field missing&HL70357"]


def test_an_unreadable_message_still_gets_an_ack() -> None:
    ack = build_ack(None, "AR", (Problem("unreadable", 100, "", "no MSH"),))
    msh, msa, err = segments(ack)
    assert msh[0] == "MSH" and msh[8] == "ACK"
    assert msa == ["MSA", "AR", "", "no MSH"]


def test_escape_covers_every_delimiter() -> None:
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
