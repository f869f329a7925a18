"""The email of an evaluation: the outcome (the winner, or no significant difference), the margin
with its interval, each model's score and cost, and where the report is."""
from __future__ import annotations

from shared.domain.runs import Run

_HEADLINES = {"SUCCEEDED": "finished", "PARTIAL": "finished", "FAILED": "failed", "CANCELLED": "was cancelled"}


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def evaluation_email(run: Run, outcome: str) -> tuple[str, str]:
    """Subject and plain-text body of an evaluation's email."""
    config = run.evaluation
    name = (config.name if config and config.name else None) or run.run_id
    s = run.summary or {}
    if outcome in ("SUCCEEDED", "PARTIAL") and s:
        decision = (f"winner {s['winner']}" if s.get("outcome") == "winner"
                    else "no significant difference" if s.get("outcome") == "no_significant_difference"
                    else "too few models to compare")
        subject = f"Quarry evaluation {name} {_HEADLINES[outcome]}: {decision}"
    else:
        subject = f"Quarry evaluation {name} {_HEADLINES[outcome]}"
    lines = [f"Evaluation {run.run_id} {_HEADLINES[outcome]}.", "", f"Dataset: {run.input_uri}"]
    if s:
        primary = s["primary_metric"]
        lines.append(f"Records: {s['records']:,} ({s['pairs_from_cache']:,} model answers from the cache)")
        if s.get("outcome") == "winner":
            lines += ["", f"Winner:  {s['winner']}, ahead of {s['runner_up']} on {primary} by {_f(s['margin'])} "
                          f"(95% CI {_f(s['margin_ci'][0])} to {_f(s['margin_ci'][1])})"]
        elif s.get("outcome") == "no_significant_difference":
            lines += ["", f"Outcome: no significant difference on {primary} between {', '.join(s['tied'])}; "
                          f"recommended: {s['recommended']} (the cheapest of them)"]
        else:
            lines += ["", f"Outcome: {s['reason']}"]
        lines += [f"Why:     {s['reason']}", "", f"{'model':<24} {primary:>10}  {'95% CI':<17} {'cost':>10}  status"]
        for model, m in s["models"].items():
            ci = m.get("ci") or [None, None]
            status = m["status"] if m["status"] == "ok" else f"FAILED: {m.get('error') or ''}"[:120]
            lines.append(f"{model:<24} {_f(m['mean']):>10}  [{_f(ci[0])}, {_f(ci[1])}]  {_usd(m['cost_usd']):>10}  {status}")
        lines += ["", f"Report:  {s['report_uri']}", f"Results: {s['results_uri']}", f"Records: {s['records_uri']}"]
    if run.error:
        lines += ["", f"Error: {run.error}"]
    lines += ["", f"See it with: quarry status {run.run_id} / quarry results {run.run_id}"]
    return subject, "\n".join(lines)
