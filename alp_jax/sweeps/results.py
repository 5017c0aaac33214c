"""The sweep's results table: load and validate `results.jsonl`, group rows, write `results.csv` / `results.md`.

A row is one (run, task, evaluation, method, metric) measurement; its schema is the sweep contract
(/work/notes/sweep_contract.md, docs/sweeps.md): the point's axes (objective, init, data_pairs, model_size, seed,
budget), what was measured (task, task_family, evaluation, method, metric, value, interval, higher_is_better) and
what it cost (steps, samples, flops, wall_seconds).

Names used across the report:
- a *measure* is one (task, task_family, evaluation, method, metric): one line on a plot;
- a *context* is one (model_size, budget): curves are only compared inside a context;
- a *score* is the value turned so that higher is better (`value`, or `-value` when `higher_is_better` is false).
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterable

from etils import epath

KINDS = ("pretrained", "random_init", "logmel_stats")
OBJECTIVES = ("contrastive", "sigmoid", "captioning", "hybrid")
INITS = ("scratch", "supervised")
FAMILIES = ("speech", "music", "environmental", "language")
EVALUATIONS = ("probe", "zero_shot", "retrieval", "captioning", "lit")

# field -> (accepted types, may be null). bool is excluded from the numeric types below (it is an int in Python).
_INT = (int,)
_NUM = (int, float)
SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "run": ((str,), False),
    "kind": ((str,), False),
    "objective": ((str,), True),
    "init": ((str,), True),
    "data_pairs": (_INT, True),
    "requested_pairs": (_INT, True),
    "model_size": ((str,), True),
    "seed": (_INT, False),
    "budget": ((str,), False),
    "task": ((str,), False),
    "task_family": ((str,), False),
    "evaluation": ((str,), False),
    "method": ((str,), False),
    "metric": ((str,), False),
    "value": (_NUM, False),
    "interval": ((list,), True),
    "higher_is_better": ((bool,), False),
    "steps": (_INT, False),
    "samples": (_INT, False),
    "flops": (_NUM, False),
    "wall_seconds": (_NUM, False),
}
_CHOICES = {"kind": KINDS, "objective": OBJECTIVES, "init": INITS, "task_family": FAMILIES,
            "evaluation": EVALUATIONS}

# The table's columns, in order (the interval is split into its two ends).
COLUMNS = ("run", "kind", "objective", "init", "data_pairs", "requested_pairs", "model_size", "seed", "budget",
           "task", "task_family", "evaluation", "method", "metric", "value", "interval_lo", "interval_hi",
           "higher_is_better", "steps", "samples", "flops", "wall_seconds")

MEASURE = ("task", "task_family", "evaluation", "method", "metric")
CONTEXT = ("model_size", "budget")


class ResultsError(ValueError):
  """A results file that is missing or holds a row that breaks the contract."""


def _check_row(row: Any, where: str) -> dict:
  if not isinstance(row, dict):
    raise ResultsError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
  for field, (types, nullable) in SCHEMA.items():
    if field not in row:
      raise ResultsError(f"{where}: field '{field}' is missing (the row schema is in docs/sweeps.md)")
    value = row[field]
    if value is None:
      if not nullable:
        raise ResultsError(f"{where}: field '{field}' is null but is required")
      continue
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
      names = " or ".join(t.__name__ for t in types)
      raise ResultsError(f"{where}: field '{field}' must be {names}, got {value!r}")
    if field in _CHOICES and value not in _CHOICES[field]:
      raise ResultsError(f"{where}: field '{field}' is {value!r}, not one of {list(_CHOICES[field])}")
  if isinstance(row["value"], float) and not math.isfinite(row["value"]):
    raise ResultsError(f"{where}: field 'value' is not finite ({row['value']!r})")
  interval = row["interval"]
  if interval is not None and (len(interval) != 2 or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)):
    raise ResultsError(f"{where}: field 'interval' must be [lo, hi] or null, got {interval!r}")
  if row["kind"] == "pretrained" and (row["objective"] is None or row["init"] is None or row["data_pairs"] is None):
    raise ResultsError(f"{where}: a 'pretrained' row needs objective, init and data_pairs (one of them is null)")
  return row


def load_rows(path) -> list[dict]:
  """Reads and validates every row of a results.jsonl file.

  -> the rows as dicts, in file order. Raises ResultsError naming the file, the line and the field of the first
  bad row, or saying to run the sweep first when the file is missing.
  """
  path = epath.Path(path)
  if not path.exists():
    raise ResultsError(f"{path} does not exist: run the sweep first (python -m alp_jax.sweeps --config ... "
                       f"--workdir {path.parent}), it writes results.jsonl when its evaluations finish")
  rows = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    where = f"{path}:{number}"
    try:
      row = json.loads(line)
    except json.JSONDecodeError as error:
      raise ResultsError(f"{where}: not valid JSON ({error})") from None
    rows.append(_check_row(row, where))
  if not rows:
    raise ResultsError(f"{path} holds no rows: did every run of the sweep fail? (see runs/*/FAILED.json)")
  return rows


def score(row: dict) -> float:
  """The row's value turned so that higher is better."""
  return float(row["value"]) if row["higher_is_better"] else -float(row["value"])


def key_of(row: dict, fields: Iterable[str]) -> tuple:
  return tuple(row[f] for f in fields)


def group(rows: Iterable[dict], fields: Iterable[str]) -> dict[tuple, list[dict]]:
  """Rows grouped by the values of `fields`, groups in first-seen order."""
  fields = tuple(fields)
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault(key_of(row, fields), []).append(row)
  return groups


def pretrained(rows: Iterable[dict]) -> list[dict]:
  return [r for r in rows if r["kind"] == "pretrained"]


def _cells(row: dict) -> list:
  interval = row["interval"] or [None, None]
  flat = dict(row, interval_lo=interval[0], interval_hi=interval[1])
  return [flat[c] for c in COLUMNS]


def _sorted(rows: list[dict]) -> list[dict]:
  def order(row):
    return (row["task_family"], row["task"], row["evaluation"], row["method"], row["metric"],
            row["kind"], row["objective"] or "", row["init"] or "", row["model_size"] or "",
            row["data_pairs"] or 0, row["seed"], row["run"])
  return sorted(rows, key=order)


def _text(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return str(value)


def write_csv(rows: list[dict], path) -> None:
  """One line per row (sorted by measure, then point), the columns of COLUMNS."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(COLUMNS)
  for row in _sorted(rows):
    writer.writerow(["" if v is None else v for v in _cells(row)])
  epath.Path(path).write_text(buffer.getvalue())


def write_markdown(rows: list[dict], path) -> None:
  """The same table as write_csv as a markdown table (numbers to 6 significant digits)."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for row in _sorted(rows):
    lines.append("| " + " | ".join(_text(v) for v in _cells(row)) + " |")
  epath.Path(path).write_text("\n".join(lines) + "\n")
