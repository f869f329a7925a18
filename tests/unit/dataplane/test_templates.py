"""Prompt templates: fail fast on missing columns; vectorized and sandbox rendering agree."""
from __future__ import annotations

import pyarrow as pa
import pytest

from shared.dataplane.readers import InputError
from shared.dataplane.templates import PromptTemplate

BATCH = pa.RecordBatch.from_pydict({
    "q": ["What, \"now\"?", None, "line1\nline2", ""],
    "ctx": ["c1", "c2", None, "ünïcode ✓"],
})


def test_given_a_template_naming_a_missing_column_when_built_then_it_names_missing_and_available():
    with pytest.raises(InputError, match=r"uses answer, zeta, which the input does not have.*columns are: q, ctx"):
        PromptTemplate("{{ q }} {{ zeta }} {{ answer }}", ["q", "ctx"])


def test_given_a_syntax_error_when_built_then_it_names_the_line():
    with pytest.raises(InputError, match="syntax error on line 1"):
        PromptTemplate("{{ q ", ["q"])


def test_given_plain_substitutions_when_built_then_rendering_is_vectorized():
    assert PromptTemplate("Q: {{ q }}\nC: {{ctx}}\n", ["q", "ctx"]).vectorized


def test_given_a_filter_when_built_then_rendering_falls_back_to_the_sandbox():
    assert not PromptTemplate("{{ q | upper }}", ["q"]).vectorized


@pytest.mark.parametrize("source", [
    "Q: {{ q }}\nC: {{ctx}}\n",
    "{{ q }}",
    "{{q}}{{ctx}}",
    "no variables at all\n\n",
    "  {{ ctx }} then {{ q }} and {{ q }} again  ",
])
def test_given_a_plain_template_when_rendered_both_ways_then_the_results_agree(source):
    t = PromptTemplate(source, ["q", "ctx"])
    assert t.render_batch(BATCH).to_pylist() == t.render_rows(BATCH).to_pylist()


def test_given_null_values_when_rendered_then_they_are_empty_strings():
    t = PromptTemplate("[{{ q }}|{{ ctx }}]", ["q", "ctx"])
    assert t.render_batch(BATCH).to_pylist()[1:3] == ["[|c2]", "[line1\nline2|]"]


def test_given_a_conditional_template_when_rendered_then_each_row_gets_its_branch():
    t = PromptTemplate("{% if ctx %}{{ ctx }}{% else %}none{% endif %}", ["q", "ctx"])
    assert t.render_batch(BATCH).to_pylist() == ["c1", "c2", "none", "ünïcode ✓"]


def test_given_a_template_reaching_for_internals_when_rendered_then_the_sandbox_refuses():
    t = PromptTemplate("{{ q.__class__.__mro__ }}", ["q"])
    with pytest.raises(Exception, match="unsafe|not safely|access"):
        t.render_batch(BATCH)
