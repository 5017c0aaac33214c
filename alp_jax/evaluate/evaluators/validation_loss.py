"""Evaluator "validation_loss": the training objective on held-out data (no augmentation, no dropout).

  config.evaluators.val = ConfigDict(dict(type="validation_loss", every=100, batches=4,
                                          corpus_dir=HELD_OUT_CORPUS,   # and/or
                                          sources=("held_out_source", ...), subset_fraction=1.0))

Held out means clips the run never trains on, named by one of:
  corpus_dir  a prepared corpus other than config.data.corpus_dir (the same folder is refused); its sources
              default to all of them
  sources     sources of the training corpus that config.data.sources leaves out (config.data.sources must then
              name the training sources explicitly; empty means every source, so nothing is held out)
There is no default: scoring the training corpus would make `best_metric="val/loss"` pick checkpoints by training
clips. `check_config` raises at startup, before anything compiles, naming the field to set. (Corpora carry no
split index the pipeline can filter on, and the nested subsets of data.subset_fraction overlap, so a held-out
folder or held-out sources are the two ways.) subset_fraction applies to the held-out data (default 1.0).

Every process runs the same number of batches: the loss's collectives span all processes, so one host running a
batch more than another would hang the job. Each host counts the full batches of its own share of the held-out
clips; the hosts agree on the fewest (`agreed_batch_count`, one all-gather at startup), capped by `batches`.
The fewest, not the most with padding: the contrastive terms take the whole global batch as each other's
negatives, with no row mask, so a batch that is padding on one host would change every real row's loss. Little
goes unscored: the hosts' shares differ by at most one clip per source.

The loss is the objective table's (alp_jax/objectives.py), the one the update step differentiates. Training only:
the CLI has no training run to score (`cli = False`).
"""
from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from alp_jax import objectives
from alp_jax import sharding as sharding_lib
from alp_jax.data import paths
from alp_jax.data import pipeline
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.evaluate import evaluator
from alp_jax.train import evaluators

FIELD = "config.evaluators.{name}"


def agreed_batch_count(host_counts: Sequence[int], cap: int) -> int:
  """The batches every host runs: the fewest full batches any host has, at most `cap`."""
  return max(0, min(int(cap), *(int(c) for c in host_counts)))


def gather_host_counts(local_count: int) -> np.ndarray:
  """(P,) every process's batch count, in process order (an all-gather; no collective on one process)."""
  if jax.process_count() == 1:
    return np.array([local_count])
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.array(local_count, np.int64))).reshape(-1)


def _same_folder(a, b) -> bool:
  if paths.is_remote(a) or paths.is_remote(b):
    return os.fspath(a).rstrip("/") == os.fspath(b).rstrip("/")
  return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


@evaluators.register("validation_loss")
class ValidationLoss(evaluator.Evaluator):
  task_kind = None
  cli = False

  @classmethod
  def check_config(cls, config, eval_cfg, name: str = "NAME") -> None:
    """Raises unless eval_cfg names held-out data (module docstring); reads only corpus.json (and labels.json)."""
    field = FIELD.format(name=name)
    train_corpus = config.data.corpus_dir
    corpus_dir = eval_cfg.get("corpus_dir") or ""
    sources = tuple(eval_cfg.get("sources") or ())
    how = (f"set {field}.corpus_dir to a prepared corpus of held-out clips, or {field}.sources to sources of "
           f"{train_corpus} that config.data.sources leaves out")
    if corpus_dir and _same_folder(corpus_dir, train_corpus):
      raise ValueError(f"evaluator {name} (validation_loss): {field}.corpus_dir={corpus_dir!r} is the training "
                       f"corpus (config.data.corpus_dir), so val/loss would score training clips; {how}")
    if not corpus_dir:
      train_sources = tuple(config.data.get("sources") or ())
      if not sources:
        raise ValueError(f"evaluator {name} (validation_loss) has no held-out data: by default it would score the "
                         f"training corpus, and best_metric would pick checkpoints by training clips; {how}")
      if not train_sources:
        raise ValueError(f"evaluator {name} (validation_loss): {field}.sources={list(sources)} are training "
                         f"sources too (config.data.sources is empty: every source of {train_corpus} is trained "
                         f"on); list the training sources in config.data.sources without them, or set "
                         f"{field}.corpus_dir to a held-out corpus")
      shared = sorted(set(sources) & set(train_sources))
      if shared:
        raise ValueError(f"evaluator {name} (validation_loss): {field}.sources {shared} are also in "
                         f"config.data.sources (trained on); remove them from one of the two")
    held_out_corpus = corpus_dir or train_corpus
    available = prepare_lib.load_corpus(held_out_corpus)["sources"]
    unknown = [s for s in sources if s not in available]
    if unknown:
      raise ValueError(f"evaluator {name} (validation_loss): {field}.sources {unknown} are not in "
                       f"{held_out_corpus}/corpus.json (it has {sorted(available)})")
    if corpus_dir and config.data.get("label_task"):
      held_out_cfg = config.data.copy_and_resolve_references()
      held_out_cfg.corpus_dir = corpus_dir
      if pipeline.label_vocabulary(held_out_cfg) != pipeline.label_vocabulary(config.data):
        raise ValueError(f"evaluator {name} (validation_loss): the {config.data.label_task!r} labels of "
                         f"{corpus_dir} differ from the training corpus's; prepare both from one label vocabulary")

  def __init__(self, config, eval_cfg, *, graphdef, mesh, log=None):
    super().__init__(config, eval_cfg, graphdef=graphdef, mesh=mesh, log=log)
    name = next((k for k, v in (config.get("evaluators") or {}).items() if v is eval_cfg), "NAME")
    self.check_config(config, eval_cfg, name)
    data_cfg = config.data.copy_and_resolve_references()
    data_cfg.tokenizer = os.fspath(tokenizer_lib.path_for(config.data))   # the run's, whatever the corpus
    if eval_cfg.get("corpus_dir"):
      data_cfg.corpus_dir = eval_cfg.corpus_dir
    data_cfg.sources = tuple(eval_cfg.get("sources") or ())
    data_cfg.subset_fraction = eval_cfg.get("subset_fraction", 1.0)
    self.dataset = pipeline.eval_dataset(data_cfg, config.batch_size, process_index=jax.process_index(),
                                         process_count=jax.process_count(), drop_remainder=True)
    # Every process takes part in the all-gather before any can raise, so a short host never leaves the others
    # waiting in it.
    self.host_counts = gather_host_counts(len(self.dataset))
    self.num_batches = agreed_batch_count(self.host_counts, eval_cfg.get("batches", 4))
    where = f"{data_cfg.corpus_dir} (sources {list(data_cfg.sources) or 'all'})"
    if self.num_batches == 0:
      raise ValueError(f"evaluator {name} (validation_loss): a process has fewer held-out clips than one host batch "
                       f"of {config.batch_size // jax.process_count()} in {where} (full batches per process: "
                       f"{self.host_counts.tolist()}); add held-out clips or lower config.batch_size")
    if (len(set(self.host_counts.tolist())) > 1 and self.num_batches < eval_cfg.get("batches", 4)
        and jax.process_index() == 0):
      (self.log or print)(f"[eval {name}] processes have {self.host_counts.tolist()} full batches of {where}; "
                          f"every process runs {self.num_batches}")
    objective = objectives.get(config.loss)

    @jax.jit
    def evaluate(params, rest, batch):
      _, metrics = objective.loss(nnx.merge(graphdef, params, rest), batch, train=False, rng=None, mesh=mesh)
      return metrics

    self._evaluate = evaluate

  def run(self, state):
    totals: dict[str, float] = {}
    n = self.num_batches
    with jax.set_mesh(self.mesh):
      for i in range(n):
        batch = sharding_lib.host_to_global(self.dataset[i], self.mesh)
        metrics = jax.device_get(self._evaluate(state["params"], state["rest"], batch))
        for k, v in metrics.items():
          totals[k] = totals.get(k, 0.0) + float(np.asarray(v)) / n
    yield from sorted(totals.items())
