"""Crossovers: where, if anywhere, one objective's curve overtakes another's as the data grows.

Legend: x the data size (training clips), a and b two objectives, d(x) = score_a(x) - score_b(x) the gap (a score
is higher-is-better, see results.score), R bootstrap resamples.

In range: d is the gap of the seed means at each x both curves measured; a sign change between neighbouring x
values is a crossover, placed by linear interpolation of d in log x. Its 95% interval comes from a bootstrap that
resamples the seeds at each x of each curve (needs several seeds somewhere) and finds the crossover again in
each draw; `draws_crossing` says how often a draw crossed in that same interval of x at all.
No sign change: "no crossover in range", with the leader (the one whose gap sign held throughout).
Extrapolated: only when both curves have fitted power laws (fit.PowerLaw on err) and those fits cross beyond the
largest measured x (up to EXTRAPOLATE_FACTOR times it), reported separately with `extrapolated: True`; it is
the fits' say-so, never a measurement.

Task families (speech, music, environmental, language): a family's curve at (x, seed) is the mean score over
the family's measures (task, evaluation, method, metric) of one (evaluation, method) kind, e.g. all speech
probes with mean pooling; only (x, seed) cells that hold every one of those measures are kept, so the mean is
always over the same tasks.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
EXTRAPOLATE_FACTOR = 100.0

Curve = dict  # {x: {seed: score}}


def _means(curve: Curve, xs) -> np.ndarray:
  return np.array([np.mean(list(curve[x].values())) for x in xs])


def _crossings(xs: np.ndarray, gap: np.ndarray) -> list[tuple[int, float]]:
  """(i, x*) for every sign change of gap between xs[i] and xs[i+1], x* interpolated linearly in log x."""
  found = []
  for i in range(len(xs) - 1):
    g0, g1 = gap[i], gap[i + 1]
    if (g0 > 0 and g1 <= 0) or (g0 < 0 and g1 >= 0):
      t = g0 / (g0 - g1)
      found.append((i, float(math.exp(math.log(xs[i]) + t * (math.log(xs[i + 1]) - math.log(xs[i]))))))
  return found


def _extrapolate(fit_a, fit_b, x_last: float, a_leads: bool) -> Optional[float]:
  """First x in (x_last, x_last * EXTRAPOLATE_FACTOR] where the fitted errors of a and b swap order.

  None unless the fits agree with the data on who leads at x_last (else their crossing says nothing new).
  """
  if fit_a is None or fit_b is None or not fit_a.fitted or not fit_b.fitted:
    return None
  grid = np.geomspace(x_last, x_last * EXTRAPOLATE_FACTOR, 400)
  gap = fit_b.error_at(grid) - fit_a.error_at(grid)  # lower error = higher score: score_a - score_b
  sign = np.sign(gap)
  if sign[0] != (1 if a_leads else -1):
    return None
  change = np.flatnonzero(sign[1:] != sign[:-1])
  return float(grid[change[0] + 1]) if len(change) else None


def find_crossover(curve_a: Curve, curve_b: Curve, *, names=("a", "b"), fits=(None, None),
                   resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict:
  """Where b overtakes a (or a overtakes b) over the x both curves measured.

  curve_a, curve_b: {x: {seed: score}} (higher is better). fits: optional (PowerLaw, PowerLaw) on the error,
  for the extrapolated crossover only.
  -> {"status": "crossover" | "no crossover in range" | "cannot test", "xs", "gap" (a - b at each x),
      "crossovers": [{"x", "interval", "draws_crossing", "from_leader", "to_leader", "between"}],
      "leader" (no crossover: who led throughout), "extrapolated": {"x", "leader_after"} or None, "why"}
  """
  name_a, name_b = names
  xs = np.array(sorted(set(curve_a) & set(curve_b)), np.float64)
  if len(xs) < 2:
    return {"status": "cannot test", "why": f"{name_a} and {name_b} share {len(xs)} data size(s); need 2",
            "xs": xs.tolist(), "gap": [], "crossovers": [], "leader": None, "extrapolated": None}
  gap = _means(curve_a, xs) - _means(curve_b, xs)
  found = _crossings(xs, gap)
  rng = np.random.default_rng(seed)
  several = any(len(c[x]) > 1 for c in (curve_a, curve_b) for x in xs)
  draw_gaps = []
  if several:
    for _ in range(resamples):
      means = []
      for curve in (curve_a, curve_b):
        means.append(np.array([np.mean(rng.choice(list(curve[x].values()), len(curve[x]))) for x in xs]))
      draw_gaps.append(means[0] - means[1])
  crossovers = []
  for i, x_star in found:
    item = {"x": x_star, "between": [float(xs[i]), float(xs[i + 1])],
            "from_leader": name_a if gap[i] > 0 else name_b, "to_leader": name_b if gap[i] > 0 else name_a,
            "interval": None, "draws_crossing": None}
    if draw_gaps:
      hits = []
      for g in draw_gaps:
        near = [x for j, x in _crossings(xs, g) if abs(j - i) <= 1]
        if near:
          hits.append(min(near, key=lambda x: abs(math.log(x) - math.log(x_star))))
      item["draws_crossing"] = len(hits) / len(draw_gaps)
      if hits:
        tail = 100.0 * (1.0 - level) / 2.0
        item["interval"] = [float(v) for v in np.percentile(hits, [tail, 100.0 - tail])]
    crossovers.append(item)
  result = {"xs": xs.tolist(), "gap": gap.tolist(), "crossovers": crossovers, "leader": None,
            "extrapolated": None}
  if crossovers:
    last = crossovers[-1]
    result.update(status="crossover", why=(
        f"{last['to_leader']} overtakes {last['from_leader']} at x ~ {last['x']:.4g}"
        + (f" (95% interval {last['interval'][0]:.4g}-{last['interval'][1]:.4g}, "
           f"{100 * last['draws_crossing']:.0f}% of bootstrap draws cross there)" if last["interval"] else
           " (one seed per point: no interval)")))
    return result
  leader = name_a if gap.mean() > 0 else name_b
  result.update(status="no crossover in range", leader=leader,
                why=f"{leader} leads at every data size from {xs[0]:.4g} to {xs[-1]:.4g}")
  x_ext = _extrapolate(*fits, float(xs[-1]), leader == name_a)
  if x_ext is not None:
    other = name_b if leader == name_a else name_a
    result["extrapolated"] = {"x": x_ext, "leader_after": other}
    result["why"] += (f"; EXTRAPOLATED (outside the measured range, from the fitted laws only): {other} would "
                      f"overtake at x ~ {x_ext:.4g}")
  return result
