"""Caption decoder: a Transformer that reads audio frames by cross-attention and predicts a caption.

Dimension letters:
  B batch, L caption length (tokens), T audio frames, D decoder width, A audio-frame width,
  V vocabulary, H heads.

Two input modes, chosen per example by the boolean `parallel` (B,) (CapPa, Tschannen et al.
2023; the study mixes 25% autoregressive with 75% parallel examples):

- autoregressive (parallel False): the input is [BOS] + caption_tokens[:-1] and self-attention is
  causal, so the logits at position i see only tokens < i. Targets: caption_tokens (caption, EOS).
- parallel prediction (parallel True): every input position is one learned [MASK] embedding and
  self-attention is bidirectional over the valid positions, so each token is predicted from the
  audio (and the caption length) alone. Targets: the caption tokens; with
  `parallel_predicts_eos=False` (the study toolkit's choice) the EOS position is dropped from both
  the input and the targets.

`caption_target_mask` gives the positions whose logits are trained in either mode; the key padding
mask of the self-attention is that same mask. One forward pass handles a mixed batch: inputs and
masks are selected per example with `jnp.where`.

Blocks are pre-LayerNorm by default (`norm="pre"`): x + SelfAttention(LN x), x + CrossAttention(LN x,
audio frames), x + Mlp(LN x), then a final LayerNorm and the output projection (untied by default, as in the
study; optionally tied to the token embedding). `norm="post"` is the study toolkit's PyTorch
nn.TransformerDecoderLayer(norm_first=False): LN(x + SelfAttention x), LN(x + CrossAttention(x, audio frames)),
LN(x + Mlp x), with no final LayerNorm (each block already ends in one); `use_bias=False` (the toolkit's
bias=False) drops the attention, MLP and LayerNorm biases (the vocabulary projection keeps its bias). Positions are sinusoidal (study) or learned (BART).
Logits are float32.

Autoregressive decoding (alp_jax.models.decoding) runs one position at a time with a key/value
cache passed functionally (a `DecodeCache` pytree, not module state, so checkpoints and the
training path never see it):

  cache = decoder.init_cache(audio_frames, audio_frame_mask, max_len, beams)  # audio K/V once
  logits, cache = decoder.decode_step(input_tokens, cache)  # (B,K) tokens -> (B,K,V), next index

`decode_step`'s logits are `__call__`'s at that position for an all-autoregressive batch with an
all-True caption mask (tested to float tolerance); training and teacher-forced scoring use
`__call__`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax.data.tokenizer import BOS_ID, EOS_ID
from alp_jax.models import layers, sizes


def caption_target_mask(caption_tokens: jax.Array, caption_mask: jax.Array, parallel: jax.Array,
                        parallel_predicts_eos: bool = False) -> jax.Array:
  """(B,L) positions that carry a training target: caption_mask, minus EOS for parallel examples.

  With parallel_predicts_eos=True both modes train every position of caption_mask.
  """
  caption_mask = caption_mask.astype(bool)
  if parallel_predicts_eos:
    return caption_mask
  drop_eos = parallel[:, None] & (caption_tokens == EOS_ID)  # (B,L)
  return caption_mask & ~drop_eos


def shift_right(caption_tokens: jax.Array) -> jax.Array:
  """(B,L) caption tokens -> (B,L) teacher-forcing inputs [BOS] + caption_tokens[:-1]."""
  bos = jnp.full(caption_tokens.shape[:1] + (1,), BOS_ID, caption_tokens.dtype)
  return jnp.concatenate([bos, caption_tokens[:, :-1]], axis=1)


NORMS = ("pre", "post")


class DecoderBlock(nnx.Module):
  """Self-attention (causal or bidirectional, by mask), cross-attention, MLP; pre- or post-LN (module doc)."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs,
               dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               attention_impl: str = "einsum", dropout: float = 0.0, norm: str = "pre",
               use_bias: bool = True):
    if norm not in NORMS:
      raise ValueError(f"decoder norm must be one of {NORMS}, got {norm!r}")
    self.post_norm = norm == "post"
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, use_bias=use_bias)
    self.self_attention_norm = layers.layer_norm(width, **kw)
    self.self_attention = layers.Attention(width, num_heads, impl=attention_impl, dropout=dropout,
                                           **kw)
    self.cross_attention_norm = layers.layer_norm(width, **kw)
    self.cross_attention = layers.Attention(width, num_heads, impl=attention_impl, dropout=dropout,
                                            **kw)
    self.mlp_norm = layers.layer_norm(width, **kw)
    self.mlp = layers.Mlp(width, mlp_dim, dropout=dropout, **kw)

  def _residual(self, x: jax.Array, norm: nnx.LayerNorm, sublayer: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Pre-LN: x + sublayer(LN x); post-LN: LN(x + sublayer(x))."""
    if self.post_norm:
      return norm(x + sublayer(x))
    return x + sublayer(norm(x))

  def __call__(self, x: jax.Array, audio_frames: jax.Array, self_mask: jax.Array,
               cross_mask: jax.Array, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """x (B,L,D), audio_frames (B,T,D), self_mask (B,1,L,L), cross_mask (B,1,L,T) -> (B,L,D)."""
    self_key, cross_key, mlp_key = layers.split_key(dropout_key, 3)
    x = self._residual(x, self.self_attention_norm, lambda h: self.self_attention(
        h, h, self_mask, deterministic=deterministic, dropout_key=self_key))
    x = self._residual(x, self.cross_attention_norm, lambda h: self.cross_attention(
        h, audio_frames, cross_mask, deterministic=deterministic, dropout_key=cross_key))
    return self._residual(x, self.mlp_norm, lambda h: self.mlp(h, deterministic=deterministic,
                                                               dropout_key=mlp_key))

  def decode_step(self, x: jax.Array, self_keys: jax.Array, self_values: jax.Array,
                  cross_keys: jax.Array, cross_values: jax.Array, cross_mask: jax.Array,
                  index: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One cached autoregressive position for K beams per clip (eval mode, no dropout).

    Args:
      x: (B,K,D) inputs at position `index`.
      self_keys, self_values: (B*K,H,M,Dh) this layer's cached self-attention keys/values (time
        axis `self_attention.key_time_axis`); positions >= index are not read.
      cross_keys, cross_values: (B,H,T,Dh) the audio frames' projected keys/values (one per clip:
        the K beams of a clip are K queries of one cross-attention).
      cross_mask: (B,1,K,T) valid audio frames.
      index: () int32 position being decoded.

    Returns:
      (B,K,D) block output, and this position's new key and value, each (B*K,H,1,Dh) (einsum
      layout; (B*K,1,H,Dh) for the fused impl), for the caller to write into the cache.
    """
    batch, beams, width = x.shape
    attention = self.self_attention
    new = {}

    def self_attend(h):  # (B,K,D) the sublayer's input -> (B,K,D), caching this position's keys/values
      h = h.reshape(batch * beams, 1, width)  # (R,1,D)
      new_key, new_value = attention.project_keys_values(h)  # (R,H,1,Dh)
      axis = attention.key_time_axis
      keys = jax.lax.dynamic_update_slice_in_dim(self_keys, new_key, index, axis)  # (R,H,M,Dh)
      values = jax.lax.dynamic_update_slice_in_dim(self_values, new_value, index, axis)
      cache_len = keys.shape[axis]
      visible = jnp.arange(cache_len) <= index  # (M,): causal, the positions written so far
      self_mask = jnp.broadcast_to(visible, (batch * beams, 1, 1, cache_len))  # (R,1,1,M)
      new.update(key=new_key, value=new_value)
      return attention.attend(h, keys, values, self_mask).reshape(batch, beams, width)  # (B,K,D)

    x = self._residual(x, self.self_attention_norm, self_attend)
    x = self._residual(x, self.cross_attention_norm, lambda h: self.cross_attention.attend(
        h, cross_keys, cross_values, cross_mask))  # (B,K,D)
    return self._residual(x, self.mlp_norm, self.mlp), new["key"], new["value"]


class DecodeCache(NamedTuple):
  """Everything `CaptionDecoder.decode_step` needs besides the new tokens; a plain pytree.

  Shapes (Y = decoder layers, R = B*K decoded rows, M = cache length (the decode max_len),
  H heads, Dh head width; arrays in the attention impl's layout, shown for einsum):
    self_keys, self_values: (Y,R,H,M,Dh) self-attention keys/values of positions < index.
    cross_keys, cross_values: (Y,B,H,T,Dh) the audio frames' keys/values, computed once per clip.
    cross_mask: (B,1,K,T) bool, valid audio frames (K = beams per clip).
    index: () int32, the next position to decode.
  Beam search reorders the self-attention rows (`reorder_rows`); the cross-attention arrays are per
  clip and never move.
  """
  self_keys: jax.Array
  self_values: jax.Array
  cross_keys: jax.Array
  cross_values: jax.Array
  cross_mask: jax.Array
  index: jax.Array

  def reorder_rows(self, rows: jax.Array) -> "DecodeCache":
    """The cache with self-attention row r taken from row rows[r] (R,) (beam search's parents)."""
    return self._replace(self_keys=jnp.take(self.self_keys, rows, axis=1),
                         self_values=jnp.take(self.self_values, rows, axis=1))


class CaptionDecoder(nnx.Module):
  """Token and [MASK] embeddings + positions, `depth` DecoderBlocks, final LN, vocab projection.

  Defaults are BART-base sized (6 layers, 768 wide, 12 heads, MLP 3072); the study toolkit used 8
  heads. `audio_width` is the width of the audio frames fed to cross-attention; when it differs
  from `width` a bias-free linear map projects the frames first (as the study toolkit does).
  `scan_layers` / `remat_policy` behave as in `layers.Encoder`.
  """

  def __init__(self, vocab_size: int, *, rngs: nnx.Rngs, width: int = 768, depth: int = 6,
               num_heads: int = 12, mlp_dim: int = 3072, audio_width: int | None = None,
               max_len: int = 128, positions: str = "sinusoidal", tie_embeddings: bool = False,
               parallel_predicts_eos: bool = False, dropout: float = 0.1,
               attention_impl: str = "einsum", scan_layers: bool = True,
               remat_policy: str = "none", dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, norm: str = "pre", use_bias: bool = True):
    if positions not in ("sinusoidal", "learned"):
      raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {positions!r}")
    if remat_policy != "none" and remat_policy not in layers.REMAT_POLICIES:
      raise ValueError(f"unknown remat_policy {remat_policy!r}; choose from "
                       f"{('none',) + tuple(layers.REMAT_POLICIES)}")
    self.vocab_size, self.width, self.depth, self.max_len = vocab_size, width, depth, max_len
    self.positions, self.tie_embeddings = positions, tie_embeddings
    self.parallel_predicts_eos = parallel_predicts_eos
    self.dropout, self.scan_layers, self.remat_policy = dropout, scan_layers, remat_policy
    self.dtype, self.attention_impl, self.num_heads = dtype, attention_impl, num_heads
    self.token_embedding = layers.partitioned_param(
        rngs, layers.embedding_init, ("vocab", "embed"), (vocab_size, width), param_dtype)
    self.mask_embedding = layers.partitioned_param(
        rngs, layers.embedding_init, ("embed",), (width,), param_dtype)
    if positions == "learned":
      self.position_table = layers.LearnedPositions(max_len, width, rngs=rngs,
                                                    param_dtype=param_dtype)
    audio_width = width if audio_width is None else audio_width
    if audio_width != width:
      self.audio_projection = layers.partitioned_param(
          rngs, layers.dense_init, (None, "embed"), (audio_width, width), param_dtype)
    else:
      self.audio_projection = None

    block_kw = dict(dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl,
                    dropout=dropout, norm=norm, use_bias=use_bias)

    def make_block(block_rngs: nnx.Rngs) -> DecoderBlock:
      return DecoderBlock(width, num_heads, mlp_dim, rngs=block_rngs, **block_kw)

    self.blocks = layers.block_stack(make_block, depth, scan_layers, rngs)
    # Post-LN blocks end in a LayerNorm already (PyTorch's nn.TransformerDecoder has norm=None by default).
    self.final_norm = (None if norm == "post" else
                       layers.layer_norm(width, rngs=rngs, dtype=dtype, param_dtype=param_dtype))
    if not tie_embeddings:
      self.output_kernel = layers.partitioned_param(
          rngs, layers.dense_init, ("embed", "vocab"), (width, vocab_size), param_dtype)
    self.output_bias = layers.partitioned_param(
        rngs, nnx.initializers.zeros_init(), ("vocab",), (vocab_size,), param_dtype)

  def _position_table(self, length: int) -> jax.Array:
    if self.positions == "learned":
      return self.position_table(length)  # (L,D)
    if length > self.max_len:
      raise ValueError(f"caption of {length} tokens exceeds the decoder's max_len={self.max_len}")
    return layers.sinusoidal_positions(length, self.width)  # (L,D)

  def embed_inputs(self, caption_tokens: jax.Array, parallel: jax.Array) -> jax.Array:
    """(B,L) caption tokens, (B,) parallel -> (B,L,D) decoder inputs with positions added.

    Autoregressive rows embed [BOS] + caption_tokens[:-1]; parallel rows hold the [MASK] embedding
    at every position. Token embeddings are scaled by sqrt(D) with sinusoidal positions (Vaswani et
    al.), unscaled with learned ones (BART).
    """
    table = self.token_embedding[...]
    inputs = jnp.take(table, shift_right(caption_tokens), axis=0)  # (B,L,D)
    masked = jnp.broadcast_to(self.mask_embedding[...], inputs.shape)  # (B,L,D)
    inputs = jnp.where(parallel[:, None, None], masked, inputs)
    if self.positions == "sinusoidal":
      inputs = inputs * math.sqrt(self.width)
    inputs = inputs + self._position_table(caption_tokens.shape[1])[None].astype(inputs.dtype)
    return inputs.astype(self.dtype)

  def attention_masks(self, caption_tokens: jax.Array, caption_mask: jax.Array,
                      audio_frame_mask: jax.Array,
                      parallel: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """-> (query mask (B,L), self-attention mask (B,1,L,L), cross-attention mask (B,1,L,T)).

    Self-attention is causal for autoregressive rows and bidirectional for parallel rows; both only
    attend to valid (target-carrying) positions.
    """
    query_mask = caption_target_mask(caption_tokens, caption_mask, parallel,
                                     self.parallel_predicts_eos)  # (B,L)
    length = caption_tokens.shape[1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]  # (1,1,L,L)
    self_mask = layers.make_attention_mask(query_mask, query_mask)  # (B,1,L,L)
    self_mask = self_mask & (causal | parallel[:, None, None, None])
    cross_mask = layers.make_attention_mask(query_mask, audio_frame_mask.astype(bool))  # (B,1,L,T)
    return query_mask, self_mask, cross_mask

  def _block_fn(self, graphdef: nnx.GraphDef, self_mask: jax.Array, cross_mask: jax.Array,
                audio_frames: jax.Array, deterministic: bool) -> Callable:
    def apply_block(x, state, key):
      return nnx.merge(graphdef, state)(x, audio_frames, self_mask, cross_mask,
                                        deterministic=deterministic, dropout_key=key)
    if self.remat_policy == "none":
      return apply_block
    return jax.checkpoint(apply_block, policy=layers.REMAT_POLICIES[self.remat_policy],
                          prevent_cse=not self.scan_layers)

  def project_audio(self, audio_frames: jax.Array) -> jax.Array:
    """(B,T,A) audio frames -> (B,T,D) cross-attention memory."""
    audio_frames = audio_frames.astype(self.dtype)
    if self.audio_projection is None:
      return audio_frames
    kernel = self.audio_projection[...].astype(self.dtype)
    return jnp.einsum("bta,ad->btd", audio_frames, kernel)  # (B,T,A) x (A,D) -> (B,T,D)

  def __call__(self, caption_tokens: jax.Array, caption_mask: jax.Array, audio_frames: jax.Array,
               audio_frame_mask: jax.Array, parallel: jax.Array | None = None, *,
               deterministic: bool = True, dropout_key: jax.Array | None = None) -> jax.Array:
    """Teacher-forced logits.

    Args:
      caption_tokens: (B,L) int ids, caption then EOS then PAD (no BOS); a caption cut at L has no EOS.
      caption_mask: (B,L) bool, True on real tokens (EOS included).
      audio_frames: (B,T,A) audio encoder output.
      audio_frame_mask: (B,T) bool, True on real frames.
      parallel: (B,) bool, True for parallel-prediction rows; None = all autoregressive.
      deterministic: False enables dropout (needs dropout_key).

    Returns:
      (B,L,V) float32 logits; position i predicts caption_tokens[:, i].
    """
    if parallel is None:
      parallel = jnp.zeros(caption_tokens.shape[:1], bool)
    parallel = parallel.astype(bool)
    embed_key, blocks_key = layers.split_key(dropout_key, 2)
    _, self_mask, cross_mask = self.attention_masks(caption_tokens, caption_mask,
                                                    audio_frame_mask, parallel)
    memory = self.project_audio(audio_frames)  # (B,T,D)
    x = layers.dropout(self.embed_inputs(caption_tokens, parallel), self.dropout, embed_key,
                       deterministic)  # (B,L,D)
    keys = None if blocks_key is None else jax.random.split(blocks_key, self.depth)
    if self.scan_layers:
      graphdef, stacked_state = nnx.split(self.blocks)
      apply_block = self._block_fn(graphdef, self_mask, cross_mask, memory, deterministic)

      def scan_step(carry, layer):
        state, key = layer
        return apply_block(carry, state, key), None

      x, _ = jax.lax.scan(scan_step, x, (stacked_state, keys))
    else:
      for i, block in enumerate(self.blocks):
        graphdef, state = nnx.split(block)
        apply_block = self._block_fn(graphdef, self_mask, cross_mask, memory, deterministic)
        x = apply_block(x, state, None if keys is None else keys[i])
    return self.output_logits(x)

  def output_logits(self, x: jax.Array) -> jax.Array:
    """(B,L,D) last block outputs -> final LayerNorm (pre-LN) -> (B,L,V) float32 logits."""
    if self.final_norm is not None:
      x = self.final_norm(x)  # (B,L,D)
    if self.tie_embeddings:
      kernel = self.token_embedding[...].astype(self.dtype)  # (V,D)
      logits = jnp.einsum("bld,vd->blv", x, kernel,
                          preferred_element_type=jnp.float32)  # (B,L,D) x (V,D) -> (B,L,V)
    else:
      kernel = self.output_kernel[...].astype(self.dtype)  # (D,V)
      logits = jnp.einsum("bld,dv->blv", x, kernel,
                          preferred_element_type=jnp.float32)  # (B,L,D) x (D,V) -> (B,L,V)
    return logits + self.output_bias[...].astype(jnp.float32)

  # Cached autoregressive decoding (alp_jax.models.decoding). Equal to `__call__` with every row
  # autoregressive and an all-True caption mask: position i then sees [BOS] + tokens[:i] only.

  def init_cache(self, audio_frames: jax.Array, audio_frame_mask: jax.Array, max_len: int,
                 beams: int = 1) -> DecodeCache:
    """An empty cache for decoding `max_len` positions of `beams` rows per clip.

    Args:
      audio_frames: (B,T,A) audio encoder output; its cross-attention keys and values are computed
        here, once per clip and layer.
      audio_frame_mask: (B,T) bool.
      max_len: static number of positions (the cache length M); at most the decoder's max_len.
      beams: K rows decoded per clip (1 for greedy); row b*K + k is beam k of clip b.
    """
    if max_len > self.max_len:
      raise ValueError(f"decoding {max_len} tokens exceeds the decoder's max_len={self.max_len}; "
                       "lower the decode max_len (config.data.max_caption_tokens)")
    memory = self.project_audio(audio_frames)  # (B,T,D)
    if self.scan_layers:
      graphdef, stacked_state = nnx.split(self.blocks)
      cross_keys, cross_values = jax.lax.map(
          lambda state: nnx.merge(graphdef, state).cross_attention.project_keys_values(memory),
          stacked_state)  # (Y,B,H,T,Dh) each
    else:
      projected = [block.cross_attention.project_keys_values(memory) for block in self.blocks]
      cross_keys, cross_values = (jnp.stack(arrays) for arrays in zip(*projected))
    batch = audio_frames.shape[0]
    # An all-True query mask (as in uncached decoding) leaves the frame mask.
    cross_mask = jnp.broadcast_to(audio_frame_mask.astype(bool)[:, None, None, :],
                                  (batch, 1, beams, audio_frames.shape[1]))  # (B,1,K,T)
    # The self-attention cache has the layout of one projected (R,M,D) sequence.
    rows, heads = batch * beams, self.num_heads
    head_width = self.width // heads
    layer_shape = ((rows, heads, max_len, head_width) if self.attention_impl == "einsum"
                   else (rows, max_len, heads, head_width))
    self_keys = jnp.zeros((self.depth,) + layer_shape, cross_keys.dtype)  # (Y,R,H,M,Dh)
    return DecodeCache(self_keys, jnp.zeros_like(self_keys), cross_keys, cross_values, cross_mask,
                       jnp.zeros((), jnp.int32))

  def embed_step(self, input_tokens: jax.Array, index: jax.Array) -> jax.Array:
    """(B,K) input tokens at position `index` ([BOS] at 0, else the previous token) -> (B,K,D).

    The same embedding as `embed_inputs` gives that position.
    """
    table = self.token_embedding[...]
    inputs = jnp.take(table, input_tokens, axis=0)  # (B,K,D)
    if self.positions == "sinusoidal":
      inputs = inputs * math.sqrt(self.width)
    position = jax.lax.dynamic_index_in_dim(self._position_table(self.max_len), index,
                                            keepdims=False)  # (D,)
    return (inputs + position.astype(inputs.dtype)).astype(self.dtype)

  def decode_step(self, input_tokens: jax.Array,
                  cache: DecodeCache) -> tuple[jax.Array, DecodeCache]:
    """One cached decoding position: (B,K) input tokens at cache.index -> (B,K,V) float32 logits of
    the token at that position, and the cache with that position's keys and values written.

    The logits equal `__call__`'s at position cache.index for the sequences fed so far (up to
    float rounding). Eval mode: no dropout.
    """
    index = cache.index
    x = self.embed_step(input_tokens, index)  # (B,K,D)
    per_layer = (cache.self_keys, cache.self_values, cache.cross_keys, cache.cross_values)
    if self.scan_layers:
      graphdef, stacked_state = nnx.split(self.blocks)

      def layer_step(x, layer):
        state, *arrays = layer
        x, new_key, new_value = nnx.merge(graphdef, state).decode_step(
            x, *arrays, cache.cross_mask, index)
        return x, (new_key, new_value)

      x, (new_keys, new_values) = jax.lax.scan(layer_step, x, (stacked_state,) + per_layer)
    else:
      new_columns = []
      for i, block in enumerate(self.blocks):
        x, new_key, new_value = block.decode_step(x, *(a[i] for a in per_layer), cache.cross_mask,
                                                  index)
        new_columns.append((new_key, new_value))
      new_keys, new_values = (jnp.stack(arrays) for arrays in zip(*new_columns))  # (Y,R,H,1,Dh)
    axis = 1 + (2 if self.attention_impl == "einsum" else 1)  # the layer axis, then (R,H,M,Dh)
    cache = cache._replace(
        self_keys=jax.lax.dynamic_update_slice_in_dim(cache.self_keys, new_keys, index, axis),
        self_values=jax.lax.dynamic_update_slice_in_dim(cache.self_values, new_values, index, axis),
        index=index + 1)
    return self.output_logits(x), cache



def default_config() -> ml_collections.ConfigDict:
  """config.model.decoder; study values in the comments."""
  cfg = ml_collections.ConfigDict()
  cfg.size = "base"  # width / heads / MLP from models/sizes.py; base = BART-base (768, 12, 3072)
  cfg.depth = -1  # -1: half the size's depth (base -> 6 = BART-base; study: 6, text encoder 12)
  cfg.num_heads = -1  # -1: the size's heads (base -> 12 = BART-base); study toolkit: 8
  cfg.max_len = 128  # longest caption (tokens, EOS included); study toolkit: 128
  cfg.positions = "sinusoidal"  # study toolkit: sinusoidal | learned (BART)
  cfg.tie_embeddings = False  # study toolkit: untied output projection
  cfg.parallel_predicts_eos = False  # study toolkit: parallel rows predict the caption without EOS
  cfg.dropout = 0.1  # study toolkit: 0.1
  cfg.norm = "pre"  # pre-LN (ours: stabler at depth, no warmup sensitivity) | post (study toolkit: norm_first=False)
  cfg.use_bias = True  # attention/MLP/LayerNorm biases; study toolkit: False (bias=False)
  cfg.scan_layers = False  # True on accelerators (base/large configs); see docs/models.md on CPU meshes
  cfg.remat_policy = "none"
  cfg.attention_impl = "einsum"  # einsum (CPU) | dot_product_attention (fused on GPU)
  cfg.dtype = "float32"  # compute dtype; "bfloat16" on accelerators (params stay float32)
  # A local Hugging Face BART folder (config.json, model.safetensors, tokenizer.json): the decoder is then that
  # checkpoint's (alp_jax/models/hf_bart.py), loaded at the first start of training; size, depth, num_heads,
  # positions, tie_embeddings, dropout and scan_layers above are the checkpoint's. "" = this module's decoder.
  cfg.pretrained = ""
  cfg.pretrained_arch = ml_collections.ConfigDict()  # filled from the folder's config.json (train/text_init.py)
  return cfg


def decoder_from_config(cfg: ml_collections.ConfigDict, *, vocab_size: int, audio_width: int,
                        rngs: nnx.Rngs) -> CaptionDecoder:
  """A CaptionDecoder from config.model.decoder (see `default_config`)."""
  size = sizes.size_settings(cfg.size)
  depth = cfg.depth if cfg.depth > 0 else max(size["depth"] // 2, 1)
  num_heads = cfg.num_heads if cfg.num_heads > 0 else size["num_heads"]
  return CaptionDecoder(
      vocab_size, rngs=rngs, width=size["width"], depth=depth, num_heads=num_heads,
      mlp_dim=size["mlp_dim"], audio_width=audio_width, max_len=cfg.max_len,
      positions=cfg.positions, tie_embeddings=cfg.tie_embeddings,
      parallel_predicts_eos=cfg.parallel_predicts_eos, dropout=cfg.dropout,
      attention_impl=cfg.attention_impl, scan_layers=cfg.scan_layers,
      remat_policy=cfg.remat_policy, dtype=sizes.compute_dtype(cfg.dtype),
      norm=cfg.get("norm", "pre"), use_bias=cfg.get("use_bias", True))
