"""DIR/results.jsonl: one row per (run, task, evaluation, method, metric), the table the report reads.

Row schema (the sweep contract, docs/sweeps.md): run, kind (pretrained | random_init | logmel_stats), objective,
init, data_pairs, requested_pairs, model_size, seed, budget, task, task_family, evaluation, method, metric, value,
interval, higher_is_better, steps, samples, flops, wall_seconds. A pretrained run's axes come from sweep.json,
its compute from its training workdir's compute.json (alp_jax/train/compute.py).

The evaluate JSON does not name the evaluator of a row, so it is read from the row's own fields: "probe" (a
linear probe; method = the pooling), "lit_workdir" (LiT-style alignment), "templates" (zero-shot), "beam_size"
(captioning), else retrieval. Every metric the evaluators write is higher-is-better (accuracy, mAP, R@k, mAP@10,
BLEU, ROUGE-L, CIDEr-D).
"""
from __future__ import annotations

import json
import os

from etils import epath

from alp_jax.data import paths
from alp_jax.sweeps import plan as plan_lib
from alp_jax.sweeps import stages as stages_lib
from alp_jax.train import compute as compute_lib

RESULTS_FILE = "results.jsonl"
FAMILIES = ("speech", "music", "environmental", "language")
# Task folder name -> family, for the demo's tasks and the study's. A sweep config's task_families adds to and
# overrides these. Zero-shot, retrieval, captioning and LiT rows are "language" whatever the task.
DEFAULT_FAMILIES = {
    # demo (alp_jax/demo/tasks.py, alp_jax/demo/ood_tasks.py)
    "speaker": "speech", "instrument_family": "music", "pitch_class": "music", "sound_type": "environmental",
    "domain": "environmental", "captions": "language",
    "ood_timbre": "music", "ood_pitch": "music", "ood_events": "environmental",
    # the study's tasks (evaluate.recipes names)
    "fsd50k": "environmental", "vggsound": "environmental", "esc50": "environmental", "sed": "environmental",
    "voxceleb2": "speech", "voxceleb1": "speech", "crema_d": "speech", "speech_commands": "speech",
    "magnatagatune": "music", "nsynth": "music", "nsynth_instrument": "music", "gtzan": "music",
    "audiocaps": "language", "clotho": "language", "musiccaps": "language", "paraspeechcaps": "language",
}
LANGUAGE_EVALUATIONS = ("zero_shot", "retrieval", "captioning", "lit")


def families(sweep: dict) -> dict:
  return {**DEFAULT_FAMILIES, **dict(sweep.get("task_families") or {})}


def task_name(task_dir: str) -> str:
  return os.path.basename(os.path.normpath(os.fspath(task_dir)))


def check_families(sweep: dict, where: str) -> None:
  """A ValueError naming every task folder of the sweep without a family (set config.task_families)."""
  known = families(sweep)
  missing = [task_name(t) for t in sweep["evaluation"]["task_dirs"] if task_name(t) not in known]
  bad = {t: f for t, f in known.items() if f not in FAMILIES}
  if missing or bad:
    raise ValueError(f"{where}: " + (f"no task family for task(s) {missing}: add them to config.task_families "
                                     f"(task -> one of {', '.join(FAMILIES)}). " if missing else "")
                     + (f"task_families {bad} name no known family ({', '.join(FAMILIES)})" if bad else ""))


def evaluation_of(row: dict) -> str:
  if "probe" in row:
    return "probe"
  if "lit_workdir" in row or str(row.get("method", "")).startswith("lit_"):
    return "lit"
  if "templates" in row:
    return "zero_shot"
  if "beam_size" in row:
    return "captioning"
  return "retrieval"


def _rows(content: dict, base: dict, known_families: dict) -> list[dict]:
  out = []
  for row in content["results"]:
    evaluation = evaluation_of(row)
    family = "language" if evaluation in LANGUAGE_EVALUATIONS else known_families.get(row["task"], "environmental")
    interval = row.get("interval")
    # Retrieval is one measure whatever scores it (a two-tower's embedding similarity, a captioner's caption
    # likelihood: method "retrieval_likelihood"), so the two objectives' curves pair up; "scoring" keeps how.
    method = "retrieval" if evaluation == "retrieval" else row["method"]
    scoring = {"scoring": row["method"]} if method != row["method"] else {}
    out.append({**base, "task": row["task"], "task_family": family, "evaluation": evaluation,
                "method": method, **scoring, "metric": row["metric"], "value": float(row["value"]),
                "interval": [float(interval[0]), float(interval[1])] if interval else None,
                "higher_is_better": True})
  return out


def collect(plan: plan_lib.Plan) -> tuple[epath.Path, int]:
  """Writes DIR/results.jsonl from every complete evaluation of the plan; -> (path, rows)."""
  known = families(plan.sweep)
  rows = []
  for point in plan.points:
    root = os.path.join(plan.workdir, "runs", point.name)
    content = stages_lib.read_eval(os.path.join(root, "eval.json"))
    if content is None:
      continue
    compute = compute_lib.read(os.path.join(root, "train")) or {}
    a = point.axes
    base = {"run": point.name, "kind": "pretrained", "objective": a["objective"], "init": a["init"],
            "data_pairs": a["data_pairs"], "requested_pairs": a["requested_pairs"], "model_size": a["model_size"],
            "seed": a["seed"], "budget": a["budget"],
            **{k: v for k, v in a.items() if "." in k}}
    for row in _rows(content, base, known):
      rows.append({**row, "steps": int(compute.get("steps", point.steps)),
                   "samples": int(compute.get("samples", point.samples)),
                   "flops": float(compute.get("flops", point.flops)),
                   "wall_seconds": float(compute.get("wall_seconds", 0.0))})
  for name, baseline in plan.baselines.items():
    content = stages_lib.read_eval(baseline["output"])
    if content is None:
      continue
    base = {"run": name, "kind": baseline["kind"], "objective": None, "init": None, "data_pairs": None,
            "requested_pairs": None, "model_size": baseline["model_size"], "seed": baseline["seed"],
            "budget": plan.sweep["budget"]["rule"]}
    rows += [{**row, "steps": 0, "samples": 0, "flops": 0.0, "wall_seconds": 0.0}
             for row in _rows(content, base, known)]
  path = epath.Path(plan.workdir) / RESULTS_FILE
  paths.write_text_last(path, "".join(json.dumps(r) + "\n" for r in rows))
  return path, len(rows)
