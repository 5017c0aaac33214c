"""Evaluator "sed": sound event detection by a frame-level linear probe on the frozen encoder's frames, scored by
PSDS1 and collar-based event F1 (each with a 95% bootstrap interval over test clips), on SED task folders
(train.tsv / test.tsv: filename, onset, offset, event_label; alp_jax/evaluate/sed_tasks.py).

  config.evaluators.sed = ConfigDict(type="sed", task_dirs=(DIR, ...), every=N, sed_resamples=0)
  python -m alp_jax.evaluate ... --task-dir SED_TASK_DIR --suite sed [--seed S] [--cache-dir DIR] [--sed-resamples R]

Metric names in training: TASK/psds1 and TASK/event_f1. The protocol is fixed and seeded
(alp_jax/evaluate/sed_probe.py); the metrics need the `sed` extra (sed_scores_eval).
"""
from __future__ import annotations

from alp_jax.evaluate import evaluator
from alp_jax.evaluate import sed_metrics
from alp_jax.evaluate import sed_probe
from alp_jax.train import evaluators


@evaluators.register("sed")
class SedEvaluator(evaluator.Evaluator):
  needs = frozenset()
  needs_any = evaluator.AUDIO_FEATURES   # an audio encoder or a baseline's frames
  task_kind = evaluator.SED
  suites = ("default", "study")
  order = 5

  def __init__(self, config, eval_cfg, **kwargs):
    super().__init__(config, eval_cfg, **kwargs)
    self.probe_config = sed_probe.SedProbeConfig(
        seed=eval_cfg.get("seed", 0), interval_resamples=eval_cfg.get("sed_resamples", sed_metrics.INTERVAL_RESAMPLES))

  def rows(self, model, tasks):
    if tasks:
      sed_metrics.library()   # says what to install before any embedding work
    return sed_probe.evaluate_encoder(model.encoder, list(tasks), config=self.probe_config,
                                      cache_dir=self.eval_cfg.get("cache_dir"), log=self.log)

  def metric_name(self, row):
    return f"{row['task']}/{row['metric']}"

  def protocol(self):
    return {"sed": {"probe": self.probe_config.to_dict(), "method": sed_probe.METHOD,
                    "psds1": {k: v for k, v in sed_metrics.PSDS1.items()}, "event_f1": dict(sed_metrics.EVENT_F1),
                    "interval": f"percentile bootstrap over test clips, {self.probe_config.interval_resamples} "
                                f"resamples, level {self.probe_config.interval_level}",
                    "selection": "valid.tsv if present, else a seeded valid_fraction of the train clips (seed 0); "
                                 "PSDS1 on the validation clips (ties: event F1), first best in grid order; "
                                 "retrain on train+valid",
                    "library": "sed_scores_eval"}}
