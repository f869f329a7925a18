"""Splitter: contiguous, balanced chunks within Bedrock's per-file limits."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dataplane.readers import InputError
from shared.dataplane.splitter import plan_chunks


def uniform(n: int, size: int = 100) -> np.ndarray:
    return np.full(n, size, dtype=np.int32)


def test_given_120k_rows_when_planned_then_three_even_chunks_of_40k():
    assert [c.records for c in plan_chunks(uniform(120_000)).chunks] == [40_000] * 3


def test_given_50050_rows_when_planned_then_two_chunks_of_25025():
    assert [c.records for c in plan_chunks(uniform(50_050)).chunks] == [25_025, 25_025]


def test_given_fewer_rows_than_the_minimum_when_planned_then_the_plan_is_on_demand():
    plan = plan_chunks(uniform(99))
    assert plan.on_demand and plan.chunks == [] and plan.total_rows == 99


def test_given_an_on_demand_plan_when_assembling_then_one_range_covers_every_row():
    [chunk] = plan_chunks(uniform(5)).assembly_chunks()
    assert (chunk.first_row, chunk.end_row) == (0, 5)


def test_given_bytes_over_the_file_limit_when_planned_then_chunks_split_by_bytes():
    plan = plan_chunks(uniform(1_000, 1_000), max_bytes=250_000)
    assert [c.records for c in plan.chunks] == [250] * 4


def test_given_one_record_bigger_than_a_file_when_planned_then_the_row_is_named():
    sizes = uniform(500)
    sizes[321] = 2_000
    with pytest.raises(InputError, match="row 321: its record is 2000 bytes"):
        plan_chunks(sizes, max_bytes=1_000)


def test_given_chunks_when_planned_then_byte_offsets_locate_each_chunk_in_the_spool():
    sizes = np.arange(1, 301, dtype=np.int32)
    plan = plan_chunks(sizes, max_records=100)
    ends = np.cumsum(sizes)
    for c in plan.chunks:
        assert c.byte_offset == (ends[c.first_row - 1] if c.first_row else 0)
        assert c.byte_length == int(sizes[c.first_row:c.end_row].sum())


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 5_000), min_size=0, max_size=3_000),
       min_records=st.integers(1, 50), max_records=st.integers(50, 800), max_bytes=st.integers(5_000, 400_000))
def test_given_any_sizes_when_planned_then_every_row_is_in_exactly_one_chunk_within_limits(
        sizes, min_records, max_records, max_bytes):
    arr = np.array(sizes, dtype=np.int32)
    try:
        plan = plan_chunks(arr, min_records=min_records, max_records=max_records, max_bytes=max_bytes)
    except InputError:
        return  # only when min_records of these records cannot fit in max_bytes
    if len(sizes) < min_records:
        assert plan.on_demand and not plan.chunks
        return
    assert [c.first_row for c in plan.chunks] == [0] + [c.end_row for c in plan.chunks[:-1]]
    assert plan.chunks[-1].end_row == len(sizes)
    for c in plan.chunks:
        assert min_records <= c.records <= max_records
        assert c.bytes == int(arr[c.first_row:c.end_row].sum()) <= max_bytes


@settings(max_examples=100, deadline=None)
@given(n=st.integers(100, 500_000), size=st.integers(1, 20_000))
def test_given_uniform_sizes_when_planned_then_chunks_differ_by_at_most_one_record_and_are_fewest(n, size):
    plan = plan_chunks(uniform(n, size))
    counts = [c.records for c in plan.chunks]
    assert max(counts) - min(counts) <= 1
    fewest = next(k for k in range(1, n + 1) if -(-n // k) <= 50_000 and -(-n // k) * size <= 1_000_000_000)
    assert len(counts) == fewest
