"""MLLP over TLS with real TLS clients (Python ssl over real sockets), certificates made per
run by a throw-away CA, writing to the real broker.

What a sender sees: with the right certificate an AA, the raw message and its events on the
broker; a plain-TCP client, a client without a certificate, one from another CA or one not on
the allow-list gets no answer at all and nothing is published. Plain TCP off loopback is
refused at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rcmflow.connectors.inbound.hl7.framing import frame
from rcmflow.connectors.inbound.hl7.intake import Intake, KafkaSink, Record
from rcmflow.connectors.inbound.hl7.listener import ListenerLimits, MllpListener
from rcmflow.connectors.inbound.hl7.mapping import MappingConfig
from rcmflow.connectors.inbound.hl7.replay import ReplayStore
from rcmflow.connectors.inbound.hl7.tls import MllpTls, is_loopback, sender_names
from rcmflow.runtime.broker import free_port
from rcmflow.runtime.kafka_io import read_topic
from rcmflow.streams.topics import EVENTS, RAW_HL7
from tests.apache_kafka.certs import CertificateAuthority, Issued
from tests.conftest import Broker, Workers

ALLOWED = "lab-sender.example.org"


def dft(control_id: str, account: str = "T900") -> bytes:
    pid = "|".join(["PID", "1", "", "MRN1"] + [""] * 14 + [account])
    return "\r".join([
        f"MSH|^~\\&|LAB|GEN|RCM|GEN|20261120103000||DFT^P03|{control_id}|P|2.5",
        "EVN|P03|20261120103000", pid, "PV1|1|O",
        "FT1|1|||20261120||CG|CDM1|||1|125.00||ED"]).encode() + b"\r"


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    server: Issued
    sender: Issued  # CN on the allow-list
    stranger: Issued  # signed by the same CA, CN not on the list
    forged: Issued  # the allowed CN, signed by another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = CertificateAuthority(tmp_path_factory.mktemp("ca"))
    other = CertificateAuthority(tmp_path_factory.mktemp("other-ca"), name="another CA")
    return Pki(ca, ca.issue("mllp-server", server=True), ca.issue(ALLOWED),
               ca.issue("billing-desk.example.org"), other.issue(ALLOWED))


def server_tls(pki: Pki, *, mutual: bool = True,
               allowed: Sequence[str] = (ALLOWED,)) -> MllpTls:
    return MllpTls(pki.server.cert_file, pki.server.key_file,
                   client_ca_file=pki.ca.ca_file if mutual else None,
                   allowed_senders=frozenset(allowed) if mutual else frozenset())


def client_context(pki: Pki, cert: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca.ca_file)
    if cert is not None:
        context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


@asynccontextmanager
async def listening(broker: Broker, tmp_path: Path, tls: MllpTls | None,
                    **kwargs: Any) -> AsyncIterator[tuple[int, MllpListener]]:
    sink = KafkaSink(broker.connection, 10)
    await sink.start()
    store = ReplayStore(tmp_path / "replay", 3600)
    listener = MllpListener(Intake(sink=sink, store=store, config=MappingConfig(),
                                   channel="mllp"), ListenerLimits(tls_handshake_timeout_s=5),
                            tls=tls, **kwargs)
    try:
        yield await listener.start("127.0.0.1", 0), listener
    finally:
        await listener.stop()
        await sink.stop()
        store.close()


async def exchange(port: int, context: ssl.SSLContext | None, message: bytes) -> bytes | str:
    """Send one framed message; the ACK's bytes, or what went wrong instead of an answer."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context,
            server_hostname="localhost" if context is not None else None)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"connect: {type(exc).__name__}"
    try:
        writer.write(frame(message))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(64 * 1024), 10)
        if context is not None and data:
            assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        return data or "closed"
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return f"read: {type(exc).__name__}"
    finally:
        writer.close()


def msa(ack: bytes | str) -> list[str]:
    assert isinstance(ack, bytes), ack
    return next(s for s in ack.strip(b"\x0b\x1c\r").decode().split("\r")
                if s.startswith("MSA")).split("|")


@pytest.mark.broker
async def test_a_dft_over_mutual_tls_gets_aa_and_reaches_the_broker(
    broker: Broker, tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rcmflow.hl7.mllp")
    async with listening(broker, tmp_path, server_tls(pki)) as (port, _):
        ack = await exchange(port, client_context(pki, pki.sender), dft("TLS1"))
    assert msa(ack)[1:3] == ["AA", "TLS1"]
    (raw,) = await read_topic(broker.connection, RAW_HL7)
    assert raw.value == dft("TLS1")
    (event,) = [json.loads(r.value) for r in await read_topic(broker.connection, EVENTS)]
    assert (event["account"], event["amount_cents"]) == ("T900", 12500)
    assert f"sender {ALLOWED}" in caplog.text


@pytest.mark.broker
async def test_server_only_tls_takes_clients_without_certificates(
    broker: Broker, tmp_path: Path, pki: Pki
) -> None:
    async with listening(broker, tmp_path, server_tls(pki, mutual=False)) as (port, _):
        ack = await exchange(port, client_context(pki, None), dft("TLS2"))
    assert msa(ack)[1:3] == ["AA", "TLS2"]


@pytest.mark.broker
async def test_refused_senders_get_no_answer_and_publish_nothing(
    broker: Broker, tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain TCP to the TLS port, no client certificate, a certificate from another CA, and
    a valid certificate whose name is not on the allow-list: each closed at connect."""
    caplog.set_level(logging.INFO, "rcmflow.hl7.mllp")
    async with listening(broker, tmp_path, server_tls(pki)) as (port, listener):
        plain = await exchange(port, None, dft("PLAIN1"))
        no_cert = await exchange(port, client_context(pki, None), dft("NOCERT1"))
        forged = await exchange(port, client_context(pki, pki.forged), dft("FORGED1"))
        stranger = await exchange(port, client_context(pki, pki.stranger), dft("STRANGER1"))
        # The listener lives on: the allowed sender still gets its AA.
        allowed = await exchange(port, client_context(pki, pki.sender), dft("OK1"))
        refused = dict(listener.refused)
    for answer in (plain, no_cert, forged, stranger):
        assert isinstance(answer, str), answer  # never an ACK
    assert msa(allowed)[1:3] == ["AA", "OK1"]
    assert refused == {"tls_handshake": 3, "sender_not_allowed": 1}
    assert [r.value for r in await read_topic(broker.connection, RAW_HL7)] == [dft("OK1")]
    assert "TLS handshake failed" in caplog.text
    assert ("client certificate (billing-desk.example.org) is not on "
            "RCMFLOW_MLLP_TLS_ALLOWED_SENDERS") in caplog.text
    for control_id in ("PLAIN1", "NOCERT1", "FORGED1", "STRANGER1", "MRN1"):
        assert control_id not in caplog.text  # nothing of a refused message is read


class NoSink:
    async def write(self, records: Sequence[Record]) -> None:
        raise AssertionError("nothing is written")


async def test_plain_tcp_off_loopback_is_refused_at_start(tmp_path: Path, pki: Pki) -> None:
    store = ReplayStore(tmp_path / "replay", 3600)
    intake = Intake(sink=NoSink(), store=store, config=MappingConfig(), channel="t")
    try:
        with pytest.raises(ValueError, match="refusing plain TCP MLLP on 0.0.0.0") as refused:
            await MllpListener(intake, ListenerLimits()).start("0.0.0.0", 0)
        for setting in ("RCMFLOW_MLLP_TLS_CERT", "RCMFLOW_MLLP_ALLOW_PLAIN_NETWORK"):
            assert setting in str(refused.value)
        with pytest.raises(ValueError, match="refusing plain TCP MLLP on all interfaces"):
            await MllpListener(intake, ListenerLimits()).start("", 0)
        # With TLS, or said to be a trusted segment, it starts.
        for listener in (MllpListener(intake, ListenerLimits(), tls=server_tls(pki)),
                         MllpListener(intake, ListenerLimits(), allow_plain_network=True)):
            assert await listener.start("0.0.0.0", 0) > 0
            await listener.stop()
    finally:
        store.close()


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.53", "::1", "localhost", "LOCALHOST")))
    assert not any(map(is_loopback, ("0.0.0.0", "", "::", "10.1.2.3", "mllp.example.org")))


def test_senders_are_named_by_subject_cn_and_san_dns_names() -> None:
    cert = {"subject": ((("organizationName", "Lab"),), (("commonName", "Lab-Sender"),)),
            "subjectAltName": (("DNS", "LAB.example.org"), ("IP Address", "10.0.0.5"))}
    assert sender_names(cert) == {"lab-sender", "lab.example.org"}
    tls = MllpTls(Path("c"), Path("k"), client_ca_file=Path("ca"),
                  allowed_senders=frozenset({"lab.example.org"}))
    assert tls.refusal(cert) is None  # by its SAN DNS name
    assert tls.refusal({"subject": ((("commonName", "other"),),)}) is not None
    with pytest.raises(ValueError, match="needs RCMFLOW_MLLP_TLS_CLIENT_CA"):
        MllpTls(Path("c"), Path("k"), allowed_senders=frozenset({"x"}))


def test_the_server_refuses_below_tls_1_2_and_bad_files(pki: Pki, tmp_path: Path) -> None:
    assert server_tls(pki).server_context().minimum_version == ssl.TLSVersion.TLSv1_2
    missing = MllpTls(tmp_path / "none.pem", pki.server.key_file)
    with pytest.raises(ValueError, match="RCMFLOW_MLLP_TLS_CERT"):
        missing.server_context()


@pytest.mark.broker
def test_rcmflow_mllp_refuses_a_plain_public_bind_and_half_a_tls_setup(
    workers: Workers, pki: Pki
) -> None:
    def mllp(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rcmflow.cli", "mllp", "--port", "0"],
                              env=workers.env(**env), capture_output=True, text=True,
                              timeout=60)

    public = mllp(RCMFLOW_MLLP_HOST="0.0.0.0")
    assert public.returncode == 2 and "refusing plain TCP MLLP on 0.0.0.0" in public.stderr
    half = mllp(RCMFLOW_MLLP_HOST="0.0.0.0", RCMFLOW_MLLP_TLS_CERT=str(pki.server.cert_file))
    assert half.returncode == 2
    assert "needs both RCMFLOW_MLLP_TLS_CERT and RCMFLOW_MLLP_TLS_KEY" in half.stderr


def test_rcmflow_mllp_says_the_broker_is_unreachable_and_exits_3(tmp_path: Path) -> None:
    """A listener started before its broker: one line and the "run again" code, not a
    traceback and exit 6 (an rcmflow bug)."""
    env = {**os.environ, "RCMFLOW_BROKER": f"127.0.0.1:{free_port()}",
           "RCMFLOW_DATA_DIR": str(tmp_path), "RCMFLOW_TEST_FAULTS": ""}
    done = subprocess.run([sys.executable, "-m", "rcmflow.cli", "mllp", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "broker is unreachable" in done.stderr and "Traceback" not in done.stderr
