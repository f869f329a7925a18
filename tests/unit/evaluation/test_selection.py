"""The selection rule: a winner only when it beats each other model by more than the minimum
effect with Holm-corrected significance; else the cheapest of the tied; the Pareto front."""
from shared.evaluation.results import Comparison, Interval
from shared.evaluation.selection import pareto_front, select


def comparison(a, b, diff, significant, low=None, high=None):
    return Comparison(metric="f1", a=a, b=b, n=100, mean_difference=diff, test="paired_bootstrap",
                      ci=Interval(low=low, high=high), p_value=0.001 if significant else 0.5,
                      p_holm=0.003 if significant else 0.9, significant=significant)


def choose(means, comparisons, *, costs=None, failed=(), min_effect=0.0):
    models = list(means)
    return select(primary_metric="f1", models=models, failed=list(failed), means=means, comparisons=comparisons,
                  costs=costs or {m: None for m in models}, min_effect=min_effect, alpha=0.05)


def test_a_model_that_significantly_beats_each_other_by_more_than_the_minimum_effect_wins():
    result = choose({"a": 0.8, "b": 0.7, "c": 0.6},
                    [comparison("a", "b", 0.1, True, 0.05, 0.15), comparison("a", "c", 0.2, True),
                     comparison("b", "c", 0.1, True)], min_effect=0.05)
    assert (result.outcome, result.winner, result.recommended) == ("winner", "a", "a")
    assert (result.runner_up, result.margin, result.margin_ci) == ("b", 0.1, Interval(low=0.05, high=0.15))


def test_a_comparison_written_the_other_way_round_is_flipped():
    result = choose({"a": 0.6, "b": 0.8}, [comparison("a", "b", -0.2, True, -0.3, -0.1)])
    assert result.winner == "b" and result.margin == 0.2 and result.margin_ci == Interval(low=0.1, high=0.3)


def test_significant_but_smaller_than_the_minimum_effect_is_no_win_and_the_cheapest_tied_is_recommended():
    result = choose({"a": 0.8, "b": 0.79, "c": 0.5},
                    [comparison("a", "b", 0.01, True), comparison("a", "c", 0.3, True), comparison("b", "c", 0.29, True)],
                    costs={"a": 10.0, "b": 2.0, "c": 0.5}, min_effect=0.02)
    assert result.outcome == "no_significant_difference" and result.winner is None
    assert result.tied == ["a", "b"]
    assert result.recommended == "b"  # c is cheaper but significantly worse: not tied
    assert "b is the cheapest of the tied a, b" in result.reason


def test_beating_one_model_but_not_another_is_no_win():
    result = choose({"a": 0.8, "b": 0.75, "c": 0.5},
                    [comparison("a", "b", 0.05, False), comparison("a", "c", 0.3, True)],
                    costs={"a": 1.0, "b": 3.0, "c": 0.1})
    assert result.outcome == "no_significant_difference" and result.recommended == "a"


def test_failed_models_are_left_out_and_listed_and_one_model_left_is_insufficient():
    result = choose({"a": 0.8, "b": None}, [], failed=["b"])
    assert result.outcome == "insufficient_models"
    assert (result.recommended, result.failed) == ("a", ["b"])


def test_an_unknown_cost_ranks_after_every_known_one():
    result = choose({"a": 0.8, "b": 0.8}, [comparison("a", "b", 0.0, False)], costs={"a": None, "b": 5.0})
    assert result.recommended == "b"


def test_pareto_front_keeps_models_no_other_beats_on_every_axis():
    points = pareto_front([("best", 0.9, 10.0, 500.0), ("cheap", 0.7, 1.0, 400.0), ("worse", 0.6, 2.0, 450.0),
                           ("unpriced", 0.5, None, None), ("unscored", None, 0.1, 10.0)])
    front = {p.model for p in points if p.on_front}
    assert front == {"best", "cheap"}
