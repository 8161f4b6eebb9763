"""MLLP framing: ``0x0B <message> 0x1C 0x0D``, decoded incrementally and strictly.

A pure state machine fed with whatever chunks the socket delivers; it yields one item per
frame, so the listener answers every frame (an ACK per message, an AR per bad frame) and a
bad frame never takes the connection down. Memory is bounded: past ``message_bytes_max`` the
rest of a frame is counted and dropped, only its head is kept (for the ACK's MSH-10 and the
DLQ record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "START_BLOCK",
    "END_BLOCK",
    "CARRIAGE_RETURN",
    "HEAD_BYTES",
    "Frame",
    "FrameError",
    "MllpDecoder",
    "frame",
]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"
#: Bytes kept of an oversized frame or of stray bytes: enough for an MSH segment.
HEAD_BYTES = 4096
#: Between frames, senders often add CR/LF (or a space); that is not an error.
_INTER_FRAME_WHITESPACE = b"\r\n\t "


@dataclass(frozen=True)
class Frame:
    """One complete message (the bytes between 0x0B and 0x1C 0x0D)."""

    payload: bytes


@dataclass(frozen=True)
class FrameError:
    """A frame that cannot be handed on; ``head`` is its first bytes, ``size_bytes`` its
    whole length as far as it was read."""

    reason_code: Literal["too_large", "bytes_outside_frame", "bad_frame_end", "truncated_frame"]
    detail: str
    head: bytes
    size_bytes: int


def frame(payload: bytes) -> bytes:
    """Wrap one message for the wire."""
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


class MllpDecoder:
    """Incremental decoder: ``feed(chunk)`` returns the frames (and frame errors) completed.

    States: between frames (``_buffer is None``), inside a frame, or inside a frame that has
    passed the limit (``_size > max``: counting, keeping only the head).
    """

    def __init__(self, message_bytes_max: int) -> None:
        assert message_bytes_max > 0
        self._max = message_bytes_max
        self._buffer: bytearray | None = None
        self._size = 0  # bytes of the current frame, kept or not
        self._stray = bytearray()
        self._stray_size = 0
        self._pending_end = False  # saw 0x1C as the last byte of a chunk

    @property
    def in_frame(self) -> bool:
        return self._buffer is not None

    def feed(self, chunk: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        view = memoryview(chunk)
        i = 0
        n = len(chunk)
        while i < n:
            if self._pending_end:
                self._pending_end = False
                self._finish(out, chunk[i] == CARRIAGE_RETURN[0])
                if chunk[i] == CARRIAGE_RETURN[0]:
                    i += 1
                continue
            if self._buffer is None:
                start = chunk.find(START_BLOCK, i)
                stop = n if start < 0 else start
                self._stray_bytes(bytes(view[i:stop]))
                if start < 0:
                    break
                self._flush_stray(out)
                self._buffer = bytearray()
                self._size = 0
                i = start + 1
                continue
            end = chunk.find(END_BLOCK, i)
            restart = chunk.find(START_BLOCK, i)
            if restart >= 0 and (end < 0 or restart < end):
                # A new frame starts before this one ended: the sender gave up on it.
                self._keep(view[i:restart])
                out.append(self._error("truncated_frame", "a new frame (0x0B) started before "
                                       "this one ended (0x1C 0x0D)"))
                self._buffer = None
                i = restart
                continue
            if end < 0:
                self._keep(view[i:n])
                break
            self._keep(view[i:end])
            i = end + 1
            if i == n:
                self._pending_end = True
                break
            self._finish(out, chunk[i] == CARRIAGE_RETURN[0])
            if chunk[i] == CARRIAGE_RETURN[0]:
                i += 1
        return out

    def close(self) -> list[FrameError]:
        """The peer closed: what was left half-sent is reported, not dropped silently."""
        out: list[Frame | FrameError] = []
        if self._pending_end:
            self._pending_end = False
            self._finish(out, False)
        elif self._buffer is not None:
            out.append(self._error("truncated_frame", "the connection closed inside a frame"))
            self._buffer = None
        self._flush_stray(out)
        return [item for item in out if isinstance(item, FrameError)]

    def _keep(self, part: memoryview) -> None:
        assert self._buffer is not None
        self._size += len(part)
        if self._size <= self._max:
            self._buffer += part
        elif len(self._buffer) < HEAD_BYTES:
            # Over the limit: keep the head only (for the ACK and the DLQ), count the rest.
            self._buffer += part[: HEAD_BYTES - len(self._buffer)]
        else:
            del self._buffer[HEAD_BYTES:]

    def _finish(self, out: list[Frame | FrameError], ended_with_cr: bool) -> None:
        assert self._buffer is not None
        if not ended_with_cr:
            out.append(self._error("bad_frame_end", "0x1C not followed by 0x0D"))
        elif self._size > self._max:
            out.append(self._error("too_large", f"message of {self._size} bytes exceeds the "
                                   f"maximum of {self._max} bytes"))
        else:
            out.append(Frame(bytes(self._buffer)))
        self._buffer = None

    def _error(self, code: str, detail: str) -> FrameError:
        assert self._buffer is not None
        return FrameError(code, detail, bytes(self._buffer[:HEAD_BYTES]),  # type: ignore[arg-type]
                          self._size)

    def _stray_bytes(self, data: bytes) -> None:
        if not self._stray_size:
            data = data.lstrip(_INTER_FRAME_WHITESPACE)
        if not data:
            return
        self._stray_size += len(data)
        self._stray += data[: max(0, HEAD_BYTES - len(self._stray))]

    def _flush_stray(self, out: list[Frame | FrameError]) -> None:
        if not self._stray_size or not self._stray.strip(_INTER_FRAME_WHITESPACE):
            self._stray.clear()
            self._stray_size = 0
            return
        out.append(FrameError("bytes_outside_frame",
                              f"{self._stray_size} bytes outside an MLLP frame (no 0x0B start)",
                              bytes(self._stray), self._stray_size))
        self._stray.clear()
        self._stray_size = 0
