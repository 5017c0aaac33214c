"""How much of a duration-bucketed batch is padding, for given bucket edges, on a corpus or a duration mix.

  python -m alp_jax.benchmarks.bucket_padding [--corpus DIR] [--batch-seconds 5120] [--row-multiple 8]
                                             [--edges 3,6,10,15,30 --edges 10,30 ...] [--clips 200000]

Without --corpus it draws an assumed CaptionStew-like mix of clip durations (not a measured corpus: 75% 10 s
clips, a tenth of them shorter; 10% speech 1-15 s; 10% 1-30 s; 5% 15-30 s). Prints, per edge set, the bucket
shapes, the steps of one epoch, the real / padded audio ratio and the real seconds per step, then the time to plan
one epoch (alp_jax/data/buckets.py; docs/data.md "Training batches").
"""
from __future__ import annotations

import argparse
import time

import ml_collections
import numpy as np

from alp_jax.data import buckets
from alp_jax.data import pipeline


def assumed_durations(clips: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  kind = rng.choice(4, clips, p=[.75, .10, .10, .05])
  audioset = np.where(rng.random(clips) < .9, 10.0, rng.uniform(1, 10, clips))
  return np.select([kind == 0, kind == 1, kind == 2],
                   [audioset, rng.uniform(1, 15, clips), rng.uniform(1, 30, clips)], rng.uniform(15, 30, clips))


def padding_report(durations: np.ndarray, edges: tuple[float, ...], batch_seconds: float, row_multiple: int) -> dict:
  cfg = ml_collections.ConfigDict(dict(batch_seconds=batch_seconds, bucket_seconds=edges))
  shapes = buckets.bucket_shapes(cfg, row_multiple)
  plan = buckets.EpochPlanner([durations], [1.0], shapes, 0).plan(0)
  real = sum(np.minimum(durations[v[v >= 0]], shapes[k].seconds).sum() for k, v in plan)
  padded = sum(len(v) * shapes[k].seconds for k, v in plan)
  return {"edges": edges, "shapes": [(s.rows, s.seconds) for s in shapes], "steps": len(plan),
          "real_fraction": real / padded, "real_seconds_per_step": real / len(plan)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--corpus", default="", help="a prepared corpus (default: the assumed duration mix)")
  parser.add_argument("--batch-seconds", type=float, default=5120.0)
  parser.add_argument("--row-multiple", type=int, default=8)
  parser.add_argument("--edges", action="append", default=[], help="comma-separated bucket edges (repeatable)")
  parser.add_argument("--clips", type=int, default=200_000)
  args = parser.parse_args(argv)
  if args.corpus:
    durations = np.concatenate([s.num_samples / pipeline.SAMPLE_RATE for s in pipeline.load_sources(args.corpus)])
  else:
    durations = assumed_durations(args.clips)
  edge_sets = [tuple(float(e) for e in text.split(",")) for text in args.edges] or [
      (30.0,), (10.0, 30.0), (3.0, 6.0, 10.0, 15.0, 30.0), (2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0)]
  print(f"{len(durations)} clips, batch_seconds {args.batch_seconds:g}, rows a multiple of {args.row_multiple}")
  for edges in edge_sets:
    r = padding_report(durations, edges, args.batch_seconds, args.row_multiple)
    shapes = ", ".join(f"{rows}x{seconds:g}" for rows, seconds in r["shapes"])
    print(f"  edges {','.join(f'{e:g}' for e in edges)}: shapes {shapes}; {r['steps']} steps per epoch, real/padded "
          f"{r['real_fraction']:.3f}, {r['real_seconds_per_step']:.0f} real s per step")
  start = time.perf_counter()
  padding_report(durations, edge_sets[0], args.batch_seconds, args.row_multiple)
  print(f"planning one epoch of {len(durations)} clips: {time.perf_counter() - start:.2f}s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
