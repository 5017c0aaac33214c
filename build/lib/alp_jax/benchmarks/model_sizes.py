"""Forward+backward time of the two-tower model per size; prints a markdown table.

  python -m alp_jax.benchmarks.model_sizes --sizes tiny,small,base --batch 8 --seconds 4

Each row: both towers at that size, a waveform batch (B,S) through the on-device frontend,
captions of --caption-tokens tokens, the symmetric InfoNCE loss, gradients of all parameters.
Reports parameter counts, compile time, the median step time, the step's FLOP count and the
achieved GFLOP/s. XLA's cost analysis counts a scanned layer stack once, so the FLOPs come from
the lowered (unoptimised) HLO of the same step with the layers unrolled; the timed step uses the
config's scan. The numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from alp_jax import losses, models
from alp_jax.audio import frontend
from alp_jax.models import two_towers


def benchmark_config(size: str, dtype: str, attention_impl: str,
                     scan_layers: bool = True) -> ml_collections.ConfigDict:
  """A two-tower config with both towers at `size` and the study's heads."""
  config = ml_collections.ConfigDict()
  config.model = two_towers.default_config()
  for tower in (config.model.audio, config.model.text):
    tower.size, tower.dtype, tower.attention_impl = size, dtype, attention_impl
    tower.scan_layers = scan_layers
  config.frontend = frontend.default_frontend_config()
  config.loss = ml_collections.ConfigDict({"kind": "softmax"})
  return config


def synthetic_batch(batch_size: int, seconds: float, caption_tokens: int,
                    vocab_size: int) -> dict[str, jax.Array]:
  rng = np.random.default_rng(0)
  samples = int(seconds * 16000)
  return {
      "audio": jnp.asarray(rng.integers(-8000, 8000, (batch_size, samples)), jnp.int16),
      "audio_mask": jnp.ones((batch_size, samples), bool),
      "caption_tokens": jnp.asarray(rng.integers(4, vocab_size, (batch_size, caption_tokens)),
                                    jnp.int32),
      "caption_mask": jnp.ones((batch_size, caption_tokens), bool),
  }


def gradient_step(model: nnx.Module):
  """(jitted value-and-grad of the InfoNCE loss w.r.t. the parameters, the parameters)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params, batch):
    (audio_emb, text_emb), out = nnx.merge(graphdef, params, rest)(batch)
    return losses.contrastive_softmax(audio_emb, text_emb, out["temperature"])

  return jax.jit(jax.value_and_grad(loss_fn)), params


def step_flops(size: str, args: argparse.Namespace, batch: dict[str, jax.Array]) -> float:
  """FLOPs of one step from the unoptimised HLO of the unrolled model (abstract, no compile)."""
  config = benchmark_config(size, args.dtype, args.attention_impl, scan_layers=False)
  step, params = gradient_step(nnx.eval_shape(lambda: models.build_model(config,
                                                                          rngs=nnx.Rngs(0))))
  cost = step.lower(params, batch).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def time_size(size: str, args: argparse.Namespace) -> dict[str, float]:
  """Builds the model, compiles one gradient step and times `args.steps` executions of it."""
  config = benchmark_config(size, args.dtype, args.attention_impl)
  model = models.build_model(config, rngs=nnx.Rngs(0))
  step, params = gradient_step(model)
  batch = synthetic_batch(args.batch, args.seconds, args.caption_tokens, config.model.vocab_size)
  start = time.perf_counter()
  compiled = step.lower(params, batch).compile()
  compile_s = time.perf_counter() - start
  flops = step_flops(size, args, batch)
  jax.block_until_ready(compiled(params, batch))  # the first run is slower than later ones
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, batch))
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  return {
      "audio_params": sum(x.size for x in jax.tree.leaves(nnx.state(model.audio_encoder,
                                                                     nnx.Param))),
      "text_params": sum(x.size for x in jax.tree.leaves(nnx.state(model.text_encoder,
                                                                    nnx.Param))),
      "compile_s": compile_s,
      "step_s": step_s,
      "gflop": flops / 1e9,
      "gflops_per_s": flops / 1e9 / step_s,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="tiny,small,base")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seconds", type=float, default=4.0)
  parser.add_argument("--caption-tokens", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--attention-impl", default="einsum",
                      choices=["einsum", "dot_product_attention"])
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.platform} {device.device_kind} x{jax.device_count()}; "
        f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '') or 'none'}; batch {args.batch}, "
        f"{args.seconds:g} s audio, {args.caption_tokens} caption tokens, {args.dtype}, "
        f"attention {args.attention_impl}, median of {args.steps} steps", flush=True)
  print("| size | audio params | text params | compile s | fwd+bwd s/step | GFLOP/step | GFLOP/s |")
  print("|---|---|---|---|---|---|---|", flush=True)
  for size in args.sizes.split(","):
    r = time_size(size, args)
    print(f"| {size} | {r['audio_params'] / 1e6:.2f}M | {r['text_params'] / 1e6:.2f}M | "
          f"{r['compile_s']:.1f} | {r['step_s']:.3f} | {r['gflop']:.1f} | "
          f"{r['gflops_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
