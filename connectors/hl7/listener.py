"""The asyncio MLLP listener: many concurrent, persistent connections, one ACK per frame.

Per connection, frames are answered in the order they arrive (a sender may pipeline); across
connections they are handled concurrently. The connection stays open after any bad frame
(oversized: the rest of it is read and dropped, then AR). The listener closes a connection
only when the peer does, after ``idle_timeout_s`` without a byte, past ``connections_max``
(closed at once), or at shutdown; each of these is logged with the peer address.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from dataclasses import dataclass

from rcmflow.metrics import Metric, counter, gauge

from .ack import AckCode
from .framing import Frame, MllpDecoder, frame
from .intake import Intake, internal_error_ack

__all__ = ["ListenerLimits", "MllpListener"]

log = logging.getLogger("rcmflow.hl7.mllp")
_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class ListenerLimits:
    message_bytes_max: int = 1024 * 1024
    connections_max: int = 256
    idle_timeout_s: float = 3600.0
    ack_write_timeout_s: float = 30.0


class MllpListener:
    def __init__(self, intake: Intake, limits: ListenerLimits) -> None:
        self._intake = intake
        self._limits = limits
        self._server: asyncio.Server | None = None
        #: Connection tasks -> busy (handling a frame: not cancelled at shutdown).
        self._connections: dict[asyncio.Task[None], bool] = {}
        self._closing = False
        self.messages = 0
        #: Messages answered, by ACK code (the metric; no patient data in it).
        self.acks: Counter[AckCode] = Counter()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (0 picks a free one)."""
        self._server = await asyncio.start_server(self._serve, host, port,
                                                  limit=_READ_BYTES, reuse_address=True)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%d", host, bound)
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
            writer.close()
            return
        self._connections[task] = False
        log.info("MLLP %s connected", peer)
        try:
            await self._converse(reader, writer, peer)
        except asyncio.CancelledError:
            log.info("MLLP %s closed: listener shutting down", peer)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("MLLP %s closed: %s", peer, type(exc).__name__)
        finally:
            self._connections.pop(task, None)
            writer.close()

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
                self.messages += 1
                self.acks[code] += 1
                writer.write(frame(ack))
                await asyncio.wait_for(writer.drain(), self._limits.ack_write_timeout_s)
            self._connections[task] = False
        log.info("MLLP %s closed: listener shutting down", peer)
