"""The demo's real-format input: one patient visit sent through the inbound connectors.

`rcmflow dev --demo` sends ``demo_data/dft_A3001.hl7`` (two charges) to its MLLP listener as
an interface engine would, then drops the visit's 837P claim and the payer's 835 remittance
through `ingest x12`. The files are synthetic (no real patient), shaped like the public
samples the connectors are tested on.
"""

from __future__ import annotations

import asyncio
import time
from importlib.resources import files
from pathlib import Path

from rcmflow.connectors.inbound.hl7.framing import END_BLOCK, frame

__all__ = ["DEMO_DATA", "HL7_FILE", "X12_FILES", "DEMO_ACCOUNT", "DEMO_ACCOUNT_VERSION",
           "send_mllp"]

DEMO_DATA = Path(str(files("rcmflow.cli") / "demo_data"))
HL7_FILE = DEMO_DATA / "dft_A3001.hl7"
X12_FILES = [DEMO_DATA / "claim_A3001.837", DEMO_DATA / "remit_A3001.835"]
#: The account the files are about, and its version once all of them are applied
#: (two charges, the claim, its adjudication).
DEMO_ACCOUNT = "A3001"
DEMO_ACCOUNT_VERSION = 4
#: Longest wait for the listener to accept a connection and answer.
MLLP_WAIT_S = 30.0


def send_mllp(host: str, port: int, message: bytes) -> str:
    """Send one HL7 message over MLLP; the ACK code (MSA-1: AA, AE or AR) it got back."""
    return asyncio.run(_send(host, port, message))


async def _send(host: str, port: int, message: bytes) -> str:
    deadline = time.monotonic() + MLLP_WAIT_S
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)  # the listener is still starting
    try:
        writer.write(frame(message))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readuntil(END_BLOCK + b"\r"), MLLP_WAIT_S)
    finally:
        writer.close()
    for segment in ack.strip(b"\x0b\x1c\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            return segment.split(b"|")[1].decode()
    raise ValueError("the listener answered without an MSA segment")
