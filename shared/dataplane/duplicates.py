"""Identical requests within a run are sent once: duplicates taken out of the spool, answers fanned out.

Two rows whose records carry the same request body (the run has one model) are one request: the
first row's record is sent, every later one is left out of the spool and, once the run's outputs
are in, gets the first row's answer (services/postprocess: fan_out). Each record is hashed
(BLAKE2b, 128 bits) over its modelInput bytes as the spool holds them; the spool is written by
prepare with one key order per run, so equal bodies are equal bytes. Memory: 24 bytes a row (the
digest and the row), never the records themselves.
"""
from __future__ import annotations

import array
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

# Every spool line starts `{"recordId":"<10 digits>",` (shared/dataplane/prepare.py).
_RID_PREFIX = b'{"recordId":"'
_RID_AT = slice(len(_RID_PREFIX), len(_RID_PREFIX) + 10)
_BODY_AT = len(_RID_PREFIX) + 10 + 2


@dataclass(frozen=True)
class Duplicates:
    """The records still to send (in `spool`, their rows and line sizes) and, for each duplicate row
    (ascending), the row whose request it shares (always an earlier row)."""

    spool: Path
    rows: np.ndarray
    sizes: np.ndarray
    dup_rows: np.ndarray
    dup_of: np.ndarray

    @property
    def count(self) -> int:
        return int(self.dup_rows.size)


def split_duplicates(spool: Path, *, workdir: Path) -> Duplicates | None:
    """Leave every repeat of an earlier record's request out of `spool`; None when there is none."""
    digests = bytearray()
    # 8 bytes a row, not a Python int's 36: at 2.2M rows a list of them was ~80 MB of the worker's peak.
    rows = array.array("q")
    with open(spool, "rb") as src:
        for line in src:
            if not line.startswith(_RID_PREFIX):
                raise ValueError(f"{spool}: a spool line that does not start with its recordId")
            rows.append(int(line[_RID_AT]))
            digests += hashlib.blake2b(line[_BODY_AT:].rstrip(b"\n"), digest_size=16).digest()
    if not rows:
        return None
    row = np.frombuffer(rows, dtype=np.int64)
    halves = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)  # a view: no second copy of the digests
    order = np.lexsort((row, halves[:, 1], halves[:, 0]))
    sorted_halves = halves[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = np.any(sorted_halves[1:] != sorted_halves[:-1], axis=1)
    first_of_group = row[order][starts][np.cumsum(starts) - 1]
    primary = np.empty_like(row)
    primary[order] = first_of_group
    is_dup = primary != row
    if not is_dup.any():
        return None
    out_path = workdir / "distinct.jsonl"
    keep_rows: list[int] = []
    sizes: list[int] = []
    with open(spool, "rb") as src, open(out_path, "wb") as out:
        for i, line in enumerate(src):
            if not is_dup[i]:
                out.write(line)
                keep_rows.append(rows[i])
                sizes.append(len(line))
    dup_order = np.argsort(row[is_dup], kind="stable")
    return Duplicates(out_path, np.asarray(keep_rows, dtype=np.int64), np.asarray(sizes, dtype=np.int64),
                      row[is_dup][dup_order], primary[is_dup][dup_order])


def duplicates_bytes(dups: Duplicates) -> bytes:
    """The duplicate map as text, one `row first_row` pair a line in row order, for postprocess."""
    pairs = np.column_stack([dups.dup_rows, dups.dup_of])
    buffer = io.BytesIO()
    np.savetxt(buffer, pairs, fmt="%d")
    return buffer.getvalue()


def read_duplicates(lines: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate rows ascending, the row each shares its request with), read from the map's lines."""
    rows: list[int] = []
    of: list[int] = []
    for line in lines:
        if line.strip():
            a, b = line.split()
            rows.append(int(a))
            of.append(int(b))
    return np.asarray(rows, dtype=np.int64), np.asarray(of, dtype=np.int64)
