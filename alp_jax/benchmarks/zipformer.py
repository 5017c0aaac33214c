"""Forward+backward time of the Zipformer audio encoder against a Transformer audio encoder; prints a markdown table.

  python -m alp_jax.benchmarks.zipformer --batch 2 --seconds 10 --steps 3
  python -m alp_jax.benchmarks.zipformer --encoders zipformer:m,zipformer:768,transformer:base

Each row: one audio encoder alone on a batch of random 80-bin log-mel features (B, T) for --seconds of audio at
100 frames/s, the loss the mean square of its valid output frames, gradients of every parameter (float32,
jitted once). Reports parameters, compile time, the median step time over --steps runs (after one warm-up run),
the analytic FLOPs of the step (alp_jax/train/flops.py: matmuls and convolutions, forward + 2 x backward), the
FLOPs XLA counts in the compiled step (everything, elementwise work included), and both as achieved FLOP/s, with
the share of this machine's measured float32 matmul peak (alp_jax/train/perf.py). Weights are drawn on the host
(U(+-1/sqrt(fan-in))): the time does not depend on them, and the Zipformer's own initialiser compiles one random op
per parameter shape. The numbers depend on the machine and on what else runs on it: compare rows of one run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alp_jax.audio import frontend
from alp_jax.audio.io import TARGET_SAMPLE_RATE
from alp_jax.configs import clap
from alp_jax.configs import common
from alp_jax.models import encoders
from alp_jax.train import flops as flops_lib
from alp_jax.train import perf


def encoder_config(spec: str, seconds: float, batch: int):
  """'zipformer:m' | 'transformer:base' -> a clap config with that audio encoder (float32, no scan), for the
  analytic FLOP count and the encoder's own config."""
  kind, _, setting = spec.partition(":")
  config = clap.get_config("base")
  config.model.audio.dtype = "float32"
  config.model.audio.attention_impl = "einsum"
  config.model.audio.scan_layers = False
  if kind == "zipformer":
    common.use_zipformer(config, setting or "m")
  elif kind == "transformer":
    config.model.audio.size = setting or "base"
  else:
    raise ValueError(f"--encoders: unknown encoder {spec!r}; use zipformer:PRESET or transformer:SIZE")
  config.data.crop_seconds = seconds
  config.batch_size = batch
  return config


def host_state(abstract_module, seed: int = 0):
  """(graphdef, parameters drawn on the host) for an abstract module: nothing compiled to initialise it."""
  graphdef, state = nnx.split(abstract_module)
  rng = np.random.default_rng(seed)

  def draw(x):
    if x.ndim >= 2:
      bound = 1.0 / np.sqrt(np.prod(x.shape[:-1]))
      return jnp.asarray(rng.uniform(-bound, bound, x.shape).astype(np.float32))
    return jnp.asarray(rng.uniform(0.2, 0.8, x.shape).astype(np.float32))

  return graphdef, jax.tree.map(draw, state)


def time_encoder(spec: str, args: argparse.Namespace) -> dict[str, float]:
  config = encoder_config(spec, args.seconds, args.batch)
  audio_cfg = config.model.audio
  graphdef, state = host_state(nnx.eval_shape(lambda: encoders.encoder_from_config(audio_cfg, rngs=nnx.Rngs(0))))
  frames = frontend.num_frames(int(round(args.seconds * TARGET_SAMPLE_RATE)), config.frontend)
  rng = np.random.default_rng(1)
  features = jnp.asarray(rng.normal(size=(args.batch, frames, audio_cfg.num_mel_bins)).astype(np.float32))
  mask = jnp.ones((args.batch, frames), bool)

  def loss_fn(state, features, mask):
    _, out = nnx.merge(graphdef, state)(features, mask, deterministic=False)
    valid = out["frame_mask"][..., None]
    return jnp.sum(jnp.where(valid, jnp.square(out["frames"].astype(jnp.float32)), 0.0)) / jnp.sum(valid)

  step = jax.jit(jax.value_and_grad(loss_fn))
  start = time.perf_counter()
  compiled = step.lower(state, features, mask).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(state, features, mask))  # the first run is slower than later ones
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(state, features, mask))
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  analytic = flops_lib.breakdown(config)["audio_encoder"]
  return {"params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(nnx.merge(graphdef, state),
                                                                                  nnx.Param))),
          "compile_s": compile_s, "step_s": step_s, "analytic": analytic, "xla": perf.compiled_flops(compiled)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--encoders", default="zipformer:m,transformer:base")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  device = jax.devices()[0]
  peak = perf.peak_flops_per_device()
  print(f"device: {device.platform} {device.device_kind} x{jax.device_count()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; LD_PRELOAD={os.environ.get('LD_PRELOAD', '') or 'none'}; measured float32 "
        f"matmul peak {peak / 1e9:.0f} GFLOP/s; batch {args.batch} x {args.seconds:g} s, float32, median of "
        f"{args.steps} steps", flush=True)
  print("| encoder | params | compile s | fwd+bwd ms/step | analytic GFLOP/step | GFLOP/s (analytic) | "
        "share of peak | XLA GFLOP/step | GFLOP/s (XLA) |")
  print("|---|---|---|---|---|---|---|---|---|", flush=True)
  for spec in args.encoders.split(","):
    r = time_encoder(spec, args)
    print(f"| {spec} | {r['params'] / 1e6:.1f}M | {r['compile_s']:.0f} | {r['step_s'] * 1e3:.0f} | "
          f"{r['analytic'] / 1e9:.1f} | {r['analytic'] / 1e9 / r['step_s']:.0f} | "
          f"{r['analytic'] / r['step_s'] / peak:.0%} | {r['xla'] / 1e9:.1f} | {r['xla'] / 1e9 / r['step_s']:.0f} |",
          flush=True)
  print(f"(load average at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
  main()
