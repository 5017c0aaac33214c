"""Supervised audio tagging on manifest labels: the "supervised initialisation" encoder the study compares
against (theirs: an AudioSet-supervised Zipformer). Train, export, then start ALP from it:

  python -m alp_jax.train --config configs/tagging.py:tiny --workdir runs/tagger_tiny
  python -m alp_jax.export --workdir runs/tagger_tiny --out runs/tagger_encoder
  python -m alp_jax.train --config configs/clap.py:tiny --workdir runs/clap_from_tagger \\
      --config.model_init=runs/tagger_encoder

Variants: tiny | small | base | single_label (softmax cross-entropy instead of multi-label BCE) | zipformer |
zipformer_<preset> (the study's audio encoder, see configs/clap.py).
data.label_task names the label task (demo corpus: sound_type, instrument_family, speaker, domain, ...).
"""
import ml_collections

from alp_jax.configs import common
from alp_jax.models import tagger

VARIANTS = ("tiny", "small", "base", "single_label") + common.ZIPFORMER_VARIANTS


def get_config(arg=None) -> ml_collections.ConfigDict:
  variants = common.parse_variants(arg, VARIANTS, __file__)
  c = common.base_config()
  c.model = tagger.default_config()
  c.data.label_task = "sound_type"
  c.loss = ml_collections.ConfigDict(dict(kind="tagging", multilabel=True))
  if "tiny" in variants:
    common.apply_tiny(c)
    c.model.audio.size = "tiny"
  if "small" in variants:
    c.model.audio.size = "small"
    c.batch_size = 64
  if "base" in variants:
    c.model.audio.size = "base"
    c.model.audio.dtype = "bfloat16"
    c.model.audio.attention_impl = "dot_product_attention"
    c.model.audio.scan_layers = True
    c.data.crop_seconds = 10.0
  common.apply_zipformer_variants(c, variants)   # zipformer | zipformer_<preset>: the study's encoder
  if "single_label" in variants:
    c.loss.multilabel = False
  return c
