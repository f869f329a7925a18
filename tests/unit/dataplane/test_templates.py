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


# --- a hostile template fails its run with the file and row named, and never hangs the worker ------

from shared.dataplane.prepare import PrepareLimits, PrepareSpec, prepare  # noqa: E402
from shared.dataplane.sandbox import RenderLimits  # noqa: E402
from shared.dataplane.templates import check_template_syntax  # noqa: E402

ROWS = pa.RecordBatch.from_pydict({"q": ["a", "b", "c"], "Range": ["1", "2", "3"]})


def render(source: str, *, first_row: int = 0, **limits) -> list[str]:
    with PromptTemplate(source, ["q", "Range"], name="s3://in/rows.csv", limits=RenderLimits(**limits)) as t:
        return t.render_batch(ROWS, first_row).to_pylist()


def test_given_a_range_over_the_sandbox_cap_when_rendered_then_the_file_and_row_are_named():
    with pytest.raises(InputError, match=r"^s3://in/rows\.csv: the prompt template failed on row 41: OverflowError: Range too big"):
        render("{% for i in range(10**9) %}x{% endfor %}{{ q }}", first_row=40)


def test_given_an_output_of_a_jinja_global_over_a_column_of_another_case_when_built_then_it_names_both():
    with pytest.raises(InputError, match=r"^f\.csv: the prompt template outputs \{\{ range \}\}, which is not a column.*"
                                         r"the input has 'Range'"):
        PromptTemplate("{{ range }}", ["Range"], name="f.csv")


def test_given_nested_loops_under_the_range_cap_when_rendered_then_the_row_is_stopped_at_its_time_limit():
    import time

    started = time.monotonic()
    with pytest.raises(InputError, match=r"failed on row 1: rendering one row took over 0\.5 s and was stopped"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", row_timeout_s=0.5)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("source", ['{{ "x" * 10**9 }}', "{{ 7 ** 100000 }}"])
def test_given_an_expression_that_would_be_huge_when_rendered_then_the_sandbox_refuses_it(source):
    with pytest.raises(InputError, match="failed on row 1: SecurityError: .*too large"):
        render(source)


def test_given_a_filter_that_allocates_gigabytes_when_rendered_then_the_memory_cap_stops_it():
    with pytest.raises(InputError, match="failed on row 1: rendering one row needed more memory than allowed"):
        render('{{ ("x" * 1000000) | center(2000000000) }}', memory_bytes=512 << 20)


def test_given_a_prompt_over_the_record_limit_when_rendered_then_the_row_is_named():
    with pytest.raises(InputError, match=r"failed on row 1: the prompt is 2,000 bytes, over the limit of 1,000 bytes"):
        render('{{ "y" * 2000 }}', max_output_bytes=1_000)


def test_given_a_template_that_raises_when_prepared_then_the_file_and_row_are_named(tmp_path):
    import io

    data = b"q\n" + b"".join(b"row %d\n" % i for i in range(20)) + b"boom\n"
    with pytest.raises(InputError, match=r"^s3://in/x\.csv: the prompt template failed on row 21: "):
        prepare(io.BytesIO(data), name="s3://in/x.csv", workdir=tmp_path, limits=PrepareLimits(min_records=1),
                spec=PrepareSpec(model_id="anthropic.claude-3-haiku-20240307-v1:0",
                                 template="{% if q == 'boom' %}{{ q.missing.deeper }}{% endif %}{{ q }}"))


def test_given_a_syntax_error_when_checked_before_upload_then_the_line_is_named():
    with pytest.raises(InputError, match=r"^the --template: the prompt template has a syntax error on line 2"):
        check_template_syntax("ok\n{% if %}", name="the --template")
