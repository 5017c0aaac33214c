"""From validated rows to the report's numbers: power-law fits per curve and crossovers per task family.

Legend: a *series* is one curve: (objective, init, model_size, budget) x one measure (task, task_family,
evaluation, method, metric), its points one per (x, seed) over the pretrained rows; x is `data_pairs` (training
clips) or `flops` (total training FLOPs).
"""
from __future__ import annotations

import itertools

import numpy as np

from alp_jax.sweeps import crossover, fit, results

X_AXES = ("data_pairs", "flops")
SERIES = ("objective", "init") + results.CONTEXT + results.MEASURE


def _points(rows: list[dict], x_axis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  x = np.array([float(r[x_axis]) for r in rows])
  values = np.array([float(r["value"]) for r in rows])
  seeds = np.array([r["seed"] for r in rows])
  return x, values, seeds


def fit_series(rows: list[dict], *, resamples: int = fit.RESAMPLES, seed: int = 0) -> list[dict]:
  """A fit and a held-out check per series and x axis (refusals included, with their reason)."""
  out = []
  for key, group in results.group(results.pretrained(rows), SERIES).items():
    higher_is_better = group[0]["higher_is_better"]
    for x_axis in X_AXES:
      x, values, seeds = _points(group, x_axis)
      entry = dict(zip(SERIES, key), x_axis=x_axis, higher_is_better=higher_is_better)
      err, reason = fit.metric_error(values, higher_is_better)
      if err is None:
        entry["law"] = fit.PowerLaw(False, reason, n_points=len(x), distinct_x=len(set(x))).to_json()
        entry["holdout"] = {"refused": reason}
      else:
        law = fit.fit_power_law(x, err, seeds, resamples=resamples, seed=seed)
        entry["law"] = law.to_json()
        entry["holdout"] = (fit.holdout(x, err, seeds, higher_is_better=higher_is_better, resamples=resamples,
                                        seed=seed) if law.fitted else {"refused": law.reason})
      out.append(entry)
  return out


def family_curves(rows: list[dict]) -> dict[tuple, dict]:
  """{(task_family, evaluation, method, init, model_size, budget, objective): {x: {seed: mean score}}}.

  The mean is over the family's measures of that (evaluation, method); only (x, seed) cells holding every one
  of them are kept (crossover module docstring).
  """
  fields = ("task_family", "evaluation", "method", "init") + results.CONTEXT + ("objective",)
  curves = {}
  for key, group in results.group(results.pretrained(rows), fields).items():
    measures = {results.key_of(r, results.MEASURE) for r in group}
    cells: dict = {}
    for r in group:
      cells.setdefault((r["data_pairs"], r["seed"]), {})[results.key_of(r, results.MEASURE)] = results.score(r)
    curve: dict = {}
    for (x, seed_), scores in cells.items():
      if len(scores) == len(measures):
        curve.setdefault(x, {})[seed_] = float(np.mean(list(scores.values())))
    if curve:
      curves[key] = curve
  return curves


def _family_fit(curve: dict, resamples: int, seed: int):
  """A law on 1 - mean score when the scores are in [0, 1] (higher is better), else None."""
  x = np.array([float(xv) for xv, seeds in curve.items() for _ in seeds])
  scores = np.array([s for seeds in curve.values() for s in seeds.values()])
  if scores.min() < 0 or scores.max() > 1:
    return None
  law = fit.fit_power_law(x, 1.0 - scores, resamples=resamples, seed=seed)
  return law if law.fitted else None


def crossovers(rows: list[dict], *, resamples: int = crossover.RESAMPLES, seed: int = 0) -> list[dict]:
  """Every pair of objectives, per (task family, evaluation, method, init, model_size, budget)."""
  curves = family_curves(rows)
  by_context: dict = {}
  for key, curve in curves.items():
    by_context.setdefault(key[:-1], {})[key[-1]] = curve
  out = []
  for context, objectives in by_context.items():
    for a, b in itertools.combinations(sorted(objectives), 2):
      fits = tuple(_family_fit(objectives[o], resamples, seed) for o in (a, b))
      found = crossover.find_crossover(objectives[a], objectives[b], names=(a, b), fits=fits,
                                       resamples=resamples, seed=seed)
      out.append(dict(zip(("task_family", "evaluation", "method", "init", "model_size", "budget"), context),
                      objective_a=a, objective_b=b, **found))
  return out
