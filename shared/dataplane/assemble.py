"""Postprocess: join each job's results back to its input rows, every row exactly once, in order.

Bedrock writes results in no particular order and never retries a failed record, so results are
joined on recordId one chunk at a time: memory holds one chunk's results (at most 50,000) and one
batch of rows. A row whose record has no result line at all is reported as an error, not dropped.

Output files are read with Arrow's JSON reader (read_output_blocks): only recordId, error and the
family's output fields are kept (each line echoes its modelInput, most of its bytes), and results
are placed on their rows by recordId with numpy, never as one Python object per record. A file that
reader cannot read exactly as parse_output_lines would (a torn line, an unexpected type) is
reported as such, and the caller parses it line by line instead.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from shared.dataplane import configure_arrow_memory
from shared.dataplane.prepare import RECORD_ID_DIGITS, json_escape, record_ids, string_array_bytes
from shared.dataplane.splitter import Chunk, SplitPlan
from shared.domain.bodies import Family, extract_output

OutFormat = Literal["csv", "jsonl", "parquet"]
NO_OUTPUT = "no output: the record was not processed (no result line for it in the job's output)"
NO_MODEL_OUTPUT = "no modelOutput in the result line"
NO_TEXT = "the model output has no text"
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
        return RecordResult(error=NO_MODEL_OUTPUT)
    try:
        x = extract_output(family, converse, output)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
        return RecordResult(error=f"unreadable modelOutput: {type(e).__name__}: {e}")
    if x.text is None and x.embedding is None:
        return RecordResult(error=NO_TEXT, input_tokens=x.input_tokens,
                            output_tokens=x.output_tokens)
    return RecordResult(text=x.text, embedding=x.embedding, input_tokens=x.input_tokens,
                        output_tokens=x.output_tokens)


# --- results as arrays: read with Arrow, placed on rows with numpy ---------------------------------

# Output bytes handed to Arrow at once, cut at a line end: ~3,500 records of the benchmark's shape.
_PIECE_BYTES = 4 << 20
# Arrow parses a piece in blocks of this size on its thread pool; a longer line gets a block of its own.
_ARROW_BLOCK = 1 << 20


@dataclass(frozen=True)
class SourceResults:
    """One output file's results placed on its chunk's rows (0-based in the chunk, each at most once,
    a later line for the same record replacing an earlier one): output or error text, and tokens."""

    rows: np.ndarray
    output: pa.Array
    error: pa.Array
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def failed(self) -> np.ndarray:
        return _is_valid(self.error)


@dataclass(frozen=True)
class ChunkResults:
    """Every row of a chunk: its output, or its error (NO_OUTPUT where no file had its record), and tokens."""

    output: pa.Array
    error: pa.Array
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    # Columns beyond the five, in assemble's extra_fields order (an output_schema's typed columns).
    extra: tuple[pa.Array, ...] = ()

    def __len__(self) -> int:
        return len(self.error)


def read_output_blocks(blocks: Iterable[bytes], family: Family, converse: bool, *, first_row: int,
                       rows: int) -> SourceResults | None:
    """The results of one .jsonl.out file, read from its bytes (any split) for rows [first_row,
    first_row + rows); None where only parse_output_lines reads the file exactly (then call that)."""
    fields = _output_fields(family, converse)
    try:
        if fields is None:
            return None
        schema = pa.schema([("recordId", pa.string()), ("error", _ERROR_TYPE), ("modelOutput", fields[0])])
        parts: list[SourceResults] = []
        for piece in _line_pieces(blocks, _PIECE_BYTES):
            table = _read_json(piece, schema)
            if table is None:
                return None
            for batch in table.to_batches():
                part = _batch_results(batch, fields[1], first_row, rows)
                if part is None:
                    return None
                parts.append(part)
        return _last_per_row(_concat_sources(parts), rows)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()  # a file given up on midway: let its reader release the connection


def source_results_of(results: Mapping[str, RecordResult], *, first_row: int, rows: int) -> SourceResults:
    """SourceResults of a recordId -> RecordResult mapping (from parse_output_lines, or built by hand)."""
    placed, outputs, errors, tin, tout = [], [], [], [], []
    get = results.get
    for i, rid in enumerate(record_ids(first_row, rows).to_pylist()):
        r = get(rid)
        if r is None:
            continue
        placed.append(i)
        if r.error is not None:
            outputs.append(None)
            errors.append(r.error)
        else:
            outputs.append(orjson.dumps(r.embedding).decode() if r.embedding is not None else r.text)
            errors.append(None)
        tin.append(r.input_tokens)
        tout.append(r.output_tokens)
    tokens_in, tokens_out = np.zeros(len(placed), dtype=np.int64), np.zeros(len(placed), dtype=np.int64)
    for i, (a, b) in enumerate(zip(tin, tout)):
        tokens_in[i], tokens_out[i] = a, b  # numpy's own conversion of whatever the mapping held, as before
    return SourceResults(np.asarray(placed, dtype=np.int64), pa.array(outputs, type=pa.large_string()),
                         pa.array(errors, type=pa.large_string()), tokens_in, tokens_out)


def merge_results(rows: int, sources: Iterable[SourceResults]) -> ChunkResults:
    """A chunk's results from its files in order (job, retry, on demand): a later file's result
    replaces an earlier one only where that one is missing or an error."""
    winner = np.full(rows, -1, dtype=np.int64)  # index into the sources' results, end to end
    failed = np.zeros(rows, dtype=bool)
    kept: list[SourceResults] = []
    base = 0
    for source in sources:
        if not len(source.rows):
            continue  # so that a chunk answered by one file is taken from it, not from a concatenated copy
        take = (winner[source.rows] < 0) | failed[source.rows]
        placed = source.rows[take]
        winner[placed] = base + np.flatnonzero(take)
        failed[placed] = source.failed[take]
        base += len(source.rows)
        kept.append(source)
    found = winner >= 0
    index = pa.array(winner, mask=~found)
    merged = _concat_sources(kept)
    error = pc.if_else(pa.array(found), merged.error.take(index), pa.scalar(NO_OUTPUT, pa.large_string()))
    at = np.maximum(winner, 0)
    return ChunkResults(merged.output.take(index), error, np.where(found, _at(merged.input_tokens, at), 0),
                        np.where(found, _at(merged.output_tokens, at), 0))


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return values[index] if len(values) else np.zeros(len(index), dtype=np.int64)


def _concat_sources(parts: list[SourceResults]) -> SourceResults:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        empty = pa.array([], type=pa.large_string())
        return SourceResults(np.zeros(0, np.int64), empty, empty, np.zeros(0, np.int64), np.zeros(0, np.int64))
    return SourceResults(np.concatenate([p.rows for p in parts]), pa.concat_arrays([p.output for p in parts]),
                         pa.concat_arrays([p.error for p in parts]),
                         np.concatenate([p.input_tokens for p in parts]), np.concatenate([p.output_tokens for p in parts]))


def _last_per_row(s: SourceResults, rows: int) -> SourceResults:
    """Keep only the last line of each record, as a dict built line by line would."""
    if not len(s.rows) or np.bincount(s.rows, minlength=rows).max() <= 1:
        return s
    _, first_from_end = np.unique(s.rows[::-1], return_index=True)
    last = np.sort(len(s.rows) - 1 - first_from_end)
    index = pa.array(last)
    return SourceResults(s.rows[last], s.output.take(index), s.error.take(index), s.input_tokens[last],
                         s.output_tokens[last])


def _line_pieces(blocks: Iterable[bytes], size: int) -> Iterator[pa.Buffer]:
    """The bytes again, as pieces of about `size` that end at a line end (the last one may not).

    Pieces live in Arrow's allocator, which hands freed pages straight back: as Python bytes,
    pieces of a few MB made and dropped thousands of times kept ~40 MB of heap."""
    held: list[bytes] = []
    have = 0
    for block in blocks:
        if not block:
            continue
        held.append(block)
        have += len(block)
        if have < size:
            continue
        end = block.rfind(b"\n") + 1  # only the newest block: the older ones had no line end
        if end == 0:
            continue  # a line longer than a piece: read on to its end
        rest = len(block) - end
        yield _joined(held, have - rest, end)
        held = [block[end:]] if rest else []
        have = rest
    if have:
        yield _joined(held, have, len(held[-1]))


def _joined(blocks: list[bytes], size: int, last: int) -> pa.Buffer:
    """The blocks end to end, the last one only up to `last`, in one Arrow buffer of `size` bytes."""
    out = pa.allocate_buffer(size)
    with memoryview(out) as raw, raw.cast("B") as view:
        at = 0
        for block in blocks[:-1]:
            view[at:at + len(block)] = block
            at += len(block)
        view[at:size] = memoryview(blocks[-1])[:last]
    return out


def _read_json(piece: pa.Buffer, schema: pa.Schema) -> pa.Table | None:
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    for read in (pajson.ReadOptions(use_threads=True, block_size=_ARROW_BLOCK),
                 pajson.ReadOptions(use_threads=False, block_size=piece.size + 1)):
        try:
            return pajson.read_json(pa.BufferReader(piece), read_options=read, parse_options=parse)
        except pa.ArrowInvalid:
            continue  # a line longer than a block; else the second try fails the same way
    return None


def _batch_results(batch: pa.RecordBatch, extract: Callable, first_row: int, rows: int) -> SourceResults | None:
    """The results of one parsed batch of lines that belong to [first_row, first_row + rows)."""
    try:
        batch.validate(full=True)  # Arrow does not check the UTF-8 of the strings it kept; orjson does
    except pa.ArrowInvalid:
        return None
    rid = batch.column("recordId")
    # A recordId names a row of this chunk only as record_id(row) does: exactly 10 ASCII digits.
    named = _true(pc.and_(pc.equal(pc.utf8_length(rid), RECORD_ID_DIGITS), pc.ascii_is_decimal(rid)))
    row = np.full(len(batch), -1, dtype=np.int64)
    row[named] = pc.cast(rid.filter(pa.array(named)), pa.int64()).to_numpy() - first_row
    keep = (row >= 0) & (row < rows)
    error_line = batch.column("error")
    model_output = batch.column("modelOutput")
    text, tin, tout, unsure = extract(model_output)
    if (unsure & keep).any():
        return None
    has_error_line = _is_valid(error_line)
    no_output = ~has_error_line & ~_is_valid(model_output)
    error = pc.if_else(pa.array(has_error_line), _error_texts(error_line),
                       pc.if_else(pa.array(no_output), NO_MODEL_OUTPUT,
                                  pc.if_else(pc.is_null(text), NO_TEXT, pa.scalar(None, pa.string()))))
    output = pc.if_else(pc.is_null(error), text, pa.scalar(None, pa.string()))
    billed = ~has_error_line & ~no_output
    mask = pa.array(keep)
    return SourceResults(row[keep], pc.cast(output.filter(mask), pa.large_string()),
                         pc.cast(error.filter(mask), pa.large_string()),
                         np.where(billed, tin, 0)[keep], np.where(billed, tout, 0)[keep])


def _error_texts(error: pa.Array) -> pa.Array:
    """result_of's text for each error object: "code: message", else the message or the code."""
    code = pc.cast(pc.struct_field(error, "errorCode"), pa.string())
    message = pc.struct_field(error, "errorMessage")
    has_message = pc.fill_null(pc.greater(pc.utf8_length(message), 0), False)
    return pc.if_else(has_message, pc.coalesce(pc.binary_join_element_wise(code, message, ": "), message),
                      pc.coalesce(code, "None"))


# --- each family's output fields (shared.domain.bodies.extract_output, as Arrow types and compute) ---

_ERROR_TYPE = pa.struct([("errorCode", pa.int64()), ("errorMessage", pa.string())])
_TEXT_BLOCKS = pa.list_(pa.struct([("text", pa.string())]))
Extracted = tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]  # text, tokens in, tokens out, unsure


def _output_fields(family: Family, converse: bool) -> tuple[pa.DataType, Callable[[pa.Array], Extracted]] | None:
    """The modelOutput type to read and how to extract from it; None for Titan embeddings, whose
    numbers must come back as orjson writes the Python values (3 and 3.0 differ), which Arrow loses."""
    if converse or family == "nova":
        return _CONVERSE_TYPE, _converse
    return _FAMILY_FIELDS.get(family)


def _field(array: pa.Array, name: str) -> pa.Array:
    return pc.struct_field(array, name)  # null where the struct is null


def _tokens(array: pa.Array | None, n: int) -> np.ndarray:
    if array is None:
        return np.zeros(n, dtype=np.int64)
    return pc.fill_null(array, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _is_valid(array: pa.Array) -> np.ndarray:
    return array.is_valid().to_numpy(zero_copy_only=False)


def _true(mask: pa.Array) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _joined_texts(blocks: pa.Array) -> pa.Array:
    """bodies._first_text of each content list: its blocks' texts joined, or null if it has none."""
    flat = pc.list_flatten(blocks)
    parents = pc.list_parent_indices(blocks).to_numpy()
    texts = _field(flat, "text")
    has_text = _is_valid(texts)
    texts, parents = texts.filter(pa.array(has_text)), parents[has_text]
    counts = np.bincount(parents, minlength=len(blocks))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), texts), "")
    return pc.if_else(pa.array(counts > 0), joined, pa.scalar(None, pa.string()))


def _first(lists: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each list's first element (null if the list is null or empty), and where that element is
    JSON null: `(o.get(...) or [{}])[0].get(...)` raises there, which only the line path reports."""
    lengths = _tokens(pc.list_value_length(lists), len(lists))
    starts = lists.offsets.to_numpy()[:-1].astype(np.int64)
    first = lists.values.take(pa.array(starts, mask=lengths == 0))
    return first, (lengths > 0) & ~_is_valid(first)


def _converse(o: pa.Array) -> Extracted:
    output = _field(o, "output")
    message = _field(output, "message")
    usage = _field(o, "usage")
    # `(o.get("output") or {}).get("message", {})`: a missing message is {}, a null one raises.
    unsure = _is_valid(output) & ~_is_valid(message)
    return (_joined_texts(_field(message, "content")), _tokens(_field(usage, "inputTokens"), len(o)),
            _tokens(_field(usage, "outputTokens"), len(o)), unsure)


def _anthropic(o: pa.Array) -> Extracted:
    usage = _field(o, "usage")
    return (_joined_texts(_field(o, "content")), _tokens(_field(usage, "input_tokens"), len(o)),
            _tokens(_field(usage, "output_tokens"), len(o)), np.zeros(len(o), dtype=bool))


def _titan_text(o: pa.Array) -> Extracted:
    first, unsure = _first(_field(o, "results"))
    return (_field(first, "outputText"), _tokens(_field(o, "inputTextTokenCount"), len(o)),
            _tokens(_field(first, "tokenCount"), len(o)), unsure)


def _llama(o: pa.Array) -> Extracted:
    return (_field(o, "generation"), _tokens(_field(o, "prompt_token_count"), len(o)),
            _tokens(_field(o, "generation_token_count"), len(o)), np.zeros(len(o), dtype=bool))


def _first_block_text(name: str) -> Callable[[pa.Array], Extracted]:
    def extract(o: pa.Array) -> Extracted:
        first, unsure = _first(_field(o, name))
        return _field(first, "text"), _tokens(None, len(o)), _tokens(None, len(o)), unsure
    return extract


_CONVERSE_TYPE = pa.struct([
    ("output", pa.struct([("message", pa.struct([("content", _TEXT_BLOCKS)]))])),
    ("usage", pa.struct([("inputTokens", pa.int64()), ("outputTokens", pa.int64())]))])
_FAMILY_FIELDS: dict[str, tuple[pa.DataType, Callable[[pa.Array], Extracted]]] = {
    "anthropic": (pa.struct([("content", _TEXT_BLOCKS), ("usage", pa.struct([
        ("input_tokens", pa.int64()), ("output_tokens", pa.int64())]))]), _anthropic),
    "titan-text": (pa.struct([("results", pa.list_(pa.struct([("outputText", pa.string()), ("tokenCount", pa.int64())]))),
                              ("inputTextTokenCount", pa.int64())]), _titan_text),
    "llama": (pa.struct([("generation", pa.string()), ("prompt_token_count", pa.int64()),
                         ("generation_token_count", pa.int64())]), _llama),
    "mistral": (pa.struct([("outputs", _TEXT_BLOCKS)]), _first_block_text("outputs")),
    "cohere": (pa.struct([("generations", _TEXT_BLOCKS)]), _first_block_text("generations")),
}


ResultsForChunk = Callable[[Chunk], "ChunkResults | Mapping[str, RecordResult] | Iterable[bytes]"]


def assemble(
    rows_path: Path, plan: SplitPlan, results_for_chunk: ResultsForChunk, *,
    out_format: OutFormat, out_stream: IO[bytes], family: Family, converse: bool = False,
    extra_fields: Sequence[pa.Field] = (),
) -> AssembleSummary:
    """Write every input row once, with record_id, output, error and token columns added.

    results_for_chunk may return the chunk's ChunkResults (see merge_results), a recordId ->
    RecordResult mapping, or the raw output lines (bytes) of that chunk's job, which are parsed
    here with family/converse.
    """
    configure_arrow_memory()
    summary = AssembleSummary()
    rows_file = pq.ParquetFile(rows_path, buffer_size=1 << 20, pre_buffer=False)
    input_schema = rows_file.schema_arrow
    names = _result_names(input_schema.names)
    schema = input_schema
    for name, typ in zip(names, (pa.string(), pa.string(), pa.string(), pa.int64(), pa.int64())):
        schema = schema.append(pa.field(name, typ))
    for extra in extra_fields:
        schema = schema.append(extra)
    writer = _writer(out_format, out_stream, schema)
    row_batches = _RowReader(rows_file)
    try:
        for chunk in plan.assembly_chunks():
            results = _chunk_results(chunk, results_for_chunk(chunk), family, converse)
            _count(results, summary)
            for rows in row_batches.take(chunk.first_row, chunk.end_row):
                first = chunk.first_row + rows.start_in_chunk
                added = _result_arrays(first, rows.start_in_chunk, rows.batch.num_rows, results)
                writer.write(pa.RecordBatch.from_arrays(rows.batch.columns + added, schema=schema))
            del results
        row_batches.expect_end()
    finally:
        writer.close()
    return summary


def _chunk_results(chunk: Chunk, got: object, family: Family, converse: bool) -> ChunkResults:
    if isinstance(got, ChunkResults):
        if len(got) != chunk.end_row - chunk.first_row:
            raise ValueError(f"chunk {chunk.index} has {chunk.end_row - chunk.first_row} rows, its results {len(got)}")
        return got
    if not isinstance(got, Mapping):
        got = parse_output_lines(got, family, converse)
    n = chunk.end_row - chunk.first_row
    return merge_results(n, [source_results_of(got, first_row=chunk.first_row, rows=n)])


def _result_names(input_names: list[str]) -> list[str]:
    # An input column may already be called "output" (say): ours then get a "bedrock_" prefix.
    taken = set(input_names)
    return [f"bedrock_{n}" if n in taken else n for n in RESULT_COLUMNS]


def _count(results: ChunkResults, summary: AssembleSummary) -> None:
    n = len(results)
    failed = n - results.error.null_count
    summary.rows += n
    summary.failed += failed
    summary.succeeded += n - failed
    summary.input_tokens += int(results.input_tokens.sum())
    summary.output_tokens += int(results.output_tokens.sum())
    if failed:
        # value_counts lists values in order of first appearance, as Counter.update of a list would.
        counts = pc.value_counts(results.error.drop_null())
        summary.errors.update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def _result_arrays(first_row: int, start: int, n: int, results: ChunkResults) -> list[pa.Array]:
    """The added columns of rows [first_row, first_row + n), at `start` in their chunk's results."""
    return [record_ids(first_row, n), pc.cast(results.output.slice(start, n), pa.string()),
            pc.cast(results.error.slice(start, n), pa.string()),
            pa.array(results.input_tokens[start:start + n]), pa.array(results.output_tokens[start:start + n]),
            *(column.slice(start, n) for column in results.extra)]


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
