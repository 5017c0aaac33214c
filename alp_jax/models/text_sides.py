"""Which text encoder and caption decoder a model config builds: ours (random init) or a pretrained Hugging Face
checkpoint's architecture (BERT, BART; weights loaded at the first start of training by train/text_init.py).

  text_sides.text_encoder_from_config(config.model.text, vocab_size=V, rngs=rngs)
  text_sides.decoder_from_config(config.model.decoder, vocab_size=V, audio_width=A, rngs=rngs)

`pretrained` empty: text_encoder.TextEncoder / caption_decoder.CaptionDecoder. `pretrained` a folder:
hf_bert.HfBertEncoder / hf_bart.HfBartDecoder, built from `pretrained_arch` (the folder's config.json fields,
recorded in the run's config so the run rebuilds without the folder; read from the folder when empty).
"""
from __future__ import annotations

import ml_collections
from flax import nnx

from alp_jax.models import caption_decoder, hf_bart, hf_bert, text_encoder


def pretrained_arch(cfg: ml_collections.ConfigDict, module) -> dict:
  """cfg.pretrained_arch, or the architecture read from cfg.pretrained's config.json when it is empty."""
  arch = cfg.get("pretrained_arch")
  return dict(arch) if arch else module.architecture(cfg.pretrained)


def text_encoder_from_config(cfg: ml_collections.ConfigDict, *, vocab_size: int, rngs: nnx.Rngs) -> nnx.Module:
  """config.model.text -> a text encoder: (caption_tokens, caption_mask) -> (pooled (B,D), out_dict)."""
  if not cfg.get("pretrained"):
    return text_encoder.TextEncoder(cfg, vocab_size=vocab_size, rngs=rngs)
  return hf_bert.HfBertEncoder(pretrained_arch(cfg, hf_bert), vocab_size=vocab_size, pooling=cfg.pooling,
                               rngs=rngs, dtype=cfg.dtype, attention_impl=cfg.attention_impl)


def decoder_from_config(cfg: ml_collections.ConfigDict, *, vocab_size: int, audio_width: int,
                        rngs: nnx.Rngs) -> nnx.Module:
  """config.model.decoder -> a caption decoder (CaptionDecoder's interface)."""
  if not cfg.get("pretrained"):
    return caption_decoder.decoder_from_config(cfg, vocab_size=vocab_size, audio_width=audio_width, rngs=rngs)
  return hf_bart.HfBartDecoder(pretrained_arch(cfg, hf_bart), vocab_size=vocab_size, audio_width=audio_width,
                               max_len=cfg.max_len, rngs=rngs, parallel_predicts_eos=cfg.parallel_predicts_eos,
                               dtype=cfg.dtype, attention_impl=cfg.attention_impl)
