"""Hybrid (CoCa-style) model: one audio encoder feeding both a two-tower contrastive head and a
caption decoder.

Dimension letters: B batch, S samples, T' encoder frames, D encoder width, E joint embedding width,
L caption tokens, V vocabulary.

Registry name "hybrid". It composes a `TwoTowers` (audio encoder, text encoder, projection
heads, temperature and, with config.model.logit_bias, the logit bias) with a `CaptionDecoder` that
cross-attends to the same audio frames, so the waveform is encoded once per step. config.model is
the two-tower config plus a `decoder` entry (see `default_config`); like every model it reads only
config.model (config.model.logit_bias decides whether the towers carry a SigLIP logit bias).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax.models import caption_decoder, encoders, heads, text_sides, two_towers


def default_config() -> ml_collections.ConfigDict:
  """config.model for name "hybrid": the two-tower settings plus the caption decoder's."""
  cfg = two_towers.default_config()
  cfg.name = "hybrid"
  cfg.decoder = caption_decoder.default_config()
  return cfg


class Hybrid(nnx.Module):
  """TwoTowers + CaptionDecoder sharing the audio encoder."""

  capabilities = frozenset({encoders.AUDIO_ENCODER, encoders.TEXT_TOWER, encoders.CAPTION_DECODER})

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.towers = two_towers.TwoTowers(config, rngs=rngs)
    self.decoder = text_sides.decoder_from_config(
        config.model.decoder, vocab_size=config.model.vocab_size,
        audio_width=self.towers.audio_encoder.output_dim, rngs=rngs)

  @property
  def audio_encoder(self) -> nnx.Module:
    """The shared audio encoder (it lives in the towers), as on every model."""
    return self.towers.audio_encoder

  def temperature(self) -> jax.Array:
    """The contrastive temperature (float32 scalar), as `TwoTowers.temperature`."""
    return self.towers.temperature()

  @property
  def logit_bias(self) -> nnx.Param | None:
    """The towers' logit bias parameter (None unless config.model.logit_bias), as on TwoTowers."""
    return self.towers.logit_bias

  def __call__(self, batch: dict[str, Any], *, train: bool = False, rngs: nnx.Rngs | None = None,
               parallel: jax.Array | None = None
               ) -> tuple[tuple[tuple[jax.Array, jax.Array], jax.Array], dict[str, jax.Array]]:
    """A batch -> (((audio_embedding, text_embedding), logits), out_dict).

    out_dict holds the two-tower entries (audio_embedding, text_embedding, temperature, bias with a
    logit bias, audio_frames, audio_frame_mask, audio_pooled) and the captioner entries (logits,
    caption_target_mask, parallel). `parallel` (B,) as in `Captioner.__call__`.
    """
    towers = self.towers
    caption_tokens, caption_mask = batch["caption_tokens"], batch["caption_mask"]
    if parallel is None:
      parallel = jnp.zeros(caption_tokens.shape[:1], bool)
    frames, audio_dict = towers.encode_audio(batch["audio"], batch["audio_mask"], train=train,
                                             rngs=rngs)
    frame_mask = audio_dict["frame_mask"]
    text_key = rngs.dropout() if train and rngs is not None else None
    pooled_text, _ = towers.text_encoder(caption_tokens, caption_mask, deterministic=not train,
                                         dropout_key=text_key)
    audio_emb = heads.audio_embedding(towers.audio_head, frames, frame_mask, towers.audio_pooling)
    text_emb = heads.text_embedding(towers.text_head, pooled_text)
    decoder_key = rngs.dropout() if train and rngs is not None else None
    logits = self.decoder(caption_tokens, caption_mask, frames, frame_mask, parallel,
                          deterministic=not train, dropout_key=decoder_key)
    out_dict = {
        "audio_embedding": audio_emb,
        "text_embedding": text_emb,
        "temperature": towers.temperature(),
        "logits": logits,
        "caption_target_mask": caption_decoder.caption_target_mask(
            caption_tokens, caption_mask, parallel, self.decoder.parallel_predicts_eos),
        "parallel": parallel,
        "audio_frames": frames,
        "audio_frame_mask": frame_mask,
        "audio_pooled": audio_dict["pooled"],
    }
    if towers.logit_bias is not None:
      out_dict["bias"] = towers.logit_bias[...]
    return ((audio_emb, text_emb), logits), out_dict
