"""Evaluator "probe": linear probes (mean and/or attention pooling) on probe tasks, on the audio encoder alone
(or on a classical-feature baseline: --baseline). Every row carries its 95% bootstrap interval over test clips.

  config.evaluators.probe = ConfigDict(type="probe", task_dirs=(DIR, ...), pooling="mean", every=N)
  python -m alp_jax.evaluate ... --suite probe [--pooling mean|attention|both] [--seed S] [--cache-dir DIR]

Metric names in training: TASK/POOLING. The protocol is fixed and seeded (alp_jax/evaluate/probe.py).
"""
from __future__ import annotations

from alp_jax.evaluate import evaluator
from alp_jax.evaluate import probe as probe_lib
from alp_jax.train import evaluators


@evaluators.register("probe")
class ProbeEvaluator(evaluator.Evaluator):
  needs = frozenset()
  needs_any = evaluator.AUDIO_FEATURES   # an audio encoder or a baseline's features
  task_kind = evaluator.PROBE
  suites = ("default", "study")
  order = 0

  def __init__(self, config, eval_cfg, **kwargs):
    super().__init__(config, eval_cfg, **kwargs)
    pooling = eval_cfg.get("pooling", probe_lib.MEAN if config is not None else "both")
    self.poolings = probe_lib.POOLINGS if pooling == "both" else (pooling,)
    self.probe_config = probe_lib.ProbeConfig(seed=eval_cfg.get("seed", 0))

  def rows(self, model, tasks):
    return probe_lib.evaluate_encoder(model.encoder, list(tasks), poolings=self.poolings, config=self.probe_config,
                                      cache_dir=self.eval_cfg.get("cache_dir"), log=self.log)

  def metric_name(self, row):
    return f"{row['task']}/{row['method']}"

  def protocol(self):
    return {"poolings": list(self.poolings), "probe": self.probe_config.to_dict(),
            "interval": f"percentile bootstrap over test clips, {self.probe_config.interval_resamples} resamples, "
                        f"level {self.probe_config.interval_level}",
            "selection": "valid.csv if present, else a seeded valid_fraction of train (seed 0); first best in grid "
                         "order; retrain on train+valid"}
