"""MLLP framing: any split of the byte stream gives the same frames; limits hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rcmflow.connectors.inbound.hl7.framing import (
    HEAD_BYTES,
    Frame,
    FrameError,
    MllpDecoder,
    frame,
)

# Message bodies: any bytes except the three framing bytes' start/end markers.
bodies = st.binary(min_size=1, max_size=300).map(
    lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"") or b"MSH|x")


def decode_in_chunks(stream: bytes, cuts: list[int], limit: int = 10_000) -> list[object]:
    decoder = MllpDecoder(limit)
    items: list[object] = []
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for start, end in zip(bounds, bounds[1:], strict=False):
        items += decoder.feed(stream[start:end])
    items += decoder.close()
    return items


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(bodies, min_size=1, max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=40),
       gaps=st.sampled_from([b"", b"\r\n", b"\n", b" "]))
def test_any_split_of_the_stream_yields_the_same_messages(
    messages: list[bytes], cuts: list[int], gaps: bytes
) -> None:
    stream = gaps.join(frame(m) for m in messages)
    assert decode_in_chunks(stream, cuts) == [Frame(m) for m in messages]


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=30_000), max_size=20))
def test_an_oversized_frame_is_dropped_but_the_next_one_arrives(cuts: list[int]) -> None:
    big = b"MSH|^~\\&|A|B|C|D|20260101||DFT^P03|BIG1|P|2.5\r" + b"X" * 20_000
    stream = frame(big) + frame(b"MSH|small")
    items = decode_in_chunks(stream, cuts, limit=5_000)
    assert len(items) == 2
    error, ok = items
    assert isinstance(error, FrameError) and error.reason_code == "too_large"
    assert error.size_bytes == len(big)
    assert error.head == big[:HEAD_BYTES]  # kept for the ACK's MSH-10, bounded
    assert "exceeds the maximum of 5000 bytes" in error.detail
    assert ok == Frame(b"MSH|small")


def test_a_frame_at_exactly_the_limit_passes() -> None:
    body = b"M" * 1024
    assert MllpDecoder(1024).feed(frame(body)) == [Frame(body)]
    assert MllpDecoder(1023).feed(frame(body))[0].reason_code == "too_large"  # type: ignore[union-attr]


def test_half_a_frame_then_close_is_reported_not_dropped() -> None:
    decoder = MllpDecoder(1000)
    assert decoder.feed(b"\x0bMSH|^~\\&|half") == []
    (error,) = decoder.close()
    assert error.reason_code == "truncated_frame" and error.head == b"MSH|^~\\&|half"


def test_a_new_start_block_inside_a_frame_cuts_off_the_first() -> None:
    items = MllpDecoder(1000).feed(b"\x0bMSH|first" + frame(b"MSH|second"))
    assert [type(i) for i in items] == [FrameError, Frame]
    assert items[0].reason_code == "truncated_frame"  # type: ignore[union-attr]
    assert items[1] == Frame(b"MSH|second")


def test_end_block_without_carriage_return_is_a_bad_frame() -> None:
    items = MllpDecoder(1000).feed(b"\x0bMSH|x\x1cZ" + frame(b"MSH|y"))
    assert items[0].reason_code == "bad_frame_end"  # type: ignore[union-attr]
    assert items[-1] == Frame(b"MSH|y")


def test_bytes_outside_a_frame_are_reported_before_the_next_frame() -> None:
    items = MllpDecoder(1000).feed(b"MSH|unframed\r" + frame(b"MSH|framed"))
    assert isinstance(items[0], FrameError)
    assert items[0].reason_code == "bytes_outside_frame"
    assert items[0].head == b"MSH|unframed\r"
    assert items[1] == Frame(b"MSH|framed")


def test_whitespace_between_frames_is_not_an_error() -> None:
    decoder = MllpDecoder(1000)
    assert decoder.feed(frame(b"a") + b"\r\n" + frame(b"b") + b"\n") == [Frame(b"a"), Frame(b"b")]
    assert decoder.close() == []
