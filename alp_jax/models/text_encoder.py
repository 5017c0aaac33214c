"""BERT-like text encoder: token embedding, a learned CLS in front, learned positions, Transformer.

Dimension letters: B batch, L caption tokens, V vocabulary, D width.

Input is the data pipeline's caption_tokens (B,L) int32 (caption then EOS then PAD, no BOS/CLS)
and caption_mask (B,L). A learned CLS embedding is prepended (position 0), so the encoder sees
L+1 positions; pooling "cls" (study: BERT [CLS]) takes position 0, "mean" averages the valid
caption tokens (CLS excluded). Differences from BERT: pre-LayerNorm blocks with a final LayerNorm,
no token-type embeddings, no embedding LayerNorm, no pooler dense layer (the study drops it too).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax.models import layers, sizes

POOLINGS = ("cls", "mean")


def default_config() -> ml_collections.ConfigDict:
  """config.model.text (study: BERT-base, 12 layers, 768 wide, CLS pooling, 30 tokens)."""
  cfg = ml_collections.ConfigDict()
  cfg.size = "tiny"  # study: "base"
  cfg.pooling = "cls"  # study: cls | mean
  cfg.max_tokens = 128  # caption tokens the position table covers (CLS excluded); study: 30
  cfg.dropout = 0.0  # BERT: 0.1
  cfg.scan_layers = False  # True on accelerators (base/large configs); see docs/models.md on CPU meshes
  cfg.remat_policy = "none"
  cfg.attention_impl = "einsum"
  cfg.dtype = "float32"
  # A local Hugging Face BertModel folder (config.json, model.safetensors, tokenizer.json): the text tower is then
  # that checkpoint's BERT (alp_jax/models/hf_bert.py), loaded at the first start of training; size, max_tokens,
  # dropout and scan_layers above are the checkpoint's. "" = this module's encoder, random init (our addition;
  # the study starts from bert-base-uncased).
  cfg.pretrained = ""
  cfg.pretrained_arch = ml_collections.ConfigDict()  # filled from the folder's config.json (train/text_init.py)
  return cfg


class TextEncoder(nnx.Module):
  """caption_tokens (B,L) -> pooled caption vector (B,D) and per-token states (B,L+1,D)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, vocab_size: int, rngs: nnx.Rngs):
    if cfg.pooling not in POOLINGS:
      raise ValueError(f"unknown text pooling {cfg.pooling!r}; choose from {POOLINGS}")
    size = sizes.size_settings(cfg.size)
    width = size["width"]
    dtype = sizes.compute_dtype(cfg.dtype)
    self.pooling, self.dropout, self.dtype = cfg.pooling, cfg.dropout, dtype
    self.output_dim = width
    self.token_embedding = layers.partitioned_param(rngs, layers.embedding_init,
                                                    ("vocab", "embed"), (vocab_size, width),
                                                    jnp.float32)
    self.cls_embedding = layers.partitioned_param(rngs, layers.embedding_init, ("embed",),
                                                  (width,), jnp.float32)
    self.positions = layers.LearnedPositions(cfg.max_tokens + 1, width, rngs=rngs)
    self.encoder = layers.Encoder(
        width, size["depth"], size["num_heads"], size["mlp_dim"], rngs=rngs, dtype=dtype,
        attention_impl=cfg.attention_impl, dropout=cfg.dropout, scan_layers=cfg.scan_layers,
        remat_policy=cfg.remat_policy)

  def __call__(self, caption_tokens: jax.Array, caption_mask: jax.Array, *,
               deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    b, length = caption_tokens.shape
    tokens = jnp.take(self.token_embedding[...], caption_tokens, axis=0)  # (B,L,D)
    cls = jnp.broadcast_to(self.cls_embedding[...], (b, 1, tokens.shape[-1]))  # (B,1,D)
    x = jnp.concatenate([cls, tokens], axis=1) + self.positions(length + 1)[None]  # (B,L+1,D)
    mask = jnp.concatenate([jnp.ones((b, 1), bool), caption_mask.astype(bool)], axis=1)
    embed_key, encoder_key = layers.split_key(dropout_key, 2)
    x = layers.dropout(x.astype(self.dtype), self.dropout, embed_key, deterministic)
    states, out_dict = self.encoder(x, mask, deterministic=deterministic, dropout_key=encoder_key)
    states32 = states.astype(jnp.float32)
    if self.pooling == "cls":
      pooled = states32[:, 0]  # (B,D)
    else:
      pooled = layers.masked_mean(states32[:, 1:], caption_mask.astype(bool))  # (B,D)
    out_dict.update(token_states=states, token_mask=mask, pooled=pooled)
    return pooled, out_dict
