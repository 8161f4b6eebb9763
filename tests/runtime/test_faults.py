"""``worker_skip_at`` keeps exactly its range from the worker, once, however the fetches cut
it: the worker then sees one jump, and the range when it reads the partition again."""

from __future__ import annotations

from typing import NamedTuple

from rcmflow.runtime.faults import SkipRecords


class Record(NamedTuple):
    partition: int
    offset: int


def fetch(partition: int, start: int, end: int) -> list[Record]:
    return [Record(partition, offset) for offset in range(start, end)]


def offsets(records: list[Record]) -> list[int]:
    return [r.offset for r in records]


def test_the_range_is_kept_back_across_fetches_then_read_again() -> None:
    skip = SkipRecords(0, 40, 25)
    assert offsets(skip(fetch(0, 0, 50))) == list(range(40))
    assert offsets(skip(fetch(1, 0, 100))) == list(range(100))  # another partition
    assert skip(fetch(0, 50, 60)) == []
    assert offsets(skip(fetch(0, 60, 100))) == list(range(65, 100))
    # Past the range: the worker seeks back and reads it like any other record.
    assert offsets(skip(fetch(0, 40, 100))) == list(range(40, 100))
