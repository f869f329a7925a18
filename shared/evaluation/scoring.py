"""Scoring an evaluation: fill every record's scores, then aggregate them into EvaluationResults.

What the evaluate kind calls, once generation has answered every (model, record) pair:

    scorer = Scorer(ScoringConfig(metrics=[...], primary_metric="f1", min_effect=0.01, alpha=0.05),
                    models=[ModelInfo(name="a", model_id="..."), ...])
    for batch in batches:                  # lists of RecordRow in dataset order, any size (a stream);
        out = scorer.score(batch)          # or rows_from_arrow(record_batch) for Arrow batches
        write(out)                         # the same rows, every model's scores (and label) filled
    results = scorer.results(run_id=..., config_hash=..., dataset=DatasetInfo(...))

    rows, results = evaluate(rows, config, models, run_id=..., config_hash=..., dataset=...)  # at once

Rules:
- A failed generation (no output, or an error) gets no score: every metric is None for it, and
  means leave it out (counted in `missing`). It is never scored 0.
- Metrics the library cannot compute from text (semantic_similarity, judge scores: the config's
  `extra_metrics`) are read from the rows' scores, where the caller put them.
- A model whose every generation failed, or that the caller marks failed, is reported failed and
  left out of the comparisons; models over `max_cost_usd` or `max_latency_ms` are left out of the
  selection (and say why) but still compared.
- Only the per-metric score arrays (8 bytes per record, model and metric) stay in memory between
  batches, not the rows.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from shared.evaluation import metrics as mt
from shared.evaluation import statistics as st
from shared.evaluation.results import (
    ClassificationSummary, ClassLabelScores, Comparison, Cost, DatasetInfo, EvaluationResults, Interval, Latency,
    MetricInfo, MetricSummary, ModelAnswer, ModelResult, RecordRow, Tokens,
)
from shared.evaluation.selection import pareto_front, select


class ScoringConfig(BaseModel):
    """What to compute and how to decide (the evaluation config's metrics and selection)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metrics: list[str]
    primary_metric: str
    min_effect: float = 0.0
    alpha: float = 0.05
    # Splits a row's target into references when the row carries none.
    delimiter: str | None = mt.DEFAULT_DELIMITER
    # classification_accuracy's valid labels; None: the distinct targets (`evaluate` collects them).
    labels: list[str] | None = None
    # Scores the caller fills in the rows (semantic_similarity is one by default): name -> kind.
    extra_metrics: dict[str, Literal["binary", "continuous"]] = Field(default_factory=dict)
    continuous_test: Literal["paired_bootstrap", "permutation"] = "paired_bootstrap"
    confidence: float = st.DEFAULT_CONFIDENCE
    n_resamples: int = st.DEFAULT_RESAMPLES
    seed: int = 0
    max_cost_usd: float | None = None
    max_latency_ms: float | None = None


class ModelInfo(BaseModel):
    """A model of the run, as scoring needs it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    model_id: str
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    decoding: dict[str, Any] = Field(default_factory=dict)
    # On-demand list price, USD per 1,000 input/output tokens; batch is half. None: Quarry's table
    # (shared.domain.summary) by model id, and unknown for custom and provisioned models.
    input_per_1k: float | None = None
    output_per_1k: float | None = None
    latency: Latency | None = None


def _metric_kind(config: ScoringConfig, name: str) -> Literal["binary", "continuous"]:
    if name in config.extra_metrics:
        return config.extra_metrics[name]
    return mt.resolve(name).kind


def _computed_here(name: str) -> bool:
    metric = mt.resolve(name)
    return metric.name != "semantic_similarity"


class _Prices:
    def __init__(self, model: ModelInfo):
        self.model = model

    def batch(self, tokens_in: int, tokens_out: int) -> float | None:
        m = self.model
        if m.input_per_1k is not None and m.output_per_1k is not None:
            return (tokens_in * m.input_per_1k + tokens_out * m.output_per_1k) / 1000 * _batch_discount()
        from shared.domain.summary import batch_cost_usd

        try:
            return batch_cost_usd(m.model_id, tokens_in, tokens_out)
        except Exception:  # noqa: BLE001 - a model id of no known family has no known price
            return None

    def on_demand(self, tokens_in: int, tokens_out: int) -> float | None:
        batch = self.batch(tokens_in, tokens_out)
        return None if batch is None else batch / _batch_discount()


def _batch_discount() -> float:
    from shared.domain.summary import BATCH_DISCOUNT

    return BATCH_DISCOUNT


class _ModelTally:
    def __init__(self) -> None:
        self.records = self.errors = self.from_cache = 0
        self.tokens_in = self.tokens_out = 0
        self.paid: dict[bool, list[int]] = {False: [0, 0], True: [0, 0]}  # on_demand -> [in, out]
        self.paid_records = {False: 0, True: 0}
        self.error_kinds: Counter[str] = Counter()
        self.y_true: list[str] = []
        self.y_pred: list[str] = []


def _none_if_nan(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


class Scorer:
    """Scores batches of rows and keeps what the aggregate needs."""

    def __init__(self, config: ScoringConfig, models: Sequence[ModelInfo]):
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        for name in config.metrics:
            if name not in config.extra_metrics:
                mt.resolve(name)
        if config.primary_metric not in config.metrics:
            raise ValueError(f"the primary metric {config.primary_metric!r} is not one of the metrics")
        if any(mt.resolve(n).name == "classification_accuracy" for n in config.metrics
               if n not in config.extra_metrics) and not config.labels:
            raise ValueError("classification_accuracy needs the valid labels (evaluate() collects the targets)")
        self.config, self.models = config, list(models)
        self._computed = [n for n in config.metrics if n not in config.extra_metrics and _computed_here(n)]
        self._scores: dict[str, dict[str, list[np.ndarray]]] = {m.name: defaultdict(list) for m in models}
        self._categories: list[str | None] = []
        self._tally = {m.name: _ModelTally() for m in models}

    def score(self, rows: Sequence[RecordRow]) -> list[RecordRow]:
        """The rows with every model's scores filled in; failed generations get None throughout."""
        rows = list(rows)
        refs = [row.references or mt.split_references(row.target, self.config.delimiter) for row in rows]
        # Every answered (row, model) pair, scored in one batch per metric.
        pairs = [(i, m.name) for i, row in enumerate(rows) for m in self.models
                 if (a := row.models.get(m.name)) is not None and a.output is not None and a.error is None]
        outputs = [rows[i].models[name].output for i, name in pairs]
        pair_refs = [refs[i] for i, _ in pairs]
        computed = mt.score_batch(self._computed, outputs, pair_refs, labels=self.config.labels) if pairs else {}
        where = {pair: k for k, pair in enumerate(pairs)}
        classifying = [n for n in self._computed if mt.resolve(n).name == "classification_accuracy"]

        arrays = {m.name: {metric: np.full(len(rows), np.nan) for metric in self.config.metrics}
                  for m in self.models}
        out_rows = []
        for i, row in enumerate(rows):
            self._categories.append(row.category)
            answers = {}
            for m in self.models:
                answer = row.models.get(m.name)
                if answer is None:
                    continue
                k = where.get((i, m.name))
                scores: dict[str, float | None] = {}
                for metric in self.config.metrics:
                    if k is None:
                        value = None
                    elif metric in computed:
                        value = _none_if_nan(computed[metric][k])
                    else:
                        value = answer.scores.get(metric)
                    scores[metric] = value
                    if value is not None:
                        arrays[m.name][metric][i] = value
                label = (mt.classify(answer.output, self.config.labels or [])
                         if classifying and k is not None else answer.label)
                answer = answer.model_copy(update={"scores": {**answer.scores, **scores}, "label": label})
                self._count(m.name, answer, refs[i], bool(classifying))
                answers[m.name] = answer
            out_rows.append(row.model_copy(update={"models": {**row.models, **answers}, "references": refs[i]}))
        for name, by_metric in arrays.items():
            for metric, values in by_metric.items():
                self._scores[name][metric].append(values)
        return out_rows

    def _count(self, name: str, answer: ModelAnswer, refs: list[str], classifying: bool) -> None:
        t = self._tally[name]
        t.records += 1
        failed = answer.output is None or answer.error is not None
        if failed:
            t.errors += 1
            t.error_kinds[(answer.error or "no output")[:200]] += 1
        t.from_cache += answer.from_cache
        tin, tout = answer.input_tokens or 0, answer.output_tokens or 0
        t.tokens_in += tin
        t.tokens_out += tout
        if not answer.from_cache:
            t.paid[answer.on_demand][0] += tin
            t.paid[answer.on_demand][1] += tout
            t.paid_records[answer.on_demand] += 1
        if classifying and not failed and refs:
            pred = answer.label or mt.UNKNOWN_LABEL
            matched = [r for r in refs if r.strip().lower() == pred]
            t.y_true.append((matched or refs)[0])
            t.y_pred.append(pred)

    # --- aggregate ---------------------------------------------------------------------------------
    def _array(self, model: str, metric: str) -> np.ndarray:
        parts = self._scores[model][metric]
        return np.concatenate(parts) if parts else np.array([])

    def _summary(self, x: np.ndarray) -> MetricSummary:
        est = st.mean_ci(x, confidence=self.config.confidence, n_resamples=self.config.n_resamples,
                         seed=self.config.seed)
        return MetricSummary(mean=est.mean, ci=Interval(low=est.low, high=est.high), n=est.n, missing=est.missing)

    def _model_result(self, m: ModelInfo) -> ModelResult:
        t = self._tally[m.name]
        prices = _Prices(m)
        batch = prices.batch(*t.paid[False]) if t.paid_records[False] else 0.0
        on_demand = prices.on_demand(*t.paid[True]) if t.paid_records[True] else 0.0
        full = prices.batch(t.tokens_in, t.tokens_out)
        cost = Cost(batch_usd=batch, on_demand_usd=on_demand,
                    total_usd=None if batch is None or on_demand is None else round(batch + on_demand, 6),
                    batch_records=t.paid_records[False], on_demand_records=t.paid_records[True], full_batch_usd=full)
        status, error = m.status, m.error
        if status == "ok" and t.records and t.errors == t.records:
            status, error = "failed", f"every generation failed ({t.error_kinds.most_common(1)[0][0]})"
        elif status == "ok" and not t.records:
            status, error = "failed", "no record was answered"
        metrics, categories = {}, {}
        cats = np.array(self._categories, dtype=object)
        for metric in self.config.metrics:
            x = self._array(m.name, metric)
            metrics[metric] = self._summary(x)
            for cat in sorted({c for c in self._categories if c is not None}):
                categories.setdefault(cat, {})[metric] = self._summary(x[cats == cat])
        classification = None
        if t.y_true or any(mt.resolve(n).name == "classification_accuracy" for n in self._computed):
            s = mt.classification_summary(t.y_true, t.y_pred)
            classification = ClassificationSummary(
                accuracy=s.accuracy, balanced_accuracy=s.balanced_accuracy, unknown=s.unknown,
                per_class={k: ClassLabelScores(precision=p, recall=r, support=n) for k, (p, r, n) in s.per_class.items()})
        return ModelResult(name=m.name, model_id=m.model_id, status=status, error=error, records=t.records,
                           errors=t.errors, from_cache=t.from_cache, tokens=Tokens(input=t.tokens_in, output=t.tokens_out),
                           cost=cost, latency=m.latency, metrics=metrics, categories=categories,
                           classification=classification, top_errors=t.error_kinds.most_common(5))

    def _comparisons(self, ok: list[str]) -> list[Comparison]:
        c = self.config
        out: list[Comparison] = []
        for metric in c.metrics:
            binary = _metric_kind(c, metric) == "binary"
            tests = []
            for i, a in enumerate(ok):
                for b in ok[i + 1:]:
                    fn = (st.mcnemar_exact if binary else
                          st.paired_permutation if c.continuous_test == "permutation" else st.paired_bootstrap)
                    tests.append((a, b, fn(self._array(a, metric), self._array(b, metric), confidence=c.confidence,
                                           n_resamples=c.n_resamples, seed=c.seed)))
            adjusted = st.holm([t.p_value for _, _, t in tests])
            for (a, b, t), p_holm in zip(tests, adjusted):
                out.append(Comparison(metric=metric, a=a, b=b, n=t.n, mean_difference=t.mean_difference,
                                      ci=Interval(low=t.low, high=t.high), test=t.test, p_value=t.p_value,
                                      p_holm=p_holm, significant=p_holm is not None and p_holm < c.alpha,
                                      a_only=t.a_only, b_only=t.b_only))
        return out

    def results(self, *, run_id: str, config_hash: str, dataset: DatasetInfo,
                created_at: str | None = None) -> EvaluationResults:
        """The aggregate of every row scored so far."""
        c = self.config
        models = [self._model_result(m) for m in self.models]
        ok = [m.name for m in models if m.status == "ok"]
        failed = [m.name for m in models if m.status == "failed"]
        comparisons = self._comparisons(ok)
        excluded = {}
        for m in models:
            if m.status != "ok":
                continue
            if c.max_cost_usd is not None and m.cost.full_batch_usd is not None and m.cost.full_batch_usd > c.max_cost_usd:
                excluded[m.name] = f"costs {m.cost.full_batch_usd:.4f} USD, over max_cost_usd {c.max_cost_usd:g}"
            elif c.max_latency_ms is not None and m.latency is not None and m.latency.mean_ms > c.max_latency_ms:
                excluded[m.name] = f"answers in {m.latency.mean_ms:.0f} ms, over max_latency_ms {c.max_latency_ms:g}"
        candidates = [n for n in ok if n not in excluded]
        means = {m.name: m.metrics[c.primary_metric].mean for m in models}
        selection = select(primary_metric=c.primary_metric, models=candidates, failed=failed, means=means,
                           comparisons=[x for x in comparisons if x.metric == c.primary_metric],
                           costs={m.name: m.cost.full_batch_usd for m in models}, min_effect=c.min_effect,
                           alpha=c.alpha)
        if excluded:
            selection = selection.model_copy(update={
                "excluded": excluded,
                "reason": selection.reason + "; left out: " + "; ".join(f"{k} {v}" for k, v in excluded.items())})
        pareto = pareto_front([(m.name, means[m.name], m.cost.full_batch_usd,
                                m.latency.mean_ms if m.latency else None) for m in models if m.status == "ok"])
        infos = [MetricInfo(name=n, kind=_metric_kind(c, n),
                            description="" if n in c.extra_metrics else mt.resolve(n).description) for n in c.metrics]
        return EvaluationResults(
            run_id=run_id, config_hash=config_hash, created_at=created_at, dataset=dataset,
            decoding={m.name: m.decoding for m in self.models}, metrics=infos, primary_metric=c.primary_metric,
            min_effect=c.min_effect, alpha=c.alpha, confidence_level=c.confidence,
            bootstrap_method=st.BOOTSTRAP_METHOD, bootstrap_resamples=c.n_resamples, seed=c.seed,
            models=models, comparisons=comparisons, selection=selection, pareto=pareto)


def collect_labels(rows: Iterable[RecordRow], delimiter: str | None = mt.DEFAULT_DELIMITER) -> list[str]:
    """The distinct reference labels of the rows (lowercased, stripped), as fmeval's default."""
    labels = {r.strip().lower() for row in rows
              for r in (row.references or mt.split_references(row.target, delimiter)) if r.strip()}
    return sorted(labels)


def evaluate(rows: Iterable[RecordRow], config: ScoringConfig, models: Sequence[ModelInfo], *, run_id: str,
             config_hash: str, dataset: DatasetInfo, created_at: str | None = None,
             batch_size: int = 10_000) -> tuple[list[RecordRow], EvaluationResults]:
    """Score every row and aggregate, in one call (the rows are held in memory)."""
    rows = list(rows)
    needs_labels = any(n not in config.extra_metrics and mt.resolve(n).name == "classification_accuracy"
                       for n in config.metrics)
    if needs_labels and not config.labels:
        config = config.model_copy(update={"labels": collect_labels(rows, config.delimiter)})
    scorer = Scorer(config, models)
    scored = [r for start in range(0, len(rows), batch_size) for r in scorer.score(rows[start:start + batch_size])]
    return scored, scorer.results(run_id=run_id, config_hash=config_hash, dataset=dataset, created_at=created_at)


def rows_from_arrow(batch: pa.RecordBatch | pa.Table) -> list[RecordRow]:
    """RecordRows from Arrow data of `results.record_schema` (a null model is an absent answer)."""
    rows = []
    for d in batch.to_pylist():
        models = {name: ModelAnswer(**{**a, "scores": {k: v for k, v in (a.get("scores") or {}).items()}})
                  for name, a in (d.get("models") or {}).items() if a is not None}
        rows.append(RecordRow(**{**d, "references": d.get("references") or [], "models": models}))
    return rows
