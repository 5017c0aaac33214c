"""Hybrid (CoCa-style) pretraining: one audio encoder, a contrastive text tower and a caption decoder;
loss = contrastive_weight * contrastive + caption_weight * captioning. The study trains the two objectives
separately; this is our extension.

Default weights, derived from the reductions (docs/objectives.md, "Hybrid"): both terms are per-unit means (the
contrastive one per example, averaged over both directions; the caption one per target token), and the contrastive
logits are similarities divided by the temperature tau, so its gradient carries a factor 1/tau that the caption
logits do not: contrastive_weight = tau (0.07 softmax, 0.1 sigmoid), caption_weight = 1. (With clap:base's summed
loss and 1:1 weights the contrastive gradient was 2B / tau times the caption one.)

  python -m alp_jax.train --config configs/hybrid.py:tiny --workdir runs/hybrid_tiny

Variants: tiny | demo | small | base (both towers and the decoder, as in clap.py and cappa.py) | sigmoid |
sigmoid_chunked (the contrastive term's loss) | learnable_temperature | ar_only (no parallel caption rows) |
zipformer | zipformer_<preset> (the study's audio encoder, see configs/clap.py).
"""
import ml_collections

from alp_jax.configs import cappa
from alp_jax.configs import clap
from alp_jax.configs import common
from alp_jax.models import hybrid


VARIANTS = ("tiny", "demo", "small", "base", "sigmoid", "sigmoid_chunked", "learnable_temperature",
            "ar_only") + common.ZIPFORMER_VARIANTS + common.STUDY_VARIANTS   # zipformer*: the audio encoder, through clap.py


def get_config(arg=None) -> ml_collections.ConfigDict:
  variants = common.study_variants(common.parse_variants(arg, VARIANTS, __file__))
  contrastive = clap.get_config(",".join(v for v in variants if v in clap.VARIANTS))
  captioning = cappa.get_config(",".join(v for v in variants if v in cappa.VARIANTS))
  c, towers = contrastive, contrastive.model   # keep the towers' settings: c.model is replaced next
  c.model = hybrid.default_config()
  for field in ("audio", "text", "head", "logit_bias", "temperature"):
    c.model[field] = towers[field]
  c.model.decoder = captioning.model.decoder
  c.loss = ml_collections.ConfigDict(dict(
      kind="hybrid",
      contrastive_kind="softmax",   # softmax | sigmoid | sigmoid_chunked
      reduction="mean",             # per-example mean, like the caption term's per-token mean (not clap:base's sum)
      contrastive_weight=c.model.temperature.init,   # = tau: balances the terms' gradients (see below)
      caption_weight=1.0,
      parallel_fraction=captioning.loss.parallel_fraction,
      label_smoothing=captioning.loss.label_smoothing,
  ))
  for kind in ("sigmoid", "sigmoid_chunked"):
    if kind in variants:
      c.loss.contrastive_kind = kind
      c.loss.contrastive_weight = c.model.sigmoid.temperature_init
  if "base" in variants:   # the decoder's captions: the study toolkit's 128 tokens (cappa.py), not clap's 32
    c.data.max_caption_tokens = captioning.data.max_caption_tokens
    c.model.text.max_tokens = max(c.model.text.max_tokens, c.data.max_caption_tokens)
  return c
