"""The package as users install it: a wheel built from this checkout, installed with its dependencies (at the
locked versions) into a fresh venv without this checkout or the system's site-packages, used from another folder:
alp-train --help, a tiny training run by config module name, alp-export, AudioEncoder.load(...).embed, and the
HEAR API (alp_jax.hear) without torch.

Slow (a venv and ~60 packages, from the pip cache or PyPI): `make test-wheel` or `make test-slow`; not in
`make test` nor .ci/run. Prints the wheel size and the install time.
"""
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(args, *, cwd, env, timeout=900, expect=0):
  result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
  assert result.returncode == expect, (f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                                       f"{result.stderr[-3000:]}")
  return result


def test_the_wheel_installs_and_trains_in_a_fresh_venv(tiny_corpus_dir, tmp_path):
  pytest.importorskip("build")
  # No trace of the checkout or this venv: no PYTHONPATH, and a working directory outside the repo.
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  outside = tmp_path / "elsewhere"
  outside.mkdir()

  t0 = time.perf_counter()
  _run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", REPO], cwd=outside, env=env)
  (wheel,) = (tmp_path / "dist").glob("alp_jax-*.whl")
  build_s = time.perf_counter() - t0
  import zipfile
  names = zipfile.ZipFile(wheel).namelist()
  assert "alp_jax/configs/clap.py" in names and "alp_jax/configs/common.py" in names
  assert "alp_jax/hear.py" in names   # the HEAR kits import the module by name: alp_jax.hear
  assert not any(n.startswith(("tests/", "configs/")) for n in names)

  venv = tmp_path / "venv"
  t0 = time.perf_counter()
  _run([sys.executable, "-m", "venv", venv], cwd=outside, env=env)
  py, bin_dir = venv / "bin" / "python", venv / "bin"
  _run([py, "-m", "pip", "install", "-q", "-c", REPO / "requirements.txt", wheel], cwd=outside, env=env)
  install_s = time.perf_counter() - t0
  print(f"\n[wheel] {wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB, built in {build_s:.1f}s; fresh venv + "
        f"install {install_s:.1f}s")
  env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
  where = _run([py, "-c", "import alp_jax, tensorboardX"], cwd=outside, env=env, expect=1)
  assert "No module named 'tensorboardX'" in where.stderr   # the extra is not installed: a plain install
  origin = _run([py, "-c", "import alp_jax; print(alp_jax.__file__)"], cwd=outside, env=env).stdout.strip()
  assert origin.startswith(str(venv)), origin

  helped = _run([bin_dir / "alp-train", "--help"], cwd=outside, env=env)
  assert "--workdir" in helped.stdout and "alp_jax.configs.clap:tiny" in helped.stdout

  workdir, encoder = outside / "run", outside / "encoder"
  train = [bin_dir / "alp-train", "--config", "alp_jax.configs.clap:tiny", f"--workdir={workdir}",
           f"--config.data.corpus_dir={tiny_corpus_dir}", "--config.total_steps=2", "--config.batch_size=8",
           "--config.data.crop_seconds=1.0", "--config.data.max_caption_tokens=16", "--config.data.num_threads=2",
           "--config.log_every=1", "--config.checkpoint_every=2", "--config.peak_flops_per_device=1e9"]
  # TensorBoard is on by default and needs the [tensorboard] extra: without it, a clear error before training.
  refused = _run(train, cwd=outside, env=env, expect=1)
  assert "alp_jax[tensorboard]" in refused.stderr and "--config.tensorboard=False" in refused.stderr
  t0 = time.perf_counter()
  trained = _run(train + ["--config.tensorboard=False"], cwd=outside, env=env)
  assert "done at step 2" in trained.stdout, trained.stdout[-2000:]
  print(f"[wheel] tiny training run (2 steps) {time.perf_counter() - t0:.1f}s")
  _run([bin_dir / "alp-export", "--workdir", workdir, "--out", encoder], cwd=outside, env=env)
  embed = _run([py, "-c", textwrap.dedent(f"""
      import numpy as np
      from alp_jax import AudioEncoder
      out = AudioEncoder.load({str(encoder)!r}).embed(np.sin(np.arange(24000) / 7.0).astype(np.float32), 24000)
      assert np.isfinite(out["pooled"]).all() and out["frames"].shape[0] == 25, out["frames"].shape
      print({{k: np.shape(v) for k, v in out.items()}})
      from alp_jax import hear                # the HEAR API without torch (not installed here): numpy in and out
      model = hear.load_model({str(encoder)!r})
      scene = hear.get_scene_embeddings(np.zeros((2, 16000), np.float32), model)
      assert hear.torch is None and isinstance(scene, np.ndarray) and scene.shape == (2, model.scene_embedding_size)
      """)], cwd=outside, env=env)
  print(f"[wheel] embed: {embed.stdout.strip()[:300]}")
  shutil.rmtree(venv, ignore_errors=True)
