"""Input files as a stream of pyarrow RecordBatches of string columns, in constant memory.

The stream is any non-seekable binary file-like (an S3 StreamingBody read with one GET). CSV and
TSV go through pyarrow's streaming, multi-threaded CSV reader; JSONL is split into lines here and
parsed with orjson; Parquet needs random access, so it is spooled to a temporary file first.
Every value becomes a string (numbers keep their text exactly: "007" stays "007"), nulls stay null.
"""
from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.errors import PermanentError

Format = Literal["csv", "tsv", "jsonl", "parquet"]

_SUFFIXES: dict[str, Format] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                                ".parquet": "parquet"}
_BOM = b"\xef\xbb\xbf"
DEFAULT_BATCH_ROWS = 8_192
# pyarrow's CSV block: 1 MiB keeps peak memory near 100 MB with reader threads on; 4 MiB doubles it
# for no speed gain. Blocks are then regrouped into batches of about batch_rows rows.
_CSV_BLOCK_BYTES = 1 << 20
_HEADER_PEEK_BYTES = 1 << 20


class InputError(PermanentError, ValueError):
    """The input file (or the spec applied to it) cannot be processed; the message says where
    and what to fix. Retrying cannot help."""


def detect_format(name: str) -> tuple[Format, bool]:
    """(format, gzipped) from a file name: .csv .tsv .jsonl .ndjson .parquet, each maybe .gz."""
    lower = name.lower()
    gzipped = lower.endswith(".gz")
    if gzipped:
        lower = lower[:-3]
    for suffix, fmt in _SUFFIXES.items():
        if lower.endswith(suffix):
            return fmt, gzipped
    raise InputError(
        f"{name}: unknown file type; name the file with one of "
        f"{', '.join(_SUFFIXES)} (optionally followed by .gz)")


def iter_batches(
    stream: IO[bytes], *, fmt: Format, gzipped: bool, name: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Yield RecordBatches of string columns from `stream`, read once, front to back."""
    if gzipped:
        stream = _GzipReader(stream)
    if fmt in ("csv", "tsv"):
        yield from _rebatch(_iter_csv(stream, name=name, delimiter="," if fmt == "csv" else "\t"), batch_rows)
    elif fmt == "jsonl":
        yield from _iter_jsonl(stream, name=name, batch_rows=batch_rows)
    elif fmt == "parquet":
        yield from _iter_parquet(stream, name=name, batch_rows=batch_rows)
    else:
        raise InputError(f"{name}: unsupported format {fmt!r}")


def _rebatch(batches: Iterator[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Group small batches into ones of at least batch_rows rows (fewer calls, fewer row groups)."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        if count >= batch_rows:
            yield held[0] if len(held) == 1 else pa.concat_batches(held)
            held, count = [], 0
    if held:
        yield held[0] if len(held) == 1 else pa.concat_batches(held)


class _GzipReader(io.RawIOBase):
    """gzip decompression in pyarrow (zlib without the GIL) over a Python stream."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._inner = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "gzip")

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(None if size is None or size < 0 else size)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"the file is not valid gzip ({e}); upload it uncompressed or "
                             "re-compress it with gzip") from e

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Prefixed(io.RawIOBase):
    """`head` followed by the rest of `tail`: lets us peek at a non-seekable stream."""

    def __init__(self, head: bytes, tail: IO[bytes]) -> None:
        self._head, self._tail = head, tail

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                out, self._head = self._head + self._tail.read(), b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._tail.read(size)

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _read_at_least(stream: IO[bytes], n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def check_column_names(names: list[str], *, name: str) -> None:
    """Column names must be non-empty and unique: they become template variables and output keys."""
    empty = [i + 1 for i, c in enumerate(names) if not c.strip()]
    if empty:
        raise InputError(f"{name}: column(s) {', '.join(map(str, empty))} of the header have no name; "
                         "give every column a unique, non-empty name")
    dups = sorted({c for c in names if names.count(c) > 1})
    if dups:
        raise InputError(f"{name}: duplicate column name(s) {', '.join(map(repr, dups))}; "
                         "rename them so every column name is unique")


def _iter_csv(stream: IO[bytes], *, name: str, delimiter: str) -> Iterator[pa.RecordBatch]:
    head = _read_at_least(stream, _HEADER_PEEK_BYTES)
    if head.startswith(_BOM):
        head = head[len(_BOM):]
    if not head.strip():
        raise InputError(f"{name}: the file is empty; upload a file with a header row and at least one data row")
    header = _parse_header(head, name=name, delimiter=delimiter)
    check_column_names(header, name=name)
    quoting = delimiter == ","  # TSV has no quoting convention: quotes are literal text.
    read_opts = pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES, use_threads=True)
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False,
                                    newlines_in_values=quoting)
    convert_opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                        strings_can_be_null=False, quoted_strings_can_be_null=False)
    rows_read = 0
    try:
        reader = pacsv.open_csv(_Prefixed(head, stream), read_options=read_opts,
                                parse_options=parse_opts, convert_options=convert_opts)
        for batch in reader:
            rows_read += batch.num_rows
            yield batch
    except pa.ArrowInvalid as e:
        raise _csv_error(e, name=name, header=header, rows_read=rows_read) from e
    if rows_read == 0:
        raise InputError(f"{name}: the file has a header ({', '.join(header)}) but no data rows; "
                         "add at least one row under the header")


def _parse_header(head: bytes, *, name: str, delimiter: str) -> list[str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        # The peek may end inside a multi-byte character: only bytes before that count.
        if e.start < len(head) - 4:
            raise InputError(f"{name}: byte {e.start} is not UTF-8 (near the header); save the file "
                             "as UTF-8 and upload it again") from e
        text = head[: e.start].decode("utf-8")
    if delimiter == ",":
        row = next(csv.reader(io.StringIO(text), delimiter=delimiter, strict=False))
    else:
        row = text.split("\n", 1)[0].rstrip("\r").split(delimiter)
    return row


def _csv_error(e: pa.ArrowInvalid, *, name: str, header: list[str], rows_read: int) -> InputError:
    msg = str(e)
    where = f"after data row {rows_read} (rows before it were read)"
    if "Expected" in msg and "columns" in msg:
        return InputError(
            f"{name}: a row {where} has the wrong number of fields: {msg.split('CSV parse error: ')[-1][:300]}; "
            f"the header has {len(header)} fields ({', '.join(header)}). Quote fields that contain "
            "the delimiter, close every opening quote, and double quotes inside quoted fields (\"\")")
    if "UTF8" in msg or "utf8" in msg.lower():
        column = _column_from(msg, header)
        return InputError(f"{name}: field {column} holds bytes that are not UTF-8, in a row {where}; "
                          "save the file as UTF-8 and upload it again")
    return InputError(f"{name}: cannot parse the CSV {where}: {msg[:300]}")


def _column_from(msg: str, header: list[str]) -> str:
    marker = "column #"
    if marker in msg:
        digits = "".join(ch for ch in msg.split(marker, 1)[1][:6] if ch.isdigit())
        if digits and int(digits) < len(header):
            return repr(header[int(digits)])
    return "(unknown)"


def _iter_jsonl(stream: IO[bytes], *, name: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    columns: list[str] | None = None
    rows: list[dict] = []
    line_no = 0
    saw_any = False
    for raw in io.BufferedReader(_Prefixed(b"", stream), buffer_size=1 << 20):
        line_no += 1
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        if not raw.strip():
            continue
        saw_any = True
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InputError(f"{name}: line {line_no} is not valid JSON ({e}); each line must be one "
                             "JSON object") from e
        if not isinstance(obj, dict):
            raise InputError(f"{name}: line {line_no} is a JSON {type(obj).__name__}, not an object; "
                             "each line must be one JSON object like {\"column\": \"value\"}")
        if columns is None:
            columns = list(obj)
            column_set = set(columns)
            check_column_names(columns, name=name)
        elif obj.keys() != column_set:
            missing = [c for c in columns if c not in obj]
            extra = [c for c in obj if c not in columns]
            raise InputError(f"{name}: line {line_no} has different fields from line 1"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unexpected {', '.join(extra)}" if extra else "")
                             + "; give every line the same fields (use null for a missing value)")
        rows.append(obj)
        if len(rows) >= batch_rows:
            yield _jsonl_batch(rows, columns)
            rows = []
    if not saw_any:
        raise InputError(f"{name}: the file is empty; upload a file with one JSON object per line")
    if rows:
        yield _jsonl_batch(rows, columns or [])


def _as_text(v: object) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return orjson.dumps(v).decode()


def _jsonl_batch(rows: list[dict], columns: list[str]) -> pa.RecordBatch:
    arrays = [pa.array([_as_text(r.get(c)) for r in rows], type=pa.string()) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, names=columns)


def _iter_parquet(stream: IO[bytes], *, name: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    with tempfile.NamedTemporaryFile(prefix="quarry-input-", suffix=".parquet") as spool:
        shutil.copyfileobj(stream, spool, 8 << 20)
        spool.flush()
        if spool.tell() == 0:
            raise InputError(f"{name}: the file is empty; upload a Parquet file with at least one row")
        try:
            # Stream pages: by default a whole row group (often 1M rows, 600+ MB) is loaded at once.
            pf = pq.ParquetFile(spool.name, buffer_size=1 << 20, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{name}: not a readable Parquet file ({e}); check that it was written "
                             "completely, or name it .csv/.jsonl if it is not Parquet") from e
        names = pf.schema_arrow.names
        check_column_names(names, name=name)
        if pf.metadata.num_rows == 0:
            raise InputError(f"{name}: the Parquet file has columns ({', '.join(names)}) but no rows")
        for batch in pf.iter_batches(batch_size=batch_rows, use_threads=True):
            yield pa.RecordBatch.from_arrays(
                [_to_string(col, field=f, name=name) for col, f in zip(batch.columns, batch.schema)],
                names=names)


def _to_string(col: pa.Array, *, field: pa.Field, name: str) -> pa.Array:
    if pa.types.is_string(col.type):
        return col
    if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
        return col.cast(pa.string())
    try:
        return pc.cast(col, pa.string())
    except pa.ArrowInvalid as e:
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            raise InputError(f"{name}: column {field.name!r} holds bytes that are not UTF-8 text; "
                             "store text columns as UTF-8 strings") from e
    except pa.ArrowNotImplementedError:
        pass
    # Nested values (lists, structs, maps) become their JSON text.
    return pa.array([_as_text(v) for v in col.to_pylist()], type=pa.string())
