"""Analytic model FLOPs of one training step: what sweeps budget and fit compute with.

  flops.step_flops(config)      -> float, FLOPs of one global step (forward + backward), all devices together
  flops.breakdown(config)       -> {part: FLOPs} of that step, for logs and docs

The convention is the one scaling-law papers use (Kaplan et al. 2020; Hoffmann et al. 2022): only the model's
matrix multiplications count, 2 FLOPs per multiply-add, and a step costs 3 forward passes of the trainable
parts (forward, plus backward for activations and for weights). Not counted: the log-mel frontend, norms,
softmax, GELU, the optimizer, and any recomputation by rematerialisation (so a remat policy does not change
the budget of a run). Frozen parts (`optimizer.frozen`, e.g. LiT's audio encoder) cost one forward pass: nothing
before them needs their gradient.

How the count is made, so a new model family needs no edit here as long as it keeps the parameter naming:
every kernel parameter (a leaf named `*kernel` with 2+ dims) costs 2 x its size per token it is applied to,
and the tokens depend on the part of the model it lives in:
  audio_encoder                      T' audio frames (the encoder class's output_frames(cfg, T); a class that runs
                                     parts at other rates, the Zipformer, says per kernel: kernel_frames)
  audio_head                         T' (project_then_pool) or 1 (pool_then_project)
  text_encoder                       L + 1 caption tokens (CLS)
  decoder                            L caption tokens; its cross-attention key/value kernels and the audio
                                     projection are applied to the T' audio frames instead
  text_head, classifier, anything else   1 per example
Attention itself (scores and the weighted sum) adds 4 x Tq x Tk x width per attention layer, the layers counted
from the query kernels. An audio encoder class with an `extra_flops(cfg, T)` (the Zipformer: its convolutions,
attention products and downsamplings) adds that many forward FLOPs per example instead. The contrastive logits add 2 x B^2 x E. Token embeddings are lookups (no FLOPs), except
a decoder with tied embeddings, whose output projection reuses the table.

Tested against XLA's cost analysis of the unrolled step (tests/test_flops.py): the analytic count is the
matmul share of what XLA counts.
"""
from __future__ import annotations

import math

import jax
import ml_collections
from flax import nnx

from alp_jax.audio import frontend
from alp_jax.audio.io import TARGET_SAMPLE_RATE
from alp_jax.models import encoders
from alp_jax.train import freeze
from alp_jax.train import state as state_lib

BACKWARD_FACTOR = 3.0   # forward + backward (activations) + backward (weights), each ~ one forward


def _path_name(path) -> str:
  """'audio_encoder/encoder/blocks/0/attention/query_kernel' (the variable's own `.value` attribute dropped)."""
  return "/".join(str(k.key if hasattr(k, "key") else k.idx) for k in path if hasattr(k, "key") or hasattr(k, "idx"))


def _input_frames(config: ml_collections.ConfigDict) -> int:
  """T: log-mel frames of one training crop."""
  return frontend.num_frames(int(round(config.data.crop_seconds * TARGET_SAMPLE_RATE)), config.frontend)


def _audio_frames(config: ml_collections.ConfigDict) -> int:
  """T': output frames of the audio encoder for one training crop (the encoder class's `output_frames`)."""
  encoder_cls = encoders.AUDIO_ENCODERS[config.model.audio.name]
  return int(encoder_cls.output_frames(config.model.audio, _input_frames(config)))


def _audio_kernel_frames(config: ml_collections.ConfigDict, parts: list[str], audio_frames: int) -> int:
  """Frames an audio-encoder kernel is applied to: the class's `kernel_frames(cfg, parts, T)` when it runs parts
  at other rates (Zipformer stacks), else T'."""
  encoder_cls = encoders.AUDIO_ENCODERS[config.model.audio.name]
  if hasattr(encoder_cls, "kernel_frames"):
    return int(encoder_cls.kernel_frames(config.model.audio, parts, _input_frames(config)))
  return audio_frames


def _tokens_for(name: str, config, audio_frames: int, text_tokens: int) -> int:
  parts = name.split("/")
  leaf = parts[-1]
  if "decoder" in parts:
    if leaf == "audio_projection" or ("cross_attention" in parts and leaf in ("key_kernel", "value_kernel")):
      return audio_frames
    return text_tokens
  if "audio_encoder" in parts:
    return _audio_kernel_frames(config, parts, audio_frames)
  if "audio_head" in parts:
    return audio_frames if config.model.head.audio_pooling == "project_then_pool" else 1
  if "text_encoder" in parts:
    return text_tokens + 1
  return 1


def _is_kernel(name: str, shape) -> bool:
  leaf = name.split("/")[-1]
  return (leaf.endswith("kernel") or leaf == "audio_projection") and len(shape) >= 2


def breakdown(config: ml_collections.ConfigDict) -> dict[str, float]:
  """FLOPs of one global training step by model part ("audio_encoder", "text_encoder", "decoder", ...,
  "contrastive_logits"); the sum is `step_flops`."""
  model = state_lib.build_abstract_model(config)
  params = nnx.state(model, nnx.Param)
  audio_frames = _audio_frames(config)
  text_tokens = int(config.data.max_caption_tokens)
  batch = int(config.batch_size)
  frozen = freeze.names(config.optimizer.get("frozen", ()))
  frozen_flags = jax.tree.leaves(freeze.frozen_mask(params, frozen)) if frozen else None
  decoder_cfg = config.model.get("decoder", {})
  # A pretrained (BART) decoder's output projection is its token embedding (alp_jax/models/hf_bart.py).
  tie = bool(decoder_cfg.get("tie_embeddings", False) or decoder_cfg.get("pretrained", ""))
  parts: dict[str, float] = {}
  for i, (path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(params)[0]):
    name = _path_name(path)
    shape = tuple(getattr(leaf, "shape", ()))
    names = name.split("/")
    part = next(p for p in names if p != "towers").removesuffix("_kernel").removesuffix("_bias")
    factor = 1.0 if frozen_flags is not None and frozen_flags[i] else BACKWARD_FACTOR
    flops = 0.0
    if _is_kernel(name, shape):
      flops += 2.0 * math.prod(shape) * _tokens_for(name, config, audio_frames, text_tokens)
      if names[-1] == "query_kernel":
        width = shape[-2] * shape[-1]                      # H x K
        layers = math.prod(shape) // (shape[-3] * width)   # a scanned stack has a leading layers axis
        queries = _tokens_for(name, config, audio_frames, text_tokens)
        keys = audio_frames if "cross_attention" in names else queries
        flops += 4.0 * queries * keys * width * layers    # scores (B,H,Tq,Tk) and the weighted sum
    elif tie and "decoder" in names and "token_embedding" in names:   # the tied output projection
      flops += 2.0 * math.prod(shape) * text_tokens
    if flops:
      parts[part] = parts.get(part, 0.0) + factor * flops * batch
  encoder_cls = encoders.AUDIO_ENCODERS[config.model.audio.name]
  if hasattr(encoder_cls, "extra_flops"):
    factor = 1.0 if "audio_encoder" in frozen else BACKWARD_FACTOR
    extra = factor * batch * encoder_cls.extra_flops(config.model.audio, _input_frames(config))
    parts["audio_encoder"] = parts.get("audio_encoder", 0.0) + extra
  kind = config.get("loss", {}).get("kind", "")
  if kind in ("contrastive", "sigmoid", "sigmoid_chunked") or config.model.name == "hybrid":
    parts["contrastive_logits"] = BACKWARD_FACTOR * 2.0 * batch * batch * config.model.head.embed_dim
  return parts


def step_flops(config: ml_collections.ConfigDict) -> float:
  """Analytic FLOPs of one global training step (forward + backward, every device together)."""
  return float(sum(breakdown(config).values()))
