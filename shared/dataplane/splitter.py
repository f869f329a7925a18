"""Split the rendered records into batch-job input files: contiguous, balanced row ranges.

Bedrock's quotas bound a job's input file by records (50,000) and bytes (1 GB, not adjustable)
and ask for a minimum (100) per job. We pick the fewest files that fit and spread rows evenly
across them, so 120,000 rows become 3 x 40,000, not 50k + 50k + 20k: equal files finish at about
the same time, and no job is left tiny.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.dataplane.readers import InputError


@dataclass(frozen=True)
class Chunk:
    """Rows [first_row, end_row) of the input; bytes [byte_offset, byte_offset + bytes) of the spool."""

    index: int
    first_row: int
    end_row: int
    records: int
    bytes: int
    byte_offset: int

    @property
    def byte_length(self) -> int:
        return self.bytes


@dataclass(frozen=True)
class SplitPlan:
    """The chunks, or on_demand=True (and no chunks) when the input is below a job's minimum."""

    chunks: list[Chunk]
    on_demand: bool
    total_rows: int
    total_bytes: int

    def assembly_chunks(self) -> list[Chunk]:
        """The row ranges postprocess walks: the chunks, or one range of every row when on demand."""
        if self.chunks or self.total_rows == 0:
            return self.chunks
        return [Chunk(0, 0, self.total_rows, self.total_rows, self.total_bytes, 0)]


def plan_chunks(
    record_bytes: np.ndarray, *, min_records: int = 100, max_records: int = 50_000,
    max_bytes: int = 1_000_000_000,
) -> SplitPlan:
    """The fewest contiguous, evenly spread chunks within max_records and max_bytes each."""
    sizes = np.asarray(record_bytes, dtype=np.int64)
    n = int(sizes.size)
    if min_records < 1 or max_records < min_records or max_bytes < 1:
        raise ValueError(f"bad limits: min_records={min_records} max_records={max_records} max_bytes={max_bytes}")
    ends = np.cumsum(sizes)  # ends[i] = bytes of rows 0..i
    total = int(ends[-1]) if n else 0
    if n and int(sizes.max()) > max_bytes:
        row = int(np.argmax(sizes > max_bytes))
        raise InputError(f"row {row}: its record is {int(sizes[row])} bytes, more than a batch input file "
                         f"may hold ({max_bytes} bytes); shorten that row's prompt")
    if n < min_records:
        return SplitPlan([], True, n, total)
    k = max(-(-n // max_records), -(-total // max_bytes), 1)
    k_max = n // min_records
    while k <= k_max:
        for bounds in (_even_by_records(n, k), _even_by_bytes(ends, k)):
            if bounds is not None and _fits(bounds, ends, min_records, max_records, max_bytes):
                return SplitPlan(_chunks(bounds, ends), False, n, total)
        k += 1
    raise InputError(
        f"the {n} records ({total} bytes, {total // max(n, 1)} bytes on average) cannot be split into "
        f"files of at least {min_records} records and at most {max_bytes} bytes each; shorten the prompts")


def _even_by_records(n: int, k: int) -> np.ndarray:
    # Boundaries 0 = b0 < b1 < ... < bk = n; sizes differ by at most one row.
    return (np.arange(k + 1, dtype=np.int64) * n) // k


def _even_by_bytes(ends: np.ndarray, k: int) -> np.ndarray | None:
    n = ends.size
    total = int(ends[-1])
    targets = (np.arange(1, k, dtype=np.int64) * total) // k
    inner = np.searchsorted(ends, targets, side="right")
    bounds = np.concatenate(([0], inner, [n])).astype(np.int64)
    if np.any(np.diff(bounds) <= 0):
        return None
    return bounds


def _bytes_between(ends: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    start = np.where(a > 0, ends[np.maximum(a - 1, 0)], 0)
    return ends[b - 1] - start


def _fits(bounds: np.ndarray, ends: np.ndarray, min_records: int, max_records: int, max_bytes: int) -> bool:
    counts = np.diff(bounds)
    if counts.min() < min_records or counts.max() > max_records:
        return False
    return bool(_bytes_between(ends, bounds[:-1], bounds[1:]).max() <= max_bytes)


def _chunks(bounds: np.ndarray, ends: np.ndarray) -> list[Chunk]:
    firsts, lasts = bounds[:-1], bounds[1:]
    sizes = _bytes_between(ends, firsts, lasts)
    offsets = np.where(firsts > 0, ends[np.maximum(firsts - 1, 0)], 0)
    return [Chunk(i, int(a), int(b), int(b - a), int(s), int(o))
            for i, (a, b, s, o) in enumerate(zip(firsts, lasts, sizes, offsets))]
