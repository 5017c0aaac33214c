"""python -m alp_jax.sweeps --config configs/sweeps/NAME.py --workdir DIR [--launcher local|slurm|tpu]
                           [--parallel N] [--dry-run] [--max-stages N] [--config.field=value ...]

Expands the sweep config into points and a dependency graph of stages (tagger train -> tagger export ->
train -> export -> evaluate, plus baseline evaluations; alp_jax/sweeps/plan.py), writes DIR/sweep.json and:
  --dry-run          prints every point with its budget (steps, samples, analytic FLOPs) and the total; runs nothing
  --launcher local   runs the incomplete stages here, --parallel at a time (alp_jax/sweeps/local.py); a complete
                     stage is skipped, so a killed sweep continues and a finished one does nothing; then writes
                     DIR/results.jsonl and the report (DIR/report/)
  --launcher slurm   writes DIR/slurm/submit.sh (sbatch jobs chained by dependencies); submits nothing
  --launcher tpu     writes DIR/tpu/commands.sh (launch/tpu_pod.sh commands in dependency order); runs nothing
Exit status: 0 done (or nothing to do), 1 some stage failed (listed; FAILED.json in its run folder), 2 a bad
config, 75 stopped by a signal or --max-stages before the end (run the same command again to continue).
The local launcher runs stages with this interpreter, or with $ALP_SWEEP_PYTHON when set.
docs/sweeps.md describes the sweep configs and the workdir.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from alp_jax.sweeps import collect
from alp_jax.sweeps import local
from alp_jax.sweeps import plan as plan_lib
from alp_jax.sweeps import report as report_lib
from alp_jax.sweeps import slurm
from alp_jax.sweeps import tpu

LAUNCHERS = ("local", "slurm", "tpu")
PYTHON_ENV = "ALP_SWEEP_PYTHON"   # the interpreter the local launcher runs stages with (default: this one)


def _si(value: float) -> str:
  for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(value) >= size:
      return f"{value / size:.3g}{unit}"
  return f"{value:.3g}"


def format_plan(plan: plan_lib.Plan) -> str:
  """The dry-run table: one line per point (steps, samples, FLOPs), the stages and the total."""
  width = max([5] + [len(p.name) for p in plan.points])
  lines = [f"{'point':<{width}}  {'pairs':>9} {'fraction':>8} {'steps':>8} {'batch':>5} {'samples':>10} "
           f"{'FLOPs':>8}  config"]
  for p in plan.points:
    lines.append(f"{p.name:<{width}}  {p.axes['data_pairs']:>9} {p.axes['data_fraction']:>8.4f} {p.steps:>8} "
                 f"{p.batch_size:>5} {p.samples:>10} {_si(p.flops):>8}  {p.config}")
  for size, tagger in plan.taggers.items():
    lines.append(f"{'tagger ' + size:<{width}}  {'all':>9} {1.0:>8.4f} {tagger['steps']:>8}  {'':>5} {'':>10} "
                 f"{'':>8}  {tagger['config']}")
  total = plan.to_dict()["total"]
  lines.append(f"total: {len(plan.points)} point(s), {len(plan.taggers)} tagger(s), {len(plan.baselines)} "
               f"baseline(s), {len(plan.stages)} stages; {total['steps']} steps, {total['samples']} samples, "
               f"{_si(total['flops'])} FLOPs ({total['flops']:.4g}; analytic, alp_jax/train/flops.py; taggers "
               f"not counted)")
  return "\n".join(lines)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(--config.field=value overrides as 'field=value', the other arguments)."""
  fields, rest = [], []
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      fields.append(arg[len("--config."):])
    else:
      rest.append(arg)
  return fields, rest


def sweep_command(args, fields: list[str]) -> list[str]:
  """The command that reruns this sweep locally (what the slurm/tpu scripts end with, to collect results)."""
  return ["python", "-m", "alp_jax.sweeps", "--config", args.config, "--workdir", args.workdir] + \
      [f"--config.{f}" for f in fields]


def write_report(workdir: str, log=print) -> str:
  """The report of the sweep's results.jsonl (alp_jax/sweeps/report.py) -> its folder."""
  return report_lib.write_report(workdir)["out"]


def main(argv: list[str] | None = None, log=print) -> int:
  fields, rest = split_overrides(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog="python -m alp_jax.sweeps", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="configs/sweeps/NAME.py[:arg] or alp_jax.configs.sweeps.NAME")
  parser.add_argument("--workdir", required=True, help="the sweep folder (docs/sweeps.md: its layout)")
  parser.add_argument("--launcher", choices=LAUNCHERS, default="local")
  parser.add_argument("--parallel", type=int, default=1, help="local: stages at once (default 1)")
  parser.add_argument("--dry-run", action="store_true", help="print the points and budgets; run nothing")
  parser.add_argument("--max-stages", type=int, default=None, help="local: start at most N stages, then stop")
  args = parser.parse_args(rest)
  t0 = time.monotonic()
  try:
    sweep = plan_lib.load_sweep_config(args.config, fields)
    collect.check_families(sweep.to_dict(), args.config)
    plan = plan_lib.expand(sweep, args.workdir)
    if args.dry_run:
      log(format_plan(plan))
      log("[sweep] dry run: nothing was run or written")
      return 0
    notes = plan_lib.check_compatible(plan)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for note in notes:
    log(f"[sweep] {note}")
  path = plan_lib.write(plan)
  log(f"[sweep] {plan.name}: {len(plan.points)} point(s), {len(plan.stages)} stages -> {path}")
  if args.launcher in ("slurm", "tpu"):
    writer = slurm if args.launcher == "slurm" else tpu
    script = writer.write(plan, sweep_command(args, fields))
    log(f"[sweep] wrote {script}; submit with: bash {script}")
    return 0
  summary = local.run(plan, parallel=args.parallel, log=log, max_stages=args.max_stages,
                      python=os.environ.get(PYTHON_ENV) or None)
  if summary.nothing_to_do:
    log(f"[sweep] nothing to do: all {len(summary.skipped)} stages of {plan.name} were already complete")
  results, num_rows = collect.collect(plan)
  log(f"[sweep] {results}: {num_rows} rows")
  report = write_report(plan.workdir, log) if num_rows else None
  for stage_id, record in summary.failed.items():
    log(f"[sweep] FAILED {stage_id}: {record['error'].strip().splitlines()[0]}; log {record['log']}")
  for stage_id, cause in summary.blocked.items():
    log(f"[sweep] not run {stage_id}: blocked by {cause}")
  log(f"[sweep] {len(summary.done)} stage(s) run, {len(summary.skipped)} skipped (complete), "
      f"{len(summary.failed)} failed, {len(summary.blocked)} blocked, {len(summary.interrupted)} interrupted in "
      f"{time.monotonic() - t0:.0f}s; sweep {plan.workdir}, results {results}"
      + (f", report {report}" if report else ""))
  if summary.failed:
    return 1
  return local.PREEMPTED if summary.stopped else 0


if __name__ == "__main__":
  sys.exit(main())
