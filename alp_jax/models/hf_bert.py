"""A BERT text encoder that loads a local Hugging Face `BertModel` checkpoint (the study's text tower starts from
bert-base-uncased; nothing is downloaded: the user points at a folder).

Dimension letters: B batch, L caption tokens, V vocabulary, D width, P positions.

  arch = hf_bert.architecture(FOLDER)             # config.json -> the fields below (kept in the run's config)
  encoder = hf_bert.HfBertEncoder(arch, vocab_size=V, pooling="cls", rngs=rngs)
  params = hf_bert.load_params(FOLDER, arch, our_to_hf)   # {"blocks/0/attention/query_kernel": ..., ...}

FOLDER holds config.json and model.safetensors of a BertModel (or BertForMaskedLM / BertForPreTraining: their
"bert." prefix is found; heads and the pooler are not used) and tokenizer.json (alp_jax/data/tokenizer.py).

The forward pass is BERT's, to float tolerance (tests/test_hf_text.py against `transformers`): the caption
tokens (caption, EOS, PAD: the data pipeline's) get our BOS in front, which the tokenizer maps to [CLS] (and EOS
to [SEP]), so the encoder reads [CLS] caption [SEP] [PAD]...; word + position + token-type-0 embeddings, LayerNorm,
then post-LayerNorm blocks: x = LN(x + Attention(x)), x = LN(x + W2 GELU(W1 x)). Pooling "cls" (the study: the
[CLS] state, no pooler dense layer) or "mean" (valid caption tokens). The same call contract as
`text_encoder.TextEncoder`: (caption_tokens, caption_mask) -> (pooled (B,D), out_dict).

Ids: our tokenizer ids put PAD, UNK, BOS, EOS at 0..3 (alp_jax/data/tokenizer.py); `our_to_hf` maps them to the
checkpoint's ids and `load_params` reorders the embedding rows once, so the model runs in our ids.
What differs from `transformers` in training only: dropout (hidden_dropout_prob) is applied after the embedding
LayerNorm and after each sublayer; attention-probability dropout (attention_probs_dropout_prob) is not.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from alp_jax.data.tokenizer import BOS_ID
from alp_jax.models import hf_checkpoint, layers, sizes

KIND = "BERT"
ARCH_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_dropout_prob")


def architecture(folder: str) -> dict:
  """The architecture fields of FOLDER/config.json; a clear error for what this encoder cannot run."""
  ckpt = hf_checkpoint.Folder(folder, kind=KIND)
  arch = {k: ckpt.setting(k, {"type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1}.get(k))
          for k in ARCH_KEYS}
  act = ckpt.setting("hidden_act", "gelu")
  if act != "gelu":
    raise ValueError(f"{ckpt.path / hf_checkpoint.CONFIG_FILE}: hidden_act {act!r}; only 'gelu' (exact, BERT's) "
                     f"is supported")
  position_type = ckpt.setting("position_embedding_type", "absolute")
  if position_type != "absolute":
    raise ValueError(f"{ckpt.path / hf_checkpoint.CONFIG_FILE}: position_embedding_type {position_type!r}; only "
                     f"'absolute' (BERT's learned positions) is supported")
  if arch["hidden_size"] % arch["num_attention_heads"]:
    raise ValueError(f"{ckpt.path / hf_checkpoint.CONFIG_FILE}: hidden_size {arch['hidden_size']} is not a "
                     f"multiple of num_attention_heads {arch['num_attention_heads']}")
  return arch


class HfBertBlock(nnx.Module):
  """Post-LayerNorm block: x = LN(x + Attention(x)); x = LN(x + Mlp(x))."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, *, epsilon: float, rngs: nnx.Rngs,
               dtype: Any = jnp.float32, attention_impl: str = "einsum"):
    kw = dict(rngs=rngs, dtype=dtype)
    self.attention = layers.Attention(width, num_heads, impl=attention_impl, **kw)
    self.attention_norm = layers.layer_norm(width, epsilon=epsilon, **kw)
    self.mlp = layers.Mlp(width, mlp_dim, **kw)
    self.mlp_norm = layers.layer_norm(width, epsilon=epsilon, **kw)

  def __call__(self, x: jax.Array, mask: jax.Array, dropout_rate: float, deterministic: bool,
               dropout_key: jax.Array | None) -> jax.Array:
    """x (B,L,D), mask (B,1,L,L) -> (B,L,D)."""
    attention_key, mlp_key = layers.split_key(dropout_key, 2)
    mixed = layers.dropout(self.attention(x, x, mask), dropout_rate, attention_key, deterministic)
    x = self.attention_norm(x + mixed)
    out = layers.dropout(self.mlp(x), dropout_rate, mlp_key, deterministic)
    return self.mlp_norm(x + out)


class HfBertEncoder(nnx.Module):
  """caption_tokens (B,L) -> pooled caption vector (B,D) and per-token states (B,L+1,D), BERT's numbers."""

  def __init__(self, arch: dict | ml_collections.ConfigDict, *, vocab_size: int, pooling: str = "cls",
               rngs: nnx.Rngs, dtype: str = "float32", attention_impl: str = "einsum"):
    arch = dict(arch)
    if vocab_size != arch["vocab_size"]:
      raise ValueError(f"the tokenizer has {vocab_size} ids but the BERT checkpoint's vocab_size is "
                       f"{arch['vocab_size']}; use the tokenizer.json of the same checkpoint folder")
    if pooling not in ("cls", "mean"):
      raise ValueError(f"unknown text pooling {pooling!r}; choose from ('cls', 'mean')")
    width, compute = arch["hidden_size"], sizes.compute_dtype(dtype)
    epsilon = float(arch["layer_norm_eps"])
    self.pooling, self.dtype, self.output_dim = pooling, compute, width
    self.dropout = float(arch["hidden_dropout_prob"])
    self.max_positions = int(arch["max_position_embeddings"])
    self.token_embedding = layers.partitioned_param(rngs, layers.embedding_init, ("vocab", "embed"),
                                                    (vocab_size, width), jnp.float32)
    self.position_table = layers.LearnedPositions(self.max_positions, width, rngs=rngs)
    self.token_type_embedding = layers.partitioned_param(rngs, layers.embedding_init, ("embed",), (width,),
                                                         jnp.float32)  # BERT's token type 0 (one segment)
    self.embedding_norm = layers.layer_norm(width, epsilon=epsilon, rngs=rngs, dtype=compute)
    self.blocks = nnx.List([
        HfBertBlock(width, arch["num_attention_heads"], arch["intermediate_size"], epsilon=epsilon, rngs=rngs,
                    dtype=compute, attention_impl=attention_impl)
        for _ in range(arch["num_hidden_layers"])])

  def __call__(self, caption_tokens: jax.Array, caption_mask: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    b, length = caption_tokens.shape
    if length + 1 > self.max_positions:
      raise ValueError(f"{length} caption tokens + [CLS] exceed the BERT checkpoint's max_position_embeddings="
                       f"{self.max_positions}; lower data.max_caption_tokens")
    ids = jnp.concatenate([jnp.full((b, 1), BOS_ID, caption_tokens.dtype), caption_tokens], axis=1)  # (B,L+1)
    x = jnp.take(self.token_embedding[...], ids, axis=0)  # (B,L+1,D)
    x = x + self.position_table(length + 1)[None] + self.token_type_embedding[...]
    mask = jnp.concatenate([jnp.ones((b, 1), bool), caption_mask.astype(bool)], axis=1)  # (B,L+1)
    keys = layers.split_key(dropout_key, len(self.blocks) + 1)
    x = layers.dropout(self.embedding_norm(x.astype(self.dtype)), self.dropout, keys[0], deterministic)
    attention_mask = layers.make_attention_mask(mask, mask)  # (B,1,L+1,L+1)
    for block, key in zip(self.blocks, keys[1:]):
      x = block(x, attention_mask, self.dropout, deterministic, key)
    states32 = x.astype(jnp.float32)
    if self.pooling == "cls":
      pooled = states32[:, 0]  # (B,D)
    else:
      pooled = layers.masked_mean(states32[:, 1:], caption_mask.astype(bool))  # (B,D)
    return pooled, {"token_states": x, "token_mask": mask, "pooled": pooled}


def load_params(folder: str, arch: dict | ml_collections.ConfigDict, our_to_hf: np.ndarray | None) -> dict:
  """{parameter path: float32 array} for every parameter of HfBertEncoder(arch), from FOLDER's weights.

  `our_to_hf` (V,): the checkpoint id of each of our token ids (the tokenizer's `our_to_hf`); None keeps the
  checkpoint's order."""
  ckpt = hf_checkpoint.Folder(folder, kind=KIND)
  arch = dict(arch)
  heads, width = arch["num_attention_heads"], arch["hidden_size"]
  p = ckpt.prefix("bert.", "")
  words = ckpt.tensor(f"{p}embeddings.word_embeddings.weight", (arch["vocab_size"], width))
  out = {
      "token_embedding": hf_checkpoint.vocab_rows(words, our_to_hf, str(ckpt.path)),
      "position_table/table": ckpt.tensor(f"{p}embeddings.position_embeddings.weight",
                                          (arch["max_position_embeddings"], width)),
      "token_type_embedding": ckpt.tensor(f"{p}embeddings.token_type_embeddings.weight")[0],
  }
  out.update({f"embedding_norm/{k}": v
              for k, v in hf_checkpoint.layer_norm_params(ckpt, f"{p}embeddings.LayerNorm").items()})
  for i in range(arch["num_hidden_layers"]):
    layer = f"{p}encoder.layer.{i}."
    parts = {
        "attention": hf_checkpoint.attention_params(
            ckpt, layer, ("attention.self.query", "attention.self.key", "attention.self.value",
                          "attention.output.dense"), heads),
        "attention_norm": hf_checkpoint.layer_norm_params(ckpt, layer + "attention.output.LayerNorm"),
        "mlp": hf_checkpoint.mlp_params(ckpt, layer + "intermediate.dense", layer + "output.dense"),
        "mlp_norm": hf_checkpoint.layer_norm_params(ckpt, layer + "output.LayerNorm"),
    }
    out.update({f"blocks/{i}/{part}/{k}": v for part, values in parts.items() for k, v in values.items()})
  return out
