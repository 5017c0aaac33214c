"""Metrics to a JSONL file and TensorBoard event files in the workdir; only process 0 writes.

The workdir may be local or remote (gs://...): metrics.jsonl is written through epath, and tensorboardX gets the
logdir string unchanged (it writes gs:// itself).

Resume-safe: a run that restarts from the checkpoint at step S (`resume_step=S`; 0 for a start from scratch)
repeats the steps after S, so the writer first drops what was logged past S. metrics.jsonl is rewritten keeping
only rows with step <= S (through a temporary file, then a replace), and the TensorBoard writer starts with
purge_step S + 1, so TensorBoard hides the old events of steps > S. Each step appears once; curves never double
back.

TensorBoard needs tensorboardX (`pip install 'alp_jax[tensorboard]'`, which `make setup` installs); without it,
a run with config.tensorboard=True stops at the start with a message saying so.
"""
from __future__ import annotations

import json
import math
import os

import jax
from etils import epath

from alp_jax.data import paths

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _summary_writer_class():
  try:
    from tensorboardX import SummaryWriter
  except ImportError as e:
    raise ImportError("config.tensorboard=True needs tensorboardX: pip install 'alp_jax[tensorboard]' (or "
                      "tensorboardX), or run with --config.tensorboard=False (metrics.jsonl is written either "
                      "way)") from e
  return SummaryWriter


def truncate_jsonl(path: epath.Path, last_step: int) -> int:
  """Keeps the rows of `path` with step <= last_step (and any line without a step); -> rows dropped.

  Written to a temporary file beside it and moved over it (paths.write_text_last), so a crash here leaves the
  old file or the new one, never half of one."""
  if not path.exists():
    return 0
  kept, dropped = [], 0
  for line in path.read_text().splitlines():
    if not line.strip():
      continue
    try:
      step = json.loads(line).get("step")
    except (json.JSONDecodeError, AttributeError):   # a half-written last line from a crash: not a metric row
      dropped += 1
      continue
    if isinstance(step, (int, float)) and step > last_step:
      dropped += 1
    else:
      kept.append(line)
  if dropped:
    paths.write_text_last(path, "".join(f"{line}\n" for line in kept))
  return dropped


class MetricWriter:

  def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True, resume_step: int | None = None):
    """resume_step: the step the run restarts from (0 for a fresh start); logged rows past it are dropped.
    None appends to whatever is there."""
    self.enabled = jax.process_index() == 0
    self._jsonl = self._tb = None
    self.dropped_rows = 0
    if not self.enabled:
      return
    summary_writer = _summary_writer_class() if tensorboard else None
    workdir = paths.resolve(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      self.dropped_rows = truncate_jsonl(workdir / METRICS_FILE, resume_step)
    self._jsonl = (workdir / METRICS_FILE).open("a")
    if summary_writer is not None:
      tb_dir = workdir / TENSORBOARD_DIR
      if resume_step is not None and tb_dir.exists():   # events of steps > resume_step are hidden
        self._tb = summary_writer(os.fspath(tb_dir), purge_step=resume_step + 1)
      else:
        self._tb = summary_writer(os.fspath(tb_dir))

  def write(self, step: int, metrics: dict, prefix: str = "train") -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({"step": step, "split": prefix, **{k: (v if math.isfinite(v) else str(v))
                                                                     for k, v in clean.items()}}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(f"{prefix}/{k}", v, step)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()
