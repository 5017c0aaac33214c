"""Projection heads from encoder widths to the joint embedding space, pooling, L2 normalisation.

Dimension letters: B batch, T' audio frames, D encoder width, F head hidden width, E joint width.

Study: a 2-layer MLP per tower, Linear(D->1024) - ReLU - Linear(1024->1024) ("mlp2"); the audio
head is applied to every frame, then masked mean over valid frames ("project_then_pool"), then L2
normalisation; the text head projects the pooled [CLS] vector. Options: kind "linear",
audio_pooling "pool_then_project". Embeddings come out float32 whatever the compute dtype.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax.models import layers

HEAD_KINDS = ("mlp2", "linear")
AUDIO_POOLINGS = ("project_then_pool", "pool_then_project")


def default_config() -> ml_collections.ConfigDict:
  """config.model.head (study: mlp2, 1024 hidden, 1024 out, project-then-pool)."""
  cfg = ml_collections.ConfigDict()
  cfg.kind = "mlp2"  # study: mlp2 | linear
  cfg.hidden_dim = 1024  # study: 1024 (mlp2 only)
  cfg.embed_dim = 1024  # study: 1024
  cfg.audio_pooling = "project_then_pool"  # study | pool_then_project
  return cfg


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / ||x|| over the last axis, in float32; a zero vector stays zero."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


class ProjectionHead(nnx.Module):
  """(..., D) -> (..., E): "mlp2" Linear-ReLU-Linear or a single "linear" map."""

  def __init__(self, in_dim: int, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs,
               dtype: Any = jnp.float32, param_dtype: Any = jnp.float32):
    if cfg.kind not in HEAD_KINDS:
      raise ValueError(f"unknown head kind {cfg.kind!r}; choose from {HEAD_KINDS}")
    self.kind, self.dtype = cfg.kind, dtype
    zeros = nnx.initializers.zeros_init()
    if cfg.kind == "mlp2":
      self.hidden_kernel = layers.partitioned_param(rngs, layers.dense_init, ("embed", "mlp"),
                                                    (in_dim, cfg.hidden_dim), param_dtype)
      self.hidden_bias = layers.partitioned_param(rngs, zeros, ("mlp",), (cfg.hidden_dim,),
                                                  param_dtype)
      out_in_dim, out_names = cfg.hidden_dim, ("mlp", "joint")
    else:
      out_in_dim, out_names = in_dim, ("embed", "joint")
    self.out_kernel = layers.partitioned_param(rngs, layers.dense_init, out_names,
                                               (out_in_dim, cfg.embed_dim), param_dtype)
    self.out_bias = layers.partitioned_param(rngs, zeros, ("joint",), (cfg.embed_dim,),
                                             param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype
    x = x.astype(dtype)
    if self.kind == "mlp2":
      x = jnp.einsum("...d,df->...f", x, self.hidden_kernel[...].astype(dtype))  # (...,F)
      x = jax.nn.relu(x + self.hidden_bias[...].astype(dtype))
    x = jnp.einsum("...f,fe->...e", x, self.out_kernel[...].astype(dtype))  # (...,E)
    return x + self.out_bias[...].astype(dtype)


def audio_embedding(head: ProjectionHead, frames: jax.Array, frame_mask: jax.Array,
                    audio_pooling: str) -> jax.Array:
  """Audio frames (B,T',D) + mask (B,T') -> L2-normalised float32 embedding (B,E)."""
  if audio_pooling == "project_then_pool":
    projected = head(frames).astype(jnp.float32)  # (B,T',E)
    pooled = layers.masked_mean(projected, frame_mask)  # (B,E)
  elif audio_pooling == "pool_then_project":
    pooled = head(layers.masked_mean(frames.astype(jnp.float32), frame_mask)).astype(jnp.float32)
  else:
    raise ValueError(f"unknown audio_pooling {audio_pooling!r}; choose from {AUDIO_POOLINGS}")
  return l2_normalize(pooled)


def text_embedding(head: ProjectionHead, pooled_text: jax.Array) -> jax.Array:
  """Pooled text vector (B,D) -> L2-normalised float32 embedding (B,E)."""
  return l2_normalize(head(pooled_text).astype(jnp.float32))
