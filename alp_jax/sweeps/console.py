"""The sweep's result in a terminal: what `make demo` and the end of `python -m alp_jax.sweeps` print.

  console.summary_lines(workdir) -> list of lines:
    1. the table: one line per pretrained point (objective, init, pairs) and per baseline, one column per probe
       task (mean pooling; attention pooling in a second table when the sweep ran it), value and 95% interval;
    2. pretrained minus random init per task at the largest data size, with a 95% interval;
    3. the fitted exponents (err = E + A x^-alpha against training pairs) per curve, with their 95% intervals,
       or why a curve was not fitted;
    4. the report's verdict on each of the study's findings, and where every file is.

The gap interval combines the two rows' own bootstrap intervals as independent normal errors (half-width
sqrt(h1^2 + h2^2)). The rows come from separate evaluations, so no paired resampling is possible here; treating
them as independent is conservative when the clips are shared (they are: the same test split).
"""
from __future__ import annotations

import json
import math

from etils import epath

from alp_jax.sweeps import results

MAX_TASKS = 8   # columns of the table; the rest are in DIR/report/results.md


def _cell(row: dict | None) -> str:
  if row is None:
    return f"{'-':>15}"
  lo, hi = row.get("interval") or (None, None)
  if lo is None:
    return f"{row['value']:>7.3f}{'':>8}"
  return f"{row['value']:>6.3f} ±{(hi - lo) / 2:5.3f} "


def _label(row: dict) -> str:
  if row["kind"] != "pretrained":
    return row["kind"]
  return f"{row['objective']} {row['init']} {row['data_pairs']}"


def _table(rows: list[dict], method: str) -> list[str]:
  probe = [r for r in rows if r["evaluation"] == "probe" and r["method"] == method]
  if not probe:
    return []
  tasks = sorted({r["task"] for r in probe})[:MAX_TASKS]
  cells: dict = {}
  for r in probe:   # one seed per line: the first seed of each label
    key = (_label(r), r["task"])
    if key not in cells or r["seed"] < cells[key]["seed"]:
      cells[key] = r
  order = sorted({(r["kind"] != "pretrained", r.get("objective") or "", r.get("init") or "", r.get("data_pairs") or 0,
                   _label(r)) for r in probe})
  width = max(len(o[-1]) for o in order)
  lines = [f"probe ({method} pooling): value ± half-width of the 95% interval over test clips",
           f"  {'':<{width}} " + "".join(f"{t[:15]:>16}" for t in tasks)]
  for *_, label in order:
    lines.append(f"  {label:<{width}} " + "".join(" " + _cell(cells.get((label, t))) for t in tasks))
  return lines


def _gaps(rows: list[dict]) -> list[str]:
  probe = [r for r in rows if r["evaluation"] == "probe" and r["method"] == "mean"]
  base = {r["task"]: r for r in probe if r["kind"] == "random_init" and r["seed"] == min(
      x["seed"] for x in probe if x["kind"] == "random_init")} if any(r["kind"] == "random_init" for r in probe) else {}
  pre = results.pretrained(probe)
  if not base or not pre:
    return []
  largest = max(r["data_pairs"] for r in pre)
  lines = [f"pretrained minus random init at {largest} pairs (mean pooling; 95% interval; * excludes 0)"]
  wins = total = 0
  for (objective, init), group in sorted(results.group(
      [r for r in pre if r["data_pairs"] == largest], ("objective", "init")).items()):
    parts = []
    for r in sorted(group, key=lambda r: r["task"]):
      b = base.get(r["task"])
      if b is None or r["seed"] != min(x["seed"] for x in group if x["task"] == r["task"]):
        continue
      sign = 1.0 if r["higher_is_better"] else -1.0
      gap = sign * (r["value"] - b["value"])
      half = math.hypot(*(((x["interval"][1] - x["interval"][0]) / 2) if x.get("interval") else 0.0 for x in (r, b)))
      significant = half > 0 and abs(gap) > half
      wins += significant and gap > 0
      total += 1
      parts.append(f"{r['task']} {gap:+.3f}±{half:.3f}{'*' if significant else ''}")
    lines.append(f"  {objective} {init}: " + ", ".join(parts))
  lines.append(f"  {wins} of {total} gaps are significantly above random init")
  return lines


HEADLINE = {("probe", "mean"): None, ("probe", "attention"): None, ("retrieval", "retrieval"): "t2a/R@10"}


def _column(evaluation: str, method: str, task: str) -> str:
  if evaluation == "probe":
    return task if method == "mean" else f"{task} {method}"
  return f"{task} {HEADLINE[(evaluation, method)]}"


def _exponents(report_dir: epath.Path) -> list[str]:
  """alpha [interval] of each curve's headline measure: the probes' metric, retrieval's text-to-audio R@10."""
  path = report_dir / "fits.json"
  if not path.exists():
    return []
  fits = [f for f in json.loads(path.read_text()) if f["x_axis"] == "data_pairs"
          and (f["evaluation"], f["method"]) in HEADLINE
          and HEADLINE[(f["evaluation"], f["method"])] in (None, f["metric"])]
  if not fits:
    return []
  columns = sorted({(f["evaluation"], f["method"], f["task"]) for f in fits})
  lines = ["fitted exponent alpha of err = E + A x^-alpha against training pairs, 95% bootstrap interval "
           "(probes: mean-pooling metric; retrieval: t2a/R@10; all curves in report/fits.json)",
           "  " + f"{'':<24}" + "".join(f"{_column(e, m, t)[:17]:>18}" for e, m, t in columns)]
  refused = []
  for (objective, init), group in sorted(results.group(fits, ("objective", "init")).items()):
    cells = {(f["evaluation"], f["method"], f["task"]): f["law"] for f in group}
    row = []
    for column in columns:
      law = cells.get(column)
      if law is None or not law["fitted"]:
        refused += [law["reason"]] if law else []
        row.append(f"{'-':>18}")
        continue
      lo, hi = law.get("alpha_interval") or (float("nan"), float("nan"))
      row.append(f"{law['alpha']:>6.2f} [{lo:.2f},{hi:.2f}]")
    lines.append(f"  {objective + ' ' + init:<24}" + "".join(row))
  if refused:
    lines.append(f"  {len(refused)} curve(s) not fitted, e.g.: {refused[0]}")
  return lines


def summary_lines(workdir) -> list[str]:
  workdir = epath.Path(workdir)
  rows = results.load_rows(workdir / "results.jsonl")
  report_dir = workdir / "report"
  lines = _table(rows, "mean")
  attention = _table(rows, "attention")
  lines += ([""] + attention if attention else [])
  gaps = _gaps(rows)
  lines += ([""] + gaps if gaps else [])
  exponents = _exponents(report_dir)
  lines += ([""] + exponents if exponents else [])
  findings_path = report_dir / "findings.json"
  if findings_path.exists():
    lines += ["", "the study's findings, tested on this sweep (report.md says how):"]
    for f in json.loads(findings_path.read_text()):
      lines.append(f"  {f['number']}. {f['verdict']:<12} {f['finding']}")
  lines += ["", f"results: {workdir / 'results.jsonl'}; report: {report_dir / 'report.md'} (tables, fits, "
                f"crossovers, plots *.png); runs: {workdir / 'runs'}"]
  return lines
