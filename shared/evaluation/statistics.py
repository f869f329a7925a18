"""Confidence intervals and paired tests for comparing models on the same records.

- Means: percentile bootstrap (Efron) of the mean, seeded; BOOTSTRAP_METHOD names it in results.
  Percentile rather than BCa: BCa's jackknife costs O(n) resamples of n records, and at the sizes
  Quarry evaluates (thousands to millions of records) the mean's bootstrap distribution is close to
  symmetric, where the two agree.
- Continuous metrics: a paired bootstrap of the mean difference (records resampled together):
  its percentile interval, and a two-sided p from the bootstrap distribution shifted to the null
  (Efron & Tibshirani, An Introduction to the Bootstrap, 16.4): p = (#{|d*_b - d| >= |d|} + 1)/(B + 1).
  A paired permutation (sign-flip) test is the alternative: exact when 2^n <= resamples.
- Binary metrics: exact McNemar on the discordant pairs (a right and b wrong, and the reverse):
  p = binomtest(a_only, a_only + b_only, 0.5), two-sided; the interval is the paired bootstrap's.
- Several comparisons: Holm's step-down adjustment (Holm 1979), which controls the family-wise
  error rate without assuming independence.
Everything is seeded: the same scores give the same intervals and p-values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_METHOD = "percentile"
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
# Resamples are drawn in blocks of about this many indices, so memory stays bounded at any n.
_BLOCK_CELLS = 4_000_000


def _as_scores(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a[~np.isnan(a)]


def bootstrap_means(x: np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement) of x; x must hold no NaN."""
    n = len(x)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    block = max(1, _BLOCK_CELLS // max(n, 1))
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    return means


def _percentile_interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class MeanEstimate:
    mean: float | None
    low: float | None
    high: float | None
    n: int
    missing: int


def mean_ci(scores: Sequence[float] | np.ndarray, *, confidence: float = DEFAULT_CONFIDENCE,
            n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> MeanEstimate:
    """Mean of the scores that are not NaN, with its percentile bootstrap interval (None with fewer
    than two scores; a constant sample's interval is that constant)."""
    raw = np.asarray(scores, dtype=np.float64)
    x = raw[~np.isnan(raw)]
    missing = len(raw) - len(x)
    if len(x) == 0:
        return MeanEstimate(None, None, None, 0, missing)
    mean = float(x.mean())
    if len(x) < 2:
        return MeanEstimate(mean, None, None, 1, missing)
    low, high = _percentile_interval(bootstrap_means(x, n_resamples=n_resamples, seed=seed), confidence)
    return MeanEstimate(mean, low, high, len(x), missing)


TestName = Literal["paired_bootstrap", "permutation", "mcnemar_exact"]


@dataclass(frozen=True)
class PairedTest:
    """a against b on the records both have a score for."""

    test: TestName
    n: int
    mean_difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    a_only: int | None = None
    b_only: int | None = None


def _paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired scores must have the same length")
    both = ~(np.isnan(a) | np.isnan(b))
    return a[both], b[both]


def paired_bootstrap(a, b, *, confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> PairedTest:
    """Paired bootstrap of mean(a - b): percentile interval and a two-sided p under the null
    (the bootstrap distribution shifted to a mean difference of 0)."""
    a, b = _paired(a, b)
    d = a - b
    if len(d) == 0:
        return PairedTest("paired_bootstrap", 0, None, None, None, None)
    observed = float(d.mean())
    if len(d) < 2:
        return PairedTest("paired_bootstrap", len(d), observed, None, None, None)
    means = bootstrap_means(d, n_resamples=n_resamples, seed=seed)
    low, high = _percentile_interval(means, confidence)
    extreme = int(np.sum(np.abs(means - observed) >= abs(observed)))
    return PairedTest("paired_bootstrap", len(d), observed, low, high, (extreme + 1) / (n_resamples + 1))


def paired_permutation(a, b, *, confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                       seed: int = 0) -> PairedTest:
    """Sign-flip permutation test of mean(a - b) = 0 (two-sided; exact when 2^n <= n_resamples,
    else Monte Carlo with p = (#extreme + 1)/(B + 1)); the interval is the paired bootstrap's."""
    a, b = _paired(a, b)
    d = a - b
    boot = paired_bootstrap(a, b, confidence=confidence, n_resamples=n_resamples, seed=seed)
    if len(d) < 2:
        return PairedTest("permutation", boot.n, boot.mean_difference, boot.low, boot.high, boot.p_value)
    observed = abs(d.mean())
    # A tolerance, so that sign patterns giving the same mean are not lost to rounding.
    tol = 1e-12 * max(1.0, observed)
    if 2 ** len(d) <= n_resamples:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        p = float(np.mean(np.abs((signs * d).mean(axis=1)) >= observed - tol))
    else:
        rng = np.random.default_rng(seed)
        extreme = 0
        block = max(1, _BLOCK_CELLS // len(d))
        for start in range(0, n_resamples, block):
            k = min(block, n_resamples - start)
            signs = rng.choice(np.array([-1.0, 1.0]), size=(k, len(d)))
            extreme += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - tol))
        p = (extreme + 1) / (n_resamples + 1)
    return PairedTest("permutation", len(d), float(d.mean()), boot.low, boot.high, p)


def mcnemar_exact(a, b, *, confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = DEFAULT_RESAMPLES,
                  seed: int = 0) -> PairedTest:
    """Exact McNemar test of two binary (0/1) score vectors on the same records."""
    a, b = _paired(a, b)
    if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        raise ValueError("McNemar's test needs binary scores (0 or 1)")
    a_only = int(np.sum((a == 1) & (b == 0)))
    b_only = int(np.sum((a == 0) & (b == 1)))
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(stats.binomtest(a_only, discordant, 0.5).pvalue)
    boot = paired_bootstrap(a, b, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return PairedTest("mcnemar_exact", len(a), boot.mean_difference, boot.low, boot.high,
                      p if len(a) else None, a_only, b_only)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input's order (None stays None, not counted)."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
