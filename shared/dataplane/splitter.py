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



class RollingSplit:
    """Cuts chunks while the records are still being written, so each can be uploaded while the
    next is prepared.

    plan_chunks needs every record's size, so its chunks are known only once the whole input is
    read. Here the chunk size is fixed early instead, from an estimate of the input's rows (the
    rows read so far, and the bytes left at the rate rows came in, once a quarter is read): the chunk
    count is the fewest that fit the estimate (as plan_chunks counts them) and each chunk gets an
    even share of the estimated rows (plus 1%). A chunk is handed over (`add` returns
    it) once the one after it is full, so that at the end the last full chunk and the remainder
    are split again by plan_chunks: no chunk is below min_records or left tiny, and none is over
    max_records or max_bytes. The chunks differ from plan_chunks' by the slack and the estimate's
    error (1% and less on the benchmark's inputs: 2.2M rows make 44 x 50,000, as plan_chunks
    does; 220k rows 3 x 44,565 and 2 x ~43,150 instead of 5 x 44,000).
    """

    DECIDE_AT = 0.25  # of the input read: the estimate is made then
    SLACK = 0.01

    def __init__(self, *, input_bytes: int, min_records: int, max_records: int, max_bytes: int) -> None:
        self._input_bytes = input_bytes
        self._limits = {"min_records": min_records, "max_records": max_records, "max_bytes": max_bytes}
        self._pending = np.zeros(0, dtype=np.int64)  # sizes of the records after the last cut
        self._first = 0  # the first record after the last cut
        self._offset = 0  # its byte offset in the spool
        self._held: tuple[Chunk, np.ndarray] | None = None  # the last full chunk and its sizes
        self._per_chunk: int | None = None
        self._points: list[tuple[int, int]] = []  # (bytes, rows) read, until decided
        self._seen: list[np.ndarray] = []  # sizes added before the decision (for the mean record size)
        self.decided = False
        self.chunks: list[Chunk] = []  # handed over, in order

    @property
    def rolling(self) -> bool:
        """True once chunks are cut as the records come."""
        return self._per_chunk is not None

    def observe(self, rows_read: int, bytes_read: int) -> None:
        """`rows_read` rows came from the first `bytes_read` bytes of the input: decide once enough is read.

        The rows per byte are the slope of a line fitted through every (bytes, rows) point so far:
        the reader's read-ahead (bytes read, not rows yet) shifts the points, not the slope, and its
        ups and downs average out over the points."""
        if self.decided or rows_read == 0:
            return
        self._points.append((bytes_read, rows_read))
        if bytes_read < self.DECIDE_AT * self._input_bytes or not self._seen:
            return
        self.decided = True
        points = np.asarray(self._points, dtype=np.float64)
        if bytes_read >= self._input_bytes:  # all read (a Parquet file is read whole first): rows are known
            rows = rows_read
        elif len(np.unique(points[:, 0])) >= 3:
            slope = float(np.polyfit(points[:, 0], points[:, 1], 1)[0])
            rows = int(rows_read + (self._input_bytes - bytes_read) * max(slope, 0.0))
        else:
            rows = int(rows_read * self._input_bytes / bytes_read)
        record_bytes = float(np.concatenate(self._seen).mean())
        self._seen = []
        lo, hi, max_bytes = self._limits["min_records"], self._limits["max_records"], self._limits["max_bytes"]
        count = max(-(-rows // hi), -(-int(rows * record_bytes) // max_bytes), 1)
        # 1% over an even share: an estimate a little low then leaves the last chunk short (the
        # tail is split again) instead of spilling a few rows into one chunk more.
        per_chunk = min(hi, -(-int(rows * (1 + self.SLACK)) // count))
        # At least two chunks, or nothing is gained; each well inside the limits, else plan_chunks
        # decides at the end as it always did.
        if count >= 2 and per_chunk >= 2 * lo and per_chunk * record_bytes * 1.25 <= max_bytes:
            self._per_chunk = per_chunk

    def add(self, sizes: np.ndarray) -> list[Chunk]:
        """The next records' sizes (their bytes are in the spool now); the chunks ready to upload."""
        sizes = np.asarray(sizes, dtype=np.int64)
        if not self.decided:
            self._seen.append(sizes)
        self._pending = np.concatenate([self._pending, sizes]) if self._pending.size else sizes
        ready: list[Chunk] = []
        while self._per_chunk is not None and self._pending.size > self._per_chunk:
            ends = np.cumsum(self._pending[:self._per_chunk])
            # Full at per_chunk records, or sooner if the next record would pass max_bytes.
            take = min(self._per_chunk, int(np.searchsorted(ends, self._limits["max_bytes"], side="right")))
            if take == 0:
                raise InputError(f"row {self._first}: its record is {int(self._pending[0])} bytes, more than a batch "
                                 f"input file may hold ({self._limits['max_bytes']} bytes); shorten that row's prompt")
            ready += self._cut(take, int(ends[take - 1]))
        return ready

    def _cut(self, records: int, size: int) -> list[Chunk]:
        index = len(self.chunks) + (self._held is not None)
        chunk = Chunk(index, self._first, self._first + records, records, size, self._offset)
        held, self._held = self._held, (chunk, self._pending[:records])
        self._pending = self._pending[records:]
        self._first += records
        self._offset += size
        if held is None:
            return []
        self.chunks.append(held[0])
        return [held[0]]

    def finish(self) -> list[Chunk] | None:
        """The last chunks, once every record was added; None if it never cut one (then plan the
        whole input with plan_chunks, as before)."""
        if self._held is None:
            return None
        held, held_sizes = self._held
        tail = np.concatenate([held_sizes, self._pending])
        plan = plan_chunks(tail, **self._limits)
        last = [Chunk(held.index + c.index, held.first_row + c.first_row, held.first_row + c.end_row, c.records,
                      c.bytes, held.byte_offset + c.byte_offset) for c in plan.chunks]
        self.chunks += last
        return last

    def plan(self, total_rows: int, total_bytes: int) -> SplitPlan:
        """The plan of every chunk handed over (after finish)."""
        return SplitPlan(list(self.chunks), False, total_rows, total_bytes)
