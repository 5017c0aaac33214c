"""Evaluator "validation_loss": the training objective on held-out data (no augmentation, no dropout).

config.evaluators.val = ConfigDict(type="validation_loss", every=100, batches=4, corpus_dir="" (default: the
training corpus), sources=(), subset_fraction=1.0)

The loss is the objective table's (alp_jax/objectives.py), the one the update step differentiates. Training only:
the CLI has no training batches to score (`cli = False`).
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from alp_jax import objectives
from alp_jax import sharding as sharding_lib
from alp_jax.data import pipeline
from alp_jax.evaluate import evaluator
from alp_jax.train import evaluators


@evaluators.register("validation_loss")
class ValidationLoss(evaluator.Evaluator):
  task_kind = None
  cli = False

  def __init__(self, config, eval_cfg, *, graphdef, mesh, log=None):
    super().__init__(config, eval_cfg, graphdef=graphdef, mesh=mesh, log=log)
    self.num_batches = eval_cfg.get("batches", 4)
    data_cfg = config.data.copy_and_resolve_references()
    for field in ("corpus_dir", "sources", "subset_fraction"):
      if eval_cfg.get(field):
        data_cfg[field] = eval_cfg[field]
    self.dataset = pipeline.eval_dataset(data_cfg, config.batch_size, process_index=jax.process_index(),
                                         process_count=jax.process_count(), drop_remainder=True)
    if len(self.dataset) == 0:
      raise ValueError(f"evaluator validation_loss: fewer clips than one batch of {config.batch_size} in "
                       f"{data_cfg.corpus_dir}")
    objective = objectives.get(config.loss)

    @jax.jit
    def evaluate(params, rest, batch):
      _, metrics = objective.loss(nnx.merge(graphdef, params, rest), batch, train=False, rng=None, mesh=mesh)
      return metrics

    self._evaluate = evaluate

  def run(self, state):
    totals: dict[str, float] = {}
    n = min(self.num_batches, len(self.dataset))
    with jax.set_mesh(self.mesh):
      for i in range(n):
        batch = sharding_lib.host_to_global(self.dataset[i], self.mesh)
        metrics = jax.device_get(self._evaluate(state["params"], state["rest"], batch))
        for k, v in metrics.items():
          totals[k] = totals.get(k, 0.0) + float(np.asarray(v)) / n
    yield from sorted(totals.items())
