"""Records already answered, taken out of a run's spool before its jobs are planned.

preprocess wrote every record to the spool in row order. With the response cache on, each record's
pair key (model id + canonical body) is looked up in the set of keys the cache holds for the model:
a cached record's answer goes to the cached file, as a Bedrock output line (`recordId`,
`modelInput`, `modelOutput`), and only the others stay in the spool the jobs are cut from. Both
files stay in row order, with their rows and line sizes kept, so chunks of rows map to byte ranges
of each without reading them again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from shared.dataplane.prepare import row_of
from shared.dataplane.splitter import Chunk, SplitPlan
from shared.domain.response_cache import response_key

_BATCH = 512


@dataclass(frozen=True)
class CacheSplit:
    """Rows and line sizes of the records still to send (in `spool`) and of those answered (in `cached`)."""

    spool: Path
    rows: np.ndarray
    sizes: np.ndarray
    cached: Path
    cached_rows: np.ndarray
    cached_sizes: np.ndarray

    @property
    def cached_count(self) -> int:
        return int(self.cached_rows.size)


def split_cached(spool: Path, *, model_id: str, known: set[str],
                 fetch: Callable[[list[str]], dict[str, dict[str, Any]]], workdir: Path) -> CacheSplit:
    """Move the records whose pair the cache holds out of `spool` (answers fetched with `fetch`)."""
    out_path, cached_path = workdir / "uncached.jsonl", workdir / "cached.jsonl"
    rows: list[int] = []
    sizes: list[int] = []
    cached_rows: list[int] = []
    cached_sizes: list[int] = []
    with open(spool, "rb") as src, open(out_path, "wb") as out, open(cached_path, "wb") as cached:
        def flush(pending: list[tuple[bytes, dict, str]]) -> None:
            answers = fetch([key for _, _, key in pending if key in known])
            for line, record, key in pending:
                row = row_of(record["recordId"])
                answer = answers.get(key)
                if answer is None:
                    out.write(line)
                    rows.append(row)
                    sizes.append(len(line))
                else:
                    text = orjson.dumps({"recordId": record["recordId"], "modelInput": record["modelInput"],
                                         "modelOutput": answer}) + b"\n"
                    cached.write(text)
                    cached_rows.append(row)
                    cached_sizes.append(len(text))

        pending: list[tuple[bytes, dict, str]] = []
        for line in src:
            record = orjson.loads(line)
            pending.append((line, record, response_key(model_id, record["modelInput"])))
            if len(pending) >= _BATCH:
                flush(pending)
                pending = []
        flush(pending)
    return CacheSplit(out_path, np.asarray(rows, dtype=np.int64), np.asarray(sizes, dtype=np.int64), cached_path,
                      np.asarray(cached_rows, dtype=np.int64), np.asarray(cached_sizes, dtype=np.int64))


def rows_of_chunks(plan: SplitPlan, split: CacheSplit, total_rows: int) -> list[Chunk]:
    """The plan's chunks (cut over the records still to send) as ranges of input rows: each chunk
    also covers the cached rows up to the next chunk, so every row belongs to exactly one chunk."""
    out = []
    for i, chunk in enumerate(plan.chunks):
        first = 0 if i == 0 else int(split.rows[chunk.first_row])
        end = total_rows if i == len(plan.chunks) - 1 else int(split.rows[plan.chunks[i + 1].first_row])
        out.append(Chunk(chunk.index, first, end, chunk.records, chunk.bytes, chunk.byte_offset))
    return out


def cached_byte_range(split: CacheSplit, first_row: int, end_row: int) -> tuple[int, int]:
    """(offset, length) in the cached file of the cached records of rows [first_row, end_row)."""
    a, b = np.searchsorted(split.cached_rows, [first_row, end_row])
    ends = np.concatenate([[0], np.cumsum(split.cached_sizes)])
    return int(ends[a]), int(ends[b] - ends[a])
