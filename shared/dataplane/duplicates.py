"""Identical requests within a run are sent once: duplicates taken out of the spool, answers fanned out.

Two rows whose records carry the same request body (the run has one model) are one request: the
first row's record is sent, every later one is left out of the spool and, once the run's outputs
are in, gets the first row's answer (services/postprocess: fan_out). The spool is written by
prepare in row order (line i is row i) with one key order per run, so equal bodies are equal bytes.

Each line's request bytes (all after its recordId) are hashed to 64 bits; the hash's high bits and
the row in the low bits make one key a row, and sorting the keys in place puts equal hashes
together, each run of them in row order. Rows whose hash repeats are only candidates: each is
compared byte for byte with the earlier row's record (read back from the spool) before it is
called a duplicate, so a hash collision costs one comparison but never gives a row another row's
answer. Memory: 12 bytes a row (the key, then the line's end offset in its place, and the line's
size), never the records themselves; at 2.2M rows ~26 MB where 128-bit digests, int64 rows, a
lexsort and Python lists took ~150 MB.
"""
from __future__ import annotations

import array
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

# Every spool line starts `{"recordId":"<10 digits>",` (shared/dataplane/prepare.py).
_RID_PREFIX = b'{"recordId":"'
_BODY_AT = len(_RID_PREFIX) + 10 + 2
# Keys are shifted and compared this many at a time, so no temporary is as large as the keys.
_BLOCK = 1 << 16
_COPY_BYTES = 1 << 20


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
    hashes, sizes = _hash_lines(spool)
    dup_rows, dup_of = _candidates(hashes)
    if not dup_rows.size:
        return None
    # Each line's end offset, written over the keys (no longer needed): no second array of n.
    ends = np.cumsum(sizes, dtype=np.int64, out=hashes.view(np.int64))
    dup_rows, dup_of = _confirmed(spool, dup_rows, dup_of, ends=ends, sizes=sizes)
    if not dup_rows.size:
        return None
    out_path = workdir / "distinct.jsonl"
    _copy_without(spool, out_path, starts=ends[dup_rows] - sizes[dup_rows], stops=ends[dup_rows])
    del hashes, ends
    keep = np.ones(sizes.size, dtype=bool)
    keep[dup_rows] = False
    # int64, as the splitter works: it would otherwise make its own copy.
    kept_sizes = sizes[keep].astype(np.int64)
    del sizes
    return Duplicates(out_path, np.flatnonzero(keep), kept_sizes, dup_rows, dup_of)


def _hash_lines(spool: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each line's 64-bit hash of its modelInput bytes, and its size in bytes, in row order."""
    hashes = array.array("q")
    sizes = array.array("I")
    with open(spool, "rb") as src:
        for line in src:
            # Python's own bytes hash (SipHash, keyed per process): ~2x cheaper than BLAKE2b a
            # line, and a collision is caught by the byte comparison.
            hashes.append(hash(line[_BODY_AT:]))
            sizes.append(len(line))
    return np.frombuffer(hashes, dtype=np.uint64), np.frombuffer(sizes, dtype=np.uint32)


def _candidates(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows (ascending) whose hash an earlier row has, and the earliest row with that hash.

    Overwrites `hashes` with the sorted keys."""
    n = hashes.size
    # The row takes the bits it needs, the hash the rest: at 2.2M rows 42 bits of hash, about one
    # pair of different requests a run that collides (and is told apart by the comparison).
    row_bits = max(1, (n - 1).bit_length())
    low = np.uint64((1 << row_bits) - 1)
    keys = hashes  # made in place: hash's high bits, then the row
    for start in range(0, n, _BLOCK):
        block = keys[start:start + _BLOCK]
        block &= ~low
        block |= np.arange(start, start + block.size, dtype=np.uint64)
    keys.sort()  # in place: no second copy of the keys
    repeats = []
    for start in range(1, n, _BLOCK):
        high = keys[start - 1:start + _BLOCK] >> np.uint64(row_bits)
        repeats.append(start + np.flatnonzero(high[1:] == high[:-1]))
    at = np.concatenate(repeats) if repeats else np.zeros(0, dtype=np.int64)
    # A run of repeats at positions p, p+1, ... shares the key at p-1: the earliest row of that hash.
    run_starts = np.ones(at.size, dtype=bool)
    run_starts[1:] = at[1:] != at[:-1] + 1
    first_at = np.maximum.accumulate(np.where(run_starts, at - 1, 0))
    rows = (keys[at] & low).astype(np.int64)
    of = (keys[first_at] & low).astype(np.int64)
    order = np.argsort(rows)
    return rows[order], of[order]


def _confirmed(spool: Path, rows: np.ndarray, of: np.ndarray, *, ends: np.ndarray,
               sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidates whose request is byte-identical to an earlier row's, and that row."""
    same = np.zeros(rows.size, dtype=bool)
    of = of.copy()
    # The rows of a hash found to hold another request than its first row's, by that first row.
    others: dict[int, list[int]] = {}
    with open(spool, "rb") as src:
        def request(row: int) -> bytes:
            size = int(sizes[row])
            line = os.pread(src.fileno(), size, int(ends[row]) - size)
            if not line.startswith(b'%s%010d",' % (_RID_PREFIX, row)):
                raise ValueError(f"{spool}: line {row} is not row {row}'s record")
            return line[_BODY_AT:]

        for i in range(rows.size):  # not tolist(): at 200k candidates, ~14 MB of Python ints
            row, first = int(rows[i]), int(of[i])
            body = request(row)
            for earlier in [first, *others.get(first, ())]:
                if request(earlier) == body:
                    same[i], of[i] = True, earlier
                    break
            else:
                others.setdefault(first, []).append(row)  # a hash collision: a request of its own
    return rows[same], of[same]


def _copy_without(spool: Path, out_path: Path, *, starts: np.ndarray, stops: np.ndarray) -> None:
    """Copy `spool` to `out_path` leaving out the byte ranges [starts[i], stops[i]) (ascending)."""
    with open(spool, "rb") as src, open(out_path, "wb") as out:
        at = 0
        for i in range(starts.size):
            start, stop = int(starts[i]), int(stops[i])
            src.seek(at)
            left = start - at
            while left:
                piece = src.read(min(left, _COPY_BYTES))
                if not piece:
                    raise ValueError(f"{spool}: shorter than its lines' sizes")
                out.write(piece)
                left -= len(piece)
            at = stop
        src.seek(at)
        shutil.copyfileobj(src, out, _COPY_BYTES)


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
