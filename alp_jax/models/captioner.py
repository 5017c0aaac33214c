"""Captioner (CapPa-style encoder-decoder): waveform -> log-mel -> audio encoder -> caption decoder.

Dimension letters: B batch, S samples, T log-mel frames, T' encoder frames, D encoder width,
L caption tokens, V vocabulary.

Registry name "captioner". Reads config.model (see `default_config`) and config.frontend
(alp_jax.audio.frontend.default_frontend_config). Which rows of a batch are parallel-prediction
rows is the objective's choice (alp_jax.objectives draws them with probability
config.loss.parallel_fraction) and is passed to `__call__`; without it every row is
autoregressive (evaluation, scoring).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax.models import audio_encoder, caption_decoder, decoding, encoders, text_sides


def default_config() -> ml_collections.ConfigDict:
  """config.model for name "captioner"; study values in the comments."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "captioner"
  cfg.vocab_size = 8000  # must match the sentencepiece model (study: BART tokenizer, 50265)
  cfg.audio = audio_encoder.default_config()  # study: Zipformer-M, 768-d frames at 25 Hz
  cfg.decoder = caption_decoder.default_config()  # study: BART-base-sized, 6 layers, 768 wide
  return cfg


class Captioner(nnx.Module):
  """Audio encoder + caption decoder cross-attending to its frames."""

  capabilities = frozenset({encoders.AUDIO_ENCODER, encoders.CAPTION_DECODER})

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    model_cfg = config.model
    encoders.check_frontend_matches_encoder(config)
    self.frontend_cfg = ml_collections.FrozenConfigDict(config.frontend)
    self.audio_encoder = encoders.encoder_from_config(model_cfg.audio, rngs=rngs)
    self.decoder = text_sides.decoder_from_config(
        model_cfg.decoder, vocab_size=model_cfg.vocab_size,
        audio_width=self.audio_encoder.output_dim, rngs=rngs)

  def encode_audio(self, audio: jax.Array, audio_mask: jax.Array, *, train: bool = False,
                   rngs: nnx.Rngs | None = None,
                   keep_layers: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Waveform (B,S) + mask -> encoder frames (B,T',D) and the encoder's out_dict."""
    return audio_encoder.encode_audio(self.audio_encoder, self.frontend_cfg, audio, audio_mask,
                                      train=train, rngs=rngs, keep_layers=keep_layers)

  def __call__(self, batch: dict[str, Any], *, train: bool = False, rngs: nnx.Rngs | None = None,
               parallel: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A batch -> (logits (B,L,V) float32, out_dict).

    Args:
      batch: audio (B,S), audio_mask (B,S), caption_tokens (B,L), caption_mask (B,L).
      train: SpecAugment and dropout on (driven by `rngs` streams "augment" and "dropout").
      parallel: (B,) bool, rows decoded in parallel-prediction mode; None = all autoregressive.

    out_dict: logits, caption_target_mask (B,L) (the positions the loss counts), parallel (B,),
    audio_frames (B,T',D), audio_frame_mask (B,T'), audio_pooled (B,D).
    """
    caption_tokens, caption_mask = batch["caption_tokens"], batch["caption_mask"]
    if parallel is None:
      parallel = jnp.zeros(caption_tokens.shape[:1], bool)
    frames, audio_dict = self.encode_audio(batch["audio"], batch["audio_mask"], train=train,
                                           rngs=rngs)
    dropout_key = rngs.dropout() if train and rngs is not None else None
    logits = self.decoder(caption_tokens, caption_mask, frames, audio_dict["frame_mask"],
                          parallel, deterministic=not train, dropout_key=dropout_key)
    out_dict = {
        "logits": logits,
        "caption_target_mask": caption_decoder.caption_target_mask(
            caption_tokens, caption_mask, parallel, self.decoder.parallel_predicts_eos),
        "parallel": parallel,
        "audio_frames": frames,
        "audio_frame_mask": audio_dict["frame_mask"],
        "audio_pooled": audio_dict["pooled"],
    }
    return logits, out_dict

  def generate(self, audio: jax.Array, audio_mask: jax.Array, *, max_len: int,
               beam_size: int = 1,
               length_penalty: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Captions for waveforms (B,S): greedy (beam_size 1) or beam search.

    Returns tokens (B,max_len), caption_mask (B,max_len), scores (B,) summed log-probabilities.
    """
    frames, audio_dict = self.encode_audio(audio, audio_mask)
    if beam_size == 1:
      return decoding.greedy_decode(self.decoder, frames, audio_dict["frame_mask"], max_len)
    return decoding.beam_search(self.decoder, frames, audio_dict["frame_mask"], max_len,
                                beam_size, length_penalty)
