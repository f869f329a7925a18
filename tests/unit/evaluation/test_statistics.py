"""Bootstrap intervals and paired tests against scipy and textbook values; Holm by hand."""
import math

import numpy as np
import pytest
from scipy import stats

from shared.evaluation import statistics as st


def test_bootstrap_interval_agrees_with_scipys_percentile_bootstrap():
    x = np.random.default_rng(7).exponential(size=300)
    ours = st.mean_ci(x, n_resamples=4000, seed=1)
    theirs = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", confidence_level=0.95,
                             random_state=np.random.default_rng(2)).confidence_interval
    assert ours.mean == pytest.approx(x.mean())
    # Two Monte Carlo runs: the ends agree within a small share of the interval's width.
    width = theirs.high - theirs.low
    assert ours.low == pytest.approx(theirs.low, abs=0.1 * width)
    assert ours.high == pytest.approx(theirs.high, abs=0.1 * width)


def test_bootstrap_interval_of_a_large_sample_is_the_normal_interval():
    x = np.random.default_rng(3).random(20_000)
    est = st.mean_ci(x, seed=5)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert est.low == pytest.approx(x.mean() - 1.96 * se, abs=0.15 * se)
    assert est.high == pytest.approx(x.mean() + 1.96 * se, abs=0.15 * se)


def test_missing_scores_are_left_out_and_counted_and_the_result_is_seeded():
    scores = [1.0, 0.0, float("nan"), 1.0, float("nan")]
    est = st.mean_ci(scores, seed=9)
    assert (est.mean, est.n, est.missing) == (pytest.approx(2 / 3), 3, 2)
    assert st.mean_ci(scores, seed=9) == est
    assert st.mean_ci([float("nan")]) == st.MeanEstimate(None, None, None, 0, 1)
    assert st.mean_ci([0.5]).low is None


def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs():
    # Agresti (Categorical Data Analysis, 10.1): approval of the prime minister in two surveys,
    # 794 yes/yes, 150 yes/no, 86 no/yes, 570 no/no. Exact p = 2 * P(X <= 86), X ~ Bin(236, 1/2).
    a = np.repeat([1.0, 1.0, 0.0, 0.0], [794, 150, 86, 570])
    b = np.repeat([1.0, 0.0, 1.0, 0.0], [794, 150, 86, 570])
    result = st.mcnemar_exact(a, b)
    assert (result.a_only, result.b_only, result.n) == (150, 86, 1600)
    assert result.p_value == pytest.approx(2 * stats.binom.cdf(86, 236, 0.5))
    assert result.p_value < 1e-4
    assert result.mean_difference == pytest.approx((150 - 86) / 1600)
    assert result.low < result.mean_difference < result.high


def test_mcnemar_with_no_discordant_pair_finds_nothing_and_refuses_non_binary_scores():
    same = np.array([1.0, 0.0, 1.0])
    assert st.mcnemar_exact(same, same).p_value == 1.0
    with pytest.raises(ValueError, match="binary"):
        st.mcnemar_exact([0.5, 1.0], [1.0, 1.0])


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(11)
    base = rng.random(500)
    better = base + 0.05 + rng.normal(0, 0.05, 500)
    found = st.paired_bootstrap(better, base, seed=1)
    assert found.p_value < 0.001 and found.low > 0
    noise = base + rng.normal(0, 0.05, 500)
    null = st.paired_bootstrap(noise, base, seed=1)
    assert null.p_value > 0.05 and null.low < 0 < null.high


def test_paired_tests_use_only_records_both_models_scored():
    a = [1.0, float("nan"), 0.5, 0.25]
    b = [0.5, 0.0, float("nan"), 0.0]
    result = st.paired_bootstrap(a, b)
    assert result.n == 2 and result.mean_difference == pytest.approx((0.5 + 0.25) / 2)


def test_exact_permutation_test_agrees_with_scipy():
    a = np.array([0.9, 0.8, 0.75, 0.6, 0.95, 0.7, 0.85, 0.5])
    b = np.array([0.7, 0.85, 0.6, 0.55, 0.8, 0.72, 0.6, 0.52])
    ours = st.paired_permutation(a, b)
    theirs = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                                    permutation_type="samples", vectorized=True, n_resamples=np.inf)
    assert ours.p_value == pytest.approx(theirs.pvalue)


def test_holm_adjusts_step_down_and_keeps_the_order():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> monotone 0.06.
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert st.holm([]) == []
