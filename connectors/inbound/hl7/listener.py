"""The asyncio MLLP listener: many concurrent, persistent connections, one ACK per frame.

Per connection, frames are answered in the order they arrive (a sender may pipeline); across
connections they are handled concurrently. The connection stays open after any bad frame
(oversized: the rest of it is read and dropped, then AR). The listener closes a connection
only when the peer does, after ``idle_timeout_s`` without a byte, past ``connections_max``
(closed at once), or at shutdown; each of these is logged with the peer address.

With TLS (``tls.py``) each connection is upgraded before a byte of HL7 is read: a failed
handshake (a plain-TCP client, no or an untrusted client certificate, a protocol below TLS
1.2) or a sender not on the allow-list is closed at once, logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from rcmflow.connectors.inbound.exceptions import HL7ParseError
from rcmflow.connectors.inbound.hl7.ack import AckCode, build_ack
from rcmflow.connectors.inbound.hl7.framing import Frame, FrameError, MllpDecoder, frame
from rcmflow.connectors.inbound.hl7.intake import Intake, internal_error_ack
from rcmflow.connectors.inbound.hl7.reader import read_bytes
from rcmflow.connectors.inbound.hl7.tls import MllpTls, check_bind, sender_names
from rcmflow.runtime.faults import NO_FAULTS, Faults, kill_this_process
from rcmflow.runtime.metrics import Metric, counter, gauge
from rcmflow.runtime.settings import default_of

__all__ = ["ListenerLimits", "MllpListener"]

log = logging.getLogger("rcmflow.hl7.mllp")
_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class ListenerLimits:
    """The listener's bounds; the first three are settings (``service.limits``)."""

    message_bytes_max: int = default_of("mllp_message_bytes_max")
    connections_max: int = default_of("mllp_connections_max")
    idle_timeout_s: float = default_of("mllp_idle_timeout_s")
    ack_write_timeout_s: float = 30.0
    #: A TLS handshake not done by then is dropped (a stalled client holds no slot for long).
    tls_handshake_timeout_s: float = 30.0


RefusalReason = Literal["connections_max", "tls_handshake", "sender_not_allowed"]


class MllpListener:
    def __init__(self, intake: Intake, limits: ListenerLimits, *, tls: MllpTls | None = None,
                 allow_plain_network: bool = False, faults: Faults = NO_FAULTS) -> None:
        """``tls``: serve MLLP over TLS; None: plain TCP, on a loopback address unless
        ``allow_plain_network`` (``tls.check_bind``). ``faults``: test-only
        (``mllp_kill_after_ack``, ``break_mllp_ack_first``)."""
        self._intake = intake
        self._faults = faults
        self._limits = limits
        self._tls = tls
        self._allow_plain_network = allow_plain_network
        #: Built at start: a bad certificate or key stops the start, not the first sender.
        self._context: ssl.SSLContext | None = None
        #: Connections closed before any message, by why (the metric).
        self.refused: Counter[RefusalReason] = Counter()
        self._server: asyncio.Server | None = None
        #: Connection tasks -> busy (handling a frame: not cancelled at shutdown).
        self._connections: dict[asyncio.Task[None], bool] = {}
        self._closing = False
        self.messages = 0
        #: Messages answered, by ACK code (the metric; no patient data in it).
        self.acks: Counter[AckCode] = Counter()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (0 picks a free one). ValueError: plain TCP on a
        non-loopback address, or a TLS file that cannot be loaded."""
        check_bind(host, self._tls, allow_plain_network=self._allow_plain_network)
        if self._tls is not None:
            self._context = self._tls.server_context()
        self._server = await asyncio.start_server(self._serve, host, port,
                                                  limit=_READ_BYTES, reuse_address=True)
        bound = self._server.sockets[0].getsockname()[1]
        if self._tls is None:
            log.info("MLLP listening on %s:%d (plain TCP)", host, bound)
        else:
            senders = ("any certificate the client CA signed" if not self._tls.allowed_senders
                       else f"{len(self._tls.allowed_senders)} allowed senders")
            log.info("MLLP listening on %s:%d (TLS%s)", host, bound,
                     f"; client certificates required: {senders}"
                     if self._tls.client_ca_file else "")
        return int(bound)

    def families(self) -> list[Metric]:
        """The listener's metrics, read at scrape time (from the metrics thread)."""
        codes: tuple[AckCode, ...] = ("AA", "AE", "AR")
        return [
            counter("rcmflow_mllp_messages", "HL7 messages answered, by ACK code: AA "
                    "(accepted, or a replay), AE (error: in rcm.dlq), AR (rejected: in "
                    "rcm.dlq, or not stored: send again)",
                    [({"ack": code}, self.acks[code]) for code in codes]),
            gauge("rcmflow_mllp_connections", "Open MLLP connections",
                  [({}, len(self._connections))]),
            counter("rcmflow_mllp_connections_refused", "MLLP connections closed before any "
                    "message: connections_max, tls_handshake (plain TCP to a TLS port, no or "
                    "an untrusted client certificate), sender_not_allowed (allow-list)",
                    [({"reason": r}, self.refused[r]) for r in
                     ("connections_max", "tls_handshake", "sender_not_allowed")]),
        ]

    async def stop(self) -> None:
        """Stop accepting, let each connection finish the message it is on, then close."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task, busy in list(self._connections.items()):
            if not busy:
                task.cancel()
        tasks = list(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._limits.ack_write_timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("MLLP listener stopping")
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._limits.connections_max:
            log.warning("MLLP %s refused: %d connections open (connections_max)", peer,
                        len(self._connections))
            self.refused["connections_max"] += 1
            writer.close()
            return
        self._connections[task] = False
        try:
            if self._context is not None and not await self._secure(writer, peer):
                return
            log.info("MLLP %s connected", peer)
            await self._converse(reader, writer, peer)
        except asyncio.CancelledError:
            log.info("MLLP %s closed: listener shutting down", peer)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("MLLP %s closed: %s", peer, type(exc).__name__)
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _secure(self, writer: asyncio.StreamWriter, peer: object) -> bool:
        """The TLS handshake and the allow-list; False (logged, counted): refused."""
        assert self._context is not None and self._tls is not None
        try:
            await writer.start_tls(self._context,
                                   ssl_handshake_timeout=self._limits.tls_handshake_timeout_s)
        except (OSError, TimeoutError, EOFError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning("MLLP %s refused: TLS handshake failed (%s)", peer, reason)
            self.refused["tls_handshake"] += 1
            return False
        cert = writer.get_extra_info("peercert")
        refusal = self._tls.refusal(cert)
        if refusal is not None:
            log.warning("MLLP %s refused: %s", peer, refusal)
            self.refused["sender_not_allowed"] += 1
            return False
        names = ",".join(sorted(sender_names(cert)))
        log.info("MLLP %s TLS %s%s", peer, writer.get_extra_info("ssl_object").version(),
                 f", sender {names}" if names else "")
        return True

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        peer: object) -> None:
        decoder = MllpDecoder(self._limits.message_bytes_max)
        task = asyncio.current_task()
        assert task is not None
        while not self._closing:
            try:
                chunk = await asyncio.wait_for(reader.read(_READ_BYTES),
                                               self._limits.idle_timeout_s)
            except TimeoutError:
                log.info("MLLP %s closed: idle for %.0fs", peer, self._limits.idle_timeout_s)
                leftovers = decoder.close()
                for error in leftovers:
                    await self._intake.handle_frame_error(error)
                return
            if not chunk:
                for error in decoder.close():
                    # The sender is gone: the DLQ is the only answer left.
                    await self._intake.handle_frame_error(error)
                log.info("MLLP %s disconnected", peer)
                return
            self._connections[task] = True
            for item in decoder.feed(chunk):
                early = self._ack_first(item)
                if early is not None:
                    await self._answer(writer, early, "AA")
                code: AckCode
                try:
                    if isinstance(item, Frame):
                        outcome = await self._intake.handle(item.payload)
                    else:
                        outcome = await self._intake.handle_frame_error(item)
                    ack, code = outcome.ack, outcome.code
                except Exception as exc:  # a bug or a full disk: answer, keep the connection
                    log.error("MLLP %s: internal error %s, AR", peer, type(exc).__name__)
                    ack, code = internal_error_ack(item.payload if isinstance(item, Frame)
                                                   else item.head), "AR"
                if early is None:
                    await self._answer(writer, ack, code)
            self._connections[task] = False
        log.info("MLLP %s closed: listener shutting down", peer)

    async def _answer(self, writer: asyncio.StreamWriter, ack: bytes, code: AckCode) -> None:
        self.messages += 1
        number = self.messages  # other connections answer while this one drains
        self.acks[code] += 1
        writer.write(frame(ack))
        await asyncio.wait_for(writer.drain(), self._limits.ack_write_timeout_s)
        if number == self._faults.mllp_kill_after_ack:
            kill_this_process(f"mllp_kill_after_ack={number}")

    def _ack_first(self, item: Frame | FrameError) -> bytes | None:
        """The test-only break (``Faults.break_mllp_ack_first``): an AA for a frame before the
        intake wrote anything; None (always, unless broken): answer after the intake."""
        if not self._faults.break_mllp_ack_first or not isinstance(item, Frame):
            return None
        try:
            return build_ack(read_bytes(item.payload, first_segment_only=True), "AA")
        except HL7ParseError:
            return None
