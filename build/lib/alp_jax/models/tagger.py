"""Supervised audio tagger: frontend -> audio encoder -> pooling -> linear classifier.

The study compares ALP from scratch with initialising the audio encoder from an AudioSet-supervised tagger. Train
this model on manifest labels (config.data.label_task, objective "tagging"), export its encoder, and start a
contrastive or captioning run from it with --config.model_init=ENC_DIR.

Dimension letters: B batch, T' encoder frames, D width, C classes.
Registry name "tagger". config.model: audio (encoder settings), num_classes (set by the trainer from the corpus's
label vocabulary), pooling "mean" (masked mean over valid frames).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax.models import audio_encoder, encoders, layers


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "tagger"
  cfg.audio = audio_encoder.default_config()
  cfg.num_classes = 0  # set from the corpus's labels.json for data.label_task
  cfg.vocab_size = 0   # unused (no text side); kept so every model config has it
  return cfg


class Tagger(nnx.Module):
  """Audio encoder, masked mean pooling and a linear classifier over config.model.num_classes."""

  capabilities = frozenset({encoders.AUDIO_ENCODER, encoders.CLASSIFIER})

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    model_cfg = config.model
    if model_cfg.num_classes < 1:
      raise ValueError("config.model.num_classes must be >= 1 (set data.label_task to a task in labels.json)")
    encoders.check_frontend_matches_encoder(config)
    self.frontend_cfg = ml_collections.FrozenConfigDict(config.frontend)
    self.audio_encoder = encoders.encoder_from_config(model_cfg.audio, rngs=rngs)
    width = self.audio_encoder.output_dim
    self.classifier_kernel = layers.partitioned_param(rngs, layers.dense_init, ("embed", None),
                                                      (width, model_cfg.num_classes), jnp.float32)
    self.classifier_bias = nnx.Param(jnp.zeros((model_cfg.num_classes,), jnp.float32))

  def __call__(self, batch: dict[str, Any], *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    frames, out_dict = audio_encoder.encode_audio(self.audio_encoder, self.frontend_cfg, batch["audio"],
                                                  batch["audio_mask"], train=train, rngs=rngs)
    pooled = layers.masked_mean(frames.astype(jnp.float32), out_dict["frame_mask"])  # (B,D)
    logits = jnp.einsum("bd,dc->bc", pooled, self.classifier_kernel[...]) + self.classifier_bias[...]  # (B,C)
    return logits, {"logits": logits, "audio_pooled": pooled, "audio_frames": frames,
                    "audio_frame_mask": out_dict["frame_mask"]}
