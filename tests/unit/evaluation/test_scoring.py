"""Scoring rows end to end: scores filled, failures never scored 0, aggregates, tests and choice."""
import numpy as np
import pytest

from shared.evaluation.results import DatasetInfo, ModelAnswer, RecordRow, records_to_arrow
from shared.evaluation.scoring import ModelInfo, Scorer, ScoringConfig, evaluate, rows_from_arrow

DATASET = DatasetInfo(uri="s3://bucket/qa.jsonl", hash="abc", rows=0, used_rows=0)
MODELS = [ModelInfo(name="good", model_id="anthropic.claude-3-haiku-20240307-v1:0"),
          ModelInfo(name="twin", model_id="amazon.nova-micro-v1:0"),
          ModelInfo(name="poor", model_id="amazon.nova-lite-v1:0")]


def qa_rows(n, accuracy, seed=0, fail_every=None):
    """n TriviaQA-like rows; each model answers right with its accuracy."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        answers = {}
        for name, p in accuracy.items():
            if fail_every and name == "poor" and i % fail_every == 0:
                answers[name] = ModelAnswer(error="ModelTimeoutException: timed out")
                continue
            text = f"It is Paris {i}." if rng.random() < p else "I am not sure."
            answers[name] = ModelAnswer(output=text, input_tokens=100, output_tokens=10, from_cache=i % 4 == 0)
        rows.append(RecordRow(index=i, line=i + 1, input=f"q{i}", target=f"paris {i}<OR>Paris, France",
                              category="geo" if i % 2 else "history", models=answers))
    return rows


def run(rows, **config):
    cfg = ScoringConfig(**{"metrics": ["factual_knowledge", "f1"], "primary_metric": "factual_knowledge",
                           "n_resamples": 500, **config})
    return evaluate(rows, cfg, MODELS, run_id="r1", config_hash="h", dataset=DATASET)


def test_every_answer_is_scored_and_a_failed_generation_has_no_score_not_zero():
    rows, results = run(qa_rows(40, {"good": 1.0, "twin": 1.0, "poor": 0.0}, fail_every=4))
    assert rows[1].models["good"].scores == {"factual_knowledge": 1.0, "f1": pytest.approx(2 / 3)}
    assert rows[1].references == ["paris 1", "Paris, France"]
    assert rows[1].models["poor"].scores == {"factual_knowledge": 0.0, "f1": 0.0}
    assert rows[0].models["poor"].scores == {"factual_knowledge": None, "f1": None}
    poor = results.model("poor")
    assert (poor.records, poor.errors, poor.metrics["f1"].n, poor.metrics["f1"].missing) == (40, 10, 30, 10)
    assert poor.top_errors == [("ModelTimeoutException: timed out", 10)]


def test_a_real_difference_is_found_and_equal_models_are_tied():
    rows = qa_rows(400, {"good": 0.8, "twin": 0.8, "poor": 0.4}, seed=3)
    _, results = run(rows, min_effect=0.02)
    by_pair = {(c.a, c.b, c.metric): c for c in results.comparisons}
    assert by_pair["good", "poor", "factual_knowledge"].significant
    assert by_pair["good", "poor", "factual_knowledge"].test == "mcnemar_exact"
    assert by_pair["good", "poor", "f1"].test == "paired_bootstrap"
    assert not by_pair["good", "twin", "factual_knowledge"].significant
    assert results.selection.outcome == "no_significant_difference"
    assert set(results.selection.tied) == {"good", "twin"}
    # nova-micro is the cheapest of the two tied.
    assert results.selection.recommended == "twin"


def test_a_clearly_better_model_wins():
    _, results = run(qa_rows(300, {"good": 0.9, "twin": 0.5, "poor": 0.3}, seed=5), min_effect=0.05)
    assert (results.selection.outcome, results.selection.winner) == ("winner", "good")
    assert results.selection.margin > 0.05 and results.selection.margin_ci.low > 0


def test_means_per_category_intervals_and_costs():
    _, results = run(qa_rows(100, {"good": 1.0, "twin": 0.0, "poor": 0.0}))
    good = results.model("good")
    assert good.metrics["factual_knowledge"].mean == 1.0
    assert good.metrics["factual_knowledge"].ci.low == 1.0  # a constant sample's interval is the constant
    assert set(good.categories) == {"geo", "history"}
    assert good.categories["geo"]["factual_knowledge"].n == 50
    # 75 pairs paid at batch prices (25 from the cache); haiku's on-demand 0.00025/0.00125 per 1k.
    assert good.cost.batch_records == 75 and good.from_cache == 25
    assert good.cost.batch_usd == pytest.approx(75 * (100 * 0.00025 + 10 * 0.00125) / 1000 / 2, abs=1e-6)  # rounded to 6 places
    assert good.cost.full_batch_usd == pytest.approx(100 * (100 * 0.00025 + 10 * 0.00125) / 1000 / 2, abs=1e-6)
    assert results.bootstrap_method == "percentile"


def test_a_model_whose_every_generation_failed_is_reported_failed_and_left_out():
    rows = qa_rows(20, {"good": 0.9, "twin": 0.5})
    rows = [r.model_copy(update={"models": {**r.models, "poor": ModelAnswer(error="AccessDeniedException")}})
            for r in rows]
    _, results = run(rows)
    assert results.model("poor").status == "failed"
    assert results.selection.failed == ["poor"]
    assert all("poor" not in (c.a, c.b) for c in results.comparisons)


def test_scores_the_caller_filled_are_kept_for_metrics_computed_elsewhere():
    rows = [RecordRow(index=i, input="q", target="a", models={
        m.name: ModelAnswer(output="a", scores={"semantic_similarity": 0.5 + 0.1 * k}) for k, m in enumerate(MODELS)})
        for i in range(5)]
    _, results = run(rows, metrics=["semantic_similarity", "exact_match"], primary_metric="semantic_similarity")
    assert results.model("twin").metrics["semantic_similarity"].mean == pytest.approx(0.6)


def test_classification_labels_are_collected_and_balanced_accuracy_reported():
    rows = [RecordRow(index=i, input="r", target=t, models={m.name: ModelAnswer(output=o) for m in MODELS})
            for i, (t, o) in enumerate([("positive", "Positive!"), ("negative", "positive"), ("negative", "Negative."),
                                        ("negative", "dunno")])]
    scored, results = run(rows, metrics=["classification_accuracy"], primary_metric="classification_accuracy")
    assert [r.models["good"].label for r in scored] == ["positive", "positive", "negative", "unknown"]
    summary = results.model("good").classification
    assert summary.accuracy == 0.5 and summary.unknown == 1
    assert summary.balanced_accuracy == pytest.approx((1 + 1 / 3) / 2)


def test_rows_round_trip_through_arrow_and_batches_give_the_same_results():
    rows = qa_rows(30, {"good": 0.7, "twin": 0.6, "poor": 0.5}, fail_every=5)
    cfg = ScoringConfig(metrics=["factual_knowledge", "f1"], primary_metric="f1", n_resamples=300)
    scorer = Scorer(cfg, MODELS)
    back = rows_from_arrow(records_to_arrow(rows, [m.name for m in MODELS], cfg.metrics))
    scored = scorer.score(back[:10]) + scorer.score(back[10:])
    batched = scorer.results(run_id="r", config_hash="h", dataset=DATASET)
    whole_rows, whole = evaluate(rows, cfg, MODELS, run_id="r", config_hash="h", dataset=DATASET)
    assert [r.models["poor"].scores for r in scored] == [r.models["poor"].scores for r in whole_rows]
    assert batched.model_dump() == whole.model_dump()


def test_the_config_is_checked_before_scoring():
    with pytest.raises(ValueError, match="primary"):
        Scorer(ScoringConfig(metrics=["f1"], primary_metric="bleu"), MODELS)
    with pytest.raises(ValueError, match="unknown metric"):
        Scorer(ScoringConfig(metrics=["bertscore"], primary_metric="bertscore"), MODELS)
    with pytest.raises(ValueError, match="unique"):
        Scorer(ScoringConfig(metrics=["f1"], primary_metric="f1"), MODELS + MODELS[:1])
