"""The sweep runner: plan expansion and budgets, the local launcher (skip, failure, resume), slurm/tpu scripts,
dry-run, results.jsonl. The orchestration tests run the stages with a stub interpreter (tests/sweep_stub_python.py)
so they take seconds; one slow test runs the smoke sweep with real training, export and evaluation."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from alp_jax.sweeps import __main__ as cli
from alp_jax.sweeps import collect
from alp_jax.sweeps import plan as plan_lib

REPO = Path(__file__).resolve().parent.parent
STUB = Path(__file__).resolve().parent / "sweep_stub_python.py"
PLANTED = "--config.point_overrides=(('captioning_*', ('optimizer.schedule=FAIL',)),)"


@pytest.fixture(scope="module")
def tone_task(tmp_path_factory):
  """A two-class probe task ("tones": low vs high tone in noise, 1 s clips)."""
  out = tmp_path_factory.mktemp("task") / "tones"
  (out / "audio").mkdir(parents=True)
  rng = np.random.default_rng(0)
  rows = {"train": [], "test": []}
  for i in range(16):
    label = ("low", "high")[i % 2]
    t = np.arange(16000) / 16000
    audio = 0.5 * np.sin(2 * np.pi * (300 if label == "low" else 2400) * t) + 0.05 * rng.standard_normal(16000)
    name = f"audio/clip{i:02d}.wav"
    sf.write(out / name, audio.astype(np.float32), 16000)
    rows["test" if i >= 10 else "train"].append((name, label))
  for split, split_rows in rows.items():
    with open(out / f"{split}.csv", "w", newline="") as f:
      csv.writer(f).writerows([("path", "label"), *split_rows])
  return out


def smoke_args(corpus, task, workdir, *extra):
  return ["--config", "configs/sweeps/smoke.py", "--workdir", str(workdir), f"--config.corpus_dir={corpus}",
          f"--config.evaluation.task_dirs=('{task}',)", "--config.task_families.tones=music", *extra]


@pytest.fixture
def stub_python(tmp_path, monkeypatch):
  wrapper = tmp_path / "python"
  wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" "$@"\n')
  wrapper.chmod(0o755)
  monkeypatch.setenv(cli.PYTHON_ENV, str(wrapper))
  monkeypatch.chdir(REPO)
  return wrapper


def run_cli(args):
  lines = []
  code = cli.main(args, log=lines.append)
  return code, "\n".join(lines)


def test_plan_names_budgets_and_dependencies(tiny_corpus_dir, tone_task, tmp_path):
  sweep = plan_lib.load_sweep_config("configs/sweeps/smoke.py", [
      f"corpus_dir={tiny_corpus_dir}", f"evaluation.task_dirs=('{tone_task}',)", "objectives=('contrastive', 'captioning')",
      "data_pairs=(12, 24)", "budget.rule=samples", "budget.epochs=2", "budget.max_steps=5"])
  plan = plan_lib.expand(sweep, tmp_path / "sweep")
  names = [p.name for p in plan.points]
  assert names[:4] == ["contrastive_scratch_12_tiny_s0", "contrastive_supervised_12_tiny_s0",
                       "contrastive_scratch_24_tiny_s0", "contrastive_supervised_24_tiny_s0"] and len(names) == 8
  by_name = {p.name: p for p in plan.points}
  assert by_name["contrastive_scratch_12_tiny_s0"].steps == 3        # ceil(2 x 12 / 8)
  assert by_name["contrastive_scratch_24_tiny_s0"].steps == 5        # ceil(2 x 24 / 8) = 6, clipped to 5
  assert all(p.axes["data_pairs"] == p.axes["requested_pairs"] for p in plan.points)
  deps = {s.id: s.deps for s in plan.stages}
  assert deps["runs/contrastive_supervised_12_tiny_s0/train"] == ["tagger/export"]
  assert deps["runs/contrastive_scratch_12_tiny_s0/train"] == []
  assert deps["runs/captioning_scratch_24_tiny_s0/evaluate"] == ["runs/captioning_scratch_24_tiny_s0/export"]
  supervised = plan.stage("runs/contrastive_supervised_12_tiny_s0/train").args
  assert f"--config.model_init={plan.workdir}/tagger/encoder" in supervised
  assert "--config.optimizer.schedule=constant_cooldown" in supervised
  flops = plan_lib.load_sweep_config("configs/sweeps/smoke.py", [
      f"corpus_dir={tiny_corpus_dir}", f"evaluation.task_dirs=('{tone_task}',)", "budget.rule=fixed_flops",
      f"budget.flops={by_name['contrastive_scratch_12_tiny_s0'].flops_per_step * 7}"])
  assert {p.steps for p in plan_lib.expand(flops, tmp_path / "flops").points} == {7}
  too_big = plan_lib.load_sweep_config("configs/sweeps/smoke.py", [
      f"corpus_dir={tiny_corpus_dir}", f"evaluation.task_dirs=('{tone_task}',)", "data_pairs=(10_000,)"])
  with pytest.raises(ValueError, match="point contrastive_scratch_10k_tiny_s0: corpus .* has 48 clips"):
    plan_lib.expand(too_big, tmp_path / "big")


def test_budget_branches_fork_from_their_point_and_two_towers_skip_captioning(tiny_corpus_dir, tone_task, tmp_path):
  sweep = plan_lib.load_sweep_config("configs/sweeps/smoke.py", [
      f"corpus_dir={tiny_corpus_dir}", f"evaluation.task_dirs=('{tone_task}',)", "inits=('scratch',)",
      "objectives=('contrastive', 'captioning')", "budget.steps=40", "budget.branches=(0.25, 0.5)",
      "evaluation.suite=probe,captioning"])
  plan = plan_lib.expand(sweep, tmp_path / "sweep")
  by_name = {p.name: p for p in plan.points}
  trunk, quarter = by_name["contrastive_scratch_24_tiny_s0"], by_name["contrastive_scratch_24_tiny_s0_b0.25"]
  # 10 steps cooling down over round(0.2 x 10) = 2 fork at 8; 20 steps fork at 16.
  assert (quarter.steps, quarter.trained_steps, quarter.axes["branch_step"]) == (10, 2, 8)
  assert by_name["contrastive_scratch_24_tiny_s0_b0.5"].axes["branch_step"] == 16
  assert quarter.axes["budget"] == "fixed_steps*0.25" and trunk.axes["budget"] == "fixed_steps"
  trunk_train = plan.stage("runs/contrastive_scratch_24_tiny_s0/train")
  assert "--config.keep_steps=(8, 16)" in trunk_train.args
  branch_train = plan.stage("runs/contrastive_scratch_24_tiny_s0_b0.25/train")
  assert branch_train.deps == [trunk_train.id] and branch_train.new_steps == 2
  assert f"--config.branch_from={trunk_train.output}@8" in branch_train.args
  assert not any(a.startswith("--config.keep_steps") for a in branch_train.args)
  assert plan.to_dict()["total"]["steps"] == 2 * (40 + 2 + 4)   # two trunks and their cooldowns
  suite = lambda name: (lambda a: a[a.index("--suite") + 1])(plan.stage(f"runs/{name}/evaluate").args)
  assert suite("contrastive_scratch_24_tiny_s0_b0.5") == "probe"
  assert suite("captioning_scratch_24_tiny_s0") == "probe,captioning"
  for bad, message in (("schedule.name=cosine", "needs schedule.name='constant_cooldown'"),
                       ("schedule.warmup_steps=25", "cannot fork"), ("budget.branches=(1.5,)", r"in \(0, 1\)")):
    sweep = plan_lib.load_sweep_config("configs/sweeps/smoke.py", [
        f"corpus_dir={tiny_corpus_dir}", f"evaluation.task_dirs=('{tone_task}',)", "budget.steps=40",
        "budget.branches=(0.5,)", bad])
    with pytest.raises(ValueError, match=message):
      plan_lib.expand(sweep, tmp_path / "bad")


def test_local_sweep_skips_records_failures_and_resumes(tiny_corpus_dir, tone_task, tmp_path, stub_python):
  workdir = tmp_path / "sweep"
  args = smoke_args(tiny_corpus_dir, tone_task, workdir, "--config.objectives=('contrastive', 'captioning')", PLANTED)
  # Stopped after 3 stages (as a killed sweep would be): the next call runs only the remainder.
  code, out = run_cli(args + ["--max-stages=3"])
  assert code == 75 and "started 3 stage(s)" in out
  code, out = run_cli(args + ["--parallel=2"])
  assert code == 1
  assert "3/" in out.splitlines()[1] and "(3 before this call)" in out
  failed = json.loads((workdir / "runs/captioning_scratch_24_tiny_s0/FAILED.json").read_text())
  assert failed["stage"] == "runs/captioning_scratch_24_tiny_s0/train" and "FAIL" in failed["error"]
  assert Path(failed["log"]).exists()
  assert "not run runs/captioning_scratch_24_tiny_s0/export: blocked by runs/captioning_scratch_24_tiny_s0/train" in out
  assert "FAILED runs/captioning_supervised_24_tiny_s0/train" in out
  assert (workdir / "runs/contrastive_supervised_24_tiny_s0/eval.json").exists()
  assert "ETA" in out
  rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
  assert {r["run"] for r in rows} == {"contrastive_scratch_24_tiny_s0", "contrastive_supervised_24_tiny_s0",
                                       "random_init_tiny_s0"}
  row = next(r for r in rows if r["init"] == "supervised")
  assert row == {"run": "contrastive_supervised_24_tiny_s0", "kind": "pretrained", "objective": "contrastive",
                 "init": "supervised", "data_pairs": 24, "requested_pairs": 24, "model_size": "tiny", "seed": 0,
                 "budget": "fixed_steps", "task": "tones", "task_family": "music", "evaluation": "probe",
                 "method": "mean", "metric": "accuracy", "value": 0.75, "interval": [0.6, 0.9],
                 "higher_is_better": True, "steps": 4, "samples": 32, "flops": 4e9, "wall_seconds": 2.5}
  # Without the failing points (a compatible plan), a finished sweep does nothing and says so.
  code, out = run_cli(smoke_args(tiny_corpus_dir, tone_task, workdir))
  assert code == 0 and "nothing to do: all 9 stages of smoke were already complete" in out
  assert "no longer in the plan" in out
  # A changed command on an existing sweep is refused, naming the stages.
  code, _ = run_cli(smoke_args(tiny_corpus_dir, tone_task, workdir, "--config.overrides=('batch_size=4',)"))
  assert code == 2


def test_slurm_and_tpu_scripts_and_dry_run(tiny_corpus_dir, tone_task, tmp_path, stub_python, capsys):
  workdir = tmp_path / "sweep"
  code, out = run_cli(smoke_args(tiny_corpus_dir, tone_task, workdir, "--dry-run"))
  assert code == 0 and "contrastive_supervised_24_tiny_s0" in out and "total: 2 point(s)" in out
  assert "FLOPs" in out and not workdir.exists()
  code, out = run_cli(smoke_args(tiny_corpus_dir, tone_task, workdir, "--launcher=slurm"))
  script = (workdir / "slurm/submit.sh").read_text()
  assert code == 0 and "bash " in out
  jobs = [line for line in script.splitlines() if line.startswith("JOB_")]
  assert len(jobs) == 9 and sum("launch/slurm_gpu.sbatch" in line for line in jobs) == 3   # tagger + 2 points
  tagger_job = "JOB_TAGGER_EXPORT"
  supervised = next(line for line in script.splitlines() if "JOB_RUNS_CONTRASTIVE_SUPERVISED_24_TINY_S0_TRAIN=" in line)
  assert f"--dependency=afterok:${tagger_job}" in supervised
  assert "--dependency=afterok:$JOB_RUNS_CONTRASTIVE_SCRATCH_24_TINY_S0_TRAIN" in script
  assert "--requeue" in script and "--signal=B:TERM@120" in script and "--dependency=afterany:" in script
  code, _ = run_cli(smoke_args(tiny_corpus_dir, tone_task, workdir, "--launcher=tpu"))
  commands = (workdir / "tpu/commands.sh").read_text().splitlines()
  pod = [i for i, line in enumerate(commands) if line.startswith("launch/tpu_pod.sh")]
  assert code == 0 and len(pod) == 3
  export_tagger = next(i for i, line in enumerate(commands) if "alp_jax.export" in line and "tagger" in line)
  supervised = next(i for i in pod if "supervised" in commands[i])
  assert pod[0] < export_tagger < supervised


@pytest.mark.slow
def test_smoke_sweep_end_to_end_with_a_kill_and_a_planted_failure(tiny_corpus_dir, tone_task, tmp_path):
  """Real training, export and evaluation (~2-3 min on 2 cores): killed after the tagger, resumed, finished."""
  workdir = tmp_path / "sweep"
  args = smoke_args(tiny_corpus_dir, tone_task, workdir, "--config.objectives=('contrastive', 'captioning')", PLANTED)
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  proc = subprocess.Popen([sys.executable, "-m", "alp_jax.sweeps", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 300
  while not (workdir / "tagger/encoder/encoder_config.json").exists() and time.monotonic() < deadline:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 75, out
  code, out = run_cli(args + ["--parallel=2"])
  assert code == 1, out
  assert "tagger/train" not in out.split("start ", 1)[-1].split("\n")[0] and "start tagger/" not in out
  assert "FAILED runs/captioning_scratch_24_tiny_s0/train" in out
  rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
  assert {r["run"] for r in rows} == {"contrastive_scratch_24_tiny_s0", "contrastive_supervised_24_tiny_s0",
                                       "random_init_tiny_s0"}
  assert all(r["flops"] > 0 and r["steps"] == 4 for r in rows if r["kind"] == "pretrained")
  code, out = run_cli(smoke_args(tiny_corpus_dir, tone_task, workdir))
  assert code == 0 and "nothing to do" in out


def test_retrieval_rows_of_both_objectives_are_one_measure():
  """A two-tower's retrieval (method "retrieval") and a captioner's (caption likelihood, "retrieval_likelihood")
  become the same measure, so their curves pair up in fits and findings; how it was scored is kept."""
  base = {"run": "p", "kind": "pretrained"}
  rows = collect._rows({"results": [
      {"task": "captions", "method": "retrieval_likelihood", "metric": "t2a/R@10", "value": 0.5},
      {"task": "captions", "method": "retrieval", "metric": "t2a/R@10", "value": 0.6},
      {"task": "tones", "method": "mean", "probe": {}, "metric": "accuracy", "value": 0.7, "interval": [0.6, 0.8]}]},
      base, {"tones": "music"})
  assert [(r["evaluation"], r["method"], r.get("scoring"), r["task_family"]) for r in rows] == [
      ("retrieval", "retrieval", "retrieval_likelihood", "language"), ("retrieval", "retrieval", None, "language"),
      ("probe", "mean", None, "music")]
