"""The evaluation report: one self-contained HTML file (inline CSS, JS and SVG; nothing fetched).

It shows the summary table with confidence intervals, the selection outcome, a forest plot of the
paired differences, cost against quality with the Pareto front, the per-category breakdown and a
per-record view that filters to the records on which the models disagree.

Model text is untrusted. The HTML is rendered by jinja2 with autoescaping; the per-record data
travels as JSON in a `<script type="application/json">` (jinja2's `tojson` writes `<`, `>`, `&`
and `'` as \\u escapes, so `</script>` in an output cannot end the element) and the page's script
puts it on screen with `textContent` only, never as markup.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import PackageLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from shared.evaluation.results import (
    Comparison,
    EvaluationResults,
    Interval,
    ModelResult,
    RecordRow,
)

# Records embedded in the page beyond this are left out (the page says so): a browser handles a few
# thousand table rows and some megabytes of JSON well, not a whole dataset.
DEFAULT_RECORD_LIMIT = 5_000
# Characters kept of each embedded text (input, target, output, error); the rest is cut and marked.
DEFAULT_TEXT_LIMIT = 20_000
# Where the whole per-record results are, named when the page holds fewer records than the run.
DEFAULT_FULL_RESULTS = "records.jsonl and records.parquet"

# One colour per model, in config order (Okabe-Ito: distinguishable with colour-blindness).
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


def render_report(
    results: EvaluationResults,
    records: Iterable[RecordRow | Mapping[str, Any]],
    *,
    limit_records: int = DEFAULT_RECORD_LIMIT,
    limit_chars: int = DEFAULT_TEXT_LIMIT,
    full_results: str = DEFAULT_FULL_RESULTS,
) -> str:
    """The report of one evaluation run as a self-contained HTML document.

    `records` is read once, in order: the first `limit_records` are embedded, the rest only counted
    (the disagreement count covers all of them).
    """
    env = _environment()
    compared = [m for m in results.models if m.status == "ok"]
    colours = {m.name: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(results.models)}
    record_view = _record_view(results, compared, records, limit_records, limit_chars)
    template = env.get_template("report.html.j2")
    return template.render(
        r=results,
        compared=compared,
        failed=[m for m in results.models if m.status != "ok"],
        has_latency=any(m.latency is not None for m in compared),
        colours=colours,
        outcome=_outcome(results),
        metric_names=[m.name for m in results.metrics] or _metric_names(results),
        forests=_forests(results),
        scatter=_scatter(results, colours),
        categories=_categories(results, compared),
        records=record_view,
        full_results=full_results,
        css=Markup(env.loader.get_source(env, "report.css")[0]),
        js=Markup(env.loader.get_source(env, "report.js")[0]),
    )


# --- jinja2 --------------------------------------------------------------------------------------
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=PackageLoader("shared.evaluation", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(short=fmt_short, score=fmt_score, usd=fmt_usd, p=fmt_p, ci=fmt_ci, num=fmt_num, signed=fmt_signed)
    return env


# --- number formatting ---------------------------------------------------------------------------
def fmt_score(v: float | None, digits: int = 3) -> str:
    """A score or difference with fixed decimals; an en dash when missing."""
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_short(v: float | None) -> str:
    """A setting such as the minimum effect, as short as it was written (0.02, not 0.020)."""
    return "–" if v is None else f"{v:g}"


def fmt_signed(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"


def fmt_ci(ci: Interval | None, digits: int = 3) -> str:
    """`[low, high]`, or `[–]` when the interval could not be computed."""
    if ci is None or ci.low is None or ci.high is None:
        return "[–]"
    return f"[{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def fmt_usd(v: float | None) -> str:
    """Dollars with cents, and three significant digits below a dollar (batch costs are small)."""
    if v is None:
        return "unknown"
    if v == 0:
        return "$0"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    decimals = max(2, -math.floor(math.log10(abs(v))) + 2)
    return f"${v:.{decimals}f}"


def fmt_p(v: float | None) -> str:
    if v is None:
        return "–"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def fmt_num(v: int | float | None) -> str:
    return "–" if v is None else f"{v:,}"


def _metric_names(results: EvaluationResults) -> list[str]:
    names: list[str] = []
    for m in results.models:
        names += [n for n in m.metrics if n not in names]
    return names


# --- outcome -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    kind: str
    headline: str
    detail: str


def _outcome(results: EvaluationResults) -> Outcome:
    s = results.selection
    level = f"{results.confidence_level:.0%}"
    if s.outcome == "winner" and s.winner:
        detail = (
            f"It beats every other model on {s.primary_metric} by more than the minimum effect "
            f"({fmt_short(s.min_effect)}), significant after Holm correction at alpha {s.alpha:g}."
        )
        if s.runner_up is not None:
            detail = (
                f"Its smallest lead is over {s.runner_up}: {fmt_signed(s.margin)} "
                f"({level} CI {fmt_ci(s.margin_ci)}). " + detail
            )
        return Outcome("winner", f"Winner: {s.winner}", detail)
    if s.outcome == "no_significant_difference":
        tied = ", ".join(s.tied) if s.tied else "the compared models"
        detail = (
            f"No model beats every other on {s.primary_metric} by more than the minimum effect "
            f"({fmt_short(s.min_effect)}) with Holm-corrected significance at alpha {s.alpha:g}. "
            f"Statistically tied with the best: {tied}."
        )
        if s.recommended:
            detail += f" Recommended: {s.recommended}, the cheapest of the tied models."
        return Outcome("tie", "No significant difference", detail)
    detail = "Fewer than two models produced answers that could be compared."
    if s.recommended:
        detail += f" Recommended: {s.recommended}."
    return Outcome("insufficient", "Not enough models to compare", detail)


# --- plots ---------------------------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], int]:
    """Round tick values covering [lo, hi] (about `count` of them) and the decimals to print them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    # The round step whose number of intervals is closest to `count`.
    m = min((1, 2, 2.5, 5, 10), key=lambda m: abs((hi - lo) / (m * magnitude) - count))
    step = m * magnitude
    decimals = max(0, -math.floor(math.log10(step)) + (1 if m == 2.5 else 0))
    ticks = []
    v = math.ceil(lo / step - 1e-9) * step
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks, decimals


@dataclass(frozen=True)
class Axis:
    lo: float
    hi: float
    start: float  # pixel of lo
    end: float  # pixel of hi

    def __call__(self, v: float) -> float:
        return round(self.start + (v - self.lo) / (self.hi - self.lo) * (self.end - self.start), 2)


def _padded(lo: float, hi: float, pad: float = 0.06) -> tuple[float, float]:
    if hi - lo < 1e-12:
        half = abs(lo) * 0.1 or 0.5
        return lo - half, hi + half
    span = hi - lo
    return lo - span * pad, hi + span * pad


_FOREST_WIDTH = 1000
# Room for the "a − b" labels: about 7 px a character at the plots' 12 px font, within bounds.
_CHAR_PX = 7
_FOREST_LEFT = (160, 420)
_FOREST_RIGHT = 250  # room for "Δ [low, high] p"
_FOREST_ROW = 30
_FOREST_TOP = 16
_FOREST_BOTTOM = 40


def _forests(results: EvaluationResults) -> list[dict[str, Any]]:
    """One forest plot per metric that has comparisons, the primary metric first."""
    by_metric: dict[str, list[Comparison]] = {}
    for c in results.comparisons:
        by_metric.setdefault(c.metric, []).append(c)
    order = sorted(by_metric, key=lambda m: (m != results.primary_metric, m))
    return [_forest(m, by_metric[m], results) for m in order]


def _forest(metric: str, comparisons: list[Comparison], results: EvaluationResults) -> dict[str, Any]:
    effect = results.min_effect
    values = [0.0, effect, -effect]
    for c in comparisons:
        values += [v for v in (c.mean_difference, c.ci.low, c.ci.high) if v is not None]
    lo, hi = _padded(min(values), max(values))
    ticks, decimals = nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    height = _FOREST_TOP + _FOREST_ROW * len(comparisons) + _FOREST_BOTTOM
    label = max(len(c.a) + len(c.b) + 3 for c in comparisons)
    left = min(max(_FOREST_LEFT[0], _CHAR_PX * label + 24), _FOREST_LEFT[1])
    x = Axis(lo, hi, left, _FOREST_WIDTH - _FOREST_RIGHT)
    plot_bottom = height - _FOREST_BOTTOM
    rows = []
    for i, c in enumerate(comparisons):
        y = _FOREST_TOP + _FOREST_ROW * i + _FOREST_ROW / 2
        rows.append({
            "c": c,
            "y": y,
            "x": None if c.mean_difference is None else x(c.mean_difference),
            "low": None if c.ci.low is None else x(c.ci.low),
            "high": None if c.ci.high is None else x(c.ci.high),
        })
    return {
        "metric": metric,
        "primary": metric == results.primary_metric,
        "width": _FOREST_WIDTH,
        "height": height,
        "left": left,
        "right": _FOREST_WIDTH - _FOREST_RIGHT,
        "top": _FOREST_TOP,
        "bottom": plot_bottom,
        "zero": x(0.0),
        "effect_low": x(-effect),
        "effect_high": x(effect),
        "effect": effect,
        "ticks": [{"x": x(t), "label": f"{t:.{decimals}f}"} for t in ticks],
        "rows": rows,
    }


_SCATTER_WIDTH = 900
_SCATTER_HEIGHT = 420
_SCATTER_LEFT = 80
_SCATTER_RIGHT = (120, 400)  # room for the labels of the rightmost points
_SCATTER_TOP = 20
_SCATTER_BOTTOM = 56


def _scatter(results: EvaluationResults, colours: dict[str, str]) -> dict[str, Any]:
    """Cost (x, full-dataset batch cost) against quality (y, primary-metric mean), front marked."""
    points = []
    unplotted = []
    for p in results.pareto:
        if p.quality is None or p.cost_usd is None:
            unplotted.append(p)
            continue
        try:
            summary = results.model(p.model).metrics.get(results.primary_metric)
        except KeyError:
            summary = None
        points.append((p, summary.ci if summary else Interval()))
    if not points:
        return {"points": [], "unplotted": unplotted, "front": []}
    xs = [p.cost_usd for p, _ in points]
    ys = [p.quality for p, _ in points] + [v for _, ci in points for v in (ci.low, ci.high) if v is not None]
    x_lo, x_hi = _padded(min(0.0, min(xs)), max(xs), pad=0.08)
    x_lo = max(x_lo, 0.0) if min(xs) >= 0 else x_lo
    y_lo, y_hi = _padded(min(ys), max(ys), pad=0.1)
    x_ticks, x_dec = nice_ticks(x_lo, x_hi)
    y_ticks, y_dec = nice_ticks(y_lo, y_hi)
    x_lo, x_hi = min(x_lo, x_ticks[0]), max(x_hi, x_ticks[-1])
    y_lo, y_hi = min(y_lo, y_ticks[0]), max(y_hi, y_ticks[-1])
    label = max(len(p.model) for p, _ in points)
    right = _SCATTER_WIDTH - min(max(_SCATTER_RIGHT[0], _CHAR_PX * label + 30), _SCATTER_RIGHT[1])
    x = Axis(x_lo, x_hi, _SCATTER_LEFT, right)
    y = Axis(y_lo, y_hi, _SCATTER_HEIGHT - _SCATTER_BOTTOM, _SCATTER_TOP)
    drawn = [{
        "p": p,
        "x": x(p.cost_usd),
        "y": y(p.quality),
        "ci_low": None if ci.low is None else y(ci.low),
        "ci_high": None if ci.high is None else y(ci.high),
        "colour": colours.get(p.model, "#444"),
    } for p, ci in points]
    front = sorted((d for d in drawn if d["p"].on_front), key=lambda d: (d["x"], -d["y"]))
    return {
        "width": _SCATTER_WIDTH,
        "height": _SCATTER_HEIGHT,
        "left": _SCATTER_LEFT,
        "right": right,
        "top": _SCATTER_TOP,
        "bottom": _SCATTER_HEIGHT - _SCATTER_BOTTOM,
        "x_ticks": [{"x": x(t), "label": f"${t:,.{x_dec}f}"} for t in x_ticks],
        "y_ticks": [{"y": y(t), "label": f"{t:.{y_dec}f}"} for t in y_ticks],
        "points": drawn,
        "front": front,
        "front_path": " ".join(f"{d['x']},{d['y']}" for d in front),
        "unplotted": unplotted,
    }


# --- categories ----------------------------------------------------------------------------------
def _categories(results: EvaluationResults, compared: list[ModelResult]) -> list[dict[str, Any]]:
    """Per metric (the primary first): one row per category, one cell per compared model."""
    names: list[str] = []
    for m in compared:
        names += [c for c in m.categories if c not in names]
    if not names:
        return []
    names.sort()
    metrics = [results.primary_metric] + [n for n in _metric_names(results) if n != results.primary_metric]
    tables = []
    for metric in metrics:
        rows = [{
            "category": cat,
            "cells": [m.categories.get(cat, {}).get(metric) for m in compared],
        } for cat in names]
        if any(cell is not None for row in rows for cell in row["cells"]):
            tables.append({"metric": metric, "primary": metric == results.primary_metric, "rows": rows})
    return tables


# --- the per-record view -------------------------------------------------------------------------
def disagree(row: RecordRow, models: list[str], metric: str) -> bool:
    """Whether the models' outcomes on this record differ: their scores on `metric` are not all equal,
    a failed generation counting as an outcome of its own."""
    outcomes = set()
    for name in models:
        answer = row.models.get(name)
        if answer is None:
            outcomes.add("absent")
        elif answer.error is not None or answer.output is None:
            outcomes.add("error")
        else:
            score = answer.scores.get(metric)
            outcomes.add(None if score is None else round(score, 9))
    return len(outcomes) > 1


def spread(row: RecordRow, models: list[str], metric: str) -> float | None:
    """How far apart the models' scores on `metric` are (highest minus lowest); None when some
    answered and some failed, a difference no threshold should hide."""
    scores, failed = [], 0
    for name in models:
        answer = row.models.get(name)
        if answer is None or answer.error is not None or answer.output is None:
            failed += 1
        elif (score := answer.scores.get(metric)) is not None and math.isfinite(score):
            scores.append(score)
    if failed and failed < len(models):
        return None
    return max(scores) - min(scores) if len(scores) > 1 else 0.0


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit:,} more characters; the full text is in the per-record results]"


def _record_view(
    results: EvaluationResults,
    compared: list[ModelResult],
    records: Iterable[RecordRow | Mapping[str, Any]],
    limit: int,
    chars: int,
) -> dict[str, Any]:
    models = [m.name for m in compared]
    metrics = _metric_names(results) if not results.metrics else [m.name for m in results.metrics]
    primary = results.primary_metric
    embedded: list[dict[str, Any]] = []
    total = disagreements = 0
    categories: set[str] = set()
    for item in records:
        row = item if isinstance(item, RecordRow) else _row_from_mapping(item)
        total += 1
        differs = disagree(row, models, primary)
        disagreements += differs
        if len(embedded) >= limit:
            continue
        if row.category is not None:
            categories.add(row.category)
        embedded.append({
            "i": row.index,
            "line": row.line,
            "input": _clip(row.input, chars),
            "target": _clip(row.target, chars),
            "refs": [_clip(ref, chars) for ref in row.references],
            "cat": row.category,
            "d": differs,
            "sp": spread(row, models, primary) if differs else 0.0,
            "a": [_answer(row, name, metrics, chars) for name in models],
        })
    continuous = any(m.name == primary and m.kind == "continuous" for m in results.metrics)
    return {
        "continuous": continuous,
        "data": {
            "models": models,
            "metrics": metrics,
            "primary": primary,
            "primary_index": metrics.index(primary) if primary in metrics else -1,
            "records": embedded,
        },
        "shown": len(embedded),
        "total": total,
        "disagreements": disagreements,
        "shown_disagreements": sum(1 for e in embedded if e["d"]),
        "capped": total > len(embedded),
        "categories": sorted(categories),
    }


def _row_from_mapping(item: Mapping[str, Any]) -> RecordRow:
    """A RecordRow from a line of records.jsonl or a row of records.parquet, where a model absent
    from the record is null."""
    models = item.get("models") or {}
    if any(answer is None for answer in models.values()):
        item = {**item, "models": {n: a for n, a in models.items() if a is not None}}
    return RecordRow.model_validate(item)


def _answer(row: RecordRow, name: str, metrics: list[str], chars: int) -> dict[str, Any] | None:
    answer = row.models.get(name)
    if answer is None:
        return None
    return {
        "out": _clip(answer.output, chars),
        "err": _clip(answer.error, chars),
        "cached": answer.from_cache,
        "tin": answer.input_tokens,
        "tout": answer.output_tokens,
        "s": [_finite(answer.scores.get(m)) for m in metrics],
    }


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None
