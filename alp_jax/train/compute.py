"""What a run has spent, persisted: compute.json in the workdir, rewritten at every checkpoint save.

  {"flops_per_step": analytic model FLOPs of one global step (alp_jax/train/flops.py); with duration buckets
                     (data.batch_seconds) the largest bucket's,
   "xla_flops_per_step": XLA's cost analysis of the compiled step, all devices (0 if the compiler gave none; with
                         buckets, of the same largest bucket),
   "batch_size", "steps" (the saved step),
   "samples": real clips trained on (padded rows of bucketed batches not counted; = steps x batch with fixed
              batches),
   "flops": the analytic FLOPs of every step taken, each at its own batch shape (= flops_per_step x steps with
            fixed batches; with buckets the padded shapes' FLOPs, i.e. the compute actually spent),
   "wall_seconds" (summed over every start of the run, compile and saves included),
   "per_source": {source: {"samples": examples seen, "audio_seconds": real (unpadded) audio seen}},
   "history": {step: the same totals at that saved step},
   "branched_from": "TRUNK_WORKDIR@STEP" for a cooldown branch (train/branch.py), whose totals start from the
                    trunk's at that step: the compute that made the model, of which the branch ran only the rest}

A resume continues from the totals of the step it restores (`history`), so a crash after a save never counts
twice what the run redoes. Per-source counts are counted on each host from its own batches (numpy, no device
work) and summed across processes at each save, where every process is already waiting for the checkpoint.
The sweeps (alp_jax/sweeps) read this file for each run's point on the compute axis.
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from alp_jax.audio.io import TARGET_SAMPLE_RATE
from alp_jax.data import paths

COMPUTE_FILE = "compute.json"
HISTORY_KEPT = 32   # saved steps whose totals are kept for resuming (more than any keep_checkpoints in use)


def read(workdir) -> dict | None:
  path = epath.Path(workdir) / COMPUTE_FILE
  return json.loads(path.read_text()) if path.exists() else None


class Ledger:
  """Counts a run's steps, samples and audio per source; `save(step)` writes compute.json (process 0)."""

  def __init__(self, workdir, *, source_names: list[str], batch_size: int, flops_per_step: float,
               xla_flops_per_step: float, start_step: int, started: float | None = None,
               log=print, inherited: dict | None = None, branched_from: str | None = None, keep_steps=()):
    """inherited: a cooldown branch's trunk totals at its fork (start_step), its base on the first start;
    branched_from: 'TRUNK_WORKDIR@STEP', recorded in compute.json (train/branch.py); keep_steps: steps whose
    totals stay in the history for good (a trunk's branch points)."""
    self.keep_steps = {int(k) for k in keep_steps}
    self.workdir = epath.Path(workdir)
    self.sources, self.batch_size = list(source_names), int(batch_size)
    self.flops_per_step, self.xla_flops_per_step = float(flops_per_step), float(xla_flops_per_step)
    self.started = time.monotonic() if started is None else started   # time.monotonic() at the run's start
    self.samples = np.zeros(len(self.sources), np.int64)      # this process, since this start
    self.seconds = np.zeros(len(self.sources), np.float64)
    self.flops = 0.0                                          # every process alike: global steps since this start
    previous = read(self.workdir) or {}
    self.branched_from = branched_from or previous.get("branched_from")
    self.history = {int(k): v for k, v in previous.get("history", {}).items()}
    if inherited is not None and start_step not in self.history:
      self.history[int(start_step)] = inherited
    base = self.history.get(start_step)
    if start_step and base is None:
      log(f"[train] {COMPUTE_FILE} has no totals for the restored step {start_step}: per-source counts and wall "
          f"time start from zero here (steps, samples and FLOPs still count from step 0)")
    base = base or {"wall_seconds": 0.0, "per_source": {}}
    self.base_wall = float(base["wall_seconds"])
    # Older compute.json rows hold no running totals: samples and FLOPs were steps x per-step then.
    self.base_samples = int(base.get("samples", start_step * self.batch_size))
    self.base_flops = float(base.get("flops", start_step * self.flops_per_step))
    self.base_per_source = {k: dict(v) for k, v in base["per_source"].items()}
    self.history = {k: v for k, v in self.history.items() if k <= start_step}   # later ones were never restored

  def count(self, local_batch: dict, flops: float | None = None) -> int:
    """Adds this host's batch: real examples and unpadded seconds per source (a padded row of a bucketed batch,
    audio_mask all False, counts nothing), and the global step's analytic `flops` (default flops_per_step).
    Returns this host's real rows."""
    samples = np.asarray(local_batch["audio_mask"]).sum(axis=1)
    real = samples > 0
    source, seconds = np.asarray(local_batch["source"])[real], samples[real] / TARGET_SAMPLE_RATE
    self.samples += np.bincount(source, minlength=len(self.sources))[:len(self.sources)]
    self.seconds += np.bincount(source, weights=seconds, minlength=len(self.sources))[:len(self.sources)]
    self.flops += self.flops_per_step if flops is None else float(flops)
    return int(real.sum())

  def totals(self, step: int) -> dict:
    samples, seconds = self.samples, self.seconds
    if jax.process_count() > 1:   # every process calls save(): sum the hosts' counts
      samples = np.asarray(multihost_utils.process_allgather(samples)).sum(axis=0)
      seconds = np.asarray(multihost_utils.process_allgather(seconds)).sum(axis=0)
    per_source = {}
    for i, name in enumerate(self.sources):
      before = self.base_per_source.get(name, {"samples": 0, "audio_seconds": 0.0})
      per_source[name] = {"samples": int(before["samples"] + samples[i]),
                          "audio_seconds": round(float(before["audio_seconds"] + seconds[i]), 3)}
    return {"steps": int(step), "samples": self.base_samples + int(samples.sum()),
            "flops": self.base_flops + self.flops,
            "wall_seconds": round(self.base_wall + time.monotonic() - self.started, 3), "per_source": per_source}

  def save(self, step: int) -> dict:
    """Call on every process at a checkpoint save; process 0 writes compute.json atomically."""
    totals = self.totals(step)
    self.history[int(step)] = totals
    latest = {k for k, _ in sorted(self.history.items())[-HISTORY_KEPT:]}
    self.history = {k: v for k, v in sorted(self.history.items()) if k in latest or k in self.keep_steps}
    content = {"flops_per_step": self.flops_per_step, "xla_flops_per_step": self.xla_flops_per_step,
               "batch_size": self.batch_size, **totals,
               "history": {str(k): v for k, v in self.history.items()}}
    if self.branched_from:
      content["branched_from"] = self.branched_from
    if jax.process_index() == 0:
      paths.write_text_last(self.workdir / COMPUTE_FILE, json.dumps(content, indent=1))
    return content
