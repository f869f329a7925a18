"""Prompt templates: jinja2 in a sandbox over a row's columns, vectorized when the template allows.

A template that is only literal text and plain `{{ column }}` substitutions (the common case) is
rendered for a whole batch at once with pyarrow.compute; anything else (filters, conditions,
loops) renders row by row in an ImmutableSandboxedEnvironment, so a user's template can neither
reach Python internals nor mutate anything. Both paths render a null value as the empty string.
"""
from __future__ import annotations

from typing import Any

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared.dataplane.readers import InputError


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _environment() -> ImmutableSandboxedEnvironment:
    # No autoescape: prompts are plain text, not HTML. keep_trailing_newline so the prompt is
    # exactly what the user wrote.
    return ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                         keep_trailing_newline=True, finalize=_finalize)


class PromptTemplate:
    """A validated template over `columns`; raises InputError naming any column it lacks."""

    def __init__(self, source: str, columns: list[str]) -> None:
        self.source = source
        self.columns = list(columns)
        env = _environment()
        try:
            ast = env.parse(source)
        except jinja2.TemplateSyntaxError as e:
            raise InputError(f"the prompt template has a syntax error on line {e.lineno}: {e.message}; "
                             "write column values as {{ column_name }}") from e
        used = meta.find_undeclared_variables(ast)
        missing = sorted(used - set(self.columns))
        if missing:
            raise InputError(
                f"the prompt template uses {', '.join(missing)}, which the input does not have; "
                f"the input's columns are: {', '.join(self.columns)}")
        self.variables = sorted(used)
        self._template = env.from_string(source)
        self.parts = _plain_parts(ast)

    @property
    def vectorized(self) -> bool:
        """True when render_batch runs in pyarrow, not row by row."""
        return self.parts is not None

    def render_batch(self, batch: pa.RecordBatch) -> pa.StringArray:
        """One rendered prompt per row of `batch`."""
        if self.parts is not None:
            return self._render_vectorized(batch)
        return self.render_rows(batch)

    def render_rows(self, batch: pa.RecordBatch) -> pa.StringArray:
        """The per-row sandbox path (used for complex templates; public so tests can compare)."""
        cols = {c: batch.column(c).to_pylist() for c in self.variables}
        render = self._template.render
        out = []
        for i in range(batch.num_rows):
            try:
                out.append(render({c: v[i] for c, v in cols.items()}))
            except jinja2.TemplateError as e:
                raise InputError(f"the prompt template failed on row {i} of this batch: {e}") from e
        return pa.array(out, type=pa.string())

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
            return pa.array([self._template.render({})] * n, type=pa.string())
        if len(pieces) == 1:
            return pieces[0]
        return pc.binary_join_element_wise(*pieces, "")


def _plain_parts(ast: nodes.Template) -> list[tuple[str, str]] | None:
    """[("text", literal) | ("column", name)] when the template is only text and {{ name }}."""
    parts: list[tuple[str, str]] = []
    for node in ast.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts.append(("text", child.data))
            elif isinstance(child, nodes.Name) and child.ctx == "load":
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
