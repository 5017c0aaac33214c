"""Encoders side by side on probe tasks: values with intervals, and each encoder's gap over the baselines.

A comparison row is one (task, method): {"task", "metric", "method", "values": {name: value},
"intervals": {name: [low, high]}, "gaps": {name: {"baseline", "gap", "low", "high", "significant"}},
"gaps_by_baseline": {name: {baseline: gap}}}.

The gap of an encoder is taken against the STRONGER of the baselines on that row (the one with the higher value:
random init of the same architecture, or the classical log-mel statistics), paired over the same test clips
(alp_jax.evaluate.stats.paired_gap: one resample of the test clips applied to both), so a gap is significant
when its 95% interval excludes zero. The table prints each gap as +0.123 [+0.050,+0.190]* ("*": significant);
`summary_lines` counts the significant gaps over the stronger baseline and over each baseline alone (the gap over
random init is what pretraining learnt; the gap over log-mel statistics is what it adds to free features).
"""
from __future__ import annotations

import numpy as np

from alp_jax.evaluate import probe as probe_lib
from alp_jax.evaluate import stats

RANDOM_INIT, CLASSICAL = "random_init", "logmel-stats"
BASELINES = (RANDOM_INIT, CLASSICAL)


def _metric(multi_label: bool):
  return lambda scores, targets: probe_lib.score(scores, targets, multi_label)


def merge(results_by_name: dict[str, list[dict]]) -> list[dict]:
  """{encoder name: probe.evaluate_encoder rows (with keep_outputs=True)} -> comparison rows without gaps, in
  the order tasks and methods first appear. Each row keeps "outputs": {name: (scores, targets)} for `add_gaps`."""
  rows: dict[tuple[str, str], dict] = {}
  for name, results in results_by_name.items():
    for r in results:
      row = rows.setdefault((r["task"], r["method"]), {"task": r["task"], "metric": r["metric"], "method": r["method"],
                                                       "values": {}, "intervals": {}, "gaps": {}, "outputs": {}})
      row["values"][name] = r["value"]
      if r.get("interval") is not None:
        row["intervals"][name] = list(r["interval"])
      if r.get("outputs") is not None:
        row["outputs"][name] = r["outputs"]
  return list(rows.values())


def stronger_baseline(row: dict, baselines: tuple[str, ...] = BASELINES) -> str | None:
  present = [b for b in baselines if b in row["values"]]
  return max(present, key=lambda b: row["values"][b]) if present else None


def add_gaps(rows: list[dict], baselines: tuple[str, ...] = BASELINES, *, resamples: int = 1000,
             seed: int = 0) -> list[dict]:
  """Fills, for every non-baseline encoder with outputs, row["gaps_by_baseline"][name][baseline] (its paired gap
  over each baseline) and row["gaps"][name] (the one over the row's stronger baseline); drops the outputs (not
  JSON). Rows are changed in place and returned."""
  for row in rows:
    outputs = row.pop("outputs", {})
    strongest = stronger_baseline(row, baselines)
    row.setdefault("gaps_by_baseline", {})
    multi_label = row["metric"] == "map"
    for name, out in outputs.items():
      if name in baselines:
        continue
      for base in baselines:
        if base not in outputs:
          continue
        if len(out[1]) != len(outputs[base][1]) or not np.array_equal(out[1], outputs[base][1]):
          raise ValueError(f"{row['task']}: {name} and {base} were scored on different test clips; a paired gap "
                           "needs the same clips in the same order (did a file fail to decode for one of them?)")
        gap = stats.paired_gap(_metric(multi_label), out, outputs[base], resamples=resamples, seed=seed)
        gap = {"baseline": base, **{k: (bool(v) if k == "significant" else float(v)) for k, v in gap.items()}}
        row["gaps_by_baseline"].setdefault(name, {})[base] = gap
        if base == strongest:
          row["gaps"][name] = gap
  return rows


def _gap_text(gap: dict) -> str:
  return f"{gap['gap']:+.3f} [{gap['low']:+.3f},{gap['high']:+.3f}]{stats.significance_mark(gap) or ' '}"


def format_table(rows: list[dict], baselines: tuple[str, ...] = BASELINES) -> str:
  """A line per task/method: each encoder's value (baselines first), then each pretrained encoder's gap over
  the stronger baseline with its interval, '*' when the interval excludes zero; '-' where absent."""
  names = list(dict.fromkeys(n for row in rows for n in row["values"]))
  names = [b for b in baselines if b in names] + [n for n in names if n not in baselines]
  pretrained = [n for n in names if n not in baselines]
  width = max([7] + [len(n) for n in names])
  gap_width = 27
  task_w, metric_w, method_w = (max([len(h)] + [len(str(r[k])) for r in rows])
                                for k, h in (("task", "task"), ("metric", "metric"), ("method", "method")))
  header = (f"{'task':<{task_w}} {'metric':<{metric_w}} {'method':<{method_w}} "
            + " ".join(f"{n:>{width}}" for n in names)
            + "".join(f"  {('gap ' + n):<{gap_width}}" for n in pretrained))
  lines = [header]
  for row in rows:
    values = " ".join(f"{row['values'][n]:>{width}.3f}" if n in row["values"] else f"{'-':>{width}}" for n in names)
    gaps = "".join(f"  {_gap_text(row['gaps'][n]) if n in row.get('gaps', {}) else '-':<{gap_width}}"
                   for n in pretrained)
    lines.append(f"{row['task']:<{task_w}} {row['metric']:<{metric_w}} {row['method']:<{method_w}} {values}{gaps}")
  lines.append("gap: pretrained minus the stronger baseline of its row (" + " / ".join(baselines) + "), 95% paired "
               "bootstrap interval over test clips; * = the interval excludes 0")
  return "\n".join(lines)


def summary(rows: list[dict]) -> dict[str, dict[str, dict[str, int]]]:
  """{encoder: {"stronger" | baseline name: {"rows", "significantly_above", "significantly_below"}}}: how often each
  encoder's gap over the stronger baseline, and over each baseline alone, excludes zero."""
  out: dict[str, dict[str, dict[str, int]]] = {}

  def count(name: str, against: str, gap: dict) -> None:
    counts = out.setdefault(name, {}).setdefault(against, {"rows": 0, "significantly_above": 0,
                                                           "significantly_below": 0})
    counts["rows"] += 1
    if gap["significant"]:
      counts["significantly_above" if gap["gap"] > 0 else "significantly_below"] += 1

  for row in rows:
    for name, gap in row.get("gaps", {}).items():
      count(name, "stronger", gap)
    for name, by_base in row.get("gaps_by_baseline", {}).items():
      for base, gap in by_base.items():
        count(name, base, gap)
  return out


def summary_lines(rows: list[dict]) -> list[str]:
  """One line per encoder: rows significantly above/below the stronger baseline and each baseline alone."""
  lines = []
  for name, by in summary(rows).items():
    parts = [f"{'the stronger baseline' if against == 'stronger' else against}: +{c['significantly_above']} / "
             f"-{c['significantly_below']} of {c['rows']}" for against, c in by.items()]
    lines.append(f"{name}: rows significantly above / below " + "; ".join(parts))
  return lines
