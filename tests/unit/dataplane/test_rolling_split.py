"""Chunks cut while the records are written (RollingSplit), handed over by prepare as they are
ready, and uploaded by staging while the input is still being read."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import services.preprocess.staging as staging
from shared.dataplane.prepare import PrepareLimits, PrepareSpec, prepare
from shared.dataplane.splitter import Chunk, RollingSplit, plan_chunks
from shared.domain.runs import Run
from shared.domain.spec import RunSpec
from shared.settings import Settings
from tests.unit.fakes import FakeObjects

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


def roll(sizes: np.ndarray, *, batch: int = 1000, overhead: float = 1.0, **limits) -> tuple[RollingSplit, list, list]:
    """Feed `sizes` in batches as prepare does, the input being `overhead` times the records' bytes."""
    split = RollingSplit(input_bytes=int(sizes.sum() * overhead), **limits)
    early, rows, read = [], 0, 0
    for start in range(0, len(sizes), batch):
        part = sizes[start:start + batch]
        rows, read = rows + len(part), read + int(part.sum() * overhead)
        split.observe(rows, read)
        early += split.add(part)
    last = split.finish()
    chunks = split.chunks if last is not None else plan_chunks(sizes, **limits).chunks
    return split, early, chunks


def check_plan(chunks: list[Chunk], sizes: np.ndarray, *, min_records: int, max_records: int, max_bytes: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].first_row == 0 and chunks[-1].end_row == len(sizes)
    assert all(a.end_row == b.first_row and a.byte_offset + a.bytes == b.byte_offset for a, b in zip(chunks, chunks[1:]))
    ends = np.concatenate([[0], np.cumsum(sizes)])
    for c in chunks:
        assert c.records == c.end_row - c.first_row
        assert (c.byte_offset, c.bytes) == (int(ends[c.first_row]), int(ends[c.end_row] - ends[c.first_row]))
        assert min_records <= c.records <= max_records and c.bytes <= max_bytes


def test_given_2_2m_rows_when_rolled_then_most_chunks_are_handed_over_before_the_end_and_none_breaks_a_limit():
    sizes = np.random.default_rng(7).integers(400, 900, 2_200_000)
    limits = {"min_records": 100, "max_records": 50_000, "max_bytes": 1_000_000_000}

    split, early, chunks = roll(sizes, batch=8192, **limits)

    check_plan(chunks, sizes, **limits)
    assert split.rolling and len(early) >= 40
    assert len(chunks) == len(plan_chunks(sizes, **limits).chunks)


def test_given_120k_rows_when_rolled_then_three_chunks_of_about_40k():
    sizes = np.full(120_000, 100)

    _, _, chunks = roll(sizes, min_records=100, max_records=50_000, max_bytes=10**9)

    assert len(chunks) == 3 and all(abs(c.records - 40_000) <= 400 for c in chunks)


def test_given_an_estimate_too_low_when_rolled_then_the_extra_rows_are_split_evenly_with_the_last_chunk():
    sizes = np.full(120_000, 100)
    # The first quarter of the input holds longer rows than the rest: the estimate says ~97k rows.
    split = RollingSplit(input_bytes=12_000_000, min_records=100, max_records=50_000, max_bytes=10**9)
    split.add(sizes[:5_000])
    for rows in range(5_000, 30_001, 5_000):
        split.observe(rows, rows * 3_200_000 // 30_000)
    for start in range(5_000, 120_000, 5_000):
        split.add(sizes[start:start + 5_000])
    split.finish()

    records = [c.records for c in split.chunks]
    assert sum(records) == 120_000 and max(records) <= 50_000 and min(records) >= 20_000


def test_given_too_few_rows_for_two_chunks_when_rolled_then_nothing_is_cut_and_plan_chunks_decides():
    sizes = np.full(40_000, 100)

    split, early, chunks = roll(sizes, min_records=100, max_records=50_000, max_bytes=10**9)

    assert not split.rolling and early == []
    assert chunks == plan_chunks(sizes).chunks


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 30_000), max_records=st.integers(100, 4_000), overhead=st.floats(0.5, 2.0),
       batch=st.integers(1, 3_000), seed=st.integers(0, 1_000))
def test_any_rolled_split_is_contiguous_complete_and_within_the_limits(n, max_records, overhead, batch, seed):
    sizes = np.random.default_rng(seed).integers(1, 300, n)
    limits = {"min_records": 100, "max_records": max_records, "max_bytes": 200_000}
    if n < 100:
        return
    try:
        plan_chunks(sizes, **limits)
    except Exception:
        return  # no valid plan exists at all

    _, _, chunks = roll(sizes, batch=batch, overhead=overhead, **limits)

    check_plan(chunks, sizes, **limits)


CSV_ROWS = 60_000


def csv_input() -> bytes:
    return b"text\n" + b"".join(b'"row %d says ""hello"", then more text to make it longer"\n' % i
                                for i in range(CSV_ROWS))


class Reading(io.RawIOBase):
    """An input stream that remembers how far it was read."""

    def __init__(self, data: bytes) -> None:
        self._data, self.position = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        piece = self._data[self.position:self.position + min(len(buffer), 4096)]
        buffer[:len(piece)] = piece
        self.position += len(piece)
        return len(piece)


def test_given_an_input_of_known_size_when_prepared_then_chunks_are_handed_over_while_it_is_still_read(tmp_path):
    data = csv_input()
    stream = Reading(data)
    seen: list[tuple[Chunk, int]] = []

    prepared = prepare(stream, name="x.csv", spec=PrepareSpec(model_id=HAIKU, template="Say: {{ text }}"),
                       limits=PrepareLimits(min_records=100, max_records=5_000, batch_rows=2_000), workdir=tmp_path,
                       input_bytes=len(data), on_chunk=lambda chunk: seen.append((chunk, stream.position)))

    assert [chunk for chunk, _ in seen] == prepared.plan.chunks
    assert seen[0][1] < len(data)  # the first chunk was ready long before the input ended
    spool = prepared.spool_path.read_bytes()
    assert b"".join(spool[c.byte_offset:c.byte_offset + c.bytes] for c, _ in seen) == spool
    assert sum(c.records for c, _ in seen) == CSV_ROWS == spool.count(b"\n")


class ObjectsWatchingTheRead(FakeObjects):
    """Records how much of the input had been read when each chunk was uploaded."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__(objects)
        self.reading: Reading | None = None
        self.read_at_upload: list[int] = []

    def open(self, uri: str):
        self.reading = Reading(self.objects[uri])
        return self.reading

    def upload_range(self, path: str, offset: int, length: int, uri: str) -> None:
        self.read_at_upload.append(self.reading.position)
        super().upload_range(path, offset, length, uri)


def test_given_a_large_input_when_staged_then_its_chunks_are_uploaded_early_and_hold_every_record_once(
        tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(staging, "EARLY_UPLOAD_MIN_BYTES", 1)
    uri = "s3://quarry-inputs/incoming/summarize/big.csv"
    objects = ObjectsWatchingTheRead({uri: csv_input()})
    run = Run(run_id="0123456789abcdef0123456789abcdef", spec=RunSpec(model_id=HAIKU, template="Say: {{ text }}"),
              input_uri=uri, origin="cli", source_key="x")
    settings_ = Settings(workdir=tmp_path, min_records_per_job=100, max_records_per_job=5_000)

    staged = staging.stage_input(run, objects=objects, settings=settings_)

    chunks = [objects.objects[job.chunk_uri] for job in staged.jobs]
    assert objects.read_at_upload[0] < len(csv_input())  # the first chunk went up while the input was read
    assert staged.total_rows == CSV_ROWS and len(staged.jobs) >= 6
    assert [len(chunk.splitlines()) for chunk in chunks] == [job.records for job in staged.jobs]
    ids = [line[len(b'{"recordId":"'):len(b'{"recordId":"') + 10] for chunk in chunks for line in chunk.splitlines()]
    assert ids == [b"%010d" % row for row in range(CSV_ROWS)]


def test_given_a_csv_with_quoted_line_breaks_when_read_then_its_progress_counts_rows_not_lines():
    from shared.dataplane.readers import ReadProgress, iter_batches

    data = b'text,n\n"two\nlines",1\n\nplain,2\n"a ""quoted"" one",3\n'
    progress = ReadProgress()

    rows = sum(batch.num_rows for batch in iter_batches(io.BytesIO(data), fmt="csv", gzipped=False, name="x.csv",
                                                         progress=progress))

    assert (progress.rows, progress.bytes) == (rows, len(data)) == (3, len(data))


def test_given_a_parquet_input_when_prepared_then_its_row_count_fixes_the_chunks_and_they_are_handed_over_early(
        tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": [f"row {i} says hello" for i in range(20_000)]}), buffer)
    seen: list[tuple[Chunk, int]] = []
    spool_sizes: list[int] = []

    def handed(chunk: Chunk) -> None:
        seen.append((chunk, 0))
        spool_sizes.append((tmp_path / "records.jsonl").stat().st_size)

    prepared = prepare(io.BytesIO(buffer.getvalue()), name="x.parquet",
                       spec=PrepareSpec(model_id=HAIKU, template="Say: {{ text }}"),
                       limits=PrepareLimits(min_records=100, max_records=2_000, batch_rows=1_000), workdir=tmp_path,
                       input_bytes=len(buffer.getvalue()), on_chunk=handed)

    assert [chunk for chunk, _ in seen] == prepared.plan.chunks
    assert len(prepared.plan.chunks) == 10 and all(c.records <= 2_000 for c in prepared.plan.chunks)
    assert spool_sizes[0] < prepared.spool_path.stat().st_size  # handed over while the spool still grew
