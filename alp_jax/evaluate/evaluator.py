"""One evaluator contract, the same in training and in the evaluation CLI.

An evaluator is a class in its own file under alp_jax/evaluate/evaluators/, registered by name
(`@evaluators.register("NAME")`, alp_jax/train/evaluators.py). It declares what it needs:
  needs       model parts it needs all of (capabilities, alp_jax/models/encoders.py: audio_encoder, text_tower,
              caption_decoder, classifier; and run_model.AUDIO_FEATURES, what a classical baseline has)
  needs_any   model parts it needs at least one of (zero-shot works with a text tower or a caption decoder)
  task_kind   the task folders it reads: PROBE (train/test.csv: path,label), CAPTION (train/test.jsonl), SED
              (train/test.tsv: filename, onset, offset, event_label), or None
  suites      the CLI suites it belongs to besides "all" (e.g. "default", "study")
  cli         False for evaluators that only make sense inside a training run (validation_loss)
and computes rows: `rows(model, tasks) -> [{"task", "metric", "method", "value", ...}]`, where `model` is a
RunModel (alp_jax/evaluate/run_model.py: an exported encoder, or a training run's towers). Its options come from
one ConfigDict: config.evaluators.NAME in training, the CLI's flags in the CLI.

In training, `run(state)` wraps the training state in a RunModel once (refreshed, not rebuilt, at every run) and
yields (metric_name(row), value) for every row. In the CLI, `unmet(capabilities, task kinds)` gives the reason an
evaluation cannot apply (printed as "skipped, ..."), and `rows` runs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import jax
import ml_collections

from alp_jax.evaluate import caption_tasks
from alp_jax.evaluate import run_model as run_model_lib
from alp_jax.evaluate import sed_tasks
from alp_jax.evaluate import tasks as tasks_lib
from alp_jax.models import encoders

PROBE, CAPTION, SED = "probe", "caption", "sed"
TEXT_SIDE = frozenset({encoders.TEXT_TOWER, encoders.CAPTION_DECODER})   # a text tower or a caption decoder
# Per-clip audio features: an audio encoder, or a classical baseline (alp_jax/evaluate/baselines.py).
AUDIO_FEATURES = frozenset({encoders.AUDIO_ENCODER, run_model_lib.AUDIO_FEATURES})


def by_method(row: dict) -> str:
  """TASK, or TASK_likelihood for rows scored by the caption decoder (zero-shot, retrieval)."""
  return row["task"] + ("_likelihood" if row["method"].endswith("likelihood") else "")
TASK_FILES = {PROBE: "test.csv: path,label", CAPTION: "test.jsonl: id, audio, captions",
              SED: "test.tsv: filename, onset, offset, event_label"}


def read_tasks(task_dirs: Iterable) -> dict[str, list]:
  """{PROBE: [Task], CAPTION: [CaptionTask], SED: [SedTask]} from task folders (a tasks.Task or sed_tasks.SedTask
  passes through); a folder that is none of them is a TaskFormatError naming what is missing."""
  found = {PROBE: [], CAPTION: [], SED: []}
  for task_dir in task_dirs:
    has = lambda ext: any((Path(task_dir) / f"{split}.{ext}").exists() for split in tasks_lib.SPLITS)
    if isinstance(task_dir, tasks_lib.Task):
      found[PROBE].append(task_dir)
    elif isinstance(task_dir, sed_tasks.SedTask):
      found[SED].append(task_dir)
    elif has("tsv"):
      found[SED].append(sed_tasks.read_sed_task(task_dir))
    elif has("jsonl"):
      found[CAPTION].append(caption_tasks.read_caption_task(task_dir))
    elif has("csv"):
      found[PROBE].append(tasks_lib.read_task(task_dir))
    else:
      raise tasks_lib.TaskFormatError(f"{task_dir} is not a task folder: no test.csv (probe task: path,label), "
                                      f"no test.jsonl (caption task: id, audio, captions) and no test.tsv (SED "
                                      f"task: filename, onset, offset, event_label)")
  return found


class Evaluator:
  """Base class: declarations (see the module docstring) and the training-side `run`."""
  name = ""                                   # set by the registry
  needs: frozenset[str] = frozenset({encoders.AUDIO_ENCODER})
  needs_any: frozenset[str] = frozenset()
  task_kind: str | None = PROBE
  suites: tuple[str, ...] = ()
  cli = True
  order = 100                                 # position in the CLI's plan and table

  def __init__(self, config: ml_collections.ConfigDict | None, eval_cfg: ml_collections.ConfigDict, *,
               graphdef=None, mesh=None, log: Callable[[str], None] | None = None):
    self.config, self.eval_cfg, self.graphdef, self.mesh, self.log = config, eval_cfg, graphdef, mesh, log
    default_every = config.get("eval_every", 1) if config is not None else 1
    self.every = eval_cfg.get("every", default_every) or default_every
    self._model = None
    self._tasks = None

  # --- Declarations.

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, eval_cfg: ml_collections.ConfigDict,
                   name: str = "NAME") -> None:
    """Raises a clear error (naming config.evaluators.NAME.FIELD) for options this evaluator cannot run with.
    Cheap and deterministic: the trainer calls it at startup, before compiling (registry `check_all`)."""

  @classmethod
  def unmet(cls, capabilities: frozenset[str], task_kinds: Iterable[str]) -> str | None:
    """Why this evaluation cannot run on a model with `capabilities` and tasks of `task_kinds`; None if it can."""
    missing = sorted(cls.needs - capabilities)
    if cls.needs_any and not cls.needs_any & capabilities:
      missing.append(" or ".join(sorted(cls.needs_any)))
    have = ", ".join(sorted(capabilities)).replace("_", " ") or "nothing"
    if missing == [encoders.AUDIO_ENCODER]:   # e.g. LiT on a baseline's features
      return f"needs an audio encoder (--encoder, --workdir or --random-init; this source has {have})"
    if missing:
      return f"needs --workdir of a run with a {' and '.join(missing).replace('_', ' ')} (this source has {have})"
    if cls.task_kind is not None and cls.task_kind not in set(task_kinds):
      return f"no {cls.task_kind} task ({TASK_FILES[cls.task_kind]}) given"
    return None

  def rows(self, model: run_model_lib.RunModel, tasks: list) -> list[dict]:
    """Every row of every task; by default task by task through `task_rows`."""
    return [row for task in tasks for row in self.task_rows(model, task)]

  def task_rows(self, model: run_model_lib.RunModel, task) -> list[dict]:
    raise NotImplementedError(f"evaluator {self.name}: define rows(model, tasks) or task_rows(model, task)")

  def metric_name(self, row: dict) -> str:
    """The metric's name in training logs (under the evaluator's configured name)."""
    return f"{row['task']}/{row['method']}/{row['metric']}"

  def protocol(self) -> dict:
    """What a results file must record to reproduce this evaluation (merged into the CLI's protocol)."""
    return {}

  # --- Training.

  def tasks(self) -> list:
    """The configured task folders (eval_cfg.task_dirs) of this evaluator's kind, read once."""
    if self._tasks is None:
      task_dirs = tuple(self.eval_cfg.get("task_dirs", ()))
      if self.task_kind is not None and not task_dirs:
        raise ValueError(f"evaluator {self.name}: set task_dirs=(TASK_DIR, ...)")
      self._tasks = read_tasks(task_dirs).get(self.task_kind, []) if self.task_kind else []
    return self._tasks

  def model(self, state) -> run_model_lib.RunModel:
    """The training state as a RunModel: built once, its parameters refreshed at every run (no recompilation)."""
    if self._model is None:
      self._model = run_model_lib.RunModel.from_state(self.config, self.graphdef, state)
    else:
      self._model.update(state["params"], state["rest"])
    return self._model

  def run(self, state):
    with jax.set_mesh(self.mesh):
      rows = self.rows(self.model(state), self.tasks())
    for row in rows:
      yield self.metric_name(row), row["value"]
