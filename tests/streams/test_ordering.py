"""The offset guard: in-order, hole-free application per partition."""

from __future__ import annotations

from rcmflow.streams.ordering import OffsetGuard
from rcmflow.streams.processor import Message


def msgs(*spec: tuple[int, int]) -> list[Message]:
    return [Message("rcm.events", p, o, b"k", b"v") for p, o in spec]


def test_first_sight_is_taken_from_the_durable_next_offset() -> None:
    guard = OffsetGuard({0: 10, 1: None}.get)
    admitted = guard.admit(msgs((0, 10), (0, 11), (1, 5), (1, 6)))
    assert [(m.partition, m.offset) for m in admitted.messages] == [(0, 10), (0, 11), (1, 5),
                                                                    (1, 6)]
    assert admitted.advanced == {0: 12, 1: 7}
    assert admitted.holes == {}


def test_a_jump_is_a_hole_and_nothing_after_it_is_applied() -> None:
    guard = OffsetGuard(lambda p: 10)
    admitted = guard.admit(msgs((0, 10), (0, 13), (0, 14), (1, 10), (0, 11)))
    assert [(m.partition, m.offset) for m in admitted.messages] == [(0, 10), (1, 10)]
    assert admitted.holes == {0: 11}
    # The hole read again: applied in order from where it was.
    again = guard.admit(msgs((0, 11), (0, 12), (0, 13)))
    assert [m.offset for m in again.messages] == [11, 12, 13]


def test_redeliveries_below_the_next_offset_pass_without_moving_it() -> None:
    guard = OffsetGuard(lambda p: 20)
    admitted = guard.admit(msgs((0, 15), (0, 16), (0, 20)))
    assert [m.offset for m in admitted.messages] == [15, 16, 20]
    assert admitted.advanced == {0: 21}


def test_forget_reloads_after_partitions_move() -> None:
    durable = {0: 5}
    guard = OffsetGuard(durable.get)
    guard.admit(msgs((0, 5)))
    durable[0] = 50  # another worker applied up to 49 meanwhile
    guard.forget()
    assert guard.admit(msgs((0, 49))).messages and guard.admit(msgs((0, 52))).holes == {0: 50}
