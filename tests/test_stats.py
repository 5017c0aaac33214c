"""Bootstrap intervals against the normal approximation and their coverage; paired gaps of identical, clearly
better and barely different systems; NaN draws skipped; seeding."""
import time

import numpy as np
import pytest

from alp_jax.evaluate import stats

accuracy = lambda correct: float(np.mean(correct))


def _positives_mean(values, positives):
  """A metric that, like mAP, is undefined (NaN) on a resample holding no positive."""
  return float(values[positives].mean()) if positives.any() else float("nan")


@pytest.mark.parametrize("p", [0.3, 0.85])
def test_interval_of_a_bernoulli_mean_matches_the_normal_approximation(p):
  n = 400
  correct = np.random.default_rng(1).random(n) < p
  p_hat = correct.mean()
  half = 1.96 * np.sqrt(p_hat * (1 - p_hat) / n)
  low, high = stats.bootstrap_interval(accuracy, (correct,))
  assert low == pytest.approx(p_hat - half, abs=0.012) and high == pytest.approx(p_hat + half, abs=0.012)
  assert low < p_hat < high
  narrow = stats.bootstrap_interval(accuracy, (correct,), level=0.5)
  assert low < narrow[0] < p_hat < narrow[1] < high


def test_coverage_over_repeated_samples_is_near_the_level():
  p, n, repetitions = 0.7, 400, 200
  rng = np.random.default_rng(2)
  t0 = time.monotonic()
  covered = 0
  for rep in range(repetitions):
    low, high = stats.bootstrap_interval(accuracy, (rng.random(n) < p,), resamples=400, seed=rep)
    covered += low <= p <= high
  assert 0.90 <= covered / repetitions <= 0.99, covered
  assert time.monotonic() - t0 < 10.0


def test_rows_are_resampled_together_and_nan_draws_are_skipped():
  # scores and targets stay paired: a metric that is 1 only when each row keeps its own target.
  scores = np.arange(50.0)
  same = stats.bootstrap_interval(lambda s, t: float(np.all(s == t)), (scores, scores.copy()), resamples=50)
  assert same == (1.0, 1.0)
  # One positive in 30 clips: about (29/30)^30 = 36% of the draws hold none and are NaN; the rest are 7.0.
  values, positives = np.full(30, 7.0), np.zeros(30, bool)
  positives[4] = True
  assert stats.bootstrap_interval(_positives_mean, (values, positives)) == (7.0, 7.0)
  assert all(np.isnan(stats.bootstrap_interval(_positives_mean, (values, np.zeros(30, bool)), resamples=20)))
  with pytest.raises(ValueError, match="first"):
    stats.bootstrap_interval(accuracy, (np.ones(3), np.ones(4)))


def test_paired_gap_of_identical_systems_is_zero_and_not_significant():
  rng = np.random.default_rng(3)
  targets = rng.integers(0, 3, 200)
  scores = rng.normal(size=(200, 3))
  acc = lambda s, t: float(np.mean(s.argmax(-1) == t))
  gap = stats.paired_gap(acc, (scores, targets), (scores.copy(), targets))
  assert gap == {"gap": 0.0, "low": 0.0, "high": 0.0, "significant": False}
  assert stats.significance_mark(gap) == ""


def test_paired_gap_of_a_clearly_better_system_is_positive_and_significant():
  rng = np.random.default_rng(4)
  b = rng.random(400) < 0.6
  a = b.copy()
  a[np.flatnonzero(~b)[:60]] = True            # a is right wherever b is, and on 60 more clips
  gap = stats.paired_gap(accuracy, (a,), (b,))
  assert gap["gap"] == pytest.approx(60 / 400)
  assert 0.0 < gap["low"] < gap["gap"] < gap["high"] and gap["significant"]
  assert stats.significance_mark(gap) == "*"
  reverse = stats.paired_gap(accuracy, (b,), (a,))
  assert reverse["gap"] == pytest.approx(-60 / 400) and reverse["high"] < 0.0 and reverse["significant"]


def test_paired_gap_of_a_tiny_difference_on_few_clips_is_not_significant():
  b = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], bool)
  a = b.copy()
  a[1] = True                                   # one clip of 20
  gap = stats.paired_gap(accuracy, (a,), (b,))
  assert gap["gap"] == pytest.approx(0.05) and gap["low"] <= 0.0 < gap["high"] and not gap["significant"]


def test_same_seed_same_numbers_other_seed_other_numbers():
  rng = np.random.default_rng(5)
  a, b = rng.random(150) < 0.7, rng.random(150) < 0.6
  assert stats.paired_gap(accuracy, (a,), (b,), seed=3) == stats.paired_gap(accuracy, (a,), (b,), seed=3)
  assert stats.bootstrap_interval(accuracy, (a,), seed=3) == stats.bootstrap_interval(accuracy, (a,), seed=3)
  assert stats.bootstrap_interval(accuracy, (a,), seed=3) != stats.bootstrap_interval(accuracy, (a,), seed=4)
  with pytest.raises(ValueError, match="same clips"):
    stats.paired_gap(accuracy, (a,), (b[:-1],))
