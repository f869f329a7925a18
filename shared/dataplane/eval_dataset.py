"""An evaluation's dataset, read once and written as the JSONL every model's child run reads.

The file is streamed (one GET, any of the readers' formats) and each record becomes one JSON line:
its columns as they are, plus `input` (the column or rendered template the models answer),
`quarry_index` (its 0-based place in the file), `quarry_target` and `quarry_category`. Scoring
walks this file in step with every child's result file, row by row.

Three shapes need no mapping: fmeval's (`question`/`answer`, `model_input`/`target_output`),
Bedrock evaluation jobs' (`prompt`, `referenceResponse`, `category`) and Quarry's own batch result
files (an input column such as `prompt`, and `output`, which becomes the reference). The whole file
is used unless the config says `limit` (the first N) or `sample` (N drawn with `seed`): a sample
keeps the N rows with the smallest seeded random keys, so memory holds N rows, never the file.
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from typing import IO, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shared.dataplane.readers import InputError, detect_format, iter_batches
from shared.dataplane.sandbox import RenderLimits
from shared.dataplane.templates import PromptTemplate

INPUT = "input"
INDEX = "quarry_index"
TARGET = "quarry_target"
CATEGORY = "quarry_category"
RESERVED = (INDEX, TARGET, CATEGORY)

# Columns that hold the input, and the reference, in the shapes Quarry reads as they are.
_INPUT_COLUMNS = ("question", "model_input", "prompt", "input")
_TARGET_COLUMNS = ("answer", "target_output", "referenceResponse", "reference", "target")
_QUARRY_RESULT_COLUMNS = {"record_id", "output", "error"}


@dataclass(frozen=True)
class DatasetShape:
    """Which columns make the input, target and category (as the config said, or as detected)."""

    input_column: str | None
    template: str | None
    target: str
    category: str | None

    @property
    def input_description(self) -> str:
        return self.template if self.template is not None else f"column {self.input_column}"


@dataclass(frozen=True)
class StagedDataset:
    shape: DatasetShape
    rows: int  # records in the file
    used_rows: int  # records written (after limit or sample)
    content_hash: str  # sha256 of the file's bytes as read
    columns: list[str]


def detect_shape(columns: list[str], *, name: str, input_column: str | None, template: str | None,
                 target: str | None, category: str | None) -> DatasetShape:
    """The input, target and category columns: the config's, else the known shapes'; InputError
    naming the file and the columns it has when one cannot be found."""
    have = ", ".join(columns)
    quarry_result = _QUARRY_RESULT_COLUMNS <= set(columns)
    if template is None and input_column is None:
        input_column = next((c for c in _INPUT_COLUMNS if c in columns), None)
        if input_column is None:
            raise InputError(f"{name}: no input column found (looked for {', '.join(_INPUT_COLUMNS)}); name it with "
                             f"dataset.input, or give dataset.template. The file's columns are: {have}")
    elif input_column is not None and input_column not in columns:
        raise InputError(f"{name}: has no column {input_column!r} (dataset.input); its columns are: {have}")
    if target is None:
        target = next((c for c in _TARGET_COLUMNS if c in columns), None)
        if target is None and quarry_result:
            target = "output"
        if target is None:
            raise InputError(f"{name}: no target column found (looked for {', '.join(_TARGET_COLUMNS)}); name the "
                             f"column of reference answers with dataset.target. The file's columns are: {have}")
    elif target not in columns:
        raise InputError(f"{name}: has no target column {target!r} (dataset.target); its columns are: {have}")
    if category is None:
        category = "category" if "category" in columns else None
    elif category not in columns:
        raise InputError(f"{name}: has no category column {category!r} (dataset.category); its columns are: {have}")
    clash = [c for c in RESERVED if c in columns]
    if clash:
        raise InputError(f"{name}: the column name(s) {', '.join(clash)} are reserved for Quarry; rename them")
    return DatasetShape(input_column, template, target, category)


def stage_dataset(stream: IO[bytes], out: IO[bytes], *, name: str, input_column: str | None = None,
                  template: str | None = None, target: str | None = None, category: str | None = None,
                  limit: int | None = None, sample: int | None = None, seed: int = 1234,
                  row_timeout_s: float = 2.0, max_row_bytes: int = 1_000_000) -> StagedDataset:
    """Read `stream` once and write the records the models will answer to `out` as JSONL."""
    fmt, gzipped = detect_format(name)
    hashing = _Hashing(stream)
    batches = iter_batches(hashing, fmt=fmt, gzipped=gzipped, name=name, max_row_bytes=max_row_bytes)
    first = next(batches)
    columns = first.schema.names
    shape = detect_shape(columns, name=name, input_column=input_column, template=template, target=target,
                         category=category)
    renderer = PromptTemplate(template, columns, name=f"{name} (dataset.template)",
                              limits=RenderLimits(row_timeout_s=row_timeout_s)) if template is not None else None
    try:
        rows = 0
        kept: list[tuple[float, int, bytes]] = []  # a sample: (-key, index, line), a max-heap on the key
        rng = np.random.default_rng(seed)
        written = 0
        for batch in _chain(first, batches):
            lines = _lines(batch, rows, shape, renderer)
            if sample is not None:
                for key, index, line in zip(rng.random(len(lines)), range(rows, rows + len(lines)), lines):
                    if len(kept) < sample:
                        heapq.heappush(kept, (-key, index, line))
                    elif -kept[0][0] > key:
                        heapq.heapreplace(kept, (-key, index, line))
            else:
                take = lines if limit is None else lines[: max(0, limit - written)]
                for line in take:
                    out.write(line)
                written += len(take)
            rows += batch.num_rows
        if sample is not None:
            for _, _, line in sorted(kept, key=lambda item: item[1]):
                out.write(line)
            written = len(kept)
    finally:
        if renderer is not None:
            renderer.close()
    hashing.drain()
    if written == 0:
        raise InputError(f"{name}: the dataset has no records")
    return StagedDataset(shape, rows, written, hashing.hexdigest(), columns)


def _lines(batch: pa.RecordBatch, first_row: int, shape: DatasetShape, renderer: PromptTemplate | None) -> list[bytes]:
    if renderer is not None:
        inputs = renderer.render_batch(batch, first_row).to_pylist()
    else:
        column = batch.column(shape.input_column)
        inputs = (pc.fill_null(column, "") if column.null_count else column).to_pylist()
    targets = batch.column(shape.target).to_pylist()
    categories = batch.column(shape.category).to_pylist() if shape.category else [None] * batch.num_rows
    names = batch.schema.names
    values = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
    lines = []
    for i in range(batch.num_rows):
        record = {n: v[i] for n, v in zip(names, values)}
        record[INPUT] = inputs[i]
        record[INDEX] = str(first_row + i)
        record[TARGET] = targets[i]
        record[CATEGORY] = categories[i]
        lines.append(orjson.dumps(record) + b"\n")
    return lines


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def split_references(target: str | None, delimiter: str) -> list[str]:
    """The references a target holds (several joined by `delimiter`), stripped, empty ones left out."""
    if target is None:
        return []
    return [part.strip() for part in target.split(delimiter) if part.strip()]


class _Hashing:
    """A read-only stream that hashes what passes through it (the dataset's content hash)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if getattr(self._raw, "closed", False):
            return b""  # a reader closed it at its end: everything passed through already
        data = self._raw.read(size)
        self._sha.update(data)
        return data

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return False

    def drain(self) -> None:
        """Read what the readers left (a trailing newline): the hash covers the whole file."""
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
