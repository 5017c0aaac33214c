"""One stage of a sweep (tagger train -> tagger export -> train -> export -> evaluate, plus baselines): the
command it runs, what it waits for, where it logs, and how to tell from disk that it is complete.

Completion is read from the stage's own outputs, never from a ledger, so a sweep killed at any moment continues
where it stopped:
  train      the workdir's latest checkpoint is at (or past) the stage's total_steps, and compute.json is there
  export     ENC_DIR/encoder_config.json exists and records the training run's latest step
  evaluate   the --out JSON parses and holds a "results" list
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from etils import epath

from alp_jax.train import compute as compute_lib

TRAIN, EXPORT, EVALUATE = "train", "export", "evaluate"
KINDS = (TRAIN, EXPORT, EVALUATE)
CHECKPOINT_DIR = "checkpoints"
ENCODER_CONFIG = "encoder_config.json"


@dataclasses.dataclass
class Stage:
  """A unit of work: `python -m MODULE ARGS`. `id` is unique in a plan ("runs/NAME/train", "tagger/export")."""
  id: str
  kind: str                 # train | export | evaluate
  run: str                  # the point, "tagger" (or "tagger/SIZE"), or the baseline it belongs to
  module: str               # alp_jax.train | alp_jax.export | alp_jax.evaluate
  args: list[str]
  deps: list[str]
  run_dir: str              # FAILED.json and logs/ go here
  output: str               # train: workdir; export: encoder folder; evaluate: the JSON
  steps: int = 0            # train: total_steps (the ETA scales train stages by the steps they run)
  source_workdir: str = ""  # export: the training workdir it exports
  start_step: int = 0       # train: a cooldown branch starts at its trunk's step (it runs steps - start_step)

  @property
  def new_steps(self) -> int:
    return self.steps - self.start_step

  @property
  def log(self) -> str:
    return os.path.join(self.run_dir, "logs", f"{self.kind}.log")

  def argv(self, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", self.module, *self.args]

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def latest_step(workdir: str) -> int | None:
  """The highest finished checkpoint step in WORKDIR/checkpoints (Orbax names each by its step; unfinished ones
  carry a tmp suffix and are not counted), or None."""
  directory = epath.Path(workdir) / CHECKPOINT_DIR
  if not directory.exists():
    return None
  steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
  return max(steps) if steps else None


def train_complete(workdir: str, steps: int) -> bool:
  latest = latest_step(workdir)
  return latest is not None and latest >= steps and compute_lib.read(workdir) is not None


def export_complete(enc_dir: str, workdir: str) -> bool:
  path = epath.Path(enc_dir) / ENCODER_CONFIG
  if not path.exists():
    return False
  try:
    step = json.loads(path.read_text()).get("step")
  except json.JSONDecodeError:
    return False
  return step is not None and step == latest_step(workdir)


def read_eval(out: str) -> dict | None:
  """The evaluate JSON at `out`, or None when absent, partial or not an evaluation."""
  path = epath.Path(out)
  if not path.exists():
    return None
  try:
    content = json.loads(path.read_text())
  except json.JSONDecodeError:
    return None
  return content if isinstance(content, dict) and isinstance(content.get("results"), list) else None


def is_complete(stage: Stage) -> bool:
  if stage.kind == TRAIN:
    return train_complete(stage.output, stage.steps)
  if stage.kind == EXPORT:
    return export_complete(stage.output, stage.source_workdir)
  return read_eval(stage.output) is not None
