"""Peak memory and speed of embedding a probe task (and of the attention probe reading it): memory should stay flat
as the task grows.

  python -m alp_jax.benchmarks.embed_memory [--clips 5000,20000,40000] [--kind pooled|frames]
      [--min-seconds 0.3] [--max-seconds 1.6] [--windows-per-batch 32] [--probe-steps 0] [--workdir DIR]

For each size, a fresh subprocess embeds a synthetic single-label task of that many clips (80% train, 20% test;
each clip seeded noise plus a tone of its class, uniform length in [min, max] seconds, made in memory by its
loader, so no audio files are needed) with the tiny CLAP audio encoder (configs clap:tiny, 1 s windows, random
weights) into a cache folder (alp_jax/evaluate/embed.py: float16 stores), and reports the peak resident memory of
that process (ru_maxrss), clips/s, the size of the stores on disk, and the float32 frames the old in-memory path
held for the same task. --kind pooled embeds what a mean probe reads; frames keeps the frames too.
--probe-steps S (with --kind frames) then trains the attention probe from the store for S steps per grid point
(one grid point: the protocol's steps would take hours here) and reports the peak after it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alp_jax import encoder_api
from alp_jax.configs import clap
from alp_jax.evaluate import embed, probe, tasks

_CHILD = """
import json, resource, sys, time
from alp_jax.benchmarks import embed_memory
print(json.dumps(embed_memory.run_child(*sys.argv[1:])))
"""
CLASSES = ("low", "high")


def synthetic_task(clips: int, min_seconds: float, max_seconds: float):
  """A tasks.Task of `clips` in-memory clips (module docstring)."""

  def source(i: int, seconds: float, label: str):
    def load():
      rng = np.random.default_rng(i)
      t = np.arange(int(seconds * 16000)) / 16000
      tone = np.sin(2 * np.pi * (300.0 if label == "low" else 2400.0) * t)
      return (0.3 * tone + 0.1 * rng.normal(size=t.shape)).astype(np.float32), 16000
    return tasks.AudioSource(key=f"synthetic:{i}:{seconds:.3f}", load=load)

  lengths = np.random.default_rng(0).uniform(min_seconds, max_seconds, clips)
  examples = [tasks.Example(path=Path(f"/synthetic/{i:07d}.wav"), labels=(CLASSES[i % 2],),
                            audio=source(i, lengths[i], CLASSES[i % 2])) for i in range(clips)]
  cut = int(0.8 * clips)
  return tasks.Task(name=f"synthetic{clips}", directory=Path("/synthetic"),
                    splits={"train": examples[:cut], "test": examples[cut:]}, classes=list(CLASSES),
                    metric=tasks.SINGLE_LABEL)


def tiny_encoder():
  config = clap.get_config("tiny")
  config.data.crop_seconds = 1.0
  return encoder_api.AudioEncoder.build(encoder_api.meta_from_config(config), seed=0)


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(clips: str, kind: str, min_seconds: str, max_seconds: str, windows_per_batch: str, probe_steps: str,
              cache_dir: str) -> dict:
  encoder = tiny_encoder()
  task = synthetic_task(int(clips), float(min_seconds), float(max_seconds))
  before = _peak_mb()
  start = time.monotonic()
  embeddings = embed.embed_task(encoder, task, cache_dir=cache_dir, frames=kind == "frames",
                                windows_per_batch=int(windows_per_batch), log=None)
  seconds = time.monotonic() - start
  result = {"clips": int(clips), "seconds": seconds, "peak_before_mb": before, "peak_embed_mb": _peak_mb(),
            "store_mb": sum(f.stat().st_size for f in Path(cache_dir).rglob("*") if f.is_file()) / 2 ** 20}
  if kind == "frames":
    frames = sum(int(s.frames.lengths.sum()) for s in embeddings.splits.values())
    result["old_frames_mb"] = frames * encoder.output_dim * 4 / 2 ** 20
    if int(probe_steps):
      config = probe.ProbeConfig(learning_rates=(1e-3,), weight_decays=(0.0,), epochs=0, min_steps=int(probe_steps))
      start = time.monotonic()
      outcome = probe.probe_task(embeddings, probe.ATTENTION, config)
      result.update(probe_seconds=time.monotonic() - start, probe_accuracy=outcome.value,
                    peak_probe_mb=_peak_mb())
  return result


def measure(args, clips: int, cache_dir: Path) -> dict:
  shutil.rmtree(cache_dir, ignore_errors=True)
  child_args = [str(clips), args.kind, str(args.min_seconds), str(args.max_seconds), str(args.windows_per_batch),
                str(args.probe_steps), str(cache_dir)]
  proc = subprocess.run([sys.executable, "-c", _CHILD, *child_args], capture_output=True, text=True, check=False)
  if proc.returncode != 0 or not proc.stdout.strip():
    raise RuntimeError(f"embedding {clips} clips failed ({proc.returncode}): {proc.stderr[-2000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.benchmarks.embed_memory", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--clips", default="5000,20000,40000", help="comma-separated task sizes")
  parser.add_argument("--kind", choices=("pooled", "frames"), default="pooled")
  parser.add_argument("--min-seconds", type=float, default=0.3)
  parser.add_argument("--max-seconds", type=float, default=1.6)
  parser.add_argument("--windows-per-batch", type=int, default=32)
  parser.add_argument("--probe-steps", type=int, default=0, help="attention probe steps from the store (frames)")
  parser.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
  args = parser.parse_args(argv)
  root = Path(args.workdir or tempfile.mkdtemp(prefix="embed_memory_"))
  rows = []
  try:
    for clips in [int(c) for c in args.clips.split(",")]:
      r = measure(args, clips, root / f"cache{clips}")
      rows.append(r)
      print(f"[embed_memory] {clips} clips: peak {r['peak_embed_mb']:.0f} MB, {clips / r['seconds']:.0f} clips/s"
            + (f", probe peak {r['peak_probe_mb']:.0f} MB" if "peak_probe_mb" in r else ""), file=sys.stderr,
            flush=True)
  finally:
    if not args.workdir:
      shutil.rmtree(root, ignore_errors=True)
  print(f"embedding peak memory (kind {args.kind}, clips of {args.min_seconds}-{args.max_seconds} s, tiny CLAP "
        f"encoder, {args.windows_per_batch} windows per batch, {os.cpu_count()} CPUs)")
  header = f"{'clips':>7} {'peak MB':>8} {'before MB':>9} {'clips/s':>8} {'seconds':>8} {'store MB':>9}"
  if args.kind == "frames":
    header += f" {'old f32 frames MB':>17}" + (f" {'probe peak MB':>13} {'probe s':>8}" if args.probe_steps else "")
  print(header)
  for r in rows:
    line = (f"{r['clips']:>7} {r['peak_embed_mb']:>8.0f} {r['peak_before_mb']:>9.0f} {r['clips'] / r['seconds']:>8.0f} "
            f"{r['seconds']:>8.1f} {r['store_mb']:>9.1f}")
    if "old_frames_mb" in r:
      line += f" {r['old_frames_mb']:>17.0f}"
    if "peak_probe_mb" in r:
      line += f" {r['peak_probe_mb']:>13.0f} {r['probe_seconds']:>8.1f}"
    print(line)
  return 0


if __name__ == "__main__":
  sys.exit(main())
