"""Contrastive audio-language pretraining (CLAP-style two towers), the study's contrastive branch.

  python -m alp_jax.train --config configs/clap.py:tiny --workdir runs/clap_tiny
  alp-train --config alp_jax.configs.clap:tiny --workdir runs/clap_tiny    # the same, by module name
  python -m alp_jax.train --config configs/clap.py:base --workdir gs://.../clap_base --config.data.corpus_dir=...

Variants: tiny (CPU seconds) | demo (the `make demo` recipe: tiny, 2000 steps, no SpecAugment) | small | base (the study's scale: BERT-base text tower, 1024-d heads, fixed
temperature 0.07, sum-reduced InfoNCE over the gathered global batch, gradients clipped at twice the recent median
norm) | sigmoid (SigLIP loss) |
sigmoid_chunked (SigLIP over a device ring: no device holds the global logits) | learnable_temperature |
zipformer (the study's Zipformer audio encoder: preset m, or tiny with tiny) | zipformer_<preset> (m, 768, m_icefall,
l_icefall, tiny; docs/models.md) | study (the paper's recipe: base sizes, Zipformer-M, ScaledAdam lr 0.045 + Eden2 with
parameter averaging, float32, ~5,120 s of audio per step, 600k steps; configs/common.py:apply_study names each
value's source) | study_init (the same for 200k steps from a supervised encoder: --config.model_init=PATH).

  python -m alp_jax.train --config configs/clap.py:study --workdir DIR --config.data.corpus_dir=CORPUS
  python -m alp_jax.train --config configs/clap.py:study,zipformer_768 ...   # the 768-d Zipformer instead
"""
import ml_collections

from alp_jax.configs import common
from alp_jax.models import two_towers

VARIANTS = ("tiny", "demo", "small", "base", "sigmoid", "sigmoid_chunked",
            "learnable_temperature") + common.ZIPFORMER_VARIANTS + common.STUDY_VARIANTS


def get_config(arg=None) -> ml_collections.ConfigDict:
  variants = common.study_variants(common.parse_variants(arg, VARIANTS, __file__))
  c = common.base_config()
  c.model = two_towers.default_config()
  c.loss = ml_collections.ConfigDict(dict(
      kind="contrastive",        # contrastive (softmax InfoNCE) | sigmoid | sigmoid_chunked
      reduction="mean",          # study toolkit: "sum" (over the batch, both directions)
      embedding_regulariser=0.0,  # study toolkit: embed_reg on (weight 1.0)
  ))
  if "demo" in variants:   # the reference small-scale recipe `make demo` trains (docs/representation.md)
    variants.add("tiny")
  if "tiny" in variants:
    common.apply_tiny(c)
    c.model.audio.size = c.model.text.size = "tiny"
    c.model.head.update(hidden_dim=128, embed_dim=64)
    c.model.text.max_tokens = c.data.max_caption_tokens
  if "demo" in variants:
    common.apply_demo(c)
  if "small" in variants:
    c.model.audio.size = c.model.text.size = "small"
    c.model.head.update(hidden_dim=512, embed_dim=256)
    c.batch_size = 64
  if "base" in variants:
    c.model.audio.size = c.model.text.size = "base"
    c.model.audio.dtype = c.model.text.dtype = "bfloat16"
    c.model.audio.attention_impl = c.model.text.attention_impl = "dot_product_attention"
    c.model.audio.scan_layers = c.model.text.scan_layers = True  # one compiled layer (accelerators)
    c.loss.reduction = "sum"
    common.apply_relative_clipping(c)   # a clip that fits the summed loss (docs/objectives.md)
    c.data.crop_seconds = 10.0
    c.data.max_caption_tokens = 32
  common.apply_zipformer_variants(c, variants)   # zipformer | zipformer_<preset>: the study's encoder
  common.apply_study(c, variants)   # study | study_init: the paper's recipe and budgets
  if "sigmoid" in variants:
    c.loss.kind = "sigmoid"
    c.model.logit_bias = True   # the sigmoid losses need the towers' learnable logit bias
  if "sigmoid_chunked" in variants:
    c.loss.kind = "sigmoid_chunked"
    c.model.logit_bias = True
  if "learnable_temperature" in variants:
    c.model.temperature.learnable = True
  return c
