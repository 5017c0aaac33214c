"""The trainer as real processes: exact resume after SIGKILL, SIGTERM checkpointing, 2-process training."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alp_jax.train.preemption import PREEMPTED_EXIT_CODE

REPO = Path(__file__).resolve().parent.parent


def _env(devices: int, **extra) -> dict:
  env = dict(os.environ)
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
  env.update(extra)
  return env


def _command(corpus, workdir, *flags) -> list:
  base = [f"--config.data.corpus_dir={corpus}", "--config.batch_size=8", "--config.data.crop_seconds=1.0",
          "--config.data.max_caption_tokens=16", "--config.data.num_threads=2", "--config.log_every=1",
          "--config.tensorboard=False", "--config.peak_flops_per_device=1e9"]
  return [sys.executable, "-m", "alp_jax.train", f"--config={REPO}/configs/clap.py:tiny", f"--workdir={workdir}",
          *base, *flags]


def _train_losses(workdir) -> dict:
  """step -> loss, the LAST record of each step (a resumed run logs some steps twice)."""
  path = Path(workdir) / "metrics.jsonl"
  out = {}
  if path.exists():
    for line in path.read_text().splitlines():
      r = json.loads(line)
      if r["split"] == "train":
        out[r["step"]] = r["loss"]
  return out


def _wait_for_step(proc, workdir, step: int, timeout: float = 240.0) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if max(_train_losses(workdir), default=0) >= step:
      return
    if proc.poll() is not None:
      raise AssertionError(f"trainer exited (rc={proc.returncode}) before step {step}:\n{proc.stdout.read()}")
    time.sleep(0.02)
  proc.kill()
  raise AssertionError(f"step {step} not reached in {timeout}s")


def _params(workdir):
  import jax
  from alp_jax.train import runs
  _, _, state, step = runs.restore(workdir)
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state["params"]))[0]
  return step, {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def test_resume_after_sigkill_is_exact(tiny_corpus_dir, tmp_path):
  flags = ["--config.total_steps=12", "--config.checkpoint_every=4"]
  full, killed = tmp_path / "full", tmp_path / "killed"
  reference = subprocess.Popen(_command(tiny_corpus_dir, full, *flags), env=_env(1), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
  victim = subprocess.Popen(_command(tiny_corpus_dir, killed, *flags), env=_env(1), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  _wait_for_step(victim, killed, 6)  # past the step-4 checkpoint, with work after it to lose
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert victim.returncode == -signal.SIGKILL
  lost = max(_train_losses(killed))
  assert lost < 12, "the run finished before it could be killed"
  assert sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit()) == [4]
  resumed = subprocess.run(_command(tiny_corpus_dir, killed, *flags), env=_env(1), capture_output=True, text=True,
                           timeout=600)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert "resumed from" in resumed.stdout
  out, _ = reference.communicate(timeout=600)
  assert reference.returncode == 0, out
  want, got = _train_losses(full), _train_losses(killed)
  assert sorted(want) == sorted(got) == list(range(1, 13))
  np.testing.assert_allclose([got[s] for s in range(1, 13)], [want[s] for s in range(1, 13)], rtol=1e-6)
  # Every step after the checkpoint was recomputed, with the same data and RNG, to the same loss.
  step_a, params_a = _params(full)
  step_b, params_b = _params(killed)
  assert step_a == step_b == 12
  for k in params_a:
    np.testing.assert_allclose(params_b[k], params_a[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_sigterm_saves_a_checkpoint_and_exits_for_requeue(tiny_corpus_dir, tmp_path):
  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(_command(tiny_corpus_dir, workdir, "--config.total_steps=500",
                                   "--config.checkpoint_every=1000"),
                          env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  _wait_for_step(proc, workdir, 3)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == PREEMPTED_EXIT_CODE, out  # saved; "start me again"
  assert "SIGTERM: every process saved the checkpoint of step" in out
  saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and 3 <= saved[0] < 500
  assert max(_train_losses(workdir)) <= saved[0]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tiny_corpus_dir, tmp_path):
  flags = ["--config.total_steps=3", "--config.checkpoint_every=3"]
  port = _free_port()
  # One device per process (2 in all) and the reference on 2: the job is still sharded over both processes.
  multi = tmp_path / "two_processes"
  procs = [subprocess.Popen(_command(tiny_corpus_dir, multi, *flags),
                            env=_env(1, ALP_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", ALP_NUM_PROCESSES="2",
                                     ALP_PROCESS_ID=str(i)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  single = subprocess.run(_command(tiny_corpus_dir, tmp_path / "one_process", *flags,
                                   "--config.data.emulate_process_count=2"),
                          env=_env(2), capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stdout + single.stderr
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  assert "2 process(es), 2 cpu device(s)" in outs[0]
  want, got = _train_losses(tmp_path / "one_process"), _train_losses(multi)
  assert sorted(got) == [1, 2, 3]
  np.testing.assert_allclose([got[s] for s in (1, 2, 3)], [want[s] for s in (1, 2, 3)], rtol=1e-5)


def _two_processes(corpus, workdir, flags, compilation_cache) -> list:
  """Two trainer processes of one jax.distributed job; compiled programs are cached for a restart to reuse."""
  port = _free_port()
  cache = dict(JAX_COMPILATION_CACHE_DIR=str(compilation_cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return [subprocess.Popen(_command(corpus, workdir, *flags),
                           env=_env(2, ALP_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", ALP_NUM_PROCESSES="2",
                                    ALP_PROCESS_ID=str(i), **cache),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]


@pytest.mark.slow  # ~3-4 min on 2 cores: two 2-process runs (start-up and compilation dominate) and a reference
def test_sigterm_on_one_of_two_processes_stops_both_at_one_step(tiny_corpus_dir, tmp_path):
  """A pod where only one host sees the signal: both save the same step, both exit 75, and the restart resumes
  to the losses of an uninterrupted run."""
  total = 16
  flags = [f"--config.total_steps={total}", "--config.checkpoint_every=1000"]
  workdir = tmp_path / "preempted"
  procs = _two_processes(tiny_corpus_dir, workdir, flags, tmp_path / "jax_cache")
  reference = subprocess.Popen(_command(tiny_corpus_dir, tmp_path / "reference", *flags,
                                        "--config.data.emulate_process_count=2"),
                               env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  _wait_for_step(procs[0], workdir, 2)  # process 0 writes metrics.jsonl
  procs[1].send_signal(signal.SIGTERM)  # the other process only
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == PREEMPTED_EXIT_CODE, out
  saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and 2 <= saved[0] < total, (saved, outs[0])
  assert f"every process saved the checkpoint of step {saved[0]}" in outs[0]
  assert max(_train_losses(workdir)) == saved[0]  # neither process stepped past the save
  # Each process's data iterator position is in that one checkpoint.
  data_files = sorted(p.name for p in (workdir / "checkpoints" / str(saved[0]) / "data").glob("process_*"))
  assert len(data_files) == 2, data_files
  restarted = _two_processes(tiny_corpus_dir, workdir, flags, tmp_path / "jax_cache")
  outs = [p.communicate(timeout=300)[0] for p in restarted]
  for p, out in zip(restarted, outs):
    assert p.returncode == 0, out
  assert f"resumed from {workdir / 'checkpoints'}/{saved[0]}" in outs[0]
  out, _ = reference.communicate(timeout=300)
  assert reference.returncode == 0, out
  want, got = _train_losses(tmp_path / "reference"), _train_losses(workdir)
  assert sorted(got) == sorted(want) == list(range(1, total + 1))
  np.testing.assert_allclose([got[s] for s in sorted(want)], [want[s] for s in sorted(want)], rtol=1e-5)
