"""Caption decoding speed with and without the key/value cache; prints a markdown table.

  LD_PRELOAD=libtcmalloc_minimal.so.4 python -m alp_jax.benchmarks.decoding \
      --size base --batch 4 --lengths 32,128 --beams 1,4

A caption decoder of config.model.decoder at --size (base: BART-base, 6 layers, 768 wide, 12 heads,
MLP 3072; vocabulary --vocab, the captioner's default 8000) with random weights decodes a batch of
--batch clips of --frames random audio frames (250 = 10 s at the study's 25 Hz), greedy (beam 1) or
beam search, with the cache (`kv_cache=True`, today's path) and without it (`kv_cache=False`, the
path before the cache), in the same run. EOS is suppressed (its output bias is -1e4), so every
caption runs to the full length and both paths do exactly `length` steps; the two paths' tokens
are compared and the table says whether they agree.

Each row: compile + first-run seconds, the median of --repeats timed runs, and tokens/s =
batch x length / median seconds (the tokens of the returned captions; beam search decodes `beams`
times as many rows). The numbers depend on the machine and on what else runs on it.
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

from alp_jax.data.tokenizer import EOS_ID
from alp_jax.models import caption_decoder, decoding, sizes


def build_decoder(size: str, vocab_size: int, dtype: str, attention_impl: str,
                  scan_layers: bool) -> caption_decoder.CaptionDecoder:
  """A random caption decoder of the config's architecture at `size` that never emits EOS."""
  cfg = caption_decoder.default_config()
  cfg.size, cfg.dtype, cfg.attention_impl = size, dtype, attention_impl
  cfg.scan_layers, cfg.dropout = scan_layers, 0.0
  width = sizes.size_settings(size)["width"]  # audio frames as wide as the decoder: no projection
  with nnx.use_eager_sharding(False):
    model = caption_decoder.decoder_from_config(cfg, vocab_size=vocab_size, audio_width=width,
                                                rngs=nnx.Rngs(0))
  model.output_bias[...] = model.output_bias[...].at[EOS_ID].set(-1e4)
  return model


def time_decoding(model, frames, frame_mask, length: int, beams: int, kv_cache: bool,
                  repeats: int) -> dict[str, object]:
  """Compile + first run, then the median of `repeats` runs of one decoding configuration."""
  def run():
    if beams == 1:
      out = decoding.greedy_decode(model, frames, frame_mask, max_len=length, kv_cache=kv_cache)
    else:
      out = decoding.beam_search(model, frames, frame_mask, max_len=length, beam_size=beams,
                                 kv_cache=kv_cache)
    return jax.block_until_ready(out)

  start = time.perf_counter()
  tokens = np.asarray(run()[0])
  first_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  return {"tokens": tokens, "first_s": first_s, "seconds": seconds,
          "tokens_per_s": frames.shape[0] * length / seconds}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="base", help="models/sizes.py name (decoder depth: half)")
  parser.add_argument("--batch", type=int, default=4, help="clips decoded together")
  parser.add_argument("--frames", type=int, default=250, help="audio frames per clip")
  parser.add_argument("--lengths", default="32,128", help="caption lengths (tokens) to decode")
  parser.add_argument("--beams", default="1,4", help="beam sizes (1 = greedy)")
  parser.add_argument("--vocab", type=int, default=8000)
  parser.add_argument("--repeats", type=int, default=2, help="timed runs per row (median)")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--attention-impl", default="einsum",
                      choices=["einsum", "dot_product_attention"])
  parser.add_argument("--scan-layers", action="store_true", help="scan the decoder blocks")
  args = parser.parse_args()
  lengths = [int(x) for x in args.lengths.split(",")]
  beam_sizes = [int(x) for x in args.beams.split(",")]
  model = build_decoder(args.size, args.vocab, args.dtype, args.attention_impl, args.scan_layers)
  params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.normal(size=(args.batch, args.frames, model.width)), jnp.float32)
  # Unequal clip lengths, as in a real batch: the last clip has half the frames.
  frame_mask = jnp.asarray(np.arange(args.frames)[None] < np.linspace(
      args.frames, args.frames // 2, args.batch).astype(int)[:, None])
  device = jax.devices()[0]
  print(f"device: {device.platform} {device.device_kind} x{jax.device_count()}, "
        f"{os.cpu_count()} CPUs; LD_PRELOAD={os.environ.get('LD_PRELOAD', '') or 'none'}; "
        f"decoder {args.size}: {model.depth} layers, width {model.width}, {model.num_heads} heads, "
        f"vocab {args.vocab}, {params / 1e6:.1f}M params, {args.dtype}, attention "
        f"{args.attention_impl}, scan_layers={args.scan_layers}; batch {args.batch} clips x "
        f"{args.frames} frames; median of {args.repeats} runs", flush=True)
  print("| tokens | beams | uncached tokens/s | cached tokens/s | speedup | uncached s | cached s "
        "| compile+first s (uncached / cached) | same tokens |")
  print("|---|---|---|---|---|---|---|---|---|", flush=True)
  for length in lengths:
    for beams in beam_sizes:
      before = time_decoding(model, frames, frame_mask, length, beams, False, args.repeats)
      after = time_decoding(model, frames, frame_mask, length, beams, True, args.repeats)
      same = "yes" if np.array_equal(before["tokens"], after["tokens"]) else "NO"
      print(f"| {length} | {beams} | {before['tokens_per_s']:.1f} | {after['tokens_per_s']:.1f} | "
            f"{before['seconds'] / after['seconds']:.1f}x | {before['seconds']:.2f} | "
            f"{after['seconds']:.2f} | {before['first_s']:.1f} / {after['first_s']:.1f} | {same} |",
            flush=True)


if __name__ == "__main__":
  main()
