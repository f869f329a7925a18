"""Answers fanned out to the rows whose request repeated an earlier row's (shared/dataplane/duplicates.py).

postprocess walks the chunks in row order and a duplicate's first row always comes before it, so
the first row's result is known by the time its repeats are reached. Only the results of first rows
that still have repeats ahead are held, each until its last repeat is filled. A repeat's row gets
the first row's output and error, and no tokens: it was not billed (its tokens count as saved).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from shared.dataplane.assemble import ChunkResults


class FanOut:
    def __init__(self, dup_rows: np.ndarray, dup_of: np.ndarray) -> None:
        self._rows, self._of = dup_rows, dup_of
        # The last repeat of each first row: its held result is dropped once that row is filled.
        self._last: dict[int, int] = {}
        for row, of in zip(dup_rows.tolist(), dup_of.tolist()):
            self._last[of] = row
        self._held: dict[int, tuple[str | None, str | None, int, int]] = {}
        self.filled = 0
        self.saved_input_tokens = 0
        self.saved_output_tokens = 0

    def __bool__(self) -> bool:
        return bool(self._rows.size)

    def dup_rows_in(self, first: int, end: int) -> np.ndarray:
        a, b = np.searchsorted(self._rows, [first, end])
        return self._rows[a:b]

    def apply(self, first: int, results: ChunkResults) -> ChunkResults:
        """The chunk's results (rows from `first`) with every repeat filled from its first row."""
        n = len(results)
        end = first + n
        firsts = np.unique(self._of[(self._of >= first) & (self._of < end)])
        for row in firsts.tolist():
            i = row - first
            self._held[row] = (results.output[i].as_py(), results.error[i].as_py(),
                               int(results.input_tokens[i]), int(results.output_tokens[i]))
        a, b = np.searchsorted(self._rows, [first, end])
        if a == b:
            return results
        index = np.arange(n, dtype=np.int64)
        tin, tout = results.input_tokens.copy(), results.output_tokens.copy()
        outputs: list[str | None] = []
        errors: list[str | None] = []
        for row, of in zip(self._rows[a:b].tolist(), self._of[a:b].tolist()):
            output, error, used_in, used_out = self._held[of]
            index[row - first] = n + len(outputs)
            outputs.append(output)
            errors.append(error)
            tin[row - first] = tout[row - first] = 0
            if error is None:
                self.saved_input_tokens += used_in
                self.saved_output_tokens += used_out
            if self._last[of] == row:
                del self._held[of]
        self.filled += b - a
        take = pa.array(index)
        output = pa.concat_arrays([results.output, pa.array(outputs, type=results.output.type)]).take(take)
        error = pa.concat_arrays([results.error, pa.array(errors, type=results.error.type)]).take(take)
        return ChunkResults(output, error, tin, tout, results.extra)


