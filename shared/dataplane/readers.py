"""Input files as a stream of pyarrow RecordBatches of string columns, in constant memory.

The stream is any non-seekable binary file-like (an S3 StreamingBody read with one GET). CSV and
TSV go through pyarrow's streaming, multi-threaded CSV reader; JSONL is split into lines here and
parsed with orjson; Parquet needs random access, so it is spooled to a temporary file first.
Every value becomes a string (numbers keep their text exactly: "007" stays "007"), nulls stay null.

Errors name the file and the place, counted from 1 as an editor shows them: "line" is the line
of the file (a CSV header is line 1), "row" is the data row (the first row under a CSV header,
the first JSON line or the first Parquet row is row 1). Text must be UTF-8.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from collections import deque
from typing import IO, Literal

import numpy as np
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
# A row (one CSV record or JSON line) over this many bytes is refused before it is parsed: it is
# over the record limit anyway, and pyarrow cannot parse a row longer than its block.
DEFAULT_MAX_ROW_BYTES = 1_000_000
_NOT_UTF8 = "save the file as UTF-8 and upload it again"


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


@dataclass
class ReadProgress:
    """How far a CSV or TSV reader has scanned its input: the bytes, and the rows that ended in
    them (exact, however far ahead of the batches yielded so far the reader is). A Parquet file
    is read whole before its first batch: its size and row count."""

    bytes: int = 0
    rows: int = 0


def iter_batches(
    stream: IO[bytes], *, fmt: Format, gzipped: bool, name: str,
    batch_rows: int = DEFAULT_BATCH_ROWS, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    progress: ReadProgress | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield RecordBatches of string columns from `stream`, read once, front to back. `progress`
    (CSV, TSV and Parquet) is kept up to date with what the reader has scanned."""
    if gzipped:
        stream = _GzipReader(stream, name=name)
    if fmt in ("csv", "tsv"):
        yield from _rebatch(_iter_csv(stream, name=name, delimiter="," if fmt == "csv" else "\t",
                                      max_row_bytes=max_row_bytes, progress=progress), batch_rows)
    elif fmt == "jsonl":
        yield from _iter_jsonl(stream, name=name, batch_rows=batch_rows, max_row_bytes=max_row_bytes)
    elif fmt == "parquet":
        yield from _iter_parquet(stream, name=name, batch_rows=batch_rows, progress=progress)
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

    def __init__(self, raw: IO[bytes], *, name: str) -> None:
        self._inner = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "gzip")
        self._name = name

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(None if size is None or size < 0 else size)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{self._name}: the file is not valid gzip ({e}); upload it uncompressed or "
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


def _iter_csv(stream: IO[bytes], *, name: str, delimiter: str, max_row_bytes: int,
              progress: ReadProgress | None = None) -> Iterator[pa.RecordBatch]:
    head = _read_at_least(stream, _HEADER_PEEK_BYTES)
    if head.startswith(_BOM):
        head = head[len(_BOM):]
    if not head.strip():
        raise InputError(f"{name}: the file is empty; upload a file with a header row and at least one data row")
    check_text_encoding(head, name=name)
    header = _parse_header(head, name=name, delimiter=delimiter)
    check_column_names(header, name=name)
    quoting = delimiter == ","  # TSV has no quoting convention: quotes are literal text.
    scan = _RowScanner(_Prefixed(head, stream), name=name, quoting=quoting, max_row_bytes=max_row_bytes,
                       progress=progress)
    invalid: list = []

    def on_invalid_row(row) -> str:
        invalid.append(row)
        return "error"

    # The block must hold the longest row allowed: pyarrow cannot parse a row longer than a block.
    read_opts = pacsv.ReadOptions(block_size=max(_CSV_BLOCK_BYTES, max_row_bytes + 1),
                                  # One parsing thread: the only way pyarrow numbers the rows in its
                                  # errors, and no slower here (the reader is bound by the input).
                                  use_threads=False)
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False,
                                    newlines_in_values=quoting, invalid_row_handler=on_invalid_row)
    convert_opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                        strings_can_be_null=False, quoted_strings_can_be_null=False)
    rows_read = 0
    try:
        reader = pacsv.open_csv(scan, read_options=read_opts, parse_options=parse_opts, convert_options=convert_opts)
        for batch in reader:
            rows_read += batch.num_rows
            yield batch
    except pa.ArrowInvalid as e:
        raise _csv_error(e, name=name, header=header, rows_read=rows_read, scan=scan,
                         invalid=invalid[0] if invalid else None) from None
    if rows_read == 0:
        raise InputError(f"{name}: the file has a header ({', '.join(header)}) but no data rows; "
                         "add at least one row under the header")


def check_text_encoding(head: bytes, *, name: str) -> None:
    """A text input must be UTF-8: UTF-16 (with or without its BOM) is named as such."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{name}: line 1: the file is UTF-16 (it starts with a UTF-16 byte order mark), "
                         f"not UTF-8; {_NOT_UTF8}")
    zero = head.find(b"\x00")
    if zero >= 0:
        line = head.count(b"\n", 0, zero) + 1
        raise InputError(f"{name}: line {line}: the file holds NUL bytes, so it is not "
                         f"UTF-8 text (UTF-16 without a byte order mark looks like this); {_NOT_UTF8}")


def _parse_header(head: bytes, *, name: str, delimiter: str) -> list[str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        # The peek may end inside a multi-byte character: only bytes before that count.
        # A bad byte past the header is the row scanner's to report, with its line and row.
        if b"\n" not in head[: e.start] and e.start < len(head) - 4:
            raise InputError(f"{name}: line 1 (the header) is not UTF-8; {_NOT_UTF8}") from None
        text = head[: e.start].decode("utf-8")
    if delimiter == ",":
        row = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False))
    else:
        row = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0].split(delimiter)
    return row


_ROW_NUMBER = re.compile(r"Row #(\d+)")


def _csv_error(e: pa.ArrowInvalid, *, name: str, header: list[str], rows_read: int, scan: "_RowScanner",
               invalid) -> InputError:
    msg = str(e)
    number = _ROW_NUMBER.search(msg)
    # pyarrow numbers CSV records from 1 with the header as record 1, skipping empty lines.
    record = int(number.group(1)) - 1 if number else None
    if record is not None:
        line = scan.line_of_record(record)
        where = f"line {line} (row {record})" if line is not None else f"row {record}"
    else:
        where = f"a row after row {rows_read}"
    if invalid is not None or ("Expected" in msg and "columns" in msg):
        got = f"{invalid.actual_columns} fields" if invalid is not None else "a different number of fields"
        return InputError(
            f"{name}: {where} has {got}, but the header has {len(header)} ({', '.join(header)}). Quote "
            "fields that contain the delimiter, close every opening quote, and double quotes inside quoted "
            "fields (\"\")")
    if "UTF8" in msg or "utf8" in msg.lower():
        column = _column_from(msg, header)
        return InputError(f"{name}: {where}, field {column} is not UTF-8; {_NOT_UTF8}")
    if "straddl" in msg:
        return InputError(f"{name}: {where}: a row over the size limit of {scan.max_row_bytes:,} bytes")
    return InputError(f"{name}: cannot parse the CSV at {where}: {msg[:200]}")


def _column_from(msg: str, header: list[str]) -> str:
    marker = "column #"
    if marker in msg:
        digits = "".join(ch for ch in msg.split(marker, 1)[1][:6] if ch.isdigit())
        if digits and int(digits) < len(header):
            return repr(header[int(digits)])
    return "(unknown)"


class _RowScanner(io.RawIOBase):
    """The bytes of a CSV or TSV on their way to pyarrow, checked and counted at C speed.

    It refuses bytes that are not UTF-8 and any row longer than `max_row_bytes`, naming the line
    and row, before pyarrow sees them; and it keeps the last few blocks with the counts before
    each, so a parse error that pyarrow reports by record number is named by the file's line.
    Lines end at "\\n", "\\r\\n" or a lone "\\r", as pyarrow reads them; a line break inside a
    quoted field does not end a row (quotes are tracked by the parity of '"' bytes so far: a
    doubled quote inside a quoted field flips it twice). Empty rows are not counted, as pyarrow
    skips them.
    """

    _WINDOW = 8

    def __init__(self, raw: IO[bytes], *, name: str, quoting: bool, max_row_bytes: int,
                 progress: ReadProgress | None = None) -> None:
        self._raw, self._name, self._quoting = raw, name, quoting
        self._progress = progress
        self.max_row_bytes = max_row_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._state = _ScanState()
        self._window: deque[tuple[_ScanState, bytes]] = deque(maxlen=self._WINDOW)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        if chunk:
            self._scan(chunk)
        else:
            try:
                self._utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                raise self._not_utf8_at_end() from None
        return chunk

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def line_of_record(self, record: int) -> int | None:
        """The line a record (0 = the header) starts on, if it is in the last few blocks."""
        for state, chunk in self._window:
            for row in _rows_ending_in(state, chunk, self._quoting):
                if row.record == record:
                    return row.line
        if self._state.records == record:  # the open row, not ended yet
            return self._state.row_line
        return None

    def _scan(self, chunk: bytes) -> None:
        before = self._state
        self._window.append((before, chunk))
        pending = len(self._utf8.getstate()[0])
        try:
            self._utf8.decode(chunk)
        except UnicodeDecodeError as e:
            raise self._problem(before, chunk, max(e.start - pending, 0), "is not UTF-8") from None
        zero = chunk.find(b"\x00")
        if zero >= 0:
            raise self._problem(before, chunk, zero, "holds a NUL byte, so the file is not UTF-8 text (UTF-16 "
                                                     "looks like this)")
        newlines, breaks, in_quotes = _line_breaks(chunk, before.in_quotes, self._quoting)
        after = _ScanState(offset=before.offset + len(chunk), lines=before.lines + int(newlines.size),
                           records=before.records, in_quotes=in_quotes, row_start=before.row_start,
                           row_line=before.row_line, row_blank=before.row_blank)
        if breaks.size:
            starts = np.concatenate(([before.row_start - before.offset], breaks[:-1] + 1))
            lengths = breaks - starts
            if int(lengths.max()) > self.max_row_bytes:
                raise self._long_row(before, chunk)
            after.records += int(breaks.size) - _empty_rows(chunk, starts, lengths, before.row_blank)
            last = int(breaks[-1])
            after.row_start = before.offset + last + 1
            after.row_line = before.lines + int(np.searchsorted(newlines, last, side="right")) + 1
            after.row_blank = _blank(chunk[last + 1:])
        else:
            after.row_blank = before.row_blank and _blank(chunk)
        self._state = after
        if self._progress is not None:
            self._progress.bytes, self._progress.rows = after.offset, max(after.records - 1, 0)  # not the header
        if after.offset - after.row_start > self.max_row_bytes:
            raise self._too_long(after.row_line, after.records, after.offset - after.row_start, at_least=True)

    def _long_row(self, state: "_ScanState", chunk: bytes) -> InputError:
        for row in _rows_ending_in(state, chunk, self._quoting):
            if row.size > self.max_row_bytes:
                return self._too_long(row.line, row.record, row.size)
        raise AssertionError("a long row was found and then lost")  # pragma: no cover

    def _too_long(self, line: int, record: int, size: int, at_least: bool = False) -> InputError:
        what = "the header" if record == 0 else f"row {record}"
        size_text = f"over {size:,}" if at_least else f"{size:,}"
        return InputError(f"{self._name}: line {line} ({what}) has a field over the size limit of "
                          f"{self.max_row_bytes:,} bytes per row (the row is {size_text} bytes); shorten it, or "
                          "split the text over several rows")

    def _problem(self, state: "_ScanState", chunk: bytes, at: int, what: str) -> InputError:
        newlines, _, _ = _line_breaks(chunk[:at], state.in_quotes, self._quoting)
        line = state.lines + int(newlines.size) + 1
        record = state.records + sum(1 for _ in _rows_ending_in(state, chunk[:at], self._quoting))
        row = "the header" if record == 0 else f"row {record}"
        return InputError(f"{self._name}: line {line} ({row}) {what}; {_NOT_UTF8}")

    def _not_utf8_at_end(self) -> InputError:
        row = "the header" if self._state.records == 0 else f"row {self._state.records}"
        return InputError(f"{self._name}: line {self._state.lines + 1} ({row}) ends in the middle of a character, "
                          f"so the file is not UTF-8; {_NOT_UTF8}")


@dataclass
class _ScanState:
    offset: int = 0           # bytes scanned before
    lines: int = 0            # line breaks scanned before
    records: int = 0          # non-empty rows ended before (the header is record 0)
    in_quotes: bool = False
    row_start: int = 0        # where the open row starts, its line, and whether it is empty so far
    row_line: int = 1
    row_blank: bool = True


@dataclass(frozen=True)
class _Row:
    record: int
    line: int
    size: int


def _rows_ending_in(state: _ScanState, chunk: bytes, quoting: bool) -> Iterator[_Row]:
    """Each non-empty row that ends in `chunk`, scanned after `state` (the error path: Python speed)."""
    newlines, breaks, _ = _line_breaks(chunk, state.in_quotes, quoting)
    record, line, blank, start = state.records, state.row_line, state.row_blank, state.row_start - state.offset
    for end in breaks.tolist():
        blank = blank and _blank(chunk[max(start, 0):end])
        if not blank:
            yield _Row(record, line, end - start)
            record += 1
        line = state.lines + int(np.searchsorted(newlines, end, side="right")) + 1
        start, blank = end + 1, True


def _blank(data: bytes) -> bool:
    return not data.strip(b"\r")


def _empty_rows(chunk: bytes, starts: np.ndarray, lengths: np.ndarray, open_blank: bool) -> int:
    """How many of the rows ending in `chunk` are empty (nothing, or a "\\r" before "\\n")."""
    first_empty = open_blank and _blank(chunk[: int(starts[0] + lengths[0])])
    rest_starts, rest_lengths = starts[1:], lengths[1:]
    empty = int(np.count_nonzero(rest_lengths == 0))
    ones = rest_starts[rest_lengths == 1]
    if ones.size:
        empty += int(np.count_nonzero(np.frombuffer(chunk, dtype=np.uint8)[ones] == 13))
    return empty + int(first_empty)


def _line_breaks(chunk: bytes, in_quotes: bool, quoting: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """Offsets in `chunk` of every line break and of those that end a row (outside quotes), and
    whether the chunk ends inside quotes. A line break is "\\n" or a "\\r" not followed by "\\n"."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    is_break = data == 10
    if b"\r" in chunk:
        lone_cr = data == 13
        lone_cr[:-1] &= data[1:] != 10
        is_break |= lone_cr
    newlines = np.flatnonzero(is_break)
    if not quoting or (not in_quotes and b'"' not in chunk):
        return newlines, newlines, in_quotes
    quotes = np.flatnonzero(data == 34)
    # The quote state at a line break: the parity of the quotes before it, from the chunk's start state.
    inside = (np.searchsorted(quotes, newlines) + int(in_quotes)) % 2
    return newlines, newlines[inside == 0], bool((quotes.size + int(in_quotes)) % 2)


def _iter_jsonl(stream: IO[bytes], *, name: str, batch_rows: int, max_row_bytes: int) -> Iterator[pa.RecordBatch]:
    columns: list[str] | None = None
    rows: list[dict] = []
    line_no = row_no = 0
    reader = io.BufferedReader(_Prefixed(b"", stream), buffer_size=1 << 20)
    while raw := reader.readline(max_row_bytes + 2):
        line_no += 1
        if line_no == 1:
            if raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            check_text_encoding(raw, name=name)
        if len(raw.rstrip(b"\r\n")) > max_row_bytes:
            raise InputError(f"{name}: line {line_no} (row {row_no + 1}) has a field "
                             f"over the size limit of {max_row_bytes:,} bytes per row; shorten it, or split the text "
                             "over several rows")
        if not raw.strip():
            continue
        row_no += 1
        obj = _json_line(raw, name=name, where=f"line {line_no} (row {row_no})")
        if columns is None:
            columns = list(obj)
            column_set = set(columns)
            check_column_names(columns, name=name)
        elif obj.keys() != column_set:
            missing = [c for c in columns if c not in obj]
            extra = [c for c in obj if c not in columns]
            raise InputError(f"{name}: line {line_no} has different fields from the first line"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unexpected {', '.join(extra)}" if extra else "")
                             + "; give every line the same fields (use null for a missing value)")
        rows.append(obj)
        if len(rows) >= batch_rows:
            yield _jsonl_batch(rows, columns)
            rows = []
    if columns is None:
        raise InputError(f"{name}: the file is empty; upload a file with one JSON object per line")
    if rows:
        yield _jsonl_batch(rows, columns or [])


def _json_line(raw: bytes, *, name: str, where: str) -> dict:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name}: {where} is not UTF-8; {_NOT_UTF8}") from None
        if b"\x00" in raw:
            raise InputError(f"{name}: {where} holds a NUL byte, so the file is not UTF-8 text (UTF-16 "
                             f"looks like this); {_NOT_UTF8}") from None
        raise InputError(f"{name}: {where} is not valid JSON ({e}); each line must be one "
                         "JSON object") from None
    if not isinstance(obj, dict):
        raise InputError(f"{name}: {where} is a JSON {type(obj).__name__}, not an object; "
                         "each line must be one JSON object like {\"column\": \"value\"}")
    return obj


def _as_text(v: object) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return orjson.dumps(v).decode()


def _jsonl_batch(rows: list[dict], columns: list[str]) -> pa.RecordBatch:
    arrays = [pa.array([_as_text(r.get(c)) for r in rows], type=pa.string()) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, names=columns)


def _iter_parquet(stream: IO[bytes], *, name: str, batch_rows: int,
                  progress: ReadProgress | None = None) -> Iterator[pa.RecordBatch]:
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
        if progress is not None:  # the whole file is here: its footer says how many rows it has
            progress.bytes, progress.rows = spool.tell(), pf.metadata.num_rows
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
