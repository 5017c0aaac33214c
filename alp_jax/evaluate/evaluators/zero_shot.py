"""Evaluator "zero_shot": probe tasks' test splits classified by the model's own text side, no probe
(contrastive: prompt embeddings from the text tower; likelihood: log p(prompt | clip) from the caption decoder).

  config.evaluators.zs = ConfigDict(type="zero_shot", task_dirs=(DIR, ...))
  python -m alp_jax.evaluate --workdir RUN ... --suite zero_shot

Metric names in training: TASK (contrastive) and TASK_likelihood (decoder).
"""
from __future__ import annotations

from alp_jax.evaluate import evaluator
from alp_jax.evaluate import zero_shot
from alp_jax.train import evaluators


@evaluators.register("zero_shot")
class ZeroShotEvaluator(evaluator.Evaluator):
  needs_any = evaluator.TEXT_SIDE
  task_kind = evaluator.PROBE
  suites = ("default",)
  order = 1

  def task_rows(self, model, task):
    return zero_shot.evaluate_task(model, task, cache_dir=self.eval_cfg.get("cache_dir"), log=self.log)

  def metric_name(self, row):
    return evaluator.by_method(row)

  def protocol(self):
    return {"zero_shot_templates": list(zero_shot.TEMPLATES)}
