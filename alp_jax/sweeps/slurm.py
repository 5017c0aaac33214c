"""--launcher slurm: DIR/slurm/submit.sh, one `sbatch` per incomplete stage, chained by job dependencies.

Training stages go through launch/slurm_gpu.sbatch (multi-GPU, `--signal=B:TERM@120`, `--requeue`: a preempted
or timed-out training saves, exits 75 and is requeued, and resumes from its workdir). Export and evaluate stages
are one-GPU jobs (`--wrap`, also `--requeue`). Each job waits for what it needs with `--dependency=afterok:IDS`
(the tagger before every supervised point; train -> export -> evaluate per point), and a last job
(`afterany`) reruns the sweep locally, which skips every complete stage and writes results.jsonl and the report.
Complete stages get no job, so writing the script again after a partial run submits only the remainder.
"""
from __future__ import annotations

import os
import shlex

from alp_jax.sweeps import plan as plan_lib
from alp_jax.sweeps import stages as stages_lib

SBATCH = "launch/slurm_gpu.sbatch"
SMALL_JOB = "--nodes=1 --ntasks=1 --gpus=1 --cpus-per-task=8 --time=04:00:00 --requeue --signal=B:TERM@120"


def _var(stage_id: str) -> str:
  return "JOB_" + "".join(c if c.isalnum() else "_" for c in stage_id).upper()


def write(plan: plan_lib.Plan, sweep_command: list[str]) -> str:
  """Writes DIR/slurm/submit.sh for the incomplete stages; returns its path."""
  out_dir = os.path.join(plan.workdir, "slurm")
  os.makedirs(out_dir, exist_ok=True)
  todo = [s for s in plan.stages if not stages_lib.is_complete(s)]
  todo_ids = {s.id for s in todo}
  lines = ["#!/usr/bin/env bash",
           f"# Sweep {plan.name}: {len(todo)} stage(s) to run ({len(plan.stages) - len(todo)} already complete).",
           "# Written by `python -m alp_jax.sweeps --launcher slurm`; run it from the repo root on a login node:",
           f"#   bash {os.path.join(out_dir, 'submit.sh')}",
           "# Each job's log: the stage's logs/KIND.log. Edit SMALL_JOB (or launch/slurm_gpu.sbatch's header) for "
           "your site.",
           "set -euo pipefail",
           f'SMALL_JOB=${{SMALL_JOB:-"{SMALL_JOB}"}}', ""]
  for stage in todo:
    deps = [f"${_var(d)}" for d in stage.deps if d in todo_ids]
    dependency = f" --dependency=afterok:{':'.join(deps)}" if deps else ""
    os.makedirs(os.path.dirname(stage.log), exist_ok=True)
    common = f"--parsable --job-name={shlex.quote('sweep-' + stage.id)} --output={shlex.quote(stage.log)} " \
             f"--open-mode=append{dependency}"
    if stage.kind == stages_lib.TRAIN:
      config, workdir = stage.args[1], stage.args[3]
      rest = " ".join(shlex.quote(a) for a in stage.args[4:])
      lines.append(f"{_var(stage.id)}=$(sbatch {common} {SBATCH} {shlex.quote(config)} {shlex.quote(workdir)} "
                   f"{rest})")
    else:
      command = " ".join(shlex.quote(a) for a in stage.argv("python"))
      lines.append(f"{_var(stage.id)}=$(sbatch {common} $SMALL_JOB --wrap {shlex.quote(command)})")
    lines.append(f'echo "{stage.id}: job ${_var(stage.id)}"')
  all_jobs = ":".join(f"${_var(s.id)}" for s in todo)
  final = " ".join(shlex.quote(a) for a in sweep_command)
  collect_log = os.path.join(plan.workdir, "slurm", "collect.log")
  if todo:
    lines.append(f"sbatch --parsable --job-name=sweep-collect --output={shlex.quote(collect_log)} "
                 f"--dependency=afterany:{all_jobs} $SMALL_JOB --wrap {shlex.quote(final)}")
  else:
    lines.append("echo 'every stage is complete: run the sweep locally to collect the results'")
  path = os.path.join(out_dir, "submit.sh")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  os.chmod(path, 0o755)
  return path
