"""The sweep report: `python -m alp_jax.sweeps.report --workdir DIR [--out DIR/report]`.

Reads DIR/results.jsonl (the sweep contract, docs/sweeps.md) and writes into the report folder:
  results.csv, results.md   one row per (run, task, evaluation, method, metric): point, compute, wall time
  fits.json                 err = E + A * x**(-alpha) per curve, vs data size and vs compute, with 95% intervals,
                            refusals with their reason, and the held-out prediction of the largest x
  crossovers.json           where one objective overtakes another, per task family
  findings.json             the study's five findings with verdicts
  *.png                     metric vs data size, metric vs compute, supervised - scratch gap vs data size
  report.md                 all of the above in words and tables
The sweep runner calls `write_report(workdir)` when its evaluations finish.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from etils import epath

from alp_jax.sweeps import analysis, findings, plots, results

RESAMPLES = 1000


def _failures(workdir: epath.Path) -> list[dict]:
  runs = workdir / "runs"
  if not runs.exists():
    return []
  out = []
  for run in sorted(runs.iterdir()):
    failed = run / "FAILED.json"
    if failed.exists():
      try:
        info = json.loads(failed.read_text())
      except json.JSONDecodeError:
        info = {"error": "FAILED.json is not valid JSON"}
      out.append({"run": run.name, "stage": info.get("stage"), "error": str(info.get("error", ""))[-300:],
                  "log": info.get("log")})
  return out


def _interval(values) -> str:
  return f"[{values[0]:.4g}, {values[1]:.4g}]" if values else "-"


def _fits_table(fits: list[dict]) -> list[str]:
  lines = ["| x | objective | init | task | evaluation/method | metric | E | A | alpha | points | "
           "held-out (largest x): predicted vs observed, error |", "|---" * 11 + "|"]
  for f in fits:
    law, held = f["law"], f["holdout"]
    head = (f"| {f['x_axis']} | {f['objective']} | {f['init']} | {f['task']} | {f['evaluation']}/{f['method']} "
            f"| {f['metric']} | ")
    if not law["fitted"]:
      lines.append(head + f"refused: {law['reason']} | | | {law['n_points']} | |")
      continue
    if "refused" in held:
      check = f"refused: {held['refused']}"
    else:
      check = (f"{held['predicted']:.4f} vs {held['observed']:.4f} at {held['x']:.4g}, error {held['error']:+.4f} "
               f"{_interval(held['error_interval'])}")
    lines.append(head + f"{law['E']:.4f} {_interval(law['E_interval'])} | {law['A']:.4g} "
                 f"{_interval(law['A_interval'])} | {law['alpha']:.3f} {_interval(law['alpha_interval'])} | "
                 f"{law['n_points']} ({law['distinct_x']} x) | {check} |")
  return lines


def _crossover_lines(found: list[dict]) -> list[str]:
  lines = ["| family | evaluation/method | init | objectives | status | detail |", "|---" * 6 + "|"]
  for c in found:
    lines.append(f"| {c['task_family']} | {c['evaluation']}/{c['method']} | {c['init']} | "
                 f"{c['objective_a']} vs {c['objective_b']} | {c['status']} | {c['why']} |")
  return lines


def _markdown(summary: dict, rows, fits, found, verdicts, failures, pngs) -> str:
  pre = results.pretrained(rows)
  runs = sorted({r["run"] for r in rows})
  lines = [f"# Sweep report: {summary['workdir']}", "", "## What was measured", "",
           f"- {len(rows)} result rows from {len(runs)} runs ({len({r['run'] for r in pre})} pretrained, "
           f"{len(runs) - len({r['run'] for r in pre})} baselines).",
           f"- objectives {sorted({r['objective'] for r in pre})}, inits {sorted({r['init'] for r in pre})}, "
           f"data sizes {sorted({r['data_pairs'] for r in pre})}, seeds {sorted({r['seed'] for r in pre})}, "
           f"model sizes {sorted({str(r['model_size']) for r in pre})}.",
           f"- tasks: " + ", ".join(sorted({f"{r['task']} ({r['task_family']})" for r in rows})) + ".",
           f"- failed runs: {len(failures)}" + ("." if not failures else ":")]
  for f in failures:
    lines.append(f"  - {f['run']}: stage {f['stage']}, log {f['log']}: `{f['error'].splitlines()[-1] if f['error'] else ''}`")
  lines += ["", "## The study's findings", ""]
  for v in verdicts:
    lines += [f"### {v['number']}. {v['finding']}", "", f"**Verdict: {v['verdict']}.** {v['why']}", "",
              f"Test: {v['test']}.", ""]
  lines += ["## Fits", "", "err = E + A * x^-alpha, err = 1 - value (higher is better) or the value (lower is "
            "better); x = data_pairs (training clips) or flops (total training FLOPs); 95% bootstrap intervals. "
            "Held out: the law fitted without the largest x, its prediction there against the observed mean.", ""]
  lines += _fits_table(fits)
  lines += ["", "## Crossovers (by data size, per task family)", ""] + _crossover_lines(found)
  lines += ["", "## Plots", ""] + [f"- ![{p}]({p})" for p in pngs]
  lines += ["", "Tables: results.csv, results.md; numbers: fits.json, crossovers.json, findings.json.", ""]
  return "\n".join(lines)


def write_report(workdir, out_dir=None, *, resamples: int = RESAMPLES, seed: int = 0,
                 roles: Optional[findings.TaskRoles] = None, draw_plots: bool = True) -> dict:
  """Reads workdir/results.jsonl, writes the report folder -> a summary (paths, counts, verdicts).

  resamples: bootstrap draws for every interval; draw_plots False skips the PNGs (the slowest part).
  """
  workdir = epath.Path(workdir)
  out = epath.Path(out_dir) if out_dir is not None else workdir / "report"
  rows = results.load_rows(workdir / "results.jsonl")
  out.mkdir(parents=True, exist_ok=True)
  results.write_csv(rows, out / "results.csv")
  results.write_markdown(rows, out / "results.md")
  fits = analysis.fit_series(rows, resamples=resamples, seed=seed)
  found = analysis.crossovers(rows, resamples=resamples, seed=seed)
  verdicts = findings.evaluate_findings(rows, fits, roles=roles, resamples=resamples, seed=seed)
  failures = _failures(workdir)
  pngs = plots.write_plots(rows, fits, out) if draw_plots else []
  (out / "fits.json").write_text(json.dumps(fits, indent=1))
  (out / "crossovers.json").write_text(json.dumps(found, indent=1))
  (out / "findings.json").write_text(json.dumps(verdicts, indent=1))
  summary = {"workdir": str(workdir), "out": str(out), "rows": len(rows),
             "fits": sum(f["law"]["fitted"] for f in fits), "refused": sum(not f["law"]["fitted"] for f in fits),
             "crossovers": sum(c["status"] == "crossover" for c in found), "failures": len(failures),
             "verdicts": {v["number"]: v["verdict"] for v in verdicts},
             "files": ["results.csv", "results.md", "fits.json", "crossovers.json", "findings.json", "report.md"]
             + pngs}
  (out / "report.md").write_text(_markdown(summary, rows, fits, found, verdicts, failures, pngs))
  return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.sweeps.report", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="the sweep's workdir (holds results.jsonl)")
  parser.add_argument("--out", default=None, help="report folder (default WORKDIR/report)")
  parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
  parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  parser.add_argument("--speaker-tasks", default=findings.TaskRoles.speaker,
                      help="regular expression naming speaker-identification tasks (finding 4)")
  parser.add_argument("--sed-tasks", default=findings.TaskRoles.sed,
                      help="regular expression naming frame-level SED tasks (finding 5)")
  args = parser.parse_args(argv)
  try:
    summary = write_report(args.workdir, args.out, resamples=args.resamples, seed=args.seed,
                           roles=findings.TaskRoles(speaker=args.speaker_tasks, sed=args.sed_tasks))
  except results.ResultsError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"{summary['rows']} rows; {summary['fits']} laws fitted, {summary['refused']} refused; "
        f"{summary['crossovers']} crossover(s); {summary['failures']} failed run(s)")
  for number, verdict in summary["verdicts"].items():
    print(f"  finding {number}: {verdict}")
  print(f"wrote {', '.join(summary['files'])} to {summary['out']} (start with report.md)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
