"""Postprocess: join each job's results back to its input rows, every row exactly once, in order.

Bedrock writes results in no particular order and never retries a failed record, so results are
joined on recordId one chunk at a time: memory holds one chunk's results (at most 50,000) and one
batch of rows. A row whose record has no result line at all is reported as an error, not dropped.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.dataplane import configure_arrow_memory
from shared.dataplane.prepare import json_escape, record_ids, string_array_bytes
from shared.dataplane.splitter import Chunk, SplitPlan
from shared.domain.bodies import Family, extract_output

OutFormat = Literal["csv", "jsonl", "parquet"]
NO_OUTPUT = "no output: the record was not processed (no result line for it in the job's output)"
RESULT_COLUMNS = ("record_id", "output", "error", "input_tokens", "output_tokens")
_ROW_BATCH = 8_192


class RecordResult(NamedTuple):
    """One record's outcome: text or embedding, or an error message; tokens as billed.
    (A NamedTuple: one is built per row, so it must be cheap.)"""

    text: str | None = None
    embedding: list[float] | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class AssembleSummary:
    """Counts over every row written; errors counts each distinct error message."""

    rows: int = 0
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)

    def top_errors(self, n: int = 5) -> list[tuple[str, int]]:
        return self.errors.most_common(n)


def parse_output_lines(lines: Iterable[bytes], family: Family, converse: bool) -> dict[str, RecordResult]:
    """recordId -> RecordResult from a batch job's .jsonl.out lines (success or error lines)."""
    results: dict[str, RecordResult] = {}
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for line in lines:
        if len(line) < 2:
            continue
        try:
            obj = loads(line)
        except decode_error:
            continue  # a torn line carries no recordId we could trust; its row reports no output
        rid = obj.get("recordId") if type(obj) is dict else None
        if type(rid) is str:
            results[rid] = result_of(obj, family, converse)
    return results


def result_of(obj: dict, family: Family, converse: bool) -> RecordResult:
    """The RecordResult of one parsed output line."""
    error = obj.get("error")
    if error is not None:
        if isinstance(error, dict):
            code, message = error.get("errorCode"), error.get("errorMessage")
            text = f"{code}: {message}" if code is not None and message else str(message or code)
        else:
            text = str(error)
        return RecordResult(error=text)
    output = obj.get("modelOutput")
    if not isinstance(output, dict):
        return RecordResult(error="no modelOutput in the result line")
    try:
        x = extract_output(family, converse, output)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
        return RecordResult(error=f"unreadable modelOutput: {type(e).__name__}: {e}")
    if x.text is None and x.embedding is None:
        return RecordResult(error="the model output has no text", input_tokens=x.input_tokens,
                            output_tokens=x.output_tokens)
    return RecordResult(text=x.text, embedding=x.embedding, input_tokens=x.input_tokens,
                        output_tokens=x.output_tokens)


ResultsForChunk = Callable[[Chunk], "Mapping[str, RecordResult] | Iterable[bytes]"]


def assemble(
    rows_path: Path, plan: SplitPlan, results_for_chunk: ResultsForChunk, *,
    out_format: OutFormat, out_stream: IO[bytes], family: Family, converse: bool = False,
) -> AssembleSummary:
    """Write every input row once, with record_id, output, error and token columns added.

    results_for_chunk may return a recordId -> RecordResult mapping, or the raw output lines
    (bytes) of that chunk's job, which are parsed here with family/converse.
    """
    configure_arrow_memory()
    summary = AssembleSummary()
    rows_file = pq.ParquetFile(rows_path, buffer_size=1 << 20, pre_buffer=False)
    input_schema = rows_file.schema_arrow
    names = _result_names(input_schema.names)
    schema = input_schema
    for name, typ in zip(names, (pa.string(), pa.string(), pa.string(), pa.int64(), pa.int64())):
        schema = schema.append(pa.field(name, typ))
    writer = _writer(out_format, out_stream, schema)
    row_batches = _RowReader(rows_file)
    try:
        for chunk in plan.assembly_chunks():
            got = results_for_chunk(chunk)
            results = got if isinstance(got, Mapping) else parse_output_lines(got, family, converse)
            del got
            for rows in row_batches.take(chunk.first_row, chunk.end_row):
                first = chunk.first_row + rows.start_in_chunk
                added = _result_arrays(first, rows.batch.num_rows, results, summary)
                writer.write(pa.RecordBatch.from_arrays(rows.batch.columns + added, schema=schema))
            del results
        row_batches.expect_end()
    finally:
        writer.close()
    return summary


def _result_names(input_names: list[str]) -> list[str]:
    # An input column may already be called "output" (say): ours then get a "bedrock_" prefix.
    taken = set(input_names)
    return [f"bedrock_{n}" if n in taken else n for n in RESULT_COLUMNS]


def _result_arrays(first_row: int, n: int, results: Mapping[str, RecordResult],
                   summary: AssembleSummary) -> list[pa.Array]:
    rids = record_ids(first_row, n)
    outputs: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    tin = np.zeros(n, dtype=np.int64)
    tout = np.zeros(n, dtype=np.int64)
    get = results.get
    for i, rid in enumerate(rids.to_pylist()):
        r = get(rid)
        if r is None:
            errors[i] = NO_OUTPUT
            continue
        if r.error is not None:
            errors[i] = r.error
        elif r.embedding is not None:
            outputs[i] = orjson.dumps(r.embedding).decode()
        else:
            outputs[i] = r.text
        tin[i] = r.input_tokens
        tout[i] = r.output_tokens
    failed = [e for e in errors if e is not None]
    summary.rows += n
    summary.failed += len(failed)
    summary.succeeded += n - len(failed)
    summary.input_tokens += int(tin.sum())
    summary.output_tokens += int(tout.sum())
    summary.errors.update(failed)
    return [rids, pa.array(outputs, type=pa.string()), pa.array(errors, type=pa.string()),
            pa.array(tin), pa.array(tout)]


@dataclass
class _Rows:
    batch: pa.RecordBatch
    start_in_chunk: int


class _RowReader:
    """rows.parquet read front to back once, handed out as contiguous row ranges."""

    def __init__(self, pf: pq.ParquetFile) -> None:
        self._batches = pf.iter_batches(batch_size=_ROW_BATCH, use_threads=True)
        self._held: pa.RecordBatch | None = None
        self._next_row = 0  # global row number of the first row of _held (or of the next batch)

    def take(self, first: int, end: int) -> Iterator[_Rows]:
        if first != self._next_row:
            raise ValueError(f"chunks must be contiguous and in order: expected row {self._next_row}, got {first}")
        while self._next_row < end:
            batch = self._held if self._held is not None else next(self._batches, None)
            self._held = None
            if batch is None:
                raise ValueError(f"rows.parquet ends at row {self._next_row}, but the plan goes to row {end}")
            want = end - self._next_row
            if batch.num_rows > want:
                self._held = batch.slice(want)
                batch = batch.slice(0, want)
            yield _Rows(batch, self._next_row - first)
            self._next_row += batch.num_rows

    def expect_end(self) -> None:
        extra = self._held.num_rows if self._held is not None else 0
        extra += sum(b.num_rows for b in self._batches)
        if extra:
            raise ValueError(f"the plan covers {self._next_row} rows but rows.parquet has {extra} more")


class _Writer:
    def write(self, batch: pa.RecordBatch) -> None: ...
    def close(self) -> None: ...


def _writer(fmt: OutFormat, out: IO[bytes], schema: pa.Schema) -> _Writer:
    if fmt == "csv":
        return _ArrowWriter(pacsv.CSVWriter(pa.PythonFile(out, mode="w"), schema))
    if fmt == "parquet":
        # Dictionary encoding of mostly-unique text cost more than the rest of assemble together.
        return _ArrowWriter(pq.ParquetWriter(pa.PythonFile(out, mode="w"), schema, compression="snappy",
                                             use_dictionary=False))
    if fmt == "jsonl":
        return _JsonlWriter(out, schema)
    raise ValueError(f"unknown output format {fmt!r}; use csv, jsonl or parquet")


class _ArrowWriter(_Writer):
    def __init__(self, inner) -> None:
        self._inner = inner

    def write(self, batch: pa.RecordBatch) -> None:
        self._inner.write_batch(batch)

    def close(self) -> None:
        self._inner.close()


class _JsonlWriter(_Writer):
    """One JSON object per row, built with pyarrow.compute: no per-row Python."""

    def __init__(self, out: IO[bytes], schema: pa.Schema) -> None:
        self._out = out
        self._keys = [orjson.dumps(n).decode() for n in schema.names]

    def write(self, batch: pa.RecordBatch) -> None:
        pieces: list = []
        for i, (key, col) in enumerate(zip(self._keys, batch.columns)):
            pieces.append(("{" if i == 0 else ",") + key + ":")
            pieces.append(_json_values(col))
        pieces.append("}\n")
        data, _ = string_array_bytes(pc.binary_join_element_wise(*pieces, ""))
        self._out.write(data)

    def close(self) -> None:
        self._out.flush()


def _json_values(col: pa.Array) -> pa.Array:
    if pa.types.is_string(col.type):
        quoted = pc.binary_join_element_wise('"', json_escape(pc.fill_null(col, "")), '"', "")
    else:
        quoted = pc.cast(col, pa.string())
    return pc.if_else(pc.is_null(col), "null", quoted) if col.null_count else quoted
