"""RangeSet against a plain Python set as the reference model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jetstream.datachannel.rangeset import RangeSet


def members(ranges: RangeSet) -> set[int]:
    return {value for start, stop in ranges for value in range(start, stop)}


def test_merges_adjacent_and_overlapping_ranges() -> None:
    ranges = RangeSet()
    assert ranges.add(0, 2) == [(0, 2)]
    assert ranges.add(4, 6) == [(4, 6)]
    assert ranges.add(2, 4) == [(2, 4)]
    assert list(ranges) == [(0, 6)]
    assert ranges.add(1, 5) == []
    assert ranges.add(8, 9) == [(8, 9)]
    assert ranges.add(5, 12) == [(6, 8), (9, 12)]
    assert list(ranges) == [(0, 12)]


def test_add_one_contains_covers_and_descending() -> None:
    ranges = RangeSet()
    for value in (0, 1, 2, 5, 7, 8):
        assert ranges.add_one(value)
    assert not ranges.add_one(1)
    assert list(ranges) == [(0, 3), (5, 6), (7, 9)]
    assert 2 in ranges and 3 not in ranges and 8 in ranges and 9 not in ranges
    assert ranges.covers(0, 3) and not ranges.covers(0, 4) and ranges.covers(4, 4)
    assert ranges.descending(2) == [(7, 9), (5, 6)]
    assert ranges.pop_first() == (0, 3)
    assert list(ranges)[0] == (5, 6) and ranges.last() == (7, 9)


def test_empty_range_is_ignored() -> None:
    ranges = RangeSet([(3, 3)])
    assert not ranges and len(ranges) == 0


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=40))
def test_matches_a_set_model(operations: list[tuple[int, int]]) -> None:
    ranges = RangeSet()
    model: set[int] = set()
    for start, length in operations:
        new = ranges.add(start, start + length)
        added = set(range(start, start + length)) - model
        assert {v for a, b in new for v in range(a, b)} == added
        model |= added
        assert members(ranges) == model
    spans = list(ranges)
    assert all(a < b for a, b in spans)
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))
