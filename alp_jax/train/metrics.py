"""Metrics to a JSONL file and TensorBoard event files in the workdir; only process 0 writes.

The workdir may be local or remote (gs://...): metrics.jsonl is written through epath, and tensorboardX gets the
logdir string unchanged (it writes gs:// itself).
"""
from __future__ import annotations

import json
import math
import os

import jax

from alp_jax.data import paths


class MetricWriter:

  def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self._jsonl = self._tb = None
    if not self.enabled:
      return
    workdir = paths.resolve(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = (workdir / "metrics.jsonl").open("a")
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.fspath(workdir / "tensorboard"))

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
