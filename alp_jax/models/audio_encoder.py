"""Transformer audio encoder: stacked log-mel frames -> patch embedding -> pre-LN Transformer.

Dimension letters:
  B batch, T input frames (10 ms hop, 100/s), M mel bins, s frames stacked per output frame,
  T' = ceil(T / s) output frames (25/s for s = 4, the study's output rate), D width.

Frame stacking: `stack` consecutive 10 ms frames are concatenated (B,T',s*M) and projected to D.
An output frame is valid if ANY of its input frames is valid (so a clip's last partial stack is
kept); the features of invalid input frames are zeroed before stacking, so the padding after a
clip never reaches the model and appending more padding changes nothing.

Registry name "transformer" (alp_jax.models.encoders.AUDIO_ENCODERS). Another encoder (e.g. the study's
Zipformer) is a new file with the same constructor `(cfg, *, rngs)` and the same call contract:
  __call__(features (B,T,M), frame_mask (B,T), *, deterministic, dropout_key, keep_layers)
    -> (frames (B,T',D), out_dict with "frames", "frame_mask", "pooled" (masked mean) ...)
and an `output_dim` attribute (D). With keep_layers=True the out_dict also holds "layer_i" (B,T',D), block i's
output for i = 0..depth-1, and here "patch" (B,T',D), the patch embedding plus positions before block 0: the
per-layer probes (`AudioEncoder.at_layer`, `embed_layers`) read these names.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax.audio import frontend
from alp_jax.models import layers, sizes


def default_config() -> ml_collections.ConfigDict:
  """config.model.audio for the Transformer encoder (study: Zipformer-M, 768-d frames at 25 Hz)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "transformer"
  cfg.size = "tiny"  # tiny | small | base | large (alp_jax/models/sizes.py)
  cfg.num_mel_bins = 80  # must equal config.frontend.num_mel_bins (study: 80)
  cfg.stack = 4  # 10 ms frames per output frame: 4 -> 25 frames/s (study: 25 Hz output)
  cfg.position_embedding = "sinusoidal"  # "sinusoidal" (any length) | "learned" (max_frames)
  cfg.max_frames = 1500  # output frames the learned table covers: 60 s at 25 Hz
  cfg.dropout = 0.0
  cfg.scan_layers = False  # True on accelerators (base/large configs); see docs/models.md on CPU meshes
  cfg.remat_policy = "none"  # none | full | dots_saveable | nothing_saveable | ...
  cfg.attention_impl = "einsum"  # einsum (CPU) | dot_product_attention (fused on GPU)
  cfg.dtype = "float32"  # compute dtype; "bfloat16" on accelerators (params stay float32)
  return cfg


def stack_frames(features: jax.Array, frame_mask: jax.Array,
                 stack: int) -> tuple[jax.Array, jax.Array]:
  """(B,T,M) features and (B,T) mask -> (B,T',s*M) stacked features and (B,T') mask.

  Invalid frames are zeroed; T is padded up to a multiple of s; a stack is valid if any of its
  frames is.
  """
  b, t, m = features.shape
  features = jnp.where(frame_mask[..., None], features, 0.0)
  pad = (-t) % stack
  features = jnp.pad(features, ((0, 0), (0, pad), (0, 0)))
  frame_mask = jnp.pad(frame_mask, ((0, 0), (0, pad)))
  stacked = features.reshape(b, (t + pad) // stack, stack * m)  # (B,T',s*M)
  stacked_mask = jnp.any(frame_mask.reshape(b, (t + pad) // stack, stack), axis=-1)  # (B,T')
  return stacked, stacked_mask


class TransformerAudioEncoder(nnx.Module):
  """Log-mel frames (B,T,M) -> contextual frames (B,T',D) at 100/stack frames per second."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    size = sizes.size_settings(cfg.size)
    width = size["width"]
    dtype = sizes.compute_dtype(cfg.dtype)
    self.stack, self.dropout, self.dtype = cfg.stack, cfg.dropout, dtype
    self.output_dim = width
    self.position_embedding = cfg.position_embedding
    in_dim = cfg.stack * cfg.num_mel_bins
    self.patch_kernel = layers.partitioned_param(rngs, layers.dense_init, ("mel", "embed"),
                                                 (in_dim, width), jnp.float32)
    self.patch_bias = layers.partitioned_param(rngs, nnx.initializers.zeros_init(), ("embed",),
                                               (width,), jnp.float32)
    if cfg.position_embedding == "learned":
      self.positions = layers.LearnedPositions(cfg.max_frames, width, rngs=rngs)
    elif cfg.position_embedding != "sinusoidal":
      raise ValueError(f"unknown position_embedding {cfg.position_embedding!r}; "
                       "use 'sinusoidal' or 'learned'")
    self.encoder = layers.Encoder(
        width, size["depth"], size["num_heads"], size["mlp_dim"], rngs=rngs, dtype=dtype,
        attention_impl=cfg.attention_impl, dropout=cfg.dropout, scan_layers=cfg.scan_layers,
        remat_policy=cfg.remat_policy)

  @staticmethod
  def output_frames(cfg: ml_collections.ConfigDict, num_frames: int) -> int:
    """T' = ceil(T / stack) output frames for T log-mel frames (analytic FLOPs use it)."""
    return -(-num_frames // cfg.stack)

  def __call__(self, features: jax.Array, frame_mask: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None,
               keep_layers: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    stacked, mask = stack_frames(features.astype(jnp.float32), frame_mask, self.stack)
    x = jnp.einsum("btm,md->btd", stacked.astype(self.dtype),
                   self.patch_kernel[...].astype(self.dtype))  # (B,T',s*M) x (s*M,D) -> (B,T',D)
    x = x + self.patch_bias[...].astype(self.dtype)
    length, width = x.shape[1], x.shape[2]
    if self.position_embedding == "learned":
      x = x + self.positions(length).astype(self.dtype)[None]
    else:
      x = x + layers.sinusoidal_positions(length, width).astype(self.dtype)[None]
    patch = x
    embed_key, encoder_key = layers.split_key(dropout_key, 2)
    x = layers.dropout(x, self.dropout, embed_key, deterministic)
    frames, out_dict = self.encoder(x, mask, deterministic=deterministic, dropout_key=encoder_key,
                                    keep_layers=keep_layers)
    if keep_layers:
      out_dict["patch"] = patch  # (B,T',D) before block 0
    out_dict["frames"] = frames
    out_dict["frame_mask"] = mask
    out_dict["pooled"] = layers.masked_mean(frames.astype(jnp.float32), mask)  # (B,D)
    return frames, out_dict


def encode_audio(audio_encoder: nnx.Module, frontend_cfg: ml_collections.ConfigDict,
                 audio: jax.Array, audio_mask: jax.Array, *, train: bool = False,
                 rngs: nnx.Rngs | None = None,
                 keep_layers: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Waveform (B,S) + mask -> log-mel (B,T,M) -> encoder frames (B,T',D) and the encoder's out_dict.

  Every model runs its audio through this one function. With train=True and `rngs`, SpecAugment
  uses stream "augment" and dropout stream "dropout". An encoder marked frozen
  (`audio_encoder.frozen`, set by the trainer for a frozen audio encoder: alp_jax/train/freeze.py)
  always runs in evaluation mode and its outputs carry no gradient.
  """
  frozen = getattr(audio_encoder, "frozen", False)
  train = train and not frozen
  features, frame_mask = frontend.log_mel(audio, audio_mask, frontend_cfg)  # (B,T,M)
  dropout_key = None
  if train and rngs is not None:
    features = frontend.spec_augment(rngs.augment(), features, frame_mask,
                                     frontend_cfg.spec_augment)
    dropout_key = rngs.dropout()
  outputs = audio_encoder(features, frame_mask, deterministic=not train,
                          dropout_key=dropout_key, keep_layers=keep_layers)
  return jax.lax.stop_gradient(outputs) if frozen else outputs
