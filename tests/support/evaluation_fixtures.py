"""A realistic evaluation to render reports from: TriviaQA-shaped records, three models that answer
(with different accuracy and cost), one that failed, categories, and the aggregates computed from
those records (percentile bootstrap, paired differences, Holm) so that the report's figures agree
with its rows."""
from __future__ import annotations

import random
from itertools import combinations

import numpy as np

from shared.evaluation.results import (
    Comparison,
    Cost,
    DatasetInfo,
    EvaluationResults,
    Interval,
    MetricInfo,
    MetricSummary,
    ModelAnswer,
    ModelResult,
    ParetoPoint,
    RecordRow,
    Selection,
    Tokens,
)

CATEGORIES = ["history", "science", "sport"]
# name -> (model id, chance of a right answer, chance of a failed generation, USD per record at batch prices)
MODELS = {
    "claude-haiku": ("anthropic.claude-3-haiku-20240307-v1:0", 0.82, 0.01, 0.00021),
    "titan-lite": ("amazon.titan-text-lite-v1", 0.55, 0.02, 0.00004),
    "tuned-lite": ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123", 0.60, 0.0, 0.00009),
}
FAILED = ("broken-model", "meta.llama3-8b-instruct-v1:0")
METRICS = [
    MetricInfo(name="exact_match", kind="binary", description="1 when the output equals a reference after normalisation"),
    MetricInfo(name="f1", kind="continuous", description="word-level F1 against the best reference"),
]


def _score_answer(rng: random.Random, answer: str, right: bool) -> tuple[str, dict[str, float]]:
    if right:
        return answer, {"exact_match": 1.0, "f1": 1.0}
    wrong = rng.choice(["I am not sure.", f"Perhaps {answer[::-1]}", "The answer is unknown to me", answer + " or something"])
    f1 = 0.5 if wrong.endswith("or something") else 0.0
    return wrong, {"exact_match": 0.0, "f1": f1}


def make_records(n: int = 200, *, seed: int = 7) -> list[RecordRow]:
    """n records; each of MODELS answers (rightly, wrongly or with an error), FAILED only errs."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        answer = f"Answer{i}"
        answers = {}
        for name, (_, accuracy, error_rate, _) in MODELS.items():
            if rng.random() < error_rate:
                answers[name] = ModelAnswer(error="ModelErrorException: the model did not answer",
                                            scores={"exact_match": None, "f1": None})
                continue
            output, scores = _score_answer(rng, answer, rng.random() < accuracy)
            answers[name] = ModelAnswer(output=output, scores=scores, from_cache=i % 10 == 0,
                                        input_tokens=40 + i % 7, output_tokens=3 + i % 5)
        answers[FAILED[0]] = ModelAnswer(error="AccessDeniedException: model access not granted",
                                         scores={"exact_match": None, "f1": None})
        rows.append(RecordRow(
            index=i, line=i + 2, input=f"Question {i}: which word is the answer to trivia item {i}?",
            target=f"{answer}<OR>{answer.lower()}", references=[answer, answer.lower()],
            category=CATEGORIES[i % len(CATEGORIES)], models=answers,
        ))
    return rows


def _summary(values: list[float | None], rng: np.random.Generator) -> MetricSummary:
    scored = np.array([v for v in values if v is not None], dtype=float)
    if len(scored) < 2:
        return MetricSummary(mean=float(scored.mean()) if len(scored) else None, n=len(scored),
                             missing=len(values) - len(scored))
    means = rng.choice(scored, size=(400, len(scored))).mean(axis=1)
    return MetricSummary(mean=float(scored.mean()), n=len(scored), missing=len(values) - len(scored),
                         ci=Interval(low=float(np.quantile(means, 0.025)), high=float(np.quantile(means, 0.975))))


def _holm(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda k: ps[k])
    adjusted = [0.0] * len(ps)
    running = 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[k]))
        adjusted[k] = running
    return adjusted


def make_results(records: list[RecordRow], *, run_id: str = "eval-20261130-trivia") -> EvaluationResults:
    """The aggregates of `records`, as the scoring library would write them."""
    rng = np.random.default_rng(0)
    metric_names = [m.name for m in METRICS]
    models = []
    for name, (model_id, _, _, usd) in MODELS.items():
        answers = [r.models[name] for r in records]
        metrics = {m: _summary([a.scores.get(m) for a in answers], rng) for m in metric_names}
        categories = {
            cat: {m: _summary([r.models[name].scores.get(m) for r in records if r.category == cat], rng)
                  for m in metric_names}
            for cat in CATEGORIES
        }
        cached = sum(a.from_cache for a in answers)
        paid = len(records) - cached
        models.append(ModelResult(
            name=name, model_id=model_id, records=len(records), errors=sum(a.error is not None for a in answers),
            from_cache=cached, tokens=Tokens(input=sum(a.input_tokens or 0 for a in answers),
                                             output=sum(a.output_tokens or 0 for a in answers)),
            cost=Cost(batch_usd=paid * usd, total_usd=paid * usd, batch_records=paid,
                      full_batch_usd=len(records) * usd),
            metrics=metrics, categories=categories,
        ))
    models.append(ModelResult(name=FAILED[0], model_id=FAILED[1], status="failed",
                              error="every generation failed", records=len(records), errors=len(records),
                              top_errors=[("AccessDeniedException: model access not granted", len(records))]))
    comparisons = []
    for metric in metric_names:
        pairs = []
        for a, b in combinations(MODELS, 2):
            diffs = np.array([r.models[a].scores[metric] - r.models[b].scores[metric] for r in records
                              if r.models[a].scores.get(metric) is not None
                              and r.models[b].scores.get(metric) is not None])
            boot = rng.choice(diffs, size=(400, len(diffs))).mean(axis=1)
            p = min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean()) + 1 / 400)
            pairs.append((a, b, diffs, boot, p))
        holm = _holm([p for *_, p in pairs])
        for (a, b, diffs, boot, p), ph in zip(pairs, holm):
            comparisons.append(Comparison(
                metric=metric, a=a, b=b, n=len(diffs), mean_difference=float(diffs.mean()),
                ci=Interval(low=float(np.quantile(boot, 0.025)), high=float(np.quantile(boot, 0.975))),
                test="mcnemar_exact" if metric == "exact_match" else "paired_bootstrap",
                p_value=p, p_holm=ph, significant=ph < 0.05,
            ))
    best = models[0]
    margin = next(c for c in comparisons if c.metric == "exact_match" and c.a == best.name and c.b == "tuned-lite")
    pareto = [ParetoPoint(model=m.name, quality=m.metrics["exact_match"].mean, cost_usd=m.cost.full_batch_usd,
                          on_front=m.name in ("claude-haiku", "tuned-lite", "titan-lite"))
              for m in models if m.status == "ok"]
    return EvaluationResults(
        run_id=run_id, config_hash="c0ffee" * 10 + "abcd", created_at="2026-11-30T03:00:00Z",
        dataset=DatasetInfo(uri="s3://quarry-inputs/evaluations/trivia.jsonl", hash="deadbeef" * 8,
                            rows=len(records), used_rows=len(records), input="question", target="answer",
                            category="category"),
        decoding={name: {"temperature": 0.0, "max_tokens": 64} for name in MODELS} | {FAILED[0]: {"temperature": 0.0}},
        metrics=METRICS, primary_metric="exact_match", min_effect=0.02, alpha=0.05,
        bootstrap_resamples=400, models=models, comparisons=comparisons,
        selection=Selection(
            outcome="winner", primary_metric="exact_match", min_effect=0.02, alpha=0.05,
            winner=best.name, runner_up="tuned-lite", margin=margin.mean_difference, margin_ci=margin.ci,
            recommended=best.name, failed=[FAILED[0]],
            reason="claude-haiku beats titan-lite and tuned-lite on exact_match by more than 0.02 (Holm p < 0.05).",
        ),
        pareto=pareto,
    )
