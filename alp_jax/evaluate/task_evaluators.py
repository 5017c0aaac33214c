"""In-training evaluators on task folders: the evaluation CLI's evaluations, run every `every` steps.

  config.evaluators.probe = ConfigDict(type="probe", task_dirs=(DIR, ...), pooling="mean", every=N)
  config.evaluators.zs    = ConfigDict(type="zero_shot", task_dirs=(DIR, ...))       # probe task folders
  config.evaluators.ret   = ConfigDict(type="retrieval", task_dirs=(DIR, ...))       # caption task folders
  config.evaluators.cap   = ConfigDict(type="captioning", task_dirs=(DIR, ...), beam_sizes=(1,))

Metrics are logged as NAME/TASK/METRIC (probe: NAME/TASK/POOLING; zero-shot, retrieval: NAME/TASK[/METRIC] with
"_likelihood" appended for the decoder's method; captioning: NAME/TASK/DECODING/METRIC). The model is the
training state's, wrapped once in a RunModel whose parameters are refreshed at each run, so the compiled
evaluation functions are reused. Every process computes the same numbers from the same files (tested with one
process and 8 devices); embeddings are not cached, the parameters change between runs.
"""
from __future__ import annotations

import jax
from flax import nnx

from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.evaluate import captioning
from alp_jax.evaluate import probe
from alp_jax.evaluate import registry
from alp_jax.evaluate import retrieval
from alp_jax.evaluate import run_model
from alp_jax.evaluate import zero_shot


class _TaskEvaluator:

  def __init__(self, config, eval_cfg, *, graphdef, mesh):
    self.config, self.eval_cfg, self.graphdef, self.mesh = config, eval_cfg, graphdef, mesh
    self.every = eval_cfg.get("every", config.eval_every)
    self.task_dirs = tuple(eval_cfg.get("task_dirs", ()))
    if not self.task_dirs:
      raise ValueError(f"evaluator {eval_cfg.type}: set task_dirs=(TASK_DIR, ...)")
    self._run = None

  def run_model(self, state):
    if self._run is None:
      model = nnx.merge(self.graphdef, state["params"], state["rest"])
      # The trainer has pointed config.data at the run's own tokenizer (alp_jax.train.runs.start_tokenizer).
      tokenizer = tokenizer_lib.Tokenizer(tokenizer_lib.path_for(self.config.data))
      self._run = run_model.RunModel(self.config, model, tokenizer)
    else:
      self._run.update(state["params"], state["rest"])
    return self._run

  def run(self, state):
    with jax.set_mesh(self.mesh):
      rows = self.rows(self.run_model(state))
    for row in rows:
      yield self.metric_name(row), row["value"]


@registry.register("probe")
class ProbeEvaluator(_TaskEvaluator):

  def rows(self, run):
    pooling = self.eval_cfg.get("pooling", probe.MEAN)
    poolings = probe.POOLINGS if pooling == "both" else (pooling,)
    return probe.evaluate_encoder(run.encoder, list(self.task_dirs), poolings=poolings, log=None)

  def metric_name(self, row):
    return f"{row['task']}/{row['pooling']}"


@registry.register("zero_shot")
class ZeroShotEvaluator(_TaskEvaluator):

  def rows(self, run):
    return [row for task in self.task_dirs for row in zero_shot.evaluate_task(run, task, log=None)]

  def metric_name(self, row):
    return row["task"] + ("_likelihood" if row["pooling"].endswith("likelihood") else "")


@registry.register("retrieval")
class RetrievalEvaluator(_TaskEvaluator):

  def rows(self, run):
    return [row for task in self.task_dirs for row in retrieval.evaluate_task(run, task, log=None)]

  def metric_name(self, row):
    return row["task"] + ("_likelihood" if row["pooling"].endswith("likelihood") else "") + "/" + row["metric"]


@registry.register("captioning")
class CaptioningEvaluator(_TaskEvaluator):

  def rows(self, run):
    beam_sizes = tuple(self.eval_cfg.get("beam_sizes", (1,)))
    return [row for task in self.task_dirs
            for row in captioning.evaluate_task(run, task, beam_sizes=beam_sizes, log=None)]

  def metric_name(self, row):
    return f"{row['task']}/{row['pooling']}/{row['metric']}"
