"""A BART caption decoder that loads the decoder of a local Hugging Face `BartModel` /
`BartForConditionalGeneration` checkpoint (the study's sister paper aligns a frozen audio encoder to a pretrained
BART decoder and tunes only its cross-attention; nothing is downloaded: the user points at a folder).

Dimension letters: B batch, L caption length, T audio frames, A audio-frame width, D width, V vocabulary,
H heads, Y layers.

  arch = hf_bart.architecture(FOLDER)        # config.json -> the fields below (kept in the run's config)
  decoder = hf_bart.HfBartDecoder(arch, vocab_size=V, audio_width=A, max_len=L, rngs=rngs)
  params = hf_bart.load_params(FOLDER, arch, our_to_hf)   # every parameter but the new ones (see NEW_PARAMS)

It is a drop-in for `caption_decoder.CaptionDecoder`: the same `__call__` (teacher-forced logits, autoregressive
or CapPa parallel rows), `init_cache` / `decode_step` (the key/value cache of alp_jax/models/decoding.py: greedy
and beam search run unchanged) and `parallel_predicts_eos`, so the captioner, the objective, scoring and the
evaluators use it as they use ours.

The forward pass is BART's decoder to float tolerance (tests/test_hf_text.py against `transformers`): token
embeddings (times sqrt(D) if scale_embedding) + learned positions (BART's table, offset 2) -> LayerNorm ->
post-LayerNorm blocks: x = LN(x + SelfAttention(x)), x = LN(x + CrossAttention(x, audio)),
x = LN(x + fc2 GELU(fc1 x)); logits = x E^T + final_logits_bias (the output projection is tied to the token
embeddings, as in BART). The decoder input is our BOS + caption (the tokenizer maps BOS to <s> and EOS to </s>),
the target the caption + EOS; BART's own generation starts from </s> <s>, we start from <s>.

NEW_PARAMS are not in the checkpoint and keep their fresh initialisation: `audio_projection` (a bias-free
(A,D) map when the audio frames are not D wide, as the study toolkit does) and `mask_embedding` (the CapPa
[MASK] input of parallel rows). The study's recipe trains only `blocks/*/cross_attention` (+ its LayerNorm) and
`audio_projection` (configs/lit_pretrained.py freezes the rest through config.optimizer.frozen).
In training, dropout (BART's `dropout`) follows the embedding LayerNorm and every sublayer; attention dropout and
activation dropout are not applied (both 0.0 in bart-base).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from alp_jax.models import caption_decoder, hf_checkpoint, layers, sizes

KIND = "BART"
POSITION_OFFSET = 2   # BartLearnedPositionalEmbedding: position p reads row p + 2
NEW_PARAMS = ("audio_projection", "mask_embedding")
ARCH_KEYS = ("vocab_size", "d_model", "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim",
             "max_position_embeddings", "scale_embedding", "dropout", "tie_word_embeddings")


def architecture(folder: str) -> dict:
  """The decoder's architecture fields of FOLDER/config.json; a clear error for what this decoder cannot run."""
  ckpt = hf_checkpoint.Folder(folder, kind=KIND)
  defaults = {"scale_embedding": False, "dropout": 0.1, "tie_word_embeddings": True}
  arch = {k: ckpt.setting(k, defaults.get(k)) for k in ARCH_KEYS}
  act = ckpt.setting("activation_function", "gelu")
  if act != "gelu":
    raise ValueError(f"{ckpt.path / hf_checkpoint.CONFIG_FILE}: activation_function {act!r}; only 'gelu' "
                     f"(exact, BART's) is supported")
  for flag in ("add_final_layer_norm", "normalize_before"):
    if ckpt.setting(flag, False, required=False):
      raise ValueError(f"{ckpt.path / hf_checkpoint.CONFIG_FILE}: {flag} is set (an mBART-style pre-LN decoder); "
                       f"only BART's post-LayerNorm decoder is supported")
  if arch["d_model"] % arch["decoder_attention_heads"]:
    raise ValueError(f"{ckpt.path / hf_checkpoint.CONFIG_FILE}: d_model {arch['d_model']} is not a multiple of "
                     f"decoder_attention_heads {arch['decoder_attention_heads']}")
  return arch


class HfBartBlock(nnx.Module):
  """Post-LayerNorm decoder block: self-attention, cross-attention to the audio frames, MLP."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               attention_impl: str = "einsum"):
    kw = dict(rngs=rngs, dtype=dtype)
    self.self_attention = layers.Attention(width, num_heads, impl=attention_impl, **kw)
    self.self_attention_norm = layers.layer_norm(width, epsilon=1e-5, **kw)
    self.cross_attention = layers.Attention(width, num_heads, impl=attention_impl, **kw)
    self.cross_attention_norm = layers.layer_norm(width, epsilon=1e-5, **kw)
    self.mlp = layers.Mlp(width, mlp_dim, **kw)
    self.mlp_norm = layers.layer_norm(width, epsilon=1e-5, **kw)

  def __call__(self, x: jax.Array, memory: jax.Array, self_mask: jax.Array, cross_mask: jax.Array,
               dropout_rate: float, deterministic: bool, dropout_key: jax.Array | None) -> jax.Array:
    """x (B,L,D), memory (B,T,D), self_mask (B,1,L,L), cross_mask (B,1,L,T) -> (B,L,D)."""
    self_key, cross_key, mlp_key = layers.split_key(dropout_key, 3)
    drop = lambda y, key: layers.dropout(y, dropout_rate, key, deterministic)
    x = self.self_attention_norm(x + drop(self.self_attention(x, x, self_mask), self_key))
    x = self.cross_attention_norm(x + drop(self.cross_attention(x, memory, cross_mask), cross_key))
    return self.mlp_norm(x + drop(self.mlp(x), mlp_key))

  def decode_step(self, x: jax.Array, self_keys: jax.Array, self_values: jax.Array, cross_keys: jax.Array,
                  cross_values: jax.Array, cross_mask: jax.Array,
                  index: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One cached position for K beams per clip; arguments and results as `caption_decoder.DecoderBlock`'s."""
    batch, beams, width = x.shape
    attention = self.self_attention
    rows = x.reshape(batch * beams, 1, width)  # (R,1,D)
    new_key, new_value = attention.project_keys_values(rows)  # (R,H,1,Dh)
    axis = attention.key_time_axis
    keys = jax.lax.dynamic_update_slice_in_dim(self_keys, new_key, index, axis)  # (R,H,M,Dh)
    values = jax.lax.dynamic_update_slice_in_dim(self_values, new_value, index, axis)
    cache_len = keys.shape[axis]
    visible = jnp.arange(cache_len) <= index  # (M,)
    self_mask = jnp.broadcast_to(visible, (batch * beams, 1, 1, cache_len))  # (R,1,1,M)
    mixed = attention.attend(rows, keys, values, self_mask).reshape(batch, beams, width)  # (B,K,D)
    x = self.self_attention_norm(x + mixed)
    x = self.cross_attention_norm(x + self.cross_attention.attend(x, cross_keys, cross_values, cross_mask))
    return self.mlp_norm(x + self.mlp(x)), new_key, new_value


class HfBartDecoder(nnx.Module):
  """BART's decoder reading audio frames by cross-attention; CaptionDecoder's interface."""

  def __init__(self, arch: dict | ml_collections.ConfigDict, *, vocab_size: int, audio_width: int,
               max_len: int, rngs: nnx.Rngs, parallel_predicts_eos: bool = False, dtype: str = "float32",
               attention_impl: str = "einsum"):
    arch = dict(arch)
    if vocab_size != arch["vocab_size"]:
      raise ValueError(f"the tokenizer has {vocab_size} ids but the BART checkpoint's vocab_size is "
                       f"{arch['vocab_size']}; use the tokenizer.json of the same checkpoint folder")
    if max_len > arch["max_position_embeddings"]:
      raise ValueError(f"captions of {max_len} tokens exceed the BART checkpoint's max_position_embeddings="
                       f"{arch['max_position_embeddings']}; lower data.max_caption_tokens")
    width = arch["d_model"]
    self.vocab_size, self.width, self.depth, self.max_len = vocab_size, width, arch["decoder_layers"], max_len
    self.num_heads, self.attention_impl = arch["decoder_attention_heads"], attention_impl
    self.dtype, self.dropout = sizes.compute_dtype(dtype), float(arch["dropout"])
    self.embed_scale = float(np.sqrt(width)) if arch["scale_embedding"] else 1.0
    self.parallel_predicts_eos = parallel_predicts_eos
    self.token_embedding = layers.partitioned_param(rngs, layers.embedding_init, ("vocab", "embed"),
                                                    (vocab_size, width), jnp.float32)
    self.mask_embedding = layers.partitioned_param(rngs, layers.embedding_init, ("embed",), (width,),
                                                   jnp.float32)
    self.position_table = layers.LearnedPositions(arch["max_position_embeddings"] + POSITION_OFFSET, width,
                                                  rngs=rngs)
    self.embedding_norm = layers.layer_norm(width, epsilon=1e-5, rngs=rngs, dtype=self.dtype)
    if audio_width != width:
      self.audio_projection = layers.partitioned_param(rngs, layers.dense_init, (None, "embed"),
                                                       (audio_width, width), jnp.float32)
    else:
      self.audio_projection = None
    self.blocks = nnx.List([HfBartBlock(width, self.num_heads, arch["decoder_ffn_dim"], rngs=rngs,
                                        dtype=self.dtype, attention_impl=attention_impl)
                            for _ in range(self.depth)])
    self.output_bias = layers.partitioned_param(rngs, nnx.initializers.zeros_init(), ("vocab",),
                                                (vocab_size,), jnp.float32)

  def _positions(self, length: int) -> jax.Array:
    return self.position_table(length + POSITION_OFFSET)[POSITION_OFFSET:]  # (L,D)

  def project_audio(self, audio_frames: jax.Array) -> jax.Array:
    """(B,T,A) audio frames -> (B,T,D) cross-attention memory."""
    audio_frames = audio_frames.astype(self.dtype)
    if self.audio_projection is None:
      return audio_frames
    return jnp.einsum("bta,ad->btd", audio_frames, self.audio_projection[...].astype(self.dtype))

  def embed_inputs(self, caption_tokens: jax.Array, parallel: jax.Array) -> jax.Array:
    """(B,L) caption tokens -> (B,L,D): [BOS] + tokens[:-1] (parallel rows: [MASK]), scaled, + positions, LN."""
    inputs = jnp.take(self.token_embedding[...], caption_decoder.shift_right(caption_tokens), axis=0)  # (B,L,D)
    inputs = jnp.where(parallel[:, None, None], self.mask_embedding[...], inputs) * self.embed_scale
    inputs = inputs + self._positions(caption_tokens.shape[1])[None]
    return self.embedding_norm(inputs.astype(self.dtype))

  def attention_masks(self, caption_tokens: jax.Array, caption_mask: jax.Array, audio_frame_mask: jax.Array,
                      parallel: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(query mask (B,L), self-attention mask (B,1,L,L), cross mask (B,1,L,T)), as CaptionDecoder's."""
    query_mask = caption_decoder.caption_target_mask(caption_tokens, caption_mask, parallel,
                                                     self.parallel_predicts_eos)  # (B,L)
    length = caption_tokens.shape[1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]  # (1,1,L,L)
    self_mask = layers.make_attention_mask(query_mask, query_mask) & (causal | parallel[:, None, None, None])
    cross_mask = layers.make_attention_mask(query_mask, audio_frame_mask.astype(bool))  # (B,1,L,T)
    return query_mask, self_mask, cross_mask

  def __call__(self, caption_tokens: jax.Array, caption_mask: jax.Array, audio_frames: jax.Array,
               audio_frame_mask: jax.Array, parallel: jax.Array | None = None, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """Teacher-forced logits (B,L,V) float32; arguments as `CaptionDecoder.__call__`."""
    if caption_tokens.shape[1] > self.max_len:
      raise ValueError(f"caption of {caption_tokens.shape[1]} tokens exceeds the decoder's max_len={self.max_len}")
    if parallel is None:
      parallel = jnp.zeros(caption_tokens.shape[:1], bool)
    parallel = parallel.astype(bool)
    keys = layers.split_key(dropout_key, self.depth + 1)
    _, self_mask, cross_mask = self.attention_masks(caption_tokens, caption_mask, audio_frame_mask, parallel)
    memory = self.project_audio(audio_frames)  # (B,T,D)
    x = layers.dropout(self.embed_inputs(caption_tokens, parallel), self.dropout, keys[0], deterministic)
    for block, key in zip(self.blocks, keys[1:]):
      x = block(x, memory, self_mask, cross_mask, self.dropout, deterministic, key)
    return self.output_logits(x)

  def output_logits(self, x: jax.Array) -> jax.Array:
    """(...,D) last block outputs -> (...,V) float32 logits through the tied embedding table."""
    kernel = self.token_embedding[...].astype(self.dtype)  # (V,D)
    logits = jnp.einsum("...d,vd->...v", x, kernel, preferred_element_type=jnp.float32)  # (...,V)
    return logits + self.output_bias[...].astype(jnp.float32)

  # Cached decoding (alp_jax.models.decoding), the cache layout of caption_decoder.DecodeCache.

  def init_cache(self, audio_frames: jax.Array, audio_frame_mask: jax.Array, max_len: int,
                 beams: int = 1) -> caption_decoder.DecodeCache:
    """An empty cache for `max_len` positions of `beams` rows per clip (see CaptionDecoder.init_cache)."""
    if max_len > self.max_len:
      raise ValueError(f"decoding {max_len} tokens exceeds the decoder's max_len={self.max_len}")
    memory = self.project_audio(audio_frames)  # (B,T,D)
    projected = [block.cross_attention.project_keys_values(memory) for block in self.blocks]
    cross_keys, cross_values = (jnp.stack(arrays) for arrays in zip(*projected))  # (Y,B,H,T,Dh) each
    batch = audio_frames.shape[0]
    cross_mask = jnp.broadcast_to(audio_frame_mask.astype(bool)[:, None, None, :],
                                  (batch, 1, beams, audio_frames.shape[1]))  # (B,1,K,T)
    rows, head_width = batch * beams, self.width // self.num_heads
    layer_shape = ((rows, self.num_heads, max_len, head_width) if self.attention_impl == "einsum"
                   else (rows, max_len, self.num_heads, head_width))
    self_keys = jnp.zeros((self.depth,) + layer_shape, cross_keys.dtype)  # (Y,R,H,M,Dh)
    return caption_decoder.DecodeCache(self_keys, jnp.zeros_like(self_keys), cross_keys, cross_values,
                                       cross_mask, jnp.zeros((), jnp.int32))

  def decode_step(self, input_tokens: jax.Array,
                  cache: caption_decoder.DecodeCache) -> tuple[jax.Array, caption_decoder.DecodeCache]:
    """(B,K) input tokens at cache.index -> (B,K,V) float32 logits and the updated cache (eval mode)."""
    index = cache.index
    inputs = jnp.take(self.token_embedding[...], input_tokens, axis=0) * self.embed_scale  # (B,K,D)
    position = jax.lax.dynamic_index_in_dim(self._positions(self.max_len), index, keepdims=False)  # (D,)
    x = self.embedding_norm((inputs + position).astype(self.dtype))
    new_columns = []
    for i, block in enumerate(self.blocks):
      x, new_key, new_value = block.decode_step(x, cache.self_keys[i], cache.self_values[i], cache.cross_keys[i],
                                                cache.cross_values[i], cache.cross_mask, index)
      new_columns.append((new_key, new_value))
    new_keys, new_values = (jnp.stack(arrays) for arrays in zip(*new_columns))  # (Y,R,H,1,Dh)
    axis = 1 + (2 if self.attention_impl == "einsum" else 1)
    cache = cache._replace(
        self_keys=jax.lax.dynamic_update_slice_in_dim(cache.self_keys, new_keys, index, axis),
        self_values=jax.lax.dynamic_update_slice_in_dim(cache.self_values, new_values, index, axis),
        index=index + 1)
    return self.output_logits(x), cache


def load_params(folder: str, arch: dict | ml_collections.ConfigDict, our_to_hf: np.ndarray | None) -> dict:
  """{parameter path: float32 array} for every parameter of HfBartDecoder(arch) but NEW_PARAMS.

  Reads the decoder of a BartModel ("decoder.*", "shared.weight") or BartForConditionalGeneration ("model."
  prefix, "final_logits_bias"); `our_to_hf` as in hf_bert.load_params."""
  ckpt = hf_checkpoint.Folder(folder, kind=KIND)
  arch = dict(arch)
  heads, width, vocab = arch["decoder_attention_heads"], arch["d_model"], arch["vocab_size"]
  p = ckpt.prefix("model.", "")
  where = str(ckpt.path)
  embedding = ckpt.tensor(ckpt.first_present(f"{p}decoder.embed_tokens.weight", f"{p}shared.weight"),
                          (vocab, width))
  if not arch["tie_word_embeddings"]:
    raise ValueError(f"{where}: tie_word_embeddings is false; only BART's tied output projection is supported")
  bias = (ckpt.tensor("final_logits_bias").reshape(-1) if ckpt.has("final_logits_bias")
          else np.zeros((vocab,), np.float32))
  out = {
      "token_embedding": hf_checkpoint.vocab_rows(embedding, our_to_hf, where),
      "output_bias": hf_checkpoint.vocab_rows(bias, our_to_hf, where),
      "position_table/table": ckpt.tensor(f"{p}decoder.embed_positions.weight",
                                          (arch["max_position_embeddings"] + POSITION_OFFSET, width)),
  }
  out.update({f"embedding_norm/{k}": v
              for k, v in hf_checkpoint.layer_norm_params(ckpt, f"{p}decoder.layernorm_embedding").items()})
  names = ("q_proj", "k_proj", "v_proj", "out_proj")
  for i in range(arch["decoder_layers"]):
    layer = f"{p}decoder.layers.{i}."
    parts = {
        "self_attention": hf_checkpoint.attention_params(ckpt, layer + "self_attn.", names, heads),
        "self_attention_norm": hf_checkpoint.layer_norm_params(ckpt, layer + "self_attn_layer_norm"),
        "cross_attention": hf_checkpoint.attention_params(ckpt, layer + "encoder_attn.", names, heads),
        "cross_attention_norm": hf_checkpoint.layer_norm_params(ckpt, layer + "encoder_attn_layer_norm"),
        "mlp": hf_checkpoint.mlp_params(ckpt, layer + "fc1", layer + "fc2"),
        "mlp_norm": hf_checkpoint.layer_norm_params(ckpt, layer + "final_layer_norm"),
    }
    out.update({f"blocks/{i}/{part}/{k}": v for part, values in parts.items() for k, v in values.items()})
  return out
