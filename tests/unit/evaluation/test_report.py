"""The evaluation report's HTML: what it says, that model text stays text, and that it is capped."""
from __future__ import annotations

import json
import re

import pytest

from shared.evaluation.report import (
    DEFAULT_RECORD_LIMIT,
    disagree,
    fmt_usd,
    nice_ticks,
    render_report,
    spread,
)
from shared.evaluation.results import Interval, ModelAnswer, RecordRow, Selection, records_to_arrow
from tests.support.evaluation_fixtures import FAILED, MODELS, make_records, make_results

HOSTILE = "<script>alert(1)</script></script><img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def records():
    return make_records(60)


@pytest.fixture(scope="module")
def results(records):
    return make_results(records)


@pytest.fixture(scope="module")
def html(results, records):
    return render_report(results, records)


def embedded(html: str) -> dict:
    """The per-record JSON the page's script reads."""
    match = re.search(r'<script type="application/json" id="records-data">(.*?)</script>', html, re.S)
    assert match, "no embedded records"
    return json.loads(match.group(1))


def section(html: str, id_: str) -> str:
    start = html.index(f'<section id="{id_}"')
    return html[start:html.index("</section>", start)]


def test_the_summary_names_every_model_with_its_means_and_intervals(results, html):
    summary = section(html, "summary")
    for model in results.models:
        assert model.name in summary
        assert model.model_id in summary
        for metric, s in model.metrics.items():
            assert f"{s.mean:.3f}" in summary
            assert f"[{s.ci.low:.3f}, {s.ci.high:.3f}]" in summary


def test_the_summary_gives_cost_counts_and_decoding_parameters(results, html):
    summary = section(html, "summary")
    haiku = results.model("claude-haiku")
    assert fmt_usd(haiku.cost.total_usd) in summary
    assert fmt_usd(haiku.cost.full_batch_usd) in summary
    assert "max_tokens=64" in summary and "temperature=0.0" in summary
    row = summary[summary.index('data-model="claude-haiku"'):summary.index('data-model="titan-lite"')]
    assert [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row)] == [
        haiku.records, haiku.errors, haiku.from_cache]


def test_a_failed_model_is_listed_apart_and_left_out_of_the_record_view(html):
    summary = section(html, "summary")
    assert FAILED[0] in summary[summary.index('id="failed-table"'):]
    assert FAILED[0] not in summary[:summary.index('id="failed-table"')]
    assert embedded(html)["models"] == list(MODELS)


def test_a_winner_is_stated_with_its_margin_and_interval(results, html):
    outcome = section(html, "outcome")
    s = results.selection
    assert "Winner: claude-haiku" in outcome
    assert f"{s.margin:+.3f}" in outcome
    assert f"[{s.margin_ci.low:.3f}, {s.margin_ci.high:.3f}]" in outcome
    assert "tuned-lite" in outcome


def test_no_significant_difference_is_stated_with_the_cheapest_tied_model(results, records):
    tie = results.model_copy(update={"selection": Selection(
        outcome="no_significant_difference", primary_metric="exact_match", min_effect=0.02, alpha=0.05,
        recommended="tuned-lite", tied=["claude-haiku", "tuned-lite"], failed=[FAILED[0]],
        reason="no model leads by more than 0.02 with Holm p < 0.05")})

    outcome = section(render_report(tie, records), "outcome")

    assert "No significant difference" in outcome
    assert "Winner" not in outcome
    assert "Recommended model: <strong>tuned-lite</strong>" in outcome
    assert "claude-haiku, tuned-lite" in outcome


def test_the_forest_plot_has_a_zero_line_and_an_interval_per_comparison(results, html):
    differences = section(html, "differences")
    primary = differences[differences.index('class="plot forest forest-primary"'):]
    primary = primary[:primary.index("</svg>")]
    assert primary.count('<g class="comparison') == 3
    assert primary.count('<line class="zero"') == 1
    for c in results.comparisons:
        if c.metric == "exact_match":
            assert f"{c.mean_difference:+.3f} [{c.ci.low:.3f}, {c.ci.high:.3f}]" in primary


def test_cost_against_quality_marks_the_pareto_front(results, html):
    plot = section(html, "cost-quality")
    assert plot.count('<g class="point') == len(results.pareto)
    assert plot.count('class="point on-front"') == sum(p.on_front for p in results.pareto)
    assert '<polyline class="front"' in plot


def test_the_categories_table_gives_each_category_per_model(results, html):
    categories = section(html, "categories")
    for cat in ("history", "science", "sport"):
        assert f'<th scope="row">{cat}</th>' in categories
    s = results.model("titan-lite").categories["science"]["exact_match"]
    assert f"{s.mean:.3f}" in categories and f"n={s.n}" in categories


def test_model_text_that_is_markup_is_escaped_and_inert(results, records):
    first = records[0]
    rows = [first.model_copy(update={
        "input": HOSTILE, "target": HOSTILE, "category": HOSTILE,
        "models": {**first.models, "claude-haiku": ModelAnswer(output=HOSTILE, error=None,
                                                              scores={"exact_match": 0.0})},
    })] + records[1:]
    hostile = results.model_copy(update={"run_id": HOSTILE})

    html = render_report(hostile, rows)

    assert HOSTILE not in html
    assert "<img" not in html
    # Only the page's own two script elements open and close.
    assert html.count("<script") == 2
    assert html.count("</script>") == 2
    data = embedded(html)
    assert data["records"][0]["input"] == HOSTILE
    assert data["records"][0]["a"][0]["out"] == HOSTILE
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the run id and the category option, as text


def test_the_page_needs_nothing_from_outside(html):
    assert not re.search(r'\b(src|href)\s*=\s*"(?!#)', html)
    assert "<link" not in html
    assert "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html


def test_a_huge_record_count_is_capped_with_a_notice(results):
    base = make_records(10)
    total = DEFAULT_RECORD_LIMIT + 1_500
    many = (base[i % 10].model_copy(update={"index": i}) for i in range(total))

    html = render_report(results, many)

    data = embedded(html)
    assert len(data["records"]) == DEFAULT_RECORD_LIMIT
    assert [r["i"] for r in data["records"][:3]] == [0, 1, 2]
    notice = section(html, "records")
    assert f"Showing {DEFAULT_RECORD_LIMIT:,} of {total:,} records" in notice
    assert "records.jsonl and records.parquet" in notice
    differing = sum(disagree(r, list(MODELS), "exact_match") for r in base)
    assert f"disagree on {differing * total // 10:,} of {total:,}" in notice


def test_all_records_are_stated_when_nothing_is_cut(html, records):
    notice = section(html, "records")
    assert f"All {len(records)} records." in notice
    assert "Showing" not in notice


def test_long_texts_are_cut_and_marked(results, records):
    long_row = records[0].model_copy(update={"input": "x" * 500})

    data = embedded(render_report(results, [long_row], limit_chars=100))

    text = data["records"][0]["input"]
    assert text.startswith("x" * 100) and "x" * 101 not in text
    assert "400 more characters" in text


def test_records_read_from_jsonl_as_dicts_render_like_rows(results, records):
    as_dicts = [json.loads(r.model_dump_json()) for r in records]

    assert embedded(render_report(results, as_dicts)) == embedded(render_report(results, records))


def test_rows_read_back_from_parquet_render_like_rows_with_a_missing_model_left_out(results, records):
    rows = [records[0].model_copy(update={"models": {k: v for k, v in records[0].models.items()
                                                     if k != "titan-lite"}})] + records[1:5]
    table = records_to_arrow(rows, [m.name for m in results.models], ["exact_match", "f1"])

    data = embedded(render_report(results, table.to_pylist()))

    assert data == embedded(render_report(results, rows))
    assert data["records"][0]["a"][data["models"].index("titan-lite")] is None


def _row(**answers: ModelAnswer) -> RecordRow:
    return RecordRow(index=0, input="q", models=answers)


def test_models_disagree_when_their_primary_scores_differ():
    row = _row(a=ModelAnswer(output="x", scores={"em": 1.0}), b=ModelAnswer(output="y", scores={"em": 0.0}))
    assert disagree(row, ["a", "b"], "em")


def test_models_agree_when_their_primary_scores_are_equal_whatever_the_text():
    row = _row(a=ModelAnswer(output="x", scores={"em": 0.5, "f1": 1.0}),
               b=ModelAnswer(output="y", scores={"em": 0.5, "f1": 0.0}))
    assert not disagree(row, ["a", "b"], "em")


def test_a_failed_generation_disagrees_with_an_answer_but_not_with_another_failure():
    answered = ModelAnswer(output="x", scores={"em": 0.0})
    failed = ModelAnswer(error="ModelErrorException: boom")
    assert disagree(_row(a=answered, b=failed), ["a", "b"], "em")
    assert not disagree(_row(a=failed, b=failed), ["a", "b"], "em")


def test_the_spread_is_the_gap_between_the_highest_and_lowest_score():
    row = _row(a=ModelAnswer(output="x", scores={"rouge": 0.9}), b=ModelAnswer(output="y", scores={"rouge": 0.25}),
               c=ModelAnswer(output="z", scores={"rouge": 0.5}))
    assert spread(row, ["a", "b", "c"], "rouge") == pytest.approx(0.65)


def test_an_answer_beside_a_failure_has_no_spread_to_hide_it_behind():
    row = _row(a=ModelAnswer(output="x", scores={"rouge": 0.5}), b=ModelAnswer(error="ModelErrorException: boom"))
    assert spread(row, ["a", "b"], "rouge") is None


def test_a_minimum_difference_is_offered_only_for_a_continuous_primary_metric(results, records, html):
    assert 'id="min-difference"' not in html
    on_f1 = render_report(results.model_copy(update={"primary_metric": "f1"}), records)
    assert 'id="min-difference"' in on_f1
    assert all("sp" in r for r in embedded(on_f1)["records"])


def test_a_single_model_renders_without_comparisons_or_plots(results, records):
    alone = results.model_copy(update={
        "models": [results.model("claude-haiku")], "comparisons": [], "pareto": [],
        "selection": Selection(outcome="insufficient_models", primary_metric="exact_match", min_effect=0.02,
                               alpha=0.05, recommended="claude-haiku", reason="one model answered"),
    })

    html = render_report(alone, records[:5])

    assert "Not enough models to compare" in html
    assert "No pairwise comparison" in section(html, "differences")
    assert embedded(html)["models"] == ["claude-haiku"]


def test_an_interval_that_could_not_be_computed_shows_as_a_dash(results, records):
    haiku = results.model("claude-haiku")
    blank = haiku.model_copy(update={"metrics": {**haiku.metrics, "f1": haiku.metrics["f1"].model_copy(
        update={"ci": Interval()})}})
    models = [blank if m.name == "claude-haiku" else m for m in results.models]

    summary = section(render_report(results.model_copy(update={"models": models}), records[:3]), "summary")

    assert "[–]" in summary


@pytest.mark.parametrize("lo, hi", [(-0.13, 0.39), (0.0, 0.042), (0.49, 0.91), (-2.0, -1.5), (0.0, 1234.0)])
def test_axis_ticks_are_round_and_inside_the_range(lo, hi):
    ticks, decimals = nice_ticks(lo, hi)
    assert 3 <= len(ticks) <= 8
    assert all(lo - 1e-9 <= t <= hi + 1e-9 for t in ticks)
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    assert all(f"{t:.{decimals}f}" != f"{u:.{decimals}f}" for t, u in zip(ticks, ticks[1:]))
