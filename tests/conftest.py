"""Test setup: CPU with 8 fake devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One XLA compilation cache for the session, fresh each run (so a clean clone and a rerun behave the same): the
# suite compiles the same tiny programs in many tests and in its subprocesses (they inherit the variable).
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  _OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="alp_jax_test_xla_cache_")

import pytest  # noqa: E402


def pytest_unconfigure(config):
  if _OWN_CACHE:   # the session's own cache folder, made above; nothing else
    import shutil
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_configure(config):
  import jax  # noqa: F401  (first import happens here, after the flags)



def missing_demo_packages() -> str | None:
  """None when espeak-ng, sox, fluidsynth and the soundfont are installed, else the message naming the packages
  (and the apt-get line). `make test` never installs them: tests that synthesise the demo corpus skip."""
  from alp_jax.demo import synth as demo_synth
  from alp_jax.demo import sysdeps
  try:
    sysdeps.require_binaries(demo_synth.BINARIES, files=(demo_synth.SOUNDFONT,))
  except sysdeps.MissingSystemPackage as e:
    return str(e)
  return None


def skip_without_demo_packages() -> None:
  """pytest.skip with the packages to install (`make sysdeps`) when the demo synthesisers are missing."""
  missing = missing_demo_packages()
  if missing:
    pytest.skip(missing)


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory):
  """A small demo corpus, built, prepared and tokenized once per test session (skips without the synthesisers)."""
  from alp_jax.demo import corpus as demo_corpus
  from alp_jax.data import tokenizer
  skip_without_demo_packages()
  out = tmp_path_factory.mktemp("demo_corpus")
  demo_corpus.build(out, num_clips=48, seed=0, clip_seconds=2.0, workers=2, quiet=True)
  tokenizer.train(out, vocab_size=256, quiet=True)
  return out


def load_config(name: str, arg: str = "tiny"):
  """configs/<name>.py:get_config(arg), importable from tests."""
  import pathlib
  from alp_jax.train import runs
  path = pathlib.Path(__file__).resolve().parent.parent / "configs" / f"{name}.py"
  return runs.load_config(f"{path}:{arg or ''}")


def make_test_config(name: str, corpus_dir, **overrides):
  """A tiny config for tests: few shapes, short crops, no TensorBoard, synchronous checkpoints."""
  cfg = load_config(name, "tiny")
  cfg.data.corpus_dir = str(corpus_dir)
  cfg.batch_size = 8
  cfg.data.crop_seconds = 1.0
  cfg.data.max_caption_tokens = 16
  cfg.data.num_threads = 2
  cfg.total_steps = 4
  cfg.log_every = 1
  cfg.checkpoint_every = 2
  cfg.tensorboard = False
  cfg.peak_flops_per_device = 1e9
  for key, value in overrides.items():
    node = cfg
    *path, last = key.split("__")
    for part in path:
      node = node[part]
    node[last] = value
  return cfg


def tiny_encoder_meta() -> dict:
  """encoder_config.json settings of the tiny CLAP audio encoder with 1 s windows."""
  cfg = load_config("clap", "tiny")
  cfg.data.crop_seconds = 1.0
  return {"frontend": cfg.frontend.to_dict(), "audio": cfg.model.audio.to_dict(),
          "crop_seconds": cfg.data.crop_seconds}


def write_encoder_dir(out, seed: int = 3, step: int = 7):
  """An exported-encoder folder (encoder_config.json + Orbax params) with seeded random weights."""
  from alp_jax import encoder_api
  encoder_api.AudioEncoder.build({**tiny_encoder_meta(), "step": step}, seed=seed).save(out)
  return out


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
  """A tiny exported encoder with seeded random weights (shared by the evaluation and LiT tests)."""
  return write_encoder_dir(tmp_path_factory.mktemp("encoder"))


PITCH_CAPTIONS = {
    "low": ("a low pitched tone", "a deep steady hum", "low droning sound"),
    "middle": ("a tone of medium pitch", "a steady beep in the middle register"),
    "high": ("a high pitched tone", "a shrill whistle", "high squeaky beep"),
}
PITCH_HZ = {"low": (110.0, 220.0), "middle": (440.0, 880.0), "high": (2000.0, 4000.0)}


def write_caption_task(out, clips: int = 36, test_fraction: float = 1 / 3, seed: int = 0, seconds: float = 1.0):
  """A caption task folder: short noisy tones (16 or 22.05 kHz) described by pitch words, 2-3 captions each.
  (1 s: LiT prepares the train split, and prepare drops clips under the study's 1 s minimum.)

  out/train.jsonl, out/test.jsonl in the manifest format; every other train line has no "source" (a caption
  task may omit it). Returns out."""
  import json
  from pathlib import Path
  import numpy as np
  import soundfile as sf
  out = Path(out)
  (out / "audio").mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  names = sorted(PITCH_CAPTIONS)
  rows = {"train": [], "test": []}
  n_test = int(round(clips * test_fraction))
  for i in range(clips):
    pitch = names[i % len(names)]
    rate = (16000, 22050)[i % 2]
    lo, hi = PITCH_HZ[pitch]
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.4 * np.sin(2 * np.pi * rng.uniform(lo, hi) * t) + 0.02 * rng.standard_normal(len(t))
    path = f"audio/{pitch}_{i:03d}.wav"
    sf.write(out / path, audio.astype(np.float32), rate)
    split = "test" if i >= clips - n_test else "train"
    record = {"id": f"{pitch}-{i}", "audio": path, "captions": list(PITCH_CAPTIONS[pitch])}
    if split == "test" or i % 2:
      record["source"] = "tones"
    rows[split].append(record)
  for split, records in rows.items():
    (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  return out
