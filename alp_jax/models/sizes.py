"""The Transformer size family shared by the audio encoder and the text encoder.

Dimension letters: D width, L depth (blocks), H heads, F MLP hidden width.

From tiny to large the parameter count grows by about 360x (see docs/models.md for exact counts):
  tiny   D=128  L=4   H=4   F=512    ~0.8M per encoder stack   (CPU smoke runs, tests)
  mini   D=256  L=4   H=4   F=1024   ~3.3M                     (the demo recipe's audio encoder: wider, as shallow)
  small  D=256  L=12  H=4   F=1024   ~9.5M                     (single-GPU debugging)
  base   D=768  L=12  H=12  F=3072   ~85M   ViT-B / BERT-base  (study: BERT-base text tower)
  large  D=1024 L=24  H=16  F=4096   ~302M  ViT-L / BERT-large
"""
from __future__ import annotations

import jax.numpy as jnp

SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(width=128, depth=4, num_heads=4, mlp_dim=512),
    "mini": dict(width=256, depth=4, num_heads=4, mlp_dim=1024),
    "small": dict(width=256, depth=12, num_heads=4, mlp_dim=1024),
    "base": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "large": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def size_settings(name: str) -> dict[str, int]:
  """width / depth / num_heads / mlp_dim of a named size."""
  if name not in SIZES:
    raise ValueError(f"unknown model size {name!r}; choose from {tuple(SIZES)}")
  return dict(SIZES[name])


def compute_dtype(name: str):
  """"float32" | "bfloat16" -> the jnp dtype used for activations (parameters stay float32)."""
  if name not in DTYPES:
    raise ValueError(f"unknown dtype {name!r}; choose from {tuple(DTYPES)}")
  return DTYPES[name]
