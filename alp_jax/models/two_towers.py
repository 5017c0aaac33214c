"""Two-tower contrastive model (CLAP-style): waveform -> log-mel -> audio encoder -> head, and
caption tokens -> text encoder -> head, with a temperature and (sigmoid losses) a logit bias.

Dimension letters: B batch, S samples, T log-mel frames, T' encoder frames, M mel bins,
L caption tokens, D encoder width, E joint embedding width.

Registry name "two_towers". Reads config.model (see `default_config`) and config.frontend
(alp_jax.audio.frontend.default_frontend_config); never the loss config: whether the towers carry
a logit bias is the model's own field `logit_bias` (the sigmoid objectives check that it is set).
Temperature: logits = a.t / temperature (alp_jax.losses convention).
  logit_bias False: temperature fixed 0.07 (study) or learnable, stored as log(temperature).
  logit_bias True:  SigLIP init from cfg.sigmoid: t' = log 10, b = -10, i.e. temperature 0.1 and
                    bias -10, learnable.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax.models import audio_encoder, encoders, heads, sizes, text_encoder, text_sides


def default_config() -> ml_collections.ConfigDict:
  """config.model for name "two_towers"; study values in the comments."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "two_towers"
  cfg.vocab_size = 8000  # must match the sentencepiece model (study: bert-base-uncased, 30522)
  cfg.audio = audio_encoder.default_config()  # study: Zipformer-M, 768-d frames at 25 Hz
  cfg.text = text_encoder.default_config()  # study: BERT-base, CLS pooling
  cfg.head = heads.default_config()  # study: mlp2 to 1024, project-then-pool
  cfg.temperature = ml_collections.ConfigDict()
  cfg.temperature.init = 0.07  # study: 0.07 (softmax loss)
  cfg.temperature.learnable = False  # study: fixed; ours: option (CLIP-style log-parameterised)
  cfg.logit_bias = False  # True for the sigmoid (SigLIP) losses: a learnable bias, init from cfg.sigmoid
  cfg.sigmoid = ml_collections.ConfigDict()  # temperature and bias init when logit_bias is True
  cfg.sigmoid.temperature_init = 0.1  # SigLIP: t' = log 10
  cfg.sigmoid.bias_init = -10.0  # SigLIP: b = -10
  cfg.sigmoid.learnable = True
  return cfg


def _frozen(cfg: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  return ml_collections.FrozenConfigDict(cfg)


class TwoTowers(nnx.Module):
  """Audio tower and text tower meeting in a joint, L2-normalised embedding space."""

  capabilities = frozenset({encoders.AUDIO_ENCODER, encoders.TEXT_TOWER})

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    model_cfg = config.model
    encoders.check_frontend_matches_encoder(config)
    self.frontend_cfg = _frozen(config.frontend)
    self.audio_pooling = model_cfg.head.audio_pooling
    if self.audio_pooling not in heads.AUDIO_POOLINGS:
      raise ValueError(f"unknown audio_pooling {self.audio_pooling!r}; "
                       f"choose from {heads.AUDIO_POOLINGS}")
    self.audio_encoder = encoders.encoder_from_config(model_cfg.audio, rngs=rngs)
    self.text_encoder = text_sides.text_encoder_from_config(model_cfg.text, vocab_size=model_cfg.vocab_size,
                                                            rngs=rngs)
    self.audio_head = heads.ProjectionHead(self.audio_encoder.output_dim, model_cfg.head,
                                           rngs=rngs,
                                           dtype=sizes.compute_dtype(model_cfg.audio.dtype))
    self.text_head = heads.ProjectionHead(self.text_encoder.output_dim, model_cfg.head, rngs=rngs,
                                          dtype=sizes.compute_dtype(model_cfg.text.dtype))
    if model_cfg.get("logit_bias", False):
      init, learnable = model_cfg.sigmoid.temperature_init, model_cfg.sigmoid.learnable
      self.logit_bias = nnx.Param(jnp.asarray(model_cfg.sigmoid.bias_init, jnp.float32))
    else:
      init, learnable = model_cfg.temperature.init, model_cfg.temperature.learnable
      self.logit_bias = None
    self.learnable_temperature = learnable
    if learnable:
      self.log_temperature = nnx.Param(jnp.asarray(math.log(init), jnp.float32))
    else:
      self.fixed_temperature = float(init)

  def temperature(self) -> jax.Array:
    """The current temperature (a float32 scalar); logits = similarities / temperature."""
    if self.learnable_temperature:
      return jnp.exp(self.log_temperature[...])
    return jnp.asarray(self.fixed_temperature, jnp.float32)

  def encode_audio(self, audio: jax.Array, audio_mask: jax.Array, *, train: bool = False,
                   rngs: nnx.Rngs | None = None,
                   keep_layers: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Waveform (B,S) + mask -> encoder frames (B,T',D) and the encoder's out_dict.

    A frozen encoder (`self.audio_encoder.frozen`, alp_jax/train/freeze.py) runs in evaluation mode.
    """
    return audio_encoder.encode_audio(self.audio_encoder, self.frontend_cfg, audio, audio_mask,
                                      train=train, rngs=rngs, keep_layers=keep_layers)

  def embed_audio(self, audio: jax.Array,
                  audio_mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Evaluation: waveform (B,S) + mask -> (audio_embedding (B,E) float32, encoder out_dict)."""
    frames, out_dict = self.encode_audio(audio, audio_mask)
    return heads.audio_embedding(self.audio_head, frames, out_dict["frame_mask"],
                                 self.audio_pooling), out_dict

  def embed_text(self, caption_tokens: jax.Array,
                 caption_mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Evaluation: tokens (B,L) + mask -> (text_embedding (B,E) float32, text out_dict)."""
    pooled, out_dict = self.text_encoder(caption_tokens, caption_mask)
    return heads.text_embedding(self.text_head, pooled), out_dict

  def __call__(self, batch: dict[str, Any], *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> tuple[tuple[jax.Array, jax.Array],
                                                        dict[str, jax.Array]]:
    """A batch -> ((audio_embedding, text_embedding), out_dict).

    out_dict: audio_embedding (B,E), text_embedding (B,E) (float32, L2-normalised),
    audio_frames (B,T',D), audio_frame_mask (B,T'), temperature (), bias () if sigmoid.
    With train=True, `rngs` drives SpecAugment (stream "augment") and dropout ("dropout").
    """
    frames, audio_dict = self.encode_audio(batch["audio"], batch["audio_mask"], train=train,
                                           rngs=rngs)
    text_dropout_key = rngs.dropout() if train and rngs is not None else None
    pooled_text, _ = self.text_encoder(batch["caption_tokens"], batch["caption_mask"],
                                       deterministic=not train, dropout_key=text_dropout_key)
    audio_emb = heads.audio_embedding(self.audio_head, frames, audio_dict["frame_mask"],
                                      self.audio_pooling)
    text_emb = heads.text_embedding(self.text_head, pooled_text)
    out_dict = {
        "audio_embedding": audio_emb,
        "text_embedding": text_emb,
        "audio_frames": frames,
        "audio_frame_mask": audio_dict["frame_mask"],
        "audio_pooled": audio_dict["pooled"],
        "temperature": self.temperature(),
    }
    if self.logit_bias is not None:
      out_dict["bias"] = self.logit_bias[...]
    return (audio_emb, text_emb), out_dict
