"""The parts of a Zipformer layer (Yao et al. 2024, "Zipformer"; k2-fsa icefall `zipformer/zipformer.py`,
`scaling.py`), written for JAX/NNX with padding masks. Assembled in alp_jax/models/zipformer.py.

Dimension letters:
  B batch, T frames (at the stack's own rate), D the stack's width, H heads, Q query/key head width,
  V value head width, P positional head width, E positional-encoding width (pos_dim), F feed-forward width,
  C NonlinAttention hidden width (3D/4), K depthwise-convolution kernel, R down/upsampling factor.

Everything is batch-first (B,T,D); icefall is time-first. Masks are boolean, True on valid frames. The rule that
makes padding harmless: whatever mixes frames (attention weights and the values they mix, convolutions,
down-sampling) first replaces padded frames by zeros with `jnp.where` (never a multiply: 0 * NaN is NaN), so
neither the amount of padding nor any value inside it, NaN included, reaches a valid frame (tests/test_zipformer.py
feeds NaN padding to a stack and to the whole encoder).

What is here and how it maps to icefall:
  ParamKeys                 the per-parameter random keys (see its docstring for why not nnx.Rngs directly)
  swoosh_l / swoosh_r       the activations (forward formula; icefall's custom backward only saves memory)
  limit_param_value         gradient-only clamp icefall applies to BiasNorm log-scales and bypass scales (train)
  scale_grad                identity forward, gradient times alpha (Conv2dSubsampling's first conv)
  Dense                     nn.Linear / ScaledLinear (torch's uniform init, times `initial_scale`)
  BiasNorm                  x * exp(log_scale) / rms(x - bias)
  Bypass                    BypassModule: orig + (x - orig) * scale, scale learned per channel
  downsample / upsample     SimpleDownsample (softmax-weighted sum of R frames) / SimpleUpsample (repeat)
  compact_rel_positions     CompactRelPositionalEncoding's table for offsets -(T-1)..T-1
  relative_scores           the relative-position term of the attention scores (icefall's as_strided shift)
  RelPositionAttentionWeights, SelfAttention, NonlinAttention, ConvolutionModule, FeedforwardModule
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alp_jax.models import layers

MASKED_SCORE = -1e4  # icefall fills masked scores with -1000; any large negative gives the same softmax


class ParamKeys:
  """`.params()` -> a fresh key per parameter, split from one key drawn from an `nnx.Rngs`; passed where the parts
  take `rngs` (they only call `rngs.params()`).

  Why: flax 0.12's `nnx.Rngs` bumps its counter through `Variable.__setitem__`, which under a trace (eval_shape, a
  jitted init) asks the tracer for `.sharding` and so formats an error message over the whole trace so far, on
  every call: quadratic in the number of parameters (12 s to trace Zipformer-M's ~900 here, 1.5 s with this).
  """

  def __init__(self, rngs: nnx.Rngs):
    self._key = rngs.params()

  def params(self) -> jax.Array:
    self._key, key = jax.random.split(self._key)
    return key


def zero_padding(x: jax.Array, mask: jax.Array) -> jax.Array:
  """(B,T,...) with the frames where mask (B,T) is False replaced by zeros (NaN-safe)."""
  return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, jnp.zeros((), x.dtype))


def swoosh_l(x: jax.Array) -> jax.Array:
  """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035."""
  return jax.nn.softplus(x - 4.0) - 0.08 * x - 0.035


def swoosh_r(x: jax.Array) -> jax.Array:
  """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687 (zero at x = 0)."""
  return jax.nn.softplus(x - 1.0) - 0.08 * x - 0.313261687


def limit_param_value(x: jax.Array, low: float, high: float) -> jax.Array:
  """Identity forward; backward flips the gradient's sign where it would push x further outside [low, high]."""

  @jax.custom_vjp
  def limit(v):
    return v

  def forward(v):
    return v, v

  def backward(v, grad):
    grad = jnp.where((grad > 0) & (v < low), -grad, grad)   # descent would lower v further below low
    grad = jnp.where((grad < 0) & (v > high), -grad, grad)  # descent would raise v further above high
    return (grad,)

  limit.defvjp(forward, backward)
  return limit(x)


def scale_grad(x: jax.Array, alpha: float) -> jax.Array:
  """Identity forward, gradient scaled by alpha."""
  return alpha * x + jax.lax.stop_gradient((1.0 - alpha) * x)


def _uniform(bound: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Dense(nnx.Module):
  """x (..., I) -> (..., *out_shape): icefall's nn.Linear (initial_scale=None) or ScaledLinear(initial_scale).

  The kernel is (I, *out_shape) with logical names `names` (one per kernel axis); the bias has the names of the
  output axes. nn.Linear draws kernel and bias from U(+-1/sqrt(I)); ScaledLinear multiplies the kernel by
  initial_scale and draws the bias from U(+-0.1 initial_scale).
  """

  def __init__(self, in_dim: int, out_shape: Sequence[int], names: tuple, *, rngs: nnx.Rngs,
               initial_scale: float | None = None, bias: bool = True, dtype: Any = jnp.float32):
    out_shape = tuple(out_shape)
    self.dtype, self.out_rank = dtype, len(out_shape)
    scale = 1.0 if initial_scale is None else initial_scale
    self.kernel = layers.partitioned_param(rngs, _uniform(scale / math.sqrt(in_dim)), names,
                                           (in_dim,) + out_shape, jnp.float32)
    self.has_bias = bias
    if bias:
      bias_bound = 1.0 / math.sqrt(in_dim) if initial_scale is None else 0.1 * initial_scale
      self.bias = layers.partitioned_param(rngs, _uniform(bias_bound), names[1:], out_shape, jnp.float32)

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...].astype(self.dtype)
    out = jnp.tensordot(x.astype(self.dtype), kernel, axes=1)  # (...,I) x (I,*O) -> (...,*O)
    if self.has_bias:
      out = out + self.bias[...].astype(self.dtype)
    return out


class BiasNorm(nnx.Module):
  """x * exp(log_scale) / sqrt(mean((x - bias)^2)) over the last axis; statistics in float32.

  In training, log_scale's gradient is limited to keep it in [-1.5, 1.5] (icefall's limit_param_value).
  """

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.log_scale = layers.partitioned_param(rngs, nnx.initializers.ones_init(), (), (), jnp.float32)
    self.bias = layers.partitioned_param(rngs, nnx.initializers.normal(1e-4), ("embed",), (width,), jnp.float32)

  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    log_scale = self.log_scale[...]
    if not deterministic:
      log_scale = limit_param_value(log_scale, -1.5, 1.5)
    x32 = x.astype(jnp.float32)
    mean_square = jnp.mean(jnp.square(x32 - self.bias[...]), axis=-1, keepdims=True)  # (B,T,1)
    return (x32 * jax.lax.rsqrt(mean_square) * jnp.exp(log_scale)).astype(x.dtype)


class Bypass(nnx.Module):
  """orig + (x - orig) * scale, scale (D,) learned (init 0.5); in training its gradient keeps it in [0.2, 1]
  (icefall's scale_min schedule ends at 0.2 after 20k batches; its randomised layer skipping is not done)."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.scale = layers.partitioned_param(rngs, nnx.initializers.constant(0.5), ("embed",), (width,), jnp.float32)

  def __call__(self, orig: jax.Array, x: jax.Array, deterministic: bool = True) -> jax.Array:
    scale = self.scale[...]
    if not deterministic:
      scale = limit_param_value(scale, 0.2, 1.0)
    return orig + (x - orig) * scale.astype(x.dtype)


class DownsampleWeights(nnx.Module):
  """SimpleDownsample's parameter: R logits whose softmax weighs the R frames of a group (init: equal)."""

  def __init__(self, factor: int, *, rngs: nnx.Rngs):
    self.factor = factor
    self.logits = layers.partitioned_param(rngs, nnx.initializers.zeros_init(), (None,), (factor,), jnp.float32)

  def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    return downsample(x, mask, self.logits[...])


def downsample(x: jax.Array, mask: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(B,T,D), (B,T) -> (B,ceil(T/R),D), (B,ceil(T/R)): per group of R frames, the softmax(logits)-weighted sum of
  its valid frames, the weights renormalised over them; a group is valid if any of its frames is.

  With every frame valid this is icefall's SimpleDownsample except in a last, partial group, where icefall
  repeats the last frame (its weight goes to that frame) and here the present frames share it.
  """
  factor = logits.shape[0]
  b, t, d = x.shape
  groups = -(-t // factor)
  pad = groups * factor - t
  x = jnp.pad(x, ((0, 0), (0, pad), (0, 0))).reshape(b, groups, factor, d)
  mask = jnp.pad(mask, ((0, 0), (0, pad))).reshape(b, groups, factor)
  weights = jnp.where(mask, jax.nn.softmax(logits.astype(jnp.float32))[None, None, :], 0.0)  # (B,G,R)
  weights = weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-30)
  x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))  # a padded frame's value never enters (0 * NaN would)
  out = jnp.einsum("bgrd,bgr->bgd", x, weights.astype(x.dtype))
  return out, jnp.any(mask, axis=-1)


def upsample(x: jax.Array, factor: int, length: int) -> jax.Array:
  """(B,G,D) -> (B,length,D): each frame repeated `factor` times (SimpleUpsample), cut to `length`."""
  return jnp.repeat(x, factor, axis=1)[:, :length]


def compact_rel_positions(length: int, dim: int, length_factor: float = 1.0) -> np.ndarray:
  """CompactRelPositionalEncoding: (2T-1, E) float32 for offsets -(T-1) .. T-1 (row n is offset n - (T-1)).

  Offsets are log-compressed beyond sqrt(E), mapped to (-pi/2, pi/2) by atan, then expanded as cos/sin at
  frequencies 1 .. E/2 (cos in even channels, sin in odd ones); the last channel is 1 (a bias).
  """
  if dim % 2:
    raise ValueError(f"the Zipformer's pos_dim must be even, got {dim}")
  offsets = np.arange(-(length - 1), length, dtype=np.float64)[:, None]  # (2T-1,1)
  freqs = 1.0 + np.arange(dim // 2, dtype=np.float64)  # (E/2,)
  compression = dim ** 0.5
  compressed = compression * np.sign(offsets) * (np.log(np.abs(offsets) + compression) - np.log(compression))
  angle = np.arctan(compressed / (length_factor * dim / (2.0 * math.pi)))
  table = np.zeros((2 * length - 1, dim))
  table[:, 0::2] = np.cos(angle * freqs)
  table[:, 1::2] = np.sin(angle * freqs)
  table[:, -1] = 1.0
  return table.astype(np.float32)


def relative_scores(pos_queries: jax.Array, pos_keys: jax.Array) -> jax.Array:
  """(B,H,T,P) positional queries and (2T-1,H,P) projected offsets -(T-1)..T-1 -> (B,H,T,T) scores where
  [i, j] = pos_queries[i] . pos_keys[offset j - i] (icefall's relative shift, done as a gather)."""
  t = pos_queries.shape[2]
  by_offset = jnp.einsum("bhtp,nhp->bhtn", pos_queries, pos_keys)  # (B,H,T,2T-1)
  index = (t - 1) - np.arange(t)[:, None] + np.arange(t)[None, :]  # (T,T): row i, column j -> n
  return jnp.take_along_axis(by_offset, jnp.asarray(index)[None, None], axis=-1)


class RelPositionAttentionWeights(nnx.Module):
  """Attention weights (B,H,T,T) from content (q.k, no 1/sqrt(Q): the query/key init carries Q^-1/4) plus
  relative position (p . proj(pos_table)); masked keys get zero weight. Computed once per layer and shared by
  its NonlinAttention (head 0) and both SelfAttentions."""

  def __init__(self, width: int, pos_dim: int, num_heads: int, query_head_dim: int, pos_head_dim: int, *,
               rngs: nnx.Rngs, dtype: Any = jnp.float32, pos_dropout: float = 0.0):
    in_scale = query_head_dim ** -0.25
    names = ("embed", "heads", "kv")
    kw = dict(rngs=rngs, dtype=dtype)
    # icefall's one in_proj (D -> (2Q+P)H), kept as three kernels so each has its own axes.
    self.query = Dense(width, (num_heads, query_head_dim), names, initial_scale=in_scale, **kw)
    self.key = Dense(width, (num_heads, query_head_dim), names, initial_scale=in_scale, **kw)
    self.pos_query = Dense(width, (num_heads, pos_head_dim), names, initial_scale=in_scale, **kw)
    self.pos_proj = Dense(pos_dim, (num_heads, pos_head_dim), (None, "heads", "kv"), initial_scale=0.05,
                          bias=False, **kw)
    self.pos_dim, self.pos_dropout, self.dtype = pos_dim, pos_dropout, dtype

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> jax.Array:
    t = x.shape[1]
    q = jnp.einsum("bthq->bhtq", self.query(x))  # (B,H,T,Q)
    k = jnp.einsum("bthq->bhtq", self.key(x))  # (B,H,T,Q)
    p = jnp.einsum("bthp->bhtp", self.pos_query(x))  # (B,H,T,P)
    table = jnp.asarray(compact_rel_positions(t, self.pos_dim))  # (2T-1,E)
    table = layers.dropout(table, self.pos_dropout, dropout_key, deterministic)
    pos_keys = self.pos_proj(table)  # (2T-1,H,P)
    scores = jnp.einsum("bhtq,bhsq->bhts", q, k) + relative_scores(p, pos_keys)  # (B,H,T,T)
    scores = jnp.where(mask[:, None, None, :], scores.astype(jnp.float32), MASKED_SCORE)
    return jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # (B,H,T,S)


class SelfAttention(nnx.Module):
  """Values (B,H,T,V) mixed by given attention weights, then projected back to D (padded frames' values zeroed)."""

  def __init__(self, width: int, num_heads: int, value_head_dim: int, *, rngs: nnx.Rngs,
               dtype: Any = jnp.float32):
    self.value = Dense(width, (num_heads, value_head_dim), ("embed", "heads", "kv"), rngs=rngs, dtype=dtype)
    self.out = Dense(num_heads * value_head_dim, (width,), (None, "embed"), initial_scale=0.05,
                     rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    v = jnp.einsum("bthv->bhtv", zero_padding(self.value(x), mask))  # (B,H,T,V)
    mixed = jnp.einsum("bhts,bhsv->bthv", weights, v)  # (B,T,H,V)
    return self.out(mixed.reshape(mixed.shape[:2] + (-1,)))  # (B,T,D)


class NonlinAttention(nnx.Module):
  """in_proj -> (s, x, y); x * tanh(s), padded frames zeroed, mixed over time by head 0's attention weights; times
  y; out_proj."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype)
    self.gate = Dense(width, (hidden,), ("embed", "mlp"), **kw)  # icefall's in_proj, thirds s / x / y
    self.value = Dense(width, (hidden,), ("embed", "mlp"), **kw)
    self.multiplier = Dense(width, (hidden,), ("embed", "mlp"), **kw)
    self.out = Dense(hidden, (width,), ("mlp", "embed"), initial_scale=0.05, **kw)

  def __call__(self, x: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    hidden = zero_padding(self.value(x) * jnp.tanh(self.gate(x)), mask)  # (B,T,C)
    hidden = jnp.einsum("bts,bsc->btc", weights[:, 0], hidden)  # head 0's weights (B,T,S)
    return self.out(hidden * self.multiplier(x))  # (B,T,D)


class ConvolutionModule(nnx.Module):
  """in_proj -> x * sigmoid(gate) -> padded frames zeroed -> depthwise conv over time (kernel K, 'same')
  -> SwooshR -> out_proj. Zeroing makes padded frames look like the conv's own zero padding."""

  def __init__(self, width: int, kernel_size: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
    if kernel_size % 2 != 1:
      raise ValueError(f"cnn_module_kernel must be odd, got {kernel_size}")
    kw = dict(rngs=rngs, dtype=dtype)
    self.value = Dense(width, (width,), ("embed", "mlp"), **kw)  # icefall's in_proj, halves x / s
    self.gate = Dense(width, (width,), ("embed", "mlp"), **kw)
    bound = 1.0 / math.sqrt(kernel_size)  # torch Conv1d init, fan_in = K for a depthwise conv
    self.depthwise_filter = layers.partitioned_param(rngs, _uniform(bound), (None, "mlp"), (kernel_size, width),
                                                     jnp.float32)
    self.depthwise_bias = layers.partitioned_param(rngs, _uniform(bound), ("mlp",), (width,), jnp.float32)
    self.out = Dense(width, (width,), ("mlp", "embed"), initial_scale=0.05, **kw)
    self.kernel_size, self.dtype = kernel_size, dtype

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    hidden = self.value(x) * jax.nn.sigmoid(self.gate(x))  # (B,T,D)
    hidden = zero_padding(hidden, mask)
    hidden = depthwise_conv1d(hidden, self.depthwise_filter[...].astype(self.dtype))
    hidden = hidden + self.depthwise_bias[...].astype(self.dtype)
    return self.out(swoosh_r(hidden))


def depthwise_conv1d(x: jax.Array, filters: jax.Array) -> jax.Array:
  """(B,T,D) * (K,D) -> (B,T,D): out[t, d] = sum_k x[t + k - K//2, d] filters[k, d], zeros outside."""
  k, d = filters.shape
  return jax.lax.conv_general_dilated(
      x, filters[:, None, :], window_strides=(1,), padding=((k // 2, k // 2),),
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=d)


class FeedforwardModule(nnx.Module):
  """Linear(D->F) -> SwooshL -> dropout (mask shared over time, icefall's Dropout3) -> Linear(F->D)."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, dropout: float = 0.0):
    kw = dict(rngs=rngs, dtype=dtype)
    self.hidden = Dense(width, (hidden,), ("embed", "mlp"), **kw)
    self.out = Dense(hidden, (width,), ("mlp", "embed"), initial_scale=0.1, **kw)
    self.dropout = dropout

  def __call__(self, x: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> jax.Array:
    hidden = swoosh_l(self.hidden(x))  # (B,T,F)
    hidden = time_shared_dropout(hidden, self.dropout, dropout_key, deterministic)
    return self.out(hidden)


def time_shared_dropout(x: jax.Array, rate: float, key: jax.Array | None, deterministic: bool) -> jax.Array:
  """Inverted dropout on (B,T,D) with one mask per (batch, channel), shared by every frame (icefall Dropout3)."""
  if deterministic or rate == 0.0:
    return x
  if key is None:
    raise ValueError("dropout > 0 with deterministic=False needs a dropout_key")
  keep = jax.random.bernoulli(key, 1.0 - rate, (x.shape[0], 1, x.shape[2]))
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
