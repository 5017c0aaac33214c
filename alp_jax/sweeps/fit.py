"""Saturating power laws: err(x) = E + A * x**(-alpha), fitted with bootstrap intervals and a held-out check.

Legend: x the scaling axis (data_pairs: training clips, or flops: total training FLOPs), err the error,
E the irreducible error (the floor as x -> inf), A the scale, alpha the exponent; R bootstrap resamples.

Convention: a metric is fitted only when its values lie in [0, 1] (accuracy, mAP, R@k ...); its error is
`1 - value` when higher is better, else the value itself (an error rate). Any other metric (CIDEr, a loss) is
refused with that reason: a floor E >= 0 and a ceiling of 1 are what make the saturating form meaningful.

Fitting. For a fixed alpha the model is linear in (E, A), so the least-squares (E, A) under the bounds
0 <= E <= min(err), A >= 0 come from a bounded linear solve; a grid over alpha in (0, ALPHA_MAX] picks the start
and `scipy.optimize.least_squares` refines all three under the same bounds (bootstrap draws keep the
grid's best, a 2% step in alpha, which is far finer than their spread). x is divided by its smallest value
while fitting (so A is O(err)) and A is reported back in raw x units: err = E + A * x**(-alpha).

Refusal. Three parameters need at least MIN_DISTINCT_X = 4 distinct x values: with 3 the curve passes through
the points (0 degrees of freedom, no check of the form at all); with 4 there is one residual degree of freedom.

Uncertainty (95% percentile bootstrap). When every x has several seeds, a draw resamples the seeds within each
x with replacement (the seed-to-seed noise, every x kept). Otherwise a draw adds resampled residuals of the
fit, scaled by sqrt(N / (N - 3)) for the 3 fitted parameters, to its fitted values (residual bootstrap): resampling single points with replacement would lose x values
and most draws would fall below MIN_DISTINCT_X.

Held-out check: the points at the largest x are removed, the law is fitted to the rest (when the rest still has
MIN_DISTINCT_X distinct x), and its prediction at that x is compared with the mean observed value there.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
from scipy import optimize

MIN_DISTINCT_X = 4
ALPHA_MAX = 3.0
RESAMPLES = 1000
LEVEL = 0.95
_ALPHA_GRID = np.geomspace(1e-3, ALPHA_MAX, 400)  # 2% steps


@dataclasses.dataclass
class PowerLaw:
  """A fitted err = E + A * x**(-alpha), or a refusal (fitted False, reason says why)."""
  fitted: bool
  reason: str = ""
  n_points: int = 0
  distinct_x: int = 0
  E: Optional[float] = None
  A: Optional[float] = None
  alpha: Optional[float] = None
  E_interval: Optional[list] = None
  A_interval: Optional[list] = None
  alpha_interval: Optional[list] = None
  rmse: Optional[float] = None
  bootstrap: str = ""
  draws: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)  # (R, 3) rows of (E, A, alpha)

  def error_at(self, x) -> np.ndarray:
    return self.E + self.A * np.asarray(x, np.float64) ** (-self.alpha)

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out.pop("draws")
    return out


def metric_error(values, higher_is_better: bool) -> tuple[Optional[np.ndarray], str]:
  """-> (err, "") with err = 1 - value (higher is better) or value, or (None, reason) for a metric outside [0, 1]."""
  values = np.asarray(values, np.float64)
  if values.size and (values.min() < 0.0 or values.max() > 1.0):
    return None, (f"values span [{values.min():.4g}, {values.max():.4g}], outside [0, 1]: only metrics in [0, 1] "
                  "are fitted (err = 1 - value), so the saturating law has a floor and a ceiling")
  return (1.0 - values if higher_is_better else values), ""


def value_from_error(err, higher_is_better: bool):
  return 1.0 - err if higher_is_better else err


def _grid_fit(xs: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Best (E, A, alpha) on the alpha grid for each of R error vectors at the same scaled x.

  xs: (N,) x / min(x); err: (R, N). For each (draw, alpha) the bounded linear least squares in (E, A) is solved
  in closed form: the box 0 <= E <= min(err), A >= 0 is convex, so the optimum is the unconstrained solution when
  it is inside, else the best of the optima along the edges E = 0, E = min(err) and A = 0.
  -> (params (R, 3), sum of squares (R,)).
  """
  z = xs[None, :] ** (-_ALPHA_GRID[:, None])                      # (G, N)
  n = float(len(xs))
  sz, szz = z.sum(1)[None, :], (z * z).sum(1)[None, :]           # (1, G)
  sy, syy = err.sum(1)[:, None], (err * err).sum(1)[:, None]     # (R, 1)
  szy = err @ z.T                                                 # (R, G)
  e_max = np.maximum(err.min(1), 0.0)[:, None]                    # (R, 1)

  def cost(e, a):
    return syy - 2 * e * sy - 2 * a * szy + n * e * e + 2 * e * a * sz + a * a * szz

  det = np.where(np.abs(n * szz - sz * sz) > 1e-300, n * szz - sz * sz, np.inf)
  a_free = (n * szy - sz * sy) / det
  e_free = (sy - a_free * sz) / n
  inside = (e_free >= 0) & (e_free <= e_max) & (a_free >= 0)
  candidates = [
      (np.where(inside, e_free, 0.0), np.where(inside, a_free, 0.0), np.where(inside, 0.0, np.inf)),
      (np.zeros_like(szy), np.maximum(szy / szz, 0.0), 0.0),
      (np.broadcast_to(e_max, szy.shape), np.maximum((szy - e_max * sz) / szz, 0.0), 0.0),
      (np.broadcast_to(np.clip(sy / n, 0.0, e_max), szy.shape), np.zeros_like(szy), 0.0),
  ]
  best_e = best_a = None
  best_cost = np.full(szy.shape, np.inf)
  for e, a, penalty in candidates:
    c = cost(e, a) + penalty
    better = c < best_cost
    best_cost = np.where(better, c, best_cost)
    best_e = np.where(better, e, best_e if best_e is not None else e)
    best_a = np.where(better, a, best_a if best_a is not None else a)
  g = np.argmin(best_cost, axis=1)
  r = np.arange(len(err))
  params = np.stack([best_e[r, g], best_a[r, g], _ALPHA_GRID[g]], axis=1)
  return params, np.maximum(best_cost[r, g], 0.0)


def _solve(xs: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, float]:
  """Least-squares (E, A, alpha) at scaled x: the grid's best, refined by scipy under the same bounds."""
  start, grid_cost = _grid_fit(xs, err[None, :])
  start, grid_cost = start[0], float(grid_cost[0])
  e_max = max(float(err.min()), 0.0)

  def residuals(params):
    return params[0] + params[1] * xs ** (-params[2]) - err

  lower, upper = [0.0, 0.0, _ALPHA_GRID[0] / 10], [e_max + 1e-12, np.inf, ALPHA_MAX]
  refined = optimize.least_squares(residuals, np.clip(start, lower, upper), bounds=(lower, upper))
  cost = float(np.sum(residuals(refined.x) ** 2))
  if cost <= grid_cost:
    return refined.x, cost
  return start, grid_cost


def _refusal(x: np.ndarray) -> str:
  distinct = len(np.unique(x))
  if distinct < MIN_DISTINCT_X:
    return (f"only {distinct} distinct x value(s); a 3-parameter law needs at least {MIN_DISTINCT_X} "
            "(3 parameters + 1 degree of freedom to check the form)")
  if np.any(~np.isfinite(x)) or np.any(x <= 0):
    return "x must be finite and > 0 (a baseline or a run without FLOPs recorded?)"
  return ""


def _interval(values: np.ndarray, level: float) -> Optional[list]:
  values = values[np.isfinite(values)]
  if len(values) == 0:
    return None
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(values, [tail, 100.0 - tail])
  return [float(low), float(high)]


def fit_power_law(x, err, seeds=None, *, resamples: int = RESAMPLES, level: float = LEVEL,
                  seed: int = 0) -> PowerLaw:
  """Fits err = E + A * x**(-alpha) to points (x[i], err[i]) with bootstrap intervals.

  x, err: (N,) points, several per x allowed (seeds); seeds: (N,) labels, only used to count seeds per x.
  -> PowerLaw (fitted False with the reason when refused).
  """
  x = np.asarray(x, np.float64)
  err = np.asarray(err, np.float64)
  reason = _refusal(x)
  distinct = np.unique(x)
  if reason:
    return PowerLaw(False, reason, n_points=len(x), distinct_x=len(distinct))
  scale = float(distinct[0])
  xs = x / scale
  params, cost = _solve(xs, err)

  def raw(p):  # A back in raw x units
    return np.array([p[0], p[1] * scale ** p[2], p[2]])

  groups = [np.flatnonzero(x == v) for v in distinct]
  per_x_seeds = all(len(g) >= 2 for g in groups)
  rng = np.random.default_rng(seed)
  fitted_err = params[0] + params[1] * xs ** (-params[2])
  residual = (err - fitted_err) * math.sqrt(len(x) / max(len(x) - 3, 1))  # undo the fit's shrinkage
  order = np.concatenate(groups)  # the points grouped by x: every draw keeps this x vector
  if per_x_seeds:
    draw_err = np.stack([np.concatenate([err[rng.choice(g, len(g))] for g in groups]) for _ in range(resamples)])
  else:
    draw_err = fitted_err[order][None, :] + rng.choice(residual, (resamples, len(residual)))
  grid_params, _ = _grid_fit(xs[order], draw_err)
  draws = np.stack([raw(p) for p in grid_params]) if resamples else np.zeros((0, 3))
  final = raw(params)
  return PowerLaw(
      True, n_points=len(x), distinct_x=len(distinct), E=float(final[0]), A=float(final[1]), alpha=float(final[2]),
      E_interval=_interval(draws[:, 0], level), A_interval=_interval(draws[:, 1], level),
      alpha_interval=_interval(draws[:, 2], level), rmse=float(math.sqrt(cost / len(x))),
      bootstrap=("seeds resampled within each x" if per_x_seeds else "residuals resampled (one seed per x)"),
      draws=draws)


def holdout(x, err, seeds=None, *, higher_is_better: bool = True, resamples: int = RESAMPLES,
            level: float = LEVEL, seed: int = 0) -> dict:
  """Fits all but the largest x and predicts it.

  -> {"x", "observed", "predicted", "error" (predicted - observed, metric units), "error_interval",
      "predicted_interval"} or {"refused": reason}.
  """
  x = np.asarray(x, np.float64)
  err = np.asarray(err, np.float64)
  if len(x) == 0:
    return {"refused": "no points"}
  last = float(np.max(x))
  keep = x < last
  law = fit_power_law(x[keep], err[keep], resamples=resamples, level=level, seed=seed)
  if not law.fitted:
    return {"refused": f"without the largest x ({last:.4g}) the rest cannot be fitted: {law.reason}"}
  observed = float(value_from_error(err[~keep].mean(), higher_is_better))
  predicted = float(value_from_error(law.error_at(last), higher_is_better))
  draws = law.draws
  predicted_draws = value_from_error(draws[:, 0] + draws[:, 1] * last ** (-draws[:, 2]), higher_is_better)
  predicted_interval = _interval(predicted_draws, level)
  return {"x": last, "observed": observed, "predicted": predicted, "error": predicted - observed,
          "predicted_interval": predicted_interval,
          "error_interval": None if predicted_interval is None else [v - observed for v in predicted_interval]}
