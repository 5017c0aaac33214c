"""The sweep report (alp_jax/sweeps/report.py) on designed results files whose verdicts are known."""
import csv
import json

import numpy as np
import pytest

from alp_jax.sweeps import report, results

SIZES = [1000, 3000, 10000, 30000, 100000]
SEEDS = [0, 1]
# task, family, evaluation, methods, metric
TASKS = [("speaker", "speech", "probe", ("mean", "attention"), "accuracy"),
         ("instrument", "music", "probe", ("mean", "attention"), "accuracy"),
         ("sound_type", "environmental", "probe", ("mean", "attention"), "accuracy"),
         ("caption_retrieval", "language", "retrieval", ("a2t",), "R@1")]
SED = ("sed_strong", "environmental", "probe", ("frame",), "psds1")


def _value(objective, init, x, task, method, contrastive_leads):
  decades = np.log10(x / SIZES[0])  # 0 .. 2
  if task == "caption_retrieval":  # captioning gains 0.06 a decade, contrastive 0.02: it overtakes at 10**1.25
    return 0.30 + 0.02 * decades if objective == "contrastive" else 0.25 + 0.06 * decades
  if task == "sed_strong":  # declines with data
    return 0.40 - 0.03 * decades
  value = 1.0 - (0.1 + 2.0 * x ** -0.3)
  lead = 0.05 if contrastive_leads else -0.05
  if objective == "contrastive":
    value += lead + (0.02 if method == "attention" else 0.0)
  elif method == "attention":
    value += lead + 0.01  # attention pooling: the gap drops from 0.05 to 0.01
  if init == "supervised":
    value += -0.05 if task == "speaker" else 0.10 * (1.0 - decades / 2.5)
  return value


def make_rows(contrastive_leads=True, with_sed=True, noise=0.003):
  rng = np.random.default_rng(0)
  rows = []
  tasks = TASKS + ([SED] if with_sed else [])
  for objective in ("contrastive", "captioning"):
    for init in ("scratch", "supervised"):
      for x in SIZES:
        for seed in SEEDS:
          run = f"{objective}-{init}-{x}-s{seed}"
          for task, family, evaluation, methods, metric in tasks:
            for method in methods:
              value = _value(objective, init, x, task, method, contrastive_leads) + rng.normal(0.0, noise)
              rows.append({
                  "run": run, "kind": "pretrained", "objective": objective, "init": init, "data_pairs": x,
                  "requested_pairs": x, "model_size": "tiny", "seed": seed, "budget": "epochs", "task": task,
                  "task_family": family, "evaluation": evaluation, "method": method, "metric": metric,
                  "value": float(value), "interval": [float(value) - 0.02, float(value) + 0.02],
                  "higher_is_better": True, "steps": x // 10, "samples": x * 4, "flops": 1e9 * x,
                  "wall_seconds": x / 100.0})
  for task, family, evaluation, methods, metric in tasks:
    rows.append({"run": "random_init-tiny", "kind": "random_init", "objective": None, "init": None,
                 "data_pairs": None, "requested_pairs": None, "model_size": "tiny", "seed": 0, "budget": "epochs",
                 "task": task, "task_family": family, "evaluation": evaluation, "method": methods[0],
                 "metric": metric, "value": 0.2, "interval": None, "higher_is_better": True, "steps": 0,
                 "samples": 0, "flops": 0.0, "wall_seconds": 0.0})
  return rows


def _write(workdir, rows):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return workdir


def test_report_tables_plots_and_verdicts(tmp_path, capsys):
  rows = make_rows()
  workdir = _write(tmp_path / "sweep", rows)
  failed = workdir / "runs" / "captioning-scratch-x" / "FAILED.json"
  failed.parent.mkdir(parents=True)
  failed.write_text(json.dumps({"stage": "train", "error": "line\nOOM", "log": "logs/train.log", "time": 0}))

  assert report.main(["--workdir", str(workdir), "--resamples", "40"]) == 0
  out = workdir / "report"
  assert "report.md" in capsys.readouterr().out.splitlines()[-1]

  with open(out / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == len(rows) and list(table[0]) == list(results.COLUMNS)
  one = next(r for r in table if r["run"] == "contrastive-scratch-1000-s0" and r["task"] == "speaker"
             and r["method"] == "mean")
  assert one["data_pairs"] == "1000" and one["flops"] == "1000000000000.0" and one["wall_seconds"] == "10.0"
  assert (out / "results.md").read_text().count("\n") == len(rows) + 2

  for name in ("metric_vs_data_size.png", "metric_vs_compute.png", "supervised_gap_vs_data_size.png"):
    data = (out / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000

  fits = json.loads((out / "fits.json").read_text())
  speaker = next(f for f in fits if f["x_axis"] == "data_pairs" and f["task"] == "speaker" and f["method"] == "mean"
                 and f["objective"] == "contrastive" and f["init"] == "scratch")
  assert speaker["law"]["fitted"] and abs(speaker["law"]["alpha"] - 0.3) < 0.1
  assert abs(speaker["holdout"]["error"]) < 0.03

  crossings = json.loads((out / "crossovers.json").read_text())
  language = next(c for c in crossings if c["task_family"] == "language" and c["init"] == "scratch")
  assert language["status"] == "crossover" and language["crossovers"][-1]["to_leader"] == "captioning"
  assert abs(np.log10(language["crossovers"][-1]["x"]) - 4.25) < 0.1
  speech = next(c for c in crossings if c["task_family"] == "speech" and c["method"] == "mean"
                and c["init"] == "scratch")
  assert speech["status"] == "no crossover in range" and speech["leader"] == "contrastive"

  verdicts = {v["number"]: v for v in json.loads((out / "findings.json").read_text())}
  assert [verdicts[n]["verdict"] for n in range(1, 6)] == ["supports"] * 5
  assert [p["verdict"] for p in verdicts[4]["parts"]] == ["supports", "supports"]

  text = (out / "report.md").read_text()
  assert "**Verdict: supports.**" in text and "failed runs: 1" in text and "OOM" in text
  assert "metric_vs_compute.png" in text


def test_verdicts_follow_the_data(tmp_path):
  rows = make_rows(contrastive_leads=False, with_sed=False)
  summary = report.write_report(_write(tmp_path / "sweep", rows), resamples=40, draw_plots=False)
  assert summary["verdicts"][1] == "contradicts"
  assert summary["verdicts"][5] == "cannot test"
  verdicts = json.loads((tmp_path / "sweep" / "report" / "findings.json").read_text())
  assert "frame-level sound event detection" in verdicts[4]["why"]


def test_missing_axis_cannot_test(tmp_path):
  rows = [r for r in make_rows() if r["objective"] in ("contrastive", None) and r["init"] in ("scratch", None)]
  summary = report.write_report(_write(tmp_path / "sweep", rows), tmp_path / "out", resamples=20,
                                 draw_plots=False)
  assert summary["verdicts"] == {1: "cannot test", 2: "cannot test", 3: "cannot test", 4: "cannot test",
                                 5: "supports"}  # SED needs one objective only
  assert (tmp_path / "out" / "report.md").exists()


def test_fewer_sizes_are_refused_with_a_reason(tmp_path):
  rows = [r for r in make_rows() if r["data_pairs"] in (None, 1000, 10000, 100000)]
  report.write_report(_write(tmp_path / "sweep", rows), resamples=10, draw_plots=False)
  fits = json.loads((tmp_path / "sweep" / "report" / "fits.json").read_text())
  assert all(not f["law"]["fitted"] and "3 distinct x" in f["law"]["reason"] for f in fits)


def test_missing_results_and_bad_rows_are_named(tmp_path, capsys):
  assert report.main(["--workdir", str(tmp_path / "nothing")]) == 2
  assert "run the sweep first" in capsys.readouterr().err
  rows = make_rows()[:3]
  rows[2] = dict(rows[2], seed="zero")
  _write(tmp_path / "bad", rows)
  with pytest.raises(results.ResultsError, match=r"results.jsonl:3: field 'seed'"):
    results.load_rows(tmp_path / "bad" / "results.jsonl")
  rows[2]["seed"] = 0
  del rows[2]["task"]
  _write(tmp_path / "bad", rows)
  with pytest.raises(results.ResultsError, match=r":3: field 'task' is missing"):
    results.load_rows(tmp_path / "bad" / "results.jsonl")
