"""Cooldown branches: one constant-rate run (the trunk) serves several budgets.

Under the constant + cooldown schedule (warmup-stable-decay), a run of B steps has the same learning rate as a
longer run of S > B steps until its own cooldown starts at step c(B) = B - round(cooldown_fraction x B). So the
B-step model is the S-step run's state at step c(B), cooled down for B - c(B) steps: only the cooldown is new
compute. The trunk keeps its checkpoint at each branch's c(B) (config.keep_steps); a branch is an ordinary
training run with total_steps = B and

  --config.branch_from=TRUNK_WORKDIR@STEP

At its first start (no checkpoint of its own) it restores the trunk's whole state at STEP: parameters, optimizer
state, step, RNG, and the data iterator's position, so it is the run that would have trained B steps from scratch
(tests/test_branch.py checks this to float precision). Its compute.json starts from the trunk's totals at STEP
(the compute that made the model, `branched_from` says where), and its metrics.jsonl from the trunk's rows up to
STEP. It is refused, naming the fields, when the two configs differ in anything but the fields a resume may change
(total_steps, keep_steps, saving, logging: train/runs.py RESUME_MAY_CHANGE) or when the two learning-rate schedules
differ at any step before STEP. After that first start a branch resumes from its own checkpoints like any run.
The sweeps (`budget.branches`, alp_jax/sweeps/plan.py) plan trunks and branches.
"""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from etils import epath

from alp_jax.data import paths
from alp_jax.train import compute as compute_lib
from alp_jax.train import metrics as metrics_lib
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import runs

# Besides runs.RESUME_MAY_CHANGE (which holds total_steps and keep_steps): the tokenizer's path is each run's own
# copy (train/runs.py start_tokenizer); its sha1 (data.tokenizer_sha1) must still be the trunk's.
EXTRA_MAY_DIFFER = ("branch_from", "data.tokenizer")


def parse(spec: str) -> tuple[epath.Path, int]:
  """'TRUNK_WORKDIR@STEP' -> (resolved workdir, step); ValueError naming the expected form."""
  where, sep, step = str(spec).rpartition("@")
  if not sep or not where or not step.isdigit():
    raise ValueError(f"branch_from={spec!r}: expected TRUNK_WORKDIR@STEP (the trunk run's workdir and the step "
                     f"of one of its kept checkpoints), e.g. runs/sweep/runs/contrastive_1m/train@8000")
  return paths.resolve(where), int(step)


def cooldown_start(opt_cfg, total_steps: int) -> int:
  """The first step of a constant_cooldown run's cooldown (train/optimizer.py's rule): where a branch forks."""
  if opt_cfg.schedule != "constant_cooldown":
    raise ValueError(f"cooldown branches need optimizer.schedule='constant_cooldown', not {opt_cfg.schedule!r}")
  return int(total_steps) - max(int(round(opt_cfg.cooldown_fraction * total_steps)), 1)


def schedule_mismatch(trunk_opt, trunk_steps: int, branch_opt, branch_steps: int, upto: int) -> str | None:
  """None when both learning-rate schedules agree at every step < `upto`, else the first step that differs."""
  if upto <= 0:
    return None
  steps = np.arange(upto)
  a = np.asarray(optimizer_lib.learning_rate_schedule(trunk_opt, trunk_steps)(steps))
  b = np.asarray(optimizer_lib.learning_rate_schedule(branch_opt, branch_steps)(steps))
  bad = np.flatnonzero(~np.isclose(a, b, rtol=1e-6, atol=0.0))
  if not bad.size:
    return None
  i = int(bad[0])
  return f"at step {i} the trunk's learning rate is {a[i]:.6g} and the branch's {b[i]:.6g}"


def check(config, trunk_dir: epath.Path, step: int) -> dict:
  """Refuses (ValueError) a branch whose config or schedule departs from its trunk's before `step`.
  Returns the trunk's config.json as a dict."""
  path = trunk_dir / runs.CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"branch_from: {path} is missing: {trunk_dir} is not a training run's workdir")
  trunk = json.loads(path.read_text())
  ours = runs.as_json(config)
  differ = [(f, a, b) for f, a, b in runs.config_differences(trunk, ours)
            if not (runs.may_change(f) or f in EXTRA_MAY_DIFFER)]
  if differ:
    lines = "\n".join(f"  {f}: {runs.show(a)} (trunk) -> {runs.show(b)} (branch)" for f, a, b in differ)
    raise ValueError(f"branch_from={trunk_dir}@{step}: this config differs from the trunk's {path} in field(s) "
                     f"a branch must share (it continues the trunk's run):\n{lines}")
  total = int(config.total_steps)
  if not 0 < step <= total:
    raise ValueError(f"branch_from=...@{step}: the step must be in 1..total_steps ({total})")
  trunk_opt = ml_collections.ConfigDict(trunk["optimizer"])
  problem = schedule_mismatch(trunk_opt, int(trunk["total_steps"]), config.optimizer, total, step)
  if problem:
    raise ValueError(f"branch_from={trunk_dir}@{step}: the learning-rate schedules of the trunk "
                     f"({trunk['total_steps']} steps) and this branch ({total} steps) differ before step {step}: "
                     f"{problem}. Fork at or before the branch's cooldown start "
                     f"(constant_cooldown: total_steps - round(cooldown_fraction x total_steps)), with the same "
                     f"warmup")
  return trunk


def inherited_compute(trunk_dir: epath.Path, step: int) -> dict | None:
  """The trunk's compute.json totals at `step` (its history), or None when it kept none for that step."""
  trunk = compute_lib.read(trunk_dir) or {}
  return trunk.get("history", {}).get(str(step))


def copy_metrics(trunk_dir: epath.Path, workdir: epath.Path, step: int) -> int:
  """Starts the branch's metrics.jsonl with the trunk's rows up to `step` (process 0); returns their count."""
  source = trunk_dir / metrics_lib.METRICS_FILE
  if not source.exists():
    return 0
  rows = []
  for line in source.read_text().splitlines():
    try:
      if json.loads(line).get("step", 0) <= step:
        rows.append(line)
    except (json.JSONDecodeError, AttributeError):   # a half-written line from a crash of the trunk
      continue
  paths.write_text_last(workdir / metrics_lib.METRICS_FILE, "".join(r + "\n" for r in rows))
  return len(rows)


def describe(trunk_dir: epath.Path, step: int) -> str:
  return f"{os.fspath(trunk_dir)}@{step}"
