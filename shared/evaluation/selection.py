"""Which model to use: a winner only when the data says so, else the cheapest of the tied.

The rule (on the primary metric, higher is better):
- Failed models are left out (and listed). Fewer than two left: "insufficient_models", the one
  left (if any) recommended.
- A model wins when, against EACH other candidate, its mean lead is greater than `min_effect`
  and the pairwise test is significant after Holm's correction (p_holm < alpha).
- Otherwise "no_significant_difference": the tied models are the leader (best mean) and every
  model that is not both significantly and more than `min_effect` behind it; the cheapest of them
  (whole-dataset cost at batch prices, unknown cost last, then the better mean) is recommended.
- The margin is the leader's smallest lead: its difference to the closest other model, with the
  paired interval of that difference.
The Pareto front over quality (up), cost and latency (down) is reported beside the decision.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from shared.evaluation.results import Comparison, Interval, ParetoPoint, Selection


def _lead(comparisons: Sequence[Comparison], winner: str, other: str) -> tuple[float | None, Interval, bool]:
    """winner minus other on the primary metric: (difference, interval, significant)."""
    for c in comparisons:
        if (c.a, c.b) == (winner, other):
            return c.mean_difference, c.ci, c.significant
        if (c.a, c.b) == (other, winner):
            flipped = Interval(low=None if c.ci.high is None else -c.ci.high,
                               high=None if c.ci.low is None else -c.ci.low)
            return (None if c.mean_difference is None else -c.mean_difference), flipped, c.significant
    return None, Interval(), False


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def select(*, primary_metric: str, models: Sequence[str], failed: Sequence[str], means: Mapping[str, float | None],
           comparisons: Sequence[Comparison], costs: Mapping[str, float | None], min_effect: float,
           alpha: float) -> Selection:
    """Apply the rule to the ok `models` (config order), given their means and the primary metric's
    pairwise comparisons (Holm-adjusted)."""
    base = dict(primary_metric=primary_metric, min_effect=min_effect, alpha=alpha, failed=list(failed))
    candidates = [m for m in models if m not in failed and means.get(m) is not None]
    if len(candidates) < 2:
        only = candidates[0] if candidates else None
        return Selection(outcome="insufficient_models", recommended=only, tied=candidates,
                         reason=(f"only {only} has {primary_metric} scores: nothing to compare it with" if only
                                 else f"no model has {primary_metric} scores"), **base)

    def beats(a: str, b: str) -> bool:
        diff, _, significant = _lead(comparisons, a, b)
        return diff is not None and diff > min_effect and significant

    leader = max(candidates, key=lambda m: (means[m], -candidates.index(m)))
    others = [m for m in candidates if m != leader]
    runner_up = min(others, key=lambda m: (_lead(comparisons, leader, m)[0] or 0.0, others.index(m)))
    margin, margin_ci, _ = _lead(comparisons, leader, runner_up)
    if all(beats(leader, m) for m in others):
        return Selection(outcome="winner", winner=leader, runner_up=runner_up, margin=margin, margin_ci=margin_ci,
                         recommended=leader, tied=[],
                         reason=(f"{leader} beats every other model on {primary_metric}: by {_fmt(margin)} "
                                 f"(95% CI {_fmt(margin_ci.low)} to {_fmt(margin_ci.high)}) over the closest, "
                                 f"{runner_up}, more than the minimum effect {min_effect:g}, significant at "
                                 f"alpha {alpha:g} after Holm's correction"), **base)
    tied = [leader] + [m for m in others if not beats(leader, m)]

    def price(m: str) -> tuple[int, float, float]:
        cost = costs.get(m)
        return (cost is None, cost if cost is not None else 0.0, -(means[m] or 0.0))

    recommended = min(tied, key=price)
    why_not = ", ".join(m for m in others if not beats(leader, m))
    cost_note = ("" if costs.get(recommended) is not None
                 else " (no model's cost is known)" if all(costs.get(m) is None for m in tied)
                 else "")
    return Selection(
        outcome="no_significant_difference", runner_up=runner_up, margin=margin, margin_ci=margin_ci,
        recommended=recommended, tied=tied,
        reason=(f"no model beats every other on {primary_metric}: {leader} leads by {_fmt(margin)} "
                f"(95% CI {_fmt(margin_ci.low)} to {_fmt(margin_ci.high)}), but its lead over {why_not} is not "
                f"both larger than {min_effect:g} and significant at alpha {alpha:g} after Holm's correction; "
                f"{recommended} is the cheapest of the tied {', '.join(tied)}{cost_note}"), **base)


def pareto_front(points: Sequence[tuple[str, float | None, float | None, float | None]]) -> list[ParetoPoint]:
    """(model, quality, cost, latency) -> points marked on_front when no other model is at least as
    good on every axis and better on one. Two models are compared on the axes both know (a cost or a
    latency may be unknown, e.g. for a provisioned model); a model without a quality is never on it."""

    def dominates(q, p) -> bool:
        pairs = [(q[1], p[1])]
        pairs += [(-q[k], -p[k]) for k in (2, 3) if q[k] is not None and p[k] is not None]
        return all(t >= s for t, s in pairs) and any(t > s for t, s in pairs)

    return [ParetoPoint(model=p[0], quality=p[1], cost_usd=p[2], latency_ms=p[3],
                        on_front=p[1] is not None and not any(q is not p and q[1] is not None and dominates(q, p)
                                                              for q in points)) for p in points]
