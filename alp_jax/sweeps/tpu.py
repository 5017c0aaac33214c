"""--launcher tpu: DIR/tpu/commands.sh, the sweep's incomplete stages for a Cloud TPU VM pod, in dependency order.

Training runs on every worker through launch/tpu_pod.sh (TPU_NAME and ZONE come from the environment);
export and evaluate run where the script runs (they read the shared workdir, normally gs://...). The stages run
one after another; a failed stage stops the script (set -e) and rerunning the sweep with --launcher tpu writes
only what is left. The last line reruns the sweep locally to collect results.jsonl and the report.
"""
from __future__ import annotations

import os
import shlex

from alp_jax.sweeps import plan as plan_lib
from alp_jax.sweeps import stages as stages_lib

POD_SCRIPT = "launch/tpu_pod.sh"


def write(plan: plan_lib.Plan, sweep_command: list[str]) -> str:
  """Writes DIR/tpu/commands.sh for the incomplete stages; returns its path."""
  out_dir = os.path.join(plan.workdir, "tpu")
  os.makedirs(out_dir, exist_ok=True)
  todo = [s for s in plan.stages if not stages_lib.is_complete(s)]
  lines = ["#!/usr/bin/env bash",
           f"# Sweep {plan.name}: {len(todo)} stage(s) to run, in dependency order. From the repo root:",
           f"#   TPU_NAME=my-v5e-32 ZONE=us-west4-a bash {os.path.join(out_dir, 'commands.sh')}",
           "set -euo pipefail",
           ': "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"',
           'PYTHON=${PYTHON:-python}', ""]
  for stage in todo:
    lines.append(f"# {stage.id}" + (f" (after {', '.join(stage.deps)})" if stage.deps else ""))
    if stage.kind == stages_lib.TRAIN:
      lines.append(f'{POD_SCRIPT} "$TPU_NAME" "$ZONE" ' + " ".join(shlex.quote(a) for a in stage.args[1:2] +
                                                                     stage.args[3:]))
    else:
      lines.append("$PYTHON -m " + " ".join(shlex.quote(a) for a in [stage.module, *stage.args]))
  lines += ["# collect results.jsonl and write the report", " ".join(shlex.quote(a) for a in sweep_command)]
  path = os.path.join(out_dir, "commands.sh")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  os.chmod(path, 0o755)
  return path
