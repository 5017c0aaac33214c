"""Power-law fits (alp_jax/sweeps/fit.py) and the crossover finder (alp_jax/sweeps/crossover.py) on synthetic data."""
import numpy as np

from alp_jax.sweeps import crossover, fit

TRUE_E, TRUE_A, TRUE_ALPHA = 0.1, 20.0, 0.5
XS = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5]


def _points(seeds: int, noise: float, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = np.repeat(XS, seeds)
  err = TRUE_E + TRUE_A * x ** (-TRUE_ALPHA) + rng.normal(0.0, noise, len(x))
  return x, err, np.tile(np.arange(seeds), len(XS))


def test_recovers_known_parameters_and_intervals_cover_them():
  x, err, seeds = _points(seeds=4, noise=0.004, seed=1)
  law = fit.fit_power_law(x, err, seeds, resamples=200)
  assert law.fitted and law.bootstrap.startswith("seeds")
  assert abs(law.E - TRUE_E) < 0.02
  assert abs(law.alpha - TRUE_ALPHA) < 0.05
  assert abs(np.log(law.A / TRUE_A)) < 0.3
  for value, interval in ((TRUE_E, law.E_interval), (TRUE_A, law.A_interval), (TRUE_ALPHA, law.alpha_interval)):
    assert interval[0] <= value <= interval[1]
  assert law.to_json()["alpha"] == law.alpha


def test_one_seed_per_x_uses_residual_bootstrap():
  x, err, _ = _points(seeds=1, noise=0.003, seed=2)
  law = fit.fit_power_law(x, err, resamples=200)
  assert law.fitted and law.bootstrap.startswith("residuals")
  assert law.alpha_interval[0] <= TRUE_ALPHA <= law.alpha_interval[1]


def test_refuses_with_too_few_distinct_x():
  law = fit.fit_power_law([1e3, 1e3, 1e4, 1e5], [0.5, 0.5, 0.3, 0.2])
  assert not law.fitted
  assert "3 distinct x" in law.reason and str(fit.MIN_DISTINCT_X) in law.reason


def test_refuses_metrics_outside_unit_interval():
  err, reason = fit.metric_error([0.5, 12.0], higher_is_better=True)
  assert err is None and "outside [0, 1]" in reason
  err, _ = fit.metric_error([0.25, 0.75], higher_is_better=True)
  np.testing.assert_allclose(err, [0.75, 0.25])


def test_holdout_predicts_the_largest_x():
  x, err, seeds = _points(seeds=2, noise=0.002, seed=3)
  held = fit.holdout(x, err, seeds, resamples=100)
  assert held["x"] == XS[-1]
  assert abs(held["error"]) < 0.02
  assert held["predicted_interval"][0] < held["predicted_interval"][1]
  few = fit.holdout(x[x < 1e5], err[x < 1e5])  # 4 sizes: the 3 left cannot be fitted
  assert "refused" in few and "3 distinct x" in few["refused"]


def _curve(values, noise=0.0, seeds=3, seed=0):
  rng = np.random.default_rng(seed)
  return {x: {s: v + rng.normal(0.0, noise) for s in range(seeds)} for x, v in values.items()}


def test_crossover_found_within_tolerance():
  xs = [1e3, 1e4, 1e5, 1e6]
  # contrastive flat at 0.6, captioning 0.45 + 0.1 * log10(x / 1e3): equal at x = 10**4.5
  con = _curve({x: 0.6 for x in xs}, noise=0.005, seed=1)
  cap = _curve({x: 0.45 + 0.1 * np.log10(x / 1e3) for x in xs}, noise=0.005, seed=2)
  found = crossover.find_crossover(con, cap, names=("contrastive", "captioning"), resamples=200)
  assert found["status"] == "crossover"
  item = found["crossovers"][-1]
  assert item["from_leader"] == "contrastive" and item["to_leader"] == "captioning"
  assert abs(np.log10(item["x"]) - 4.5) < 0.1
  assert item["interval"][0] < item["x"] < item["interval"][1]


def test_no_crossover_names_the_leader():
  xs = [1e3, 1e4, 1e5]
  con = _curve({x: 0.7 for x in xs}, noise=0.005)
  cap = _curve({x: 0.5 + 0.01 * np.log10(x) for x in xs}, noise=0.005, seed=4)
  found = crossover.find_crossover(con, cap, names=("contrastive", "captioning"), resamples=50)
  assert found["status"] == "no crossover in range" and found["leader"] == "contrastive"
  assert found["extrapolated"] is None


def test_extrapolated_crossover_is_marked():
  xs = [1e3, 3e3, 1e4, 3e4, 1e5]
  a = fit.PowerLaw(True, E=0.25, A=0.2, alpha=0.2)  # leads over the range, flat later
  b = fit.PowerLaw(True, E=0.0, A=1.0, alpha=0.1)   # behind over the range, no floor: overtakes near 1e6
  con = {x: {0: 1.0 - float(a.error_at(x))} for x in xs}
  cap = {x: {0: 1.0 - float(b.error_at(x))} for x in xs}
  found = crossover.find_crossover(con, cap, names=("contrastive", "captioning"), fits=(a, b), resamples=0)
  assert found["status"] == "no crossover in range"
  assert found["extrapolated"]["leader_after"] == "captioning" and found["extrapolated"]["x"] > xs[-1]
  assert "EXTRAPOLATED" in found["why"]
