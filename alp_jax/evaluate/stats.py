"""Uncertainty of evaluation numbers: percentile-bootstrap intervals over test clips, and paired gaps.

Legend: N test clips (rows), C classes, R bootstrap resamples.

A test metric (accuracy, mAP) is a function of per-clip outputs, e.g. `metric(scores (N, C), targets (N,) or
(N, C))`. One bootstrap draw picks N row indices uniformly with replacement and applies the same indices to every
array of the tuple, so a clip's scores stay with its targets; the metric of each of R draws gives an empirical
distribution whose (1-level)/2 and 1-(1-level)/2 percentiles are the interval (the percentile bootstrap).

Comparing two systems on the SAME test clips (same order), the paired bootstrap resamples the row indices once
per draw and applies them to both, so clip difficulty cancels out: far tighter than two separate intervals.
A gap is significant when its interval excludes 0; tables mark it with `significance_mark`.

Everything is NumPy and seeded: the same inputs and seed give the same numbers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def _rows(arrays: Sequence[np.ndarray]) -> int:
  sizes = {len(a) for a in arrays}
  if len(sizes) != 1:
    raise ValueError(f"arrays must share their first (clip) axis, got lengths {sorted(sizes)}")
  n = sizes.pop()
  if n == 0:
    raise ValueError("no rows to resample")
  return n


def _draws(n: int, resamples: int, seed: int):
  """R arrays of N row indices drawn with replacement (one at a time: (R, N) at once can be large)."""
  rng = np.random.default_rng(seed)
  for _ in range(resamples):
    yield rng.integers(0, n, n)


def _percentiles(values: list[float], level: float) -> tuple[float, float]:
  finite = np.asarray([v for v in values if not np.isnan(v)], np.float64)
  if len(finite) == 0:
    return float("nan"), float("nan")
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(finite, [tail, 100.0 - tail])
  return float(low), float(high)


def bootstrap_interval(metric: Callable[..., float], arrays: Sequence[np.ndarray], *, resamples: int = RESAMPLES,
                       level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
  """Percentile-bootstrap interval of `metric(*arrays)` over rows (test clips).

  arrays: per-clip arrays sharing their first axis N, e.g. (scores (N, C), targets (N,)); each draw takes N row
  indices with replacement and evaluates metric(*(a[rows] for a in arrays)).
  -> (low, high): the (1-level)/2 and 1-(1-level)/2 percentiles of the R resampled values.

  Draws whose metric is NaN (mAP of a resample that holds no positive of any class) are skipped, so the
  percentiles are over the draws where the metric exists; (nan, nan) if there is none.
  """
  arrays = tuple(np.asarray(a) for a in arrays)
  n = _rows(arrays)
  values = [float(metric(*(a[rows] for a in arrays))) for rows in _draws(n, resamples, seed)]
  return _percentiles(values, level)


def paired_gap(metric: Callable[..., float], a: Sequence[np.ndarray], b: Sequence[np.ndarray], *,
               resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict:
  """Paired-bootstrap gap metric(*a) - metric(*b) of two systems on the same test clips, in the same order.

  a, b: per-clip outputs of each system, e.g. (scores_a (N, C), targets) and (scores_b (N, C'), targets). Each
  draw takes one set of N row indices and applies it to both; NaN differences are skipped (as in
  `bootstrap_interval`).
  -> {"gap": metric(*a) - metric(*b), "low", "high": percentiles of the R resampled differences,
      "significant": the interval excludes 0}.
  """
  a, b = tuple(np.asarray(x) for x in a), tuple(np.asarray(x) for x in b)
  n = _rows(a)
  if _rows(b) != n:
    raise ValueError(f"the systems must be scored on the same clips: {n} rows against {_rows(b)}")
  gap = float(metric(*a)) - float(metric(*b))
  diffs = [float(metric(*(x[rows] for x in a))) - float(metric(*(x[rows] for x in b)))
           for rows in _draws(n, resamples, seed)]
  low, high = _percentiles(diffs, level)
  return {"gap": gap, "low": low, "high": high, "significant": bool(low > 0.0 or high < 0.0)}


def significance_mark(gap: dict) -> str:
  """"*" for a paired gap whose interval excludes 0, "" otherwise (tables append it to the value)."""
  return "*" if gap.get("significant") else ""
