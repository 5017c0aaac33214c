"""The report's PNG plots (matplotlib, Agg backend: no display needed).

- metric_vs_data_size.png: one panel per measure (task, evaluation, method, metric), one line per (objective,
  init), log x; points are seed means, error bars the mean of the rows' 95% evaluation intervals, and the
  fitted law (dashed) where one was fitted.
- metric_vs_compute.png: the same against total training FLOPs.
- supervised_gap_vs_data_size.png: supervised minus scratch (seed means) per objective against data size.
Files are written through epath, so the report folder may be on gs://.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402

from alp_jax.sweeps import fit, results  # noqa: E402

COLUMNS = 3


def _measure_title(key: tuple) -> str:
  task, family, evaluation, method, metric = key
  return f"{task} ({family})\n{evaluation}/{method}: {metric}"


def _grid(count: int):
  rows = max(1, -(-count // COLUMNS))
  figure, axes = plt.subplots(rows, COLUMNS, figsize=(4.2 * COLUMNS, 3.4 * rows), squeeze=False)
  for ax in axes.flat[count:]:
    ax.set_visible(False)
  return figure, list(axes.flat)


def _save(figure, path) -> None:
  buffer = io.BytesIO()
  figure.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.92, wspace=0.3, hspace=0.7)  # tight_layout: slow
  figure.savefig(buffer, format="png", dpi=90)
  plt.close(figure)
  epath.Path(path).write_bytes(buffer.getvalue())


def _line(rows: list[dict], x_axis: str):
  """-> (x, mean value, lower error, upper error) per distinct x."""
  by_x: dict = {}
  for r in rows:
    by_x.setdefault(float(r[x_axis]), []).append(r)
  xs = sorted(by_x)
  means = np.array([np.mean([r["value"] for r in by_x[x]]) for x in xs])
  low, high = [], []
  for x, m in zip(xs, means):
    intervals = [r["interval"] for r in by_x[x] if r["interval"]]
    low.append(m - np.mean([i[0] for i in intervals]) if intervals else 0.0)
    high.append(np.mean([i[1] for i in intervals]) - m if intervals else 0.0)
  return np.array(xs), means, np.maximum(low, 0.0), np.maximum(high, 0.0)


def _tick_at_sizes(ax, rows: list[dict]) -> None:
  """Ticks at the measured data sizes (a log axis over less than a decade would show one tick or none)."""
  sizes = sorted({int(r["data_pairs"]) for r in rows if r.get("data_pairs")})
  if sizes:
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])


def metric_vs(rows: list[dict], fits: list[dict], x_axis: str, path, label: str) -> None:
  """One panel per measure, one line per (objective, init, model_size, budget) against x_axis (log scale)."""
  measures = results.group(results.pretrained(rows), results.MEASURE)
  figure, axes = _grid(len(measures))
  fit_index = {tuple(f[k] for k in ("objective", "init", "model_size", "budget") + results.MEASURE): f
               for f in fits if f["x_axis"] == x_axis and f["law"]["fitted"]}
  for ax, (measure, group) in zip(axes, measures.items()):
    for line, points in results.group(group, ("objective", "init", "model_size", "budget")).items():
      if any(float(r[x_axis]) <= 0 for r in points):
        continue
      xs, means, low, high = _line(points, x_axis)
      name = "/".join(str(v) for v in line if v is not None)
      drawn = ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, label=name)
      law = fit_index.get(line + measure)
      if law:
        grid = np.geomspace(xs.min(), xs.max(), 50)
        power = fit.PowerLaw(**{k: v for k, v in law["law"].items()})
        curve = fit.value_from_error(power.error_at(grid), law["higher_is_better"])
        ax.plot(grid, curve, "--", color=drawn.lines[0].get_color(), linewidth=1)
    ax.set_xscale("log")
    ax.minorticks_off()
    if x_axis == "data_pairs":
      _tick_at_sizes(ax, group)
    ax.set_xlabel(label)
    ax.set_title(_measure_title(measure), fontsize=8)
    ax.legend(fontsize=6)
  _save(figure, path)


def supervised_gap(rows: list[dict], path) -> None:
  """Supervised minus scratch (seed means at each data size) per objective, one panel per measure."""
  measures = results.group(results.pretrained(rows), results.MEASURE)
  figure, axes = _grid(len(measures))
  for ax, (measure, group) in zip(axes, measures.items()):
    for line, points in results.group(group, ("objective", "model_size", "budget")).items():
      by_init = results.group(points, ("init",))
      if ("supervised",) not in by_init or ("scratch",) not in by_init:
        continue
      sup = dict(zip(*_line(by_init[("supervised",)], "data_pairs")[:2]))
      scr = dict(zip(*_line(by_init[("scratch",)], "data_pairs")[:2]))
      xs = sorted(set(sup) & set(scr))
      if xs:
        ax.plot(xs, [sup[x] - scr[x] for x in xs], marker="o",
                label="/".join(str(v) for v in line if v is not None))
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xscale("log")
    ax.minorticks_off()
    _tick_at_sizes(ax, group)
    ax.set_xlabel("training clips (data_pairs)")
    ax.set_ylabel("supervised - scratch")
    ax.set_title(_measure_title(measure), fontsize=8)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6)
  _save(figure, path)


def write_plots(rows: list[dict], fits: list[dict], out_dir) -> list[str]:
  """Writes the three PNGs into out_dir -> their file names."""
  out_dir = epath.Path(out_dir)
  metric_vs(rows, fits, "data_pairs", out_dir / "metric_vs_data_size.png", "training clips (data_pairs)")
  metric_vs(rows, fits, "flops", out_dir / "metric_vs_compute.png", "training FLOPs")
  supervised_gap(rows, out_dir / "supervised_gap_vs_data_size.png")
  return ["metric_vs_data_size.png", "metric_vs_compute.png", "supervised_gap_vs_data_size.png"]
