"""Preprocess: one pass over the input makes the batch records, a copy of the rows, and the split.

Each input row r (0-based, in file order, header excluded) becomes one JSONL record
`{"recordId": record_id(r), "modelInput": {...}}` where record_id(r) is r zero-padded to 10
digits ("0000000042"): stable across retries, sortable, and enough for 10^10 rows. Records go to a
local spool file in row order; the byte size of each line is kept (4 bytes a row) so the splitter
can cut the spool into per-job byte ranges without reading it again. The rows themselves, all
columns as strings, go to rows.parquet, so postprocess joins results without re-parsing the input.
rows.parquet is a local scratch file and uncompressed: snappy cost more CPU than the rest of the
record building together (about the input's size on disk instead of half of it).

The hot path never touches a row in Python: the prompt is rendered with pyarrow.compute, JSON-
escaped with pyarrow.compute, and spliced between the constant JSON before and after it (found by
rendering the body once around a sentinel). Batches run on a small thread pool (pyarrow releases
the GIL) while the reader parses ahead on its own threads.
"""
from __future__ import annotations

import collections
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from shared.dataplane import configure_arrow_memory
from shared.dataplane.readers import DEFAULT_BATCH_ROWS, InputError, ReadProgress, detect_format, iter_batches
from shared.dataplane.sandbox import RenderLimits
from shared.dataplane.splitter import Chunk, RollingSplit, SplitPlan, plan_chunks
from shared.dataplane.templates import PromptTemplate
from shared.domain.bodies import Family, InferenceParams, UnsupportedModelError, build_body, family_of

MODEL_INPUT_COLUMN = "modelInput"
RECORD_ID_DIGITS = 10
SPOOL_NAME = "records.jsonl"
ROWS_NAME = "rows.parquet"
# Bedrock documents no per-record limit; 1,000,000 bytes is far above any model's context window
# in text and keeps one runaway row from eating a whole 1 GB input file. QUARRY_MAX_RECORD_BYTES.
DEFAULT_MAX_RECORD_BYTES = 1_000_000
_IN_FLIGHT = 3
# How far pyarrow's CSV reader may read the input ahead of the rows prepare has taken (_ReadAhead).
_READ_AHEAD_BYTES = 8 << 20


def record_id(row: int) -> str:
    """The recordId of 0-based input row `row`: the number zero-padded to 10 digits."""
    return f"{row:0{RECORD_ID_DIGITS}d}"


def row_of(rid: str) -> int:
    """The input row a recordId names (the inverse of record_id)."""
    return int(rid)


class PrepareSpec(BaseModel):
    """What to send for each row: the model, the prompt template (or modelInput column), params."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str = Field(min_length=1)
    # None: the input has a `modelInput` column holding each row's body as a JSON object.
    template: str | None = None
    system: str | None = None
    params: InferenceParams = Field(default_factory=InferenceParams)
    converse: bool = False


class PrepareLimits(BaseModel):
    """Bedrock's batch quotas (configurable: accounts can raise some) and Quarry's record limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_records: int = Field(100, ge=1)
    max_records: int = Field(50_000, ge=1)
    max_file_bytes: int = Field(1_000_000_000, ge=1)
    max_record_bytes: int = Field(DEFAULT_MAX_RECORD_BYTES, ge=1)
    batch_rows: int = Field(DEFAULT_BATCH_ROWS, ge=1)
    # A template that is more than {{ column }} renders each row in a sandbox process: this long at most.
    template_row_timeout_s: float = Field(2.0, gt=0)


@dataclass(frozen=True)
class Prepared:
    """The outcome of preprocess: where the records and rows are, and how to split them."""

    total_rows: int
    columns: list[str]
    spool_path: Path
    rows_path: Path
    plan: SplitPlan
    family: Family
    converse: bool
    vectorized: bool

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The chunk's JSONL bytes (a job's whole input file; at most max_file_bytes)."""
        with open(self.spool_path, "rb") as f:
            f.seek(chunk.byte_offset)
            return f.read(chunk.byte_length)


def prepare(
    stream: IO[bytes], *, name: str, spec: PrepareSpec, limits: PrepareLimits | None = None,
    workdir: Path, input_bytes: int | None = None, on_chunk: Callable[[Chunk], None] | None = None,
) -> Prepared:
    """Read `stream` once; write the spool and rows.parquet under `workdir`; plan the chunks.

    With `on_chunk` and the input's size (`input_bytes`), chunks are cut while the spool is
    written (splitter.RollingSplit) and each is handed to `on_chunk` as soon as its bytes are in
    the spool, so it can be uploaded while the rest is prepared; the plan then holds those chunks.
    """
    limits = limits or PrepareLimits()
    configure_arrow_memory()
    try:
        family = family_of(spec.model_id)
    except UnsupportedModelError as e:
        raise InputError(str(e)) from e
    fmt, gzipped = detect_format(name)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _prepare(stream, name=name, spec=spec, limits=limits, workdir=workdir, fmt=fmt, gzipped=gzipped,
                        family=family, input_bytes=input_bytes, on_chunk=on_chunk)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        # The readers name what they know; anything else pyarrow refuses is still the input's fault.
        raise InputError(f"{name}: cannot read the file: {str(e)[:300]}") from e


def _prepare(stream: IO[bytes], *, name: str, spec: PrepareSpec, limits: PrepareLimits, workdir: Path, fmt: str,
             gzipped: bool, family: Family, input_bytes: int | None,
             on_chunk: Callable[[Chunk], None] | None) -> Prepared:
    spool_path, rows_path = workdir / SPOOL_NAME, workdir / ROWS_NAME
    rolling, progress, ahead = None, None, None
    if fmt in ("csv", "tsv", "parquet"):
        progress = ReadProgress()
    if fmt in ("csv", "tsv"):
        ahead = _ReadAhead(stream, progress, limit=_READ_AHEAD_BYTES, batch_rows=limits.batch_rows)
        stream = ahead
    # Only where the reader knows exactly how many rows the bytes so far hold (uncompressed CSV and
    # TSV; Parquet, read whole first): elsewhere the chunks are planned once the whole input is read.
    if on_chunk is not None and input_bytes and progress is not None and not gzipped:
        rolling = (progress, RollingSplit(input_bytes=input_bytes, min_records=limits.min_records,
                                          max_records=limits.max_records, max_bytes=limits.max_file_bytes), on_chunk)
    batches = iter_batches(stream, fmt=fmt, gzipped=gzipped, name=name, batch_rows=limits.batch_rows,
                           max_row_bytes=limits.max_record_bytes, progress=progress)
    if ahead is not None:
        batches = ahead.taking(batches)
    encoder = None
    try:
        first = next(batches)
        columns = first.schema.names
        encoder = _encoder_for(spec, family, columns, name=name, limits=limits)
        return _encode_all(first, batches, encoder, columns=columns, name=name, spec=spec, limits=limits,
                           family=family, spool_path=spool_path, rows_path=rows_path, rolling=rolling)
    finally:
        if ahead is not None:
            ahead.release()  # a reader thread still waiting must not wait for ever
        if encoder is not None:
            encoder.close()


class _ReadAhead(io.RawIOBase):
    """The input stream, read by pyarrow's CSV reader only so far past the rows prepare has taken.

    pyarrow's streaming CSV reader reads its blocks on an I/O thread, up to 32 of them ahead of the
    batches taken (a fixed queue), each held as the bytes object this stream returned: 32-36 MB of
    the input resident through a staging (benchmark: 1 MiB blocks, as readers._CSV_BLOCK_BYTES
    makes them). Here a read waits while the bytes scanned (`progress`, kept by the reader) are
    more than `limit` past the last row taken, and, while prepare waits for its next batch, while
    the rows in the blocks before the last one read hold that batch (pyarrow parses a block once
    it has the next). A reader held for `_STALL_S` while prepare waits reads on all the same: the
    rule above should never hold back what a batch needs, and a wrong guess must not hang a run.
    """

    _STALL_S = 0.1

    def __init__(self, raw: IO[bytes], progress: ReadProgress, *, limit: int, batch_rows: int) -> None:
        self._raw, self._progress, self._limit, self._batch_rows = raw, progress, limit, batch_rows
        self._changed = threading.Condition()
        self._marks: collections.deque = collections.deque()  # (bytes, rows) scanned before each read
        self._taken_bytes = 0  # where the last row taken ends (at the last mark at or before it)
        self._taken_rows = 0
        self._waiting = False  # prepare is waiting for its next batch
        self._released = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._changed:
            while self._held():
                if not self._changed.wait(self._STALL_S) and self._waiting:
                    break
            self._marks.append((self._progress.bytes, self._progress.rows))
        return self._raw.read(size)

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _held(self) -> bool:
        if self._released or self._progress.bytes - self._taken_bytes <= self._limit:
            return False
        if not self._waiting:
            return True
        parsed_rows = self._marks[-1][1] if self._marks else 0
        return parsed_rows - self._taken_rows >= self._batch_rows

    def taking(self, batches):
        """`batches`, each counted as taken when it is yielded."""
        while True:
            with self._changed:
                self._waiting = True
                self._changed.notify_all()
            try:
                batch = next(batches, None)
            finally:
                with self._changed:
                    self._waiting = False
            if batch is None:
                return
            with self._changed:
                self._taken_rows += batch.num_rows
                marks = self._marks
                while len(marks) > 1 and marks[1][1] <= self._taken_rows:
                    marks.popleft()
                if marks and marks[0][1] <= self._taken_rows:
                    self._taken_bytes = marks[0][0]
                self._changed.notify_all()
            yield batch

    def release(self) -> None:
        """Read freely from now on (prepare has stopped taking)."""
        with self._changed:
            self._released = True
            self._changed.notify_all()


def _encode_all(first: pa.RecordBatch, batches, encoder, *, columns: list[str], name: str, spec: PrepareSpec,
                limits: PrepareLimits, family: Family, spool_path: Path, rows_path: Path, rolling=None) -> Prepared:
    progress, split, on_chunk = rolling or (None, None, None)
    sizes: list[np.ndarray] = []
    rows = 0
    schema = pa.schema([pa.field(c, pa.string()) for c in columns])
    # rows.parquet is zstd: the rows travel to S3 and back (preprocess → postprocess), and on a
    # local S3 as on AWS the bytes moved cost more than compressing them ~3x does.
    with open(spool_path, "wb") as spool, \
            pq.ParquetWriter(rows_path, schema, compression="zstd", use_dictionary=False,
                             write_statistics=False) as rows_out, \
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare") as pool:
        pending: collections.deque = collections.deque()

        def drain_one() -> None:
            nonlocal rows
            batch, fut = pending.popleft()
            data, batch_sizes = fut.result()
            _check_record_sizes(batch_sizes, rows, limits.max_record_bytes, name=name)
            spool.write(data)
            if split is not None:
                ready = split.add(batch_sizes)
                if ready:
                    spool.flush()  # the chunk's bytes must be in the file before it is read back
                    for chunk in ready:
                        on_chunk(chunk)
            rows_out.write_batch(batch)
            sizes.append(batch_sizes)
            rows += batch.num_rows

        start = 0
        for batch in _chain(first, batches):
            if batch.schema.names != columns:
                raise InputError(f"{name}: columns changed mid-file (from {columns} to {batch.schema.names})")
            batch = batch.cast(schema) if batch.schema != schema else batch
            pending.append((batch, pool.submit(encoder, batch, start)))
            start += batch.num_rows
            if split is not None:
                split.observe(progress.rows, progress.bytes)
            while len(pending) >= _IN_FLIGHT:
                drain_one()
        while pending:
            drain_one()
    record_bytes = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int32)
    last = split.finish() if split is not None else None
    if last is not None:
        for chunk in last:
            on_chunk(chunk)
        plan = split.plan(rows, int(record_bytes.sum()))
    else:
        plan = plan_chunks(record_bytes, min_records=limits.min_records, max_records=limits.max_records,
                           max_bytes=limits.max_file_bytes)
    return Prepared(rows, columns, spool_path, rows_path, plan, family, spec.converse,
                    getattr(encoder, "vectorized", False))


def _chain(first, rest):
    yield first
    yield from rest


def _check_record_sizes(sizes: np.ndarray, start: int, limit: int, *, name: str) -> None:
    over = np.flatnonzero(sizes > limit)
    if over.size:
        i = int(over[0])
        raise InputError(f"{name}: row {start + i + 1} makes a record of {int(sizes[i]):,} bytes, over the size "
                         f"limit of {limit:,} bytes per record; shorten that row's text "
                         f"({over.size} row(s) of this batch are over)")


# --- encoders: (batch, first_row) -> (JSONL bytes, per-line sizes) --------------------------------

_PROMPT_SENTINEL = "@@quarry-prompt-3f9c1d@@"
_RID_SENTINEL = "@@quarry-rid-3f9c1d@@"


class _SplicedEncoder:
    """Records as constant JSON text around the escaped prompt and the record id: no per-row Python.

    A plain template (text and {{ column }}) is never rendered on its own: JSON escaping works
    character by character, so the escaped prompt is the escaped columns between the template's
    escaped text, and the whole line is one join of the record's constant JSON, the record id,
    and those pieces: one pass and one copy of the batch's text instead of three."""

    def __init__(self, template: PromptTemplate, pieces: list[str | int]) -> None:
        self._template = template
        self._pieces = pieces  # literal text, or 0 for the record id, 1 for the prompt
        self.vectorized = template.vectorized  # else prompts render row by row, records still spliced
        parts = template.parts or []
        # (True, column) or (False, escaped text): the prompt's pieces, when a column is among them.
        self._prompt_parts = [(kind == "column", value if kind == "column" else _escape_text(value))
                              for kind, value in parts] if any(kind == "column" for kind, _ in parts) else None

    def close(self) -> None:
        self._template.close()

    def __call__(self, batch: pa.RecordBatch, first_row: int) -> tuple[memoryview, np.ndarray]:
        rids = record_ids(first_row, batch.num_rows)
        prompt = self._escaped_prompt(batch, first_row)
        args: list = []
        for piece in self._pieces:
            for arg in ([piece] if isinstance(piece, str) else [rids] if piece == 0 else prompt):
                if isinstance(arg, str) and args and isinstance(args[-1], str):
                    args[-1] += arg  # adjacent constant text joins once, not per row
                else:
                    args.append(arg)
        lines = pc.binary_join_element_wise(*args, "")
        return string_array_bytes(lines)

    def _escaped_prompt(self, batch: pa.RecordBatch, first_row: int) -> list:
        if self._prompt_parts is None:
            return [json_escape(self._template.render_batch(batch, first_row))]
        escaped: dict[str, pa.Array] = {}
        out: list = []
        for is_column, value in self._prompt_parts:
            if not is_column:
                out.append(value)
                continue
            if value not in escaped:
                column = batch.column(value)
                escaped[value] = json_escape(pc.fill_null(column, "") if column.null_count else column)
            out.append(escaped[value])
        return out


def _escape_text(text: str) -> str:
    """What orjson writes between the quotes of `text`."""
    return orjson.dumps(text).decode()[1:-1]


class _RowEncoder:
    """The general path: one body dict per row, serialized with orjson."""

    vectorized = False

    def __init__(self, template: PromptTemplate | None, family: Family, spec: PrepareSpec, name: str) -> None:
        self._template, self._family, self._spec, self._name = template, family, spec, name

    def close(self) -> None:
        if self._template is not None:
            self._template.close()

    def __call__(self, batch: pa.RecordBatch, first_row: int) -> tuple[bytes, np.ndarray]:
        lines = []
        if self._template is None:
            for i, text in enumerate(batch.column(MODEL_INPUT_COLUMN).to_pylist()):
                lines.append(orjson.dumps({"recordId": record_id(first_row + i),
                                           "modelInput": self._model_input(text, first_row + i)}) + b"\n")
        else:
            spec = self._spec
            for i, prompt in enumerate(self._template.render_batch(batch, first_row).to_pylist()):
                body = build_body(self._family, prompt, system=spec.system, params=spec.params,
                                  converse=spec.converse)
                lines.append(orjson.dumps({"recordId": record_id(first_row + i), "modelInput": body}) + b"\n")
        return b"".join(lines), np.fromiter(map(len, lines), dtype=np.int32, count=len(lines))

    def _model_input(self, text: str | None, row: int) -> dict:
        where = f"{self._name}: row {row + 1}, field {MODEL_INPUT_COLUMN!r}"
        if text is None or not text.strip():
            raise InputError(f"{where} is empty; give every row a JSON object, or pass a prompt template")
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise InputError(f"{where} is not valid JSON ({e}); it must hold the model's request "
                             "body as a JSON object") from e
        if not isinstance(body, dict):
            raise InputError(f"{where} holds a JSON {type(body).__name__}; it must be a JSON object "
                             "(the model's request body)")
        return body


def _encoder_for(spec: PrepareSpec, family: Family, columns: list[str], *, name: str, limits: PrepareLimits):
    if spec.template is None:
        if MODEL_INPUT_COLUMN not in columns:
            raise InputError(f"{name}: no prompt template was given, so the input needs a "
                             f"{MODEL_INPUT_COLUMN!r} column with each row's request body; its columns "
                             f"are: {', '.join(columns)}. Add the column or pass a template")
        return _RowEncoder(None, family, spec, name)
    template = PromptTemplate(spec.template, columns, name=name, limits=RenderLimits(
        row_timeout_s=limits.template_row_timeout_s, max_output_bytes=limits.max_record_bytes))
    pieces = _splice_pieces(family, spec)
    if pieces is None:
        return _RowEncoder(template, family, spec, name)
    return _SplicedEncoder(template, pieces)


def _splice_pieces(family: Family, spec: PrepareSpec) -> list[str | int] | None:
    body = build_body(family, _PROMPT_SENTINEL, system=spec.system, params=spec.params, converse=spec.converse)
    text = orjson.dumps({"recordId": _RID_SENTINEL, "modelInput": body}).decode() + "\n"
    if text.count(_PROMPT_SENTINEL) != 1 or text.count(_RID_SENTINEL) != 1:
        return None  # a user's system prompt happens to contain a sentinel: take the safe path
    head, rest = text.split(_RID_SENTINEL)
    middle, tail = rest.split(_PROMPT_SENTINEL)
    return [head, 0, middle, 1, tail]


# --- vectorized JSON text --------------------------------------------------------------------------

_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_OTHER_CONTROL = "[\\x00-\\x1f]"


def json_escape(strings: pa.Array) -> pa.Array:
    """The JSON string-literal body of each value (what orjson writes between the quotes)."""
    out = strings
    for raw, escaped in _ESCAPES:
        # A numpy scan of the bytes is ~5x cheaper than a replace pass that finds nothing.
        if _has_byte(out, ord(raw)):
            out = pc.replace_substring(out, raw, escaped)
    if _has_control(out):
        # Other control characters are rare: escape those rows one by one, exactly as orjson does.
        rare = pc.match_substring_regex(out, _OTHER_CONTROL)
        values = out.to_pylist()
        for i in np.flatnonzero(rare.to_numpy(zero_copy_only=False)):
            values[i] = orjson.dumps(strings[int(i)].as_py()).decode()[1:-1]
        out = pa.array(values, type=pa.string())
    return out


def _value_bytes(strings: pa.Array) -> np.ndarray:
    if isinstance(strings, pa.ChunkedArray):
        strings = pa.concat_arrays(strings.chunks) if strings.num_chunks != 1 else strings.chunk(0)
    data = strings.buffers()[2]
    if data is None:
        return np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32, count=len(strings) + 1, offset=strings.offset * 4)
    return np.frombuffer(data, dtype=np.uint8)[int(offsets[0]):int(offsets[-1])]


def _has_byte(strings: pa.Array, byte: int) -> bool:
    return bool(np.any(_value_bytes(strings) == byte))


def _has_control(strings: pa.Array) -> bool:
    return bool(np.any(_value_bytes(strings) < 0x20))


def record_ids(first_row: int, n: int) -> pa.Array:
    """record_id(r) for r in [first_row, first_row + n), as an Arrow string array."""
    numbers = pc.cast(pa.array(np.arange(first_row, first_row + n, dtype=np.int64)), pa.string())
    return pc.utf8_lpad(numbers, RECORD_ID_DIGITS, "0")


def string_array_bytes(lines: pa.Array) -> tuple[memoryview, np.ndarray]:
    """The concatenated UTF-8 of a string array (zero-copy) and each value's byte length."""
    if isinstance(lines, pa.ChunkedArray):
        lines = pa.concat_arrays(lines.chunks)
    if lines.null_count:
        raise ValueError("a JSONL line is null")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    data = memoryview(lines.buffers()[2])[int(offsets[0]):int(offsets[-1])]
    return data, np.diff(offsets).astype(np.int32)
