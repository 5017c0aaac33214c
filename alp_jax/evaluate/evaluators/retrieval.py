"""Evaluator "retrieval": audio-text retrieval on caption tasks' test splits with the model's text side
(cosine of the towers' embeddings, or log p(caption | clip) from a caption decoder): a2t/t2a R@1/5/10, mAP@10.

  config.evaluators.ret = ConfigDict(type="retrieval", task_dirs=(DIR, ...))
  python -m alp_jax.evaluate --workdir RUN ... --suite retrieval

Metric names in training: TASK[_likelihood]/METRIC.
"""
from __future__ import annotations

from alp_jax.evaluate import evaluator
from alp_jax.evaluate import retrieval
from alp_jax.train import evaluators


@evaluators.register("retrieval")
class RetrievalEvaluator(evaluator.Evaluator):
  needs_any = evaluator.TEXT_SIDE
  task_kind = evaluator.CAPTION
  suites = ("default",)
  order = 2

  def task_rows(self, model, task):
    return retrieval.evaluate_task(model, task, cache_dir=self.eval_cfg.get("cache_dir"), log=self.log)

  def metric_name(self, row):
    return f"{evaluator.by_method(row)}/{row['metric']}"
