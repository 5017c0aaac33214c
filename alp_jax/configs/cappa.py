"""Captioning pretraining (encoder-decoder), the study's captioning branch: 25% autoregressive, 75% parallel
prediction (CapPa), label smoothing 0.1.

  python -m alp_jax.train --config configs/cappa.py:tiny --workdir runs/cappa_tiny

Variants: tiny | demo (the `make demo` recipe: tiny, 2000 steps, no SpecAugment) | small | base (study: BART-base-sized 6-layer, 768-wide decoder, captions up to 128 tokens, relative gradient clipping) | ar_only (no parallel rows) | zipformer | zipformer_<preset> (the study's audio encoder, see configs/clap.py) | study | study_init (the paper's recipe and
budgets as in configs/clap.py, with the toolkit's decoder: post-LN, no biases, 8 heads, 128-token captions).
"""
import ml_collections

from alp_jax.configs import common
from alp_jax.models import captioner

VARIANTS = ("tiny", "demo", "small", "base", "ar_only") + common.ZIPFORMER_VARIANTS + common.STUDY_VARIANTS


def get_config(arg=None) -> ml_collections.ConfigDict:
  variants = common.study_variants(common.parse_variants(arg, VARIANTS, __file__))
  c = common.base_config()
  c.model = captioner.default_config()
  c.loss = ml_collections.ConfigDict(dict(
      kind="captioning",
      parallel_fraction=0.75,   # study: 75% parallel prediction, 25% autoregressive
      label_smoothing=0.1,      # study: 0.1
  ))
  if "demo" in variants:   # the reference small-scale recipe `make demo` trains (docs/representation.md)
    variants.add("tiny")
  if "tiny" in variants:
    common.apply_tiny(c)
    c.model.audio.size = "tiny"
    c.model.decoder.update(size="tiny", dropout=0.0, max_len=c.data.max_caption_tokens)
  if "demo" in variants:
    common.apply_demo(c)
  if "small" in variants:
    c.model.audio.size = "small"
    c.model.decoder.size = "small"
    c.batch_size = 64
  if "base" in variants:
    c.model.audio.size = "base"
    c.model.decoder.size = "base"
    c.model.audio.dtype = c.model.decoder.dtype = "bfloat16"
    c.model.audio.attention_impl = c.model.decoder.attention_impl = "dot_product_attention"
    c.model.audio.scan_layers = c.model.decoder.scan_layers = True  # one compiled layer (accelerators)
    c.data.crop_seconds = 10.0
    c.data.max_caption_tokens = 128   # study toolkit: 128 (CaptionStew captions are long; see docs/data.md)
    c.model.decoder.max_len = c.data.max_caption_tokens
    common.apply_relative_clipping(c)
  common.apply_zipformer_variants(c, variants)   # zipformer | zipformer_<preset>: the study's encoder
  common.apply_study(c, variants)   # study | study_init: the paper's recipe and budgets
  if "ar_only" in variants:
    c.loss.parallel_fraction = 0.0
  return c
