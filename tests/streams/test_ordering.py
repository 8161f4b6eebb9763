"""The offset guard: in-order, hole-free application per partition."""

from __future__ import annotations

from rcmflow.streams.ordering import OffsetGuard
from rcmflow.streams.processor import Message


def msgs(*spec: tuple[int, int]) -> list[Message]:
    return [Message("rcm.events", p, o, b"k", b"v") for p, o in spec]


def offsets(admitted_messages: list[Message]) -> list[tuple[int, int]]:
    return [(m.partition, m.offset) for m in admitted_messages]


def test_first_sight_is_taken_from_the_durable_next_offset() -> None:
    guard = OffsetGuard({0: 10, 1: None}.get, {0: 10, 1: 5}.__getitem__)
    admitted = guard.admit(msgs((0, 10), (0, 11), (1, 5), (1, 6)))
    assert offsets(admitted.messages) == [(0, 10), (0, 11), (1, 5), (1, 6)]
    assert admitted.advanced == {0: 12, 1: 7}
    assert admitted.read_to == {0: 12, 1: 7}
    assert admitted.holes == {}


def test_a_jump_is_a_hole_and_nothing_after_it_is_applied() -> None:
    guard = OffsetGuard(lambda p: 10, lambda p: 10)
    admitted = guard.admit(msgs((0, 10), (0, 13), (0, 14), (1, 10), (0, 11)))
    assert offsets(admitted.messages) == [(0, 10), (1, 10)]
    assert admitted.holes == {0: 11}
    # The hole read again: applied in order from where it was.
    again = guard.admit(msgs((0, 11), (0, 12), (0, 13)))
    assert [m.offset for m in again.messages] == [11, 12, 13]


def test_redeliveries_below_the_next_offset_pass_without_moving_it() -> None:
    guard = OffsetGuard(lambda p: 20, lambda p: 15)
    admitted = guard.admit(msgs((0, 15), (0, 16), (0, 17), (0, 18), (0, 19), (0, 20)))
    assert [m.offset for m in admitted.messages] == [15, 16, 17, 18, 19, 20]
    assert admitted.advanced == {0: 21}
    assert admitted.read_to == {0: 21}


def test_a_skipped_redelivery_is_a_hole_too() -> None:
    """The committed offset is 15 and the durable next offset 20: 15..19 are redeliveries
    whose states may have been lost. Skipping 16 would leave its account stale for good."""
    guard = OffsetGuard(lambda p: 20, lambda p: 15)
    admitted = guard.admit(msgs((0, 15), (0, 17), (0, 18)))
    assert [m.offset for m in admitted.messages] == [15]
    assert admitted.holes == {0: 16}
    assert admitted.read_to == {0: 16}
    guard.sought(0, 15)  # the worker seeks back (to the committed offset)
    again = guard.admit(msgs((0, 15), (0, 16), (0, 17)))
    assert [m.offset for m in again.messages] == [15, 16, 17]


def test_the_first_record_after_an_assignment_must_be_at_the_committed_offset() -> None:
    guard = OffsetGuard(lambda p: None, lambda p: 100)
    assert guard.admit(msgs((0, 150))).holes == {0: 100}  # stale records from elsewhere


def test_records_delivered_again_after_a_seek_back_are_passed_over() -> None:
    guard = OffsetGuard(lambda p: 0, lambda p: 0)
    guard.admit(msgs((0, 0), (0, 1), (0, 2)))
    admitted = guard.admit(msgs((0, 1), (0, 2), (0, 3)))
    assert [m.offset for m in admitted.messages] == [3]


def test_forget_reloads_after_partitions_move() -> None:
    durable = {0: 5}
    committed = {0: 5}
    guard = OffsetGuard(durable.get, committed.__getitem__)
    guard.admit(msgs((0, 5)))
    durable[0] = 50  # another worker applied up to 49 meanwhile and committed 49
    committed[0] = 49
    guard.forget()
    assert guard.admit(msgs((0, 49))).messages and guard.admit(msgs((0, 52))).holes == {0: 50}


# -- found by the mutation run (RELIABILITY.md) ------------------------------------------------

def test_a_committed_offset_past_the_durable_next_offset_is_a_hole_at_the_durable_one() -> None:
    """The store says offset 5 is next, the group committed 8: records 5..7 are durable
    nowhere (a commit that ran ahead of the batch's writes). Applying 8 would skip them; the
    guard sends the worker back to 5, and partition 1 is not held up by partition 0."""
    guard = OffsetGuard({0: 5, 1: None}.get, {0: 8, 1: 0}.__getitem__)
    admitted = guard.admit(msgs((0, 8), (0, 9), (1, 0), (1, 1)))
    assert admitted.holes == {0: 5}
    assert offsets(admitted.messages) == [(1, 0), (1, 1)]


def test_the_next_offset_follows_what_was_admitted() -> None:
    guard = OffsetGuard(lambda p: 5, lambda p: 5)
    assert guard.next_offset(0) == 5
    guard.admit(msgs((0, 5), (0, 6)))
    assert guard.next_offset(0) == 7
    assert guard.admit(msgs((0, 7))).advanced == {0: 8}


def test_a_seek_sets_where_the_next_record_must_be() -> None:
    guard = OffsetGuard(lambda p: None, lambda p: 0)
    assert not guard.positioned(0)
    guard.sought(0, 3)
    assert guard.positioned(0) and not guard.positioned(1)
    admitted = guard.admit(msgs((0, 3), (0, 4)))
    assert offsets(admitted.messages) == [(0, 3), (0, 4)] and admitted.holes == {}
