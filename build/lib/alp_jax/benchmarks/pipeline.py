"""Input-pipeline throughput: how many clips/s the grain pipeline delivers as host batches.

  python -m alp_jax.benchmarks.pipeline --corpus DIR [--batch-size 32] [--crop-seconds 10] [--batches 50]
                                   [--workers 0 1 2]

Prints clips/s and audio-seconds/s per worker setting (after a warm-up batch). A training step needs
batch_size / step_time clips/s; compare against the trainer's samples/s.
"""
from __future__ import annotations

import argparse
import sys
import time

from alp_jax.data import pipeline


def measure(cfg, batch_size: int, batches: int) -> dict:
  it = pipeline.to_iterator(pipeline.train_dataset(cfg, batch_size), cfg)
  next(it)  # warm-up: opens shards, starts workers
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - start
  clips = batches * batch_size
  return {"workers": cfg.worker_count, "clips_per_s": clips / seconds,
          "audio_s_per_s": clips * cfg.crop_seconds / seconds, "seconds": seconds}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.benchmarks.pipeline", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus", required=True)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--crop-seconds", type=float, default=10.0)
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  args = parser.parse_args(argv)
  for workers in args.workers:
    cfg = pipeline.default_data_config()
    cfg.corpus_dir, cfg.crop_seconds, cfg.worker_count = args.corpus, args.crop_seconds, workers
    try:
      r = measure(cfg, args.batch_size, args.batches)
    except FileNotFoundError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(f"workers={workers}: {r['clips_per_s']:.0f} clips/s, {r['audio_s_per_s']:.0f} audio-s/s "
          f"({args.batches} batches of {args.batch_size} x {args.crop_seconds:g} s in {r['seconds']:.2f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
