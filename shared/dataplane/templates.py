"""Prompt templates: jinja2 in a sandbox over a row's columns, vectorized when the template allows.

A template that is only literal text and plain `{{ column }}` substitutions (the common case) is
rendered for a whole batch at once with pyarrow.compute; anything else (filters, conditions,
loops) renders row by row in an ImmutableSandboxedEnvironment, so a user's template can neither
reach Python internals nor mutate anything. Those rows render in a child process with a time
limit per row and a memory cap (shared.dataplane.sandbox): a template that raises, loops for
ever or builds a huge string fails the run naming the file and the row, and never the worker.
Both paths render a null value as the empty string.
"""
from __future__ import annotations

import weakref
from typing import Any

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import meta, nodes

from shared.dataplane.readers import InputError
from shared.dataplane.sandbox import REQUEST_BYTES, REQUEST_ROWS, RenderFailed, RenderLimits, SandboxPool, environment

_FIX = "write column values as {{ column_name }}"


def check_template_syntax(source: str, *, name: str = "the prompt template") -> None:
    """Raise InputError if `source` is not a valid template (before any input is read)."""
    _parse(source, name=name)


def _parse(source: str, *, name: str) -> nodes.Template:
    try:
        return environment().parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise InputError(f"{name}: the prompt template has a syntax error on line {e.lineno}: {e.message}; "
                         f"{_FIX}") from e


class PromptTemplate:
    """A validated template over `columns`; raises InputError naming the file (`name`) and any
    column it lacks. Call close() (or use it as a context manager) to stop its sandbox processes."""

    def __init__(self, source: str, columns: list[str], *, name: str = "the input",
                 limits: RenderLimits | None = None) -> None:
        self.source = source
        self.columns = list(columns)
        self.name = name
        self._limits = limits or RenderLimits()
        ast = _parse(source, name=name)
        used = meta.find_undeclared_variables(ast)
        missing = sorted(used - set(self.columns))
        if missing:
            raise InputError(
                f"{name}: the prompt template uses {', '.join(missing)}, which the input does not have; "
                f"the input's columns are: {', '.join(self.columns)}")
        _check_outputs_are_columns(ast, self.columns, name=name)
        self.variables = sorted(used)
        self.parts = _plain_parts(ast, self.columns)
        self._pool: SandboxPool | None = None

    def __enter__(self) -> "PromptTemplate":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the sandbox processes (idempotent)."""
        if self._pool is not None:
            self._pool.close()

    @property
    def vectorized(self) -> bool:
        """True when render_batch runs in pyarrow, not row by row."""
        return self.parts is not None

    def render_batch(self, batch: pa.RecordBatch, first_row: int = 0) -> pa.StringArray:
        """One rendered prompt per row of `batch`, whose first row is input row `first_row` (0-based)."""
        if self.parts is not None:
            return self._render_vectorized(batch)
        return self.render_rows(batch, first_row)

    def render_rows(self, batch: pa.RecordBatch, first_row: int = 0) -> pa.StringArray:
        """The per-row sandbox path (used for complex templates; public so tests can compare)."""
        pool = self._sandbox()
        cols = {c: batch.column(c).to_pylist() for c in self.variables}
        out: list[str] = []
        start = 0
        while start < batch.num_rows:
            end = _request_end(cols, start, batch.num_rows)
            try:
                out += pool.render({c: v[start:end] for c, v in cols.items()}, end - start)
            except RenderFailed as e:
                raise self._failure(e, first_row + start, end - start) from None
            start = end
        return pa.array(out, type=pa.string())

    def _sandbox(self) -> SandboxPool:
        if self._pool is None:
            self._pool = SandboxPool(self.source, self._limits)
            weakref.finalize(self, self._pool.close)
        return self._pool

    def _failure(self, e: RenderFailed, first_row: int, rows: int) -> InputError:
        if e.row is not None:
            where = f"row {first_row + e.row + 1}"
        else:
            where = f"rows {first_row + 1}-{first_row + rows}"
        advice = {
            "timeout": "make the template do less per row (loops over large ranges are the usual cause)",
            "memory": "make the template build less text per row",
            "crash": "make the template build less text per row",
            "size": "shorten the template's output or the row's text",
        }.get(e.kind, f"fix the template; {_FIX}")
        return InputError(f"{self.name}: the prompt template failed on {where}: {e.message}; {advice}")

    def _render_vectorized(self, batch: pa.RecordBatch) -> pa.StringArray:
        n = batch.num_rows
        pieces: list[Any] = []
        for kind, value in self.parts or []:
            if kind == "text":
                pieces.append(value)
            else:
                col = batch.column(value)
                pieces.append(pc.fill_null(col, "") if col.null_count else col)
        if not any(isinstance(p, (pa.Array, pa.ChunkedArray)) for p in pieces):
            return pa.array(["".join(pieces)] * n, type=pa.string())
        if len(pieces) == 1:
            return pieces[0]
        return pc.binary_join_element_wise(*pieces, "")


def _request_end(cols: dict[str, list[Any]], start: int, total: int) -> int:
    """The end of the next request to the sandbox: at most REQUEST_ROWS rows and about REQUEST_BYTES."""
    end, size = start, 0
    limit = min(total, start + REQUEST_ROWS)
    while end < limit:
        size += sum(len(v[end]) for v in cols.values() if isinstance(v[end], str))
        end += 1
        if size >= REQUEST_BYTES:
            break
    return end


def _check_outputs_are_columns(ast: nodes.Template, columns: list[str], *, name: str) -> None:
    """`{{ name }}` of something that is not a column (jinja's `range`, `dict`, ... globals) is a
    mistake: most often a column whose name differs in case (`Range`)."""
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for output in ast.find_all(nodes.Output):
        for child in output.nodes:
            if isinstance(child, nodes.Name) and child.name not in columns and child.name not in assigned:
                similar = [c for c in columns if c.lower() == child.name.lower()]
                hint = f" (names are case-sensitive: the input has {similar[0]!r})" if similar else ""
                raise InputError(f"{name}: the prompt template outputs {{{{ {child.name} }}}}, which is not a column "
                                 f"of the input{hint}; the input's columns are: {', '.join(columns)}")


def _plain_parts(ast: nodes.Template, columns: list[str]) -> list[tuple[str, str]] | None:
    """[("text", literal) | ("column", name)] when the template is only text and {{ column }}."""
    parts: list[tuple[str, str]] = []
    for node in ast.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts.append(("text", child.data))
            elif isinstance(child, nodes.Name) and child.ctx == "load" and child.name in columns:
                parts.append(("column", child.name))
            else:
                return None
    merged: list[tuple[str, str]] = []
    for kind, value in parts:
        if kind == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + value)
        elif not (kind == "text" and value == ""):
            merged.append((kind, value))
    return merged
