"""The lines of a batch run's email that say how it kept its promises: requests not paid twice,
the deadline and where rows went, outputs checked against the schema, jobs that were stuck."""
from __future__ import annotations

from typing import Any


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def promise_lines(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cached, deduplicated = summary.get("cached_records") or 0, summary.get("deduplicated_records") or 0
    if cached or deduplicated:
        lines.append(f"Reused:  {cached:,} rows from the response cache, {deduplicated:,} repeating another "
                     f"row's request; saved about {_usd(summary.get('saved_usd'))}")
    deadline = summary.get("deadline")
    if deadline:
        met = "met" if deadline.get("met") else "MISSED"
        lines.append(f"Deadline: {deadline['at']} ({met}); {deadline['batch_rows']:,} rows by batch "
                     f"({_usd(deadline.get('batch_usd'))}), {deadline['on_demand_rows']:,} on demand "
                     f"({_usd(deadline.get('on_demand_usd'))})")
        for cut in deadline.get("cut_short", []):
            lines.append(f"  {cut}")
    schema = summary.get("schema")
    if schema:
        lines.append(f"Schema:  {schema['valid']:,} outputs valid ({schema['valid_after_retry']:,} after a retry), "
                     f"{schema['invalid']:,} invalid after their retry")
    for stuck in summary.get("stuck_jobs") or []:
        lines.append(f"Stuck:   {stuck}")
    return lines
