"""Shared Transformer layers: attention, MLP, pre-LayerNorm encoder blocks and stacks.

Dimension letters:
  B batch, T query time (Tq), S key time (Tk), D model width, H heads, K head width,
  F MLP hidden width, L layers (the stacked scan axis).

Conventions every model in alp_jax/models follows:
- Parameters are created through `nnx.with_partitioning` with logical axis names ("embed", "mlp",
  "heads", "kv", "vocab", "mel", "joint", "layers"); the trainer maps them to mesh axes.
  Building a model with these annotations while a mesh is active shards the parameters eagerly
  (flax's default), which needs logical axis rules in scope; `models.build_model` turns eager
  sharding off when no mesh is active, so models also build on a plain CPU.
- `dtype` is the compute dtype (bfloat16 on accelerators), `param_dtype` the storage dtype
  (float32). Softmax and LayerNorm statistics run in float32.
- Masks are boolean, True on real positions. Masked keys are never attended; a query row with no
  valid key (a padded query) yields exact zeros, never NaN.
- Dropout is driven by an explicit `dropout_key` at call time, so modules hold no RNG state and
  the train step stays a pure function of (params, batch, key).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ATTENTION_IMPLS = ("einsum", "dot_product_attention")

# Remat policy names -> what `jax.checkpoint` may keep from the forward pass.
# "none" means no rematerialisation at all; "full" (= "nothing_saveable") recomputes everything.
REMAT_POLICIES: dict[str, Callable[..., Any] | None] = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

dense_init = nnx.initializers.xavier_uniform()
embedding_init = nnx.initializers.normal(stddev=0.02)


def partitioned_param(rngs: nnx.Rngs, initializer: Callable[..., jax.Array], names: tuple,
                      shape: tuple[int, ...], param_dtype: Any) -> nnx.Param:
  """An `nnx.Param` initialised by `initializer` and annotated with logical axis `names`."""
  return nnx.Param(nnx.with_partitioning(initializer, names)(rngs.params(), shape, param_dtype))


def layer_norm(width: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, use_bias: bool = True,
               epsilon: float = 1e-6) -> nnx.LayerNorm:
  """LayerNorm over the last axis with ("embed",)-annotated scale and (unless use_bias=False) bias
  (BERT's epsilon is 1e-12, BART's 1e-5)."""
  return nnx.LayerNorm(
      width, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, use_bias=use_bias,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)),
      rngs=rngs)


def _bias(param: nnx.Param | None, dtype: Any) -> jax.Array:
  """A bias parameter's value in `dtype`, or a zero scalar (broadcasts anywhere) for a layer without biases."""
  return jnp.zeros((), dtype) if param is None else param[...].astype(dtype)


def _time_axis(bias: jax.Array) -> jax.Array:
  """(H,K) head bias -> (H,1,K), to add to (B,H,T,K); a scalar stays a scalar."""
  return bias[:, None, :] if bias.ndim == 2 else bias


def dropout(x: jax.Array, rate: float, key: jax.Array | None, deterministic: bool) -> jax.Array:
  """Inverted dropout; identity when deterministic or rate == 0."""
  if deterministic or rate == 0.0:
    return x
  if key is None:
    raise ValueError("dropout > 0 with deterministic=False needs a dropout_key")
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_key(key: jax.Array | None, num: int) -> list[jax.Array | None]:
  """`num` independent keys from `key`, or `num` Nones when there is no key."""
  if key is None:
    return [None] * num
  return list(jax.random.split(key, num))


def make_attention_mask(query_mask: jax.Array, key_mask: jax.Array,
                        causal: bool = False) -> jax.Array:
  """(B,Tq) and (B,Tk) validity masks -> (B,1,Tq,Tk) attention mask (True = may attend)."""
  mask = query_mask[:, None, :, None] & key_mask[:, None, None, :]  # (B,1,T,S)
  if causal:
    tq, tk = query_mask.shape[1], key_mask.shape[1]
    mask = mask & jnp.tril(jnp.ones((tq, tk), dtype=bool))[None, None]
  return mask


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x (B,T,D) over the valid positions of mask (B,T) -> (B,D); zeros if none are valid."""
  weights = mask.astype(x.dtype)[..., None]  # (B,T,1)
  total = jnp.sum(x * weights, axis=1)  # (B,D)
  count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)  # (B,1)
  return total / count


def block_stack(make_block: Callable[[nnx.Rngs], nnx.Module], depth: int, scan_layers: bool,
                rngs: nnx.Rngs):
  """`depth` blocks: stacked on a leading "layers" axis (for lax.scan) or an nnx.List (unrolled)."""
  if scan_layers:
    make_stacked = nnx.split_rngs(splits=depth)(
        nnx.vmap(make_block, in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"}))
    return make_stacked(rngs)
  return nnx.List([make_block(rngs) for _ in range(depth)])


def sinusoidal_positions(length: int, width: int, max_timescale: float = 10_000.0) -> jax.Array:
  """Fixed sin/cos position table (length, width), float32: sines in the first half, cosines after.

  Channel pair i uses the frequency max_timescale ** (-i / (width/2 - 1)).
  """
  if width % 2:
    raise ValueError(f"sinusoidal positions need an even width, got {width}")
  half = width // 2
  inv_freq = max_timescale ** (-np.arange(half, dtype=np.float64) / max(half - 1, 1))  # (D/2,)
  angles = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]  # (T,D/2)
  return jnp.asarray(np.concatenate([np.sin(angles), np.cos(angles)], axis=1), jnp.float32)


class LearnedPositions(nnx.Module):
  """A learned (max_length, D) position table; `__call__(length)` returns its first rows."""

  def __init__(self, max_length: int, width: int, *, rngs: nnx.Rngs,
               param_dtype: Any = jnp.float32):
    self.max_length = max_length
    self.table = partitioned_param(rngs, embedding_init, (None, "embed"), (max_length, width),
                                   param_dtype)

  def __call__(self, length: int) -> jax.Array:
    if length > self.max_length:
      raise ValueError(f"sequence of {length} positions exceeds max_length={self.max_length}; "
                       "raise the model's max_frames / max_tokens setting")
    return self.table[...][:length]  # (T,D)


class Attention(nnx.Module):
  """Multi-head attention with q/k/v projected straight to (B,H,T,K).

  impl "einsum" spells the attention out (fastest on CPU); "dot_product_attention" calls
  `jax.nn.dot_product_attention`, the fused kernel on GPU. Both give the same numbers.
  `dropout` applies to the attention output (after the output projection) in both impls.
  `use_bias=False` leaves out the four projections' biases (PyTorch's bias=False).
  """

  def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, impl: str = "einsum", dropout: float = 0.0,
               use_bias: bool = True):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    if impl not in ATTENTION_IMPLS:
      raise ValueError(f"unknown attention impl {impl!r}; choose from {ATTENTION_IMPLS}")
    head_dim = width // num_heads
    self.num_heads, self.head_dim = num_heads, head_dim
    self.dtype, self.impl, self.dropout = dtype, impl, dropout
    in_shape, in_names = (width, num_heads, head_dim), ("embed", "heads", "kv")
    zeros = nnx.initializers.zeros_init()
    self.query_kernel = partitioned_param(rngs, dense_init, in_names, in_shape, param_dtype)
    self.key_kernel = partitioned_param(rngs, dense_init, in_names, in_shape, param_dtype)
    self.value_kernel = partitioned_param(rngs, dense_init, in_names, in_shape, param_dtype)
    bias_shape, bias_names = (num_heads, head_dim), ("heads", "kv")
    bias = lambda names, shape: partitioned_param(rngs, zeros, names, shape, param_dtype) if use_bias else None
    self.query_bias = bias(bias_names, bias_shape)
    self.key_bias = bias(bias_names, bias_shape)
    self.value_bias = bias(bias_names, bias_shape)
    self.out_kernel = partitioned_param(rngs, dense_init, ("heads", "kv", "embed"),
                                        (num_heads, head_dim, width), param_dtype)
    self.out_bias = bias(("embed",), (width,))

  @property
  def key_time_axis(self) -> int:
    """The time axis of `project_keys_values`'s arrays: (B,H,S,K) for einsum, (B,S,H,K) otherwise."""
    return 2 if self.impl == "einsum" else 1

  def project_keys_values(self, keys_values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B,S,D) -> projected keys and values, each (B,H,S,K) (einsum) or (B,S,H,K) (fused impl).

    A decoder caches these (see `caption_decoder.DecodeCache`) and passes them to `attend`.
    """
    dtype = self.dtype
    keys_values = keys_values.astype(dtype)
    wk, wv = (w[...].astype(dtype) for w in (self.key_kernel, self.value_kernel))
    bk, bv = (_bias(b, dtype) for b in (self.key_bias, self.value_bias))
    if self.impl == "einsum":
      k = jnp.einsum("bsd,dhk->bhsk", keys_values, wk) + _time_axis(bk)  # (B,H,S,K)
      v = jnp.einsum("bsd,dhk->bhsk", keys_values, wv) + _time_axis(bv)  # (B,H,S,K)
    else:
      k = jnp.einsum("bsd,dhk->bshk", keys_values, wk) + bk  # (B,S,H,K)
      v = jnp.einsum("bsd,dhk->bshk", keys_values, wv) + bv  # (B,S,H,K)
    return k, v

  def attend(self, queries: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
             deterministic: bool = True, dropout_key: jax.Array | None = None) -> jax.Array:
    """Queries (B,T,D) attend to keys and values already projected by `project_keys_values`."""
    dtype = self.dtype
    queries = queries.astype(dtype)
    wq, bq = self.query_kernel[...].astype(dtype), _bias(self.query_bias, dtype)
    wo = self.out_kernel[...].astype(dtype)
    scale = 1.0 / math.sqrt(self.head_dim)
    if self.impl == "einsum":
      q = jnp.einsum("btd,dhk->bhtk", queries, wq) + _time_axis(bq)  # (B,H,T,K)
      logits = jnp.einsum("bhtk,bhsk->bhts", q * scale, k).astype(jnp.float32)  # (B,H,T,S)
      if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
      weights = jax.nn.softmax(logits, axis=-1).astype(dtype)  # (B,H,T,S)
      mixed = jnp.einsum("bhts,bhsk->bhtk", weights, v)  # (B,H,T,K)
      out = jnp.einsum("bhtk,hkd->btd", mixed, wo)  # (B,T,D)
    else:
      q = jnp.einsum("btd,dhk->bthk", queries, wq) + bq  # (B,T,H,K)
      mixed = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)  # (B,T,H,K)
      out = jnp.einsum("bthk,hkd->btd", mixed, wo)  # (B,T,D)
    out = out + _bias(self.out_bias, dtype)
    if mask is not None:
      query_has_keys = jnp.any(mask, axis=-1)[:, 0, :, None]  # (B,T,1)
      out = jnp.where(query_has_keys, out, jnp.zeros_like(out))
    return dropout(out, self.dropout, dropout_key, deterministic)

  def __call__(self, queries: jax.Array, keys_values: jax.Array, mask: jax.Array | None, *,
               deterministic: bool = True, dropout_key: jax.Array | None = None) -> jax.Array:
    """Queries (B,T,D) attend to keys_values (B,S,D) under mask (B,1,T,S) -> (B,T,D)."""
    k, v = self.project_keys_values(keys_values)
    return self.attend(queries, k, v, mask, deterministic=deterministic, dropout_key=dropout_key)


class Mlp(nnx.Module):
  """Linear(D->F) - GELU - dropout - Linear(F->D) - dropout (`use_bias=False`: without the two biases)."""

  def __init__(self, width: int, mlp_dim: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, dropout: float = 0.0, use_bias: bool = True):
    self.dtype, self.dropout = dtype, dropout
    zeros = nnx.initializers.zeros_init()
    self.hidden_kernel = partitioned_param(rngs, dense_init, ("embed", "mlp"), (width, mlp_dim),
                                           param_dtype)
    self.hidden_bias = partitioned_param(rngs, zeros, ("mlp",), (mlp_dim,), param_dtype) if use_bias else None
    self.out_kernel = partitioned_param(rngs, dense_init, ("mlp", "embed"), (mlp_dim, width),
                                        param_dtype)
    self.out_bias = partitioned_param(rngs, zeros, ("embed",), (width,), param_dtype) if use_bias else None

  def __call__(self, x: jax.Array, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> jax.Array:
    dtype = self.dtype
    hidden_key, out_key = split_key(dropout_key, 2)
    hidden = jnp.einsum("btd,df->btf", x.astype(dtype), self.hidden_kernel[...].astype(dtype))
    hidden = jax.nn.gelu(hidden + _bias(self.hidden_bias, dtype), approximate=False)
    hidden = dropout(hidden, self.dropout, hidden_key, deterministic)  # (B,T,F)
    out = jnp.einsum("btf,fd->btd", hidden, self.out_kernel[...].astype(dtype))  # (B,T,D)
    out = out + _bias(self.out_bias, dtype)
    return dropout(out, self.dropout, out_key, deterministic)


class EncoderBlock(nnx.Module):
  """Pre-LayerNorm block: x + Attention(LN(x)), then x + Mlp(LN(x))."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs,
               dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               attention_impl: str = "einsum", dropout: float = 0.0):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.attention_norm = layer_norm(width, **kw)
    self.attention = Attention(width, num_heads, impl=attention_impl, dropout=dropout, **kw)
    self.mlp_norm = layer_norm(width, **kw)
    self.mlp = Mlp(width, mlp_dim, dropout=dropout, **kw)

  def __call__(self, x: jax.Array, mask: jax.Array | None, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """x (B,T,D), mask (B,1,T,T) attention mask -> (B,T,D)."""
    attention_key, mlp_key = split_key(dropout_key, 2)
    normed = self.attention_norm(x)
    x = x + self.attention(normed, normed, mask, deterministic=deterministic,
                           dropout_key=attention_key)
    return x + self.mlp(self.mlp_norm(x), deterministic=deterministic, dropout_key=mlp_key)


class Encoder(nnx.Module):
  """A stack of `depth` EncoderBlocks and a final LayerNorm.

  scan_layers=True stores the blocks stacked along a leading "layers" axis and runs them with
  `jax.lax.scan` (one compiled block, fast compiles for deep stacks); False keeps a list of
  blocks. `remat_policy` names an entry of REMAT_POLICIES ("none" = no rematerialisation).
  """

  def __init__(self, width: int, depth: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs,
               dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               attention_impl: str = "einsum", dropout: float = 0.0, scan_layers: bool = True,
               remat_policy: str = "none"):
    if remat_policy != "none" and remat_policy not in REMAT_POLICIES:
      raise ValueError(f"unknown remat_policy {remat_policy!r}; choose from "
                       f"{('none',) + tuple(REMAT_POLICIES)}")
    self.depth, self.scan_layers, self.remat_policy = depth, scan_layers, remat_policy
    self.dtype = dtype
    block_kw = dict(dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl,
                    dropout=dropout)

    def make_block(block_rngs: nnx.Rngs) -> EncoderBlock:
      return EncoderBlock(width, num_heads, mlp_dim, rngs=block_rngs, **block_kw)

    self.blocks = block_stack(make_block, depth, scan_layers, rngs)
    self.final_norm = layer_norm(width, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def _block_fn(self, graphdef: nnx.GraphDef, attention_mask: jax.Array,
                deterministic: bool) -> Callable:
    def apply_block(x, state, key):
      return nnx.merge(graphdef, state)(x, attention_mask, deterministic=deterministic,
                                        dropout_key=key)
    if self.remat_policy == "none":
      return apply_block
    return jax.checkpoint(apply_block, policy=REMAT_POLICIES[self.remat_policy],
                          prevent_cse=not self.scan_layers)

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None,
               keep_layers: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x (B,T,D), mask (B,T) -> (normed output (B,T,D), out_dict).

    out_dict["pre_norm"] is the last block's output before the final LayerNorm; with
    keep_layers=True, out_dict["layer_i"] holds block i's output (B,T,D), i = 0..depth-1.
    """
    x = x.astype(self.dtype)
    attention_mask = make_attention_mask(mask, mask)  # (B,1,T,T)
    keys = None if dropout_key is None else jax.random.split(dropout_key, self.depth)
    out_dict: dict[str, jax.Array] = {}
    if self.scan_layers:
      graphdef, stacked_state = nnx.split(self.blocks)
      apply_block = self._block_fn(graphdef, attention_mask, deterministic)

      def scan_step(carry, layer):
        state, key = layer
        y = apply_block(carry, state, key)
        return y, (y if keep_layers else None)

      x, layer_outputs = jax.lax.scan(scan_step, x, (stacked_state, keys))
      if keep_layers:
        out_dict.update({f"layer_{i}": layer_outputs[i] for i in range(self.depth)})
    else:
      for i, block in enumerate(self.blocks):
        graphdef, state = nnx.split(block)
        x = self._block_fn(graphdef, attention_mask, deterministic)(
            x, state, None if keys is None else keys[i])
        if keep_layers:
          out_dict[f"layer_{i}"] = x
    out_dict["pre_norm"] = x
    return self.final_norm(x), out_dict
