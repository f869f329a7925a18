"""Deadlines and stuck jobs: when a batch job must give way to on-demand calls.

A spec's `deadline` is a time (ISO 8601 with its zone, e.g. "2025-07-01T17:00:00+02:00") or a
duration from the run's start ("90m", "2h", "1h30m", "45s"). The batch cutoff is the deadline less
the time the records still pending would take on demand (pending × observed latency ÷ the model's
on-demand concurrency) less a margin: at the cutoff, whatever a job has not answered goes on demand,
so every row is answered by the deadline. The margin is QUARRY_DEADLINE_MARGIN_S, but never more
than a tenth of the run's whole window, so a short deadline still leaves its batch job time to work.

A job is stuck when it has records pending and its processed count has not moved for stuck_after_s
(the sample Quarry learnt this from uses 30 minutes). With a deadline, a stuck job is stopped and its
missing records go on demand at once; without one, it is reported (status, email) and left to run.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m(?:in)?)?\s*(?:(?P<s>\d+)\s*s)?\s*$")

# A window's share that the margin may take at most.
MARGIN_SHARE = 0.1


class BadDeadline(ValueError):
    """The deadline is neither an ISO time with a zone nor a duration such as 90m or 1h30m."""


def parse_deadline(text: str) -> dt.datetime | dt.timedelta:
    """An absolute time (timezone-aware) or a duration from the run's start."""
    match = _DURATION.match(text)
    if match and any(match.group(k) for k in ("h", "m", "s")):
        seconds = int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + int(match["s"] or 0)
        if seconds <= 0:
            raise BadDeadline(f"deadline {text!r} is a duration of zero")
        return dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadDeadline(f"deadline {text!r} is neither a time (ISO 8601 with its zone, e.g. "
                          "2025-07-01T17:00:00+00:00) nor a duration (e.g. 90m, 2h, 1h30m, 45s)") from None
    if when.tzinfo is None:
        raise BadDeadline(f"deadline {text!r} has no time zone: add one, e.g. {text.strip()}+00:00 or Z")
    return when


def deadline_at(text: str, started: dt.datetime) -> dt.datetime:
    """The deadline as a time: a duration counts from the run's start."""
    parsed = parse_deadline(text)
    return started + parsed if isinstance(parsed, dt.timedelta) else parsed


@dataclass(frozen=True)
class Cutoff:
    """When batch must stop for the pending records to finish on demand by the deadline."""

    at: dt.datetime
    on_demand_s: float  # the time the pending records would take on demand
    margin_s: float


def batch_cutoff(*, deadline: dt.datetime, started: dt.datetime, pending: int, latency_s: float,
                 concurrency: int, margin_s: float) -> Cutoff:
    """The batch cutoff for `pending` records, given the model's on-demand latency and concurrency."""
    on_demand_s = math.ceil(max(pending, 0) / max(concurrency, 1)) * max(latency_s, 0.0)
    window = max((deadline - started).total_seconds(), 0.0)
    margin = min(margin_s, window * MARGIN_SHARE)
    return Cutoff(deadline - dt.timedelta(seconds=on_demand_s + margin), on_demand_s, margin)


def is_stuck(*, processed: int, total: int, progressed_at: dt.datetime | None, now: dt.datetime,
             stuck_after_s: float) -> bool:
    """Records pending, and the processed count has not moved for stuck_after_s."""
    if total <= 0 or processed >= total or progressed_at is None:
        return False
    return (now - progressed_at).total_seconds() >= stuck_after_s


def stuck_jobs(jobs: list) -> list[str]:
    """A line for each job poll found stuck (Job.stuck_since), for status and the email."""
    return [f"job {job.name}: {job.processed:,} of {job.records:,} records processed, no progress since "
            f"{job.stuck_since.isoformat(timespec='seconds')}" + (f" ({job.cut_short})" if job.cut_short else "")
            for job in sorted(jobs, key=lambda j: (j.index, j.attempt)) if job.stuck_since is not None]
