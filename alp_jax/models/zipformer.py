"""Zipformer audio encoder (registry name "zipformer"): the study's encoder, after k2-fsa icefall's Zipformer2.

  cfg = zipformer.default_config("m")          # or "768", "m_icefall", "l_icefall", "tiny"
  encoder = zipformer.Zipformer(cfg, rngs=nnx.Rngs(0))
  frames, out = encoder(features, frame_mask)  # (B,T,80) log-mel at 100/s -> (B,T',D) at 25/s

Dimension letters:
  B batch, T input frames (10 ms, 100/s), M mel bins, T50 frames after the subsampling (50/s),
  T' output frames (25/s), D_i stack i's width, D = max_i D_i (output width), R_i stack i's downsampling factor,
  C subsampling channels, F' subsampled mel axis.

Data flow (icefall Zipformer2 + Conv2dSubsampling):
  log-mel (B,T,M) -> Conv2dSubsampling: 3 convs (time kernel 3, 'valid'; strides 1, 2, 1) + ConvNeXt + Linear
  + BiasNorm -> (B,T50,D_0), T50 = (T-7)//2
  -> stacks i = 0..5, each at 50/R_i frames/s (R = 1,2,4,8,4,2): channels cut or zero-padded to D_i, softmax-
  weighted downsampling by R_i, L_i Zipformer layers, upsampling by repetition, a learned bypass with the stack's
  input
  -> merge: the last stack's output, plus, for each wider earlier stack, its channels beyond the ones already
  there (so every channel of D = max D_i comes from the latest stack that has it)
  -> softmax-weighted downsampling by output_downsampling_factor (2) -> (B,T',D), T' = ceil(T50/2): 25/s.

A Zipformer layer (ZipformerLayer): FF1, shared relative-position attention weights, NonlinAttention (head 0),
SelfAttention 1, Conv 1, FF2, mid bypass, SelfAttention 2 (same weights), Conv 2, FF3, BiasNorm, bypass.
The parts are in alp_jax/models/zipformer_parts.py.

Padding: padded log-mel frames are replaced by zeros first; a 50/s frame is valid if every log-mel frame its
convolutions read is valid (so a clip of L valid frames gives (L-7)//2, icefall's lengths); a downsampled frame is
valid if any frame of its group is, and its value is a weighted sum of the group's valid frames only; every
operation that mixes frames replaces padded frames by zeros first (jnp.where, NaN-safe); attention never attends
to them. Neither the amount of padding nor its values reach a valid output frame. Invalid output frames are zero.
Selecting it from a config: the variants `zipformer` / `zipformer_<preset>` of every model config
(alp_jax/configs/common.py use_zipformer); docs/models.md lists every difference from icefall and the toolkit.

Training-time regularisers of icefall that are NOT implemented (all are identity at evaluation, so an exported
encoder computes what icefall's would with the same weights):
- Balancer and Whiten (they only change gradients), penalize_abs_values_gt on attention scores (gradient only);
- the ScheduledFloat schedules (rates driven by the batch count): randomised layer skipping (bypass skip_rate),
  attention/conv/FF2/FF3 sequence skipping, const_attention_rate, pos_emb_skip_rate, the ConvNeXt layerdrop,
  and the random feature masks above encoder_unmasked_dim;
- dropout rates are fixed at cfg.dropout (icefall: 0.3 decaying to 0.1 over 20k batches; 0 by default here).
Implemented for training: dropout in the feed-forward modules and after the subsampling (mask shared over time,
icefall's Dropout3), on the positional table (cfg.pos_dropout; icefall 0.15), ScaleGrad(0.2) on the first convolution, and the gradient
limits on BiasNorm log-scales ([-1.5, 1.5]) and bypass scales ([0.2, 1], the schedule's final value).
icefall's unused `bypass_scale` parameter in each layer (marked "TODO: remove it") is not created.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from alp_jax.models import layers, sizes
from alp_jax.models import zipformer_parts as parts

# Per-stack lists (6 stacks at 50, 25, 12.5, 6.25, 12.5, 25 frames/s for R = 1,2,4,8,4,2).
_M_COMMON = dict(downsampling_factor=[1, 2, 4, 8, 4, 2], num_heads=[4, 4, 4, 8, 4, 4],
                 query_head_dim=[32] * 6, value_head_dim=[12] * 6, pos_head_dim=[4] * 6, pos_dim=48,
                 cnn_module_kernel=[31, 31, 15, 15, 15, 31], output_downsampling_factor=2)
PRESETS: dict[str, dict[str, Any]] = {
    # The study's toolkit (Auden ZipformerConfig defaults): icefall's M layout, 512-d output.
    "m": dict(_M_COMMON, num_encoder_layers=[2, 2, 3, 4, 3, 2], encoder_dim=[192, 256, 384, 512, 384, 256],
              feedforward_dim=[576, 768, 1152, 1536, 1152, 768]),
    # The toolkit's 768-d preset (Auden-Voice, the LALM defaults): what "768-dim output" in the paper may mean.
    "768": dict(_M_COMMON, num_encoder_layers=[2, 2, 4, 5, 4, 2], encoder_dim=[192, 256, 512, 768, 512, 256],
                feedforward_dim=[576, 768, 1536, 2304, 1536, 768]),
    # icefall egs/librispeech/ASR/zipformer/train.py defaults ("normal-scaled", 65.5M as a transducer).
    "m_icefall": dict(_M_COMMON, num_encoder_layers=[2, 2, 3, 4, 3, 2], encoder_dim=[192, 256, 384, 512, 384, 256],
                      feedforward_dim=[512, 768, 1024, 1536, 1024, 768]),
    # icefall's "large-scaled" command line in its RESULTS.md (148.4M as a transducer).
    "l_icefall": dict(_M_COMMON, num_encoder_layers=[2, 2, 4, 5, 4, 2], encoder_dim=[192, 256, 512, 768, 512, 256],
                      feedforward_dim=[512, 768, 1536, 2048, 1536, 768]),
    # Tests and CPU smoke runs: the same six rates, one small layer each.
    "tiny": dict(downsampling_factor=[1, 2, 4, 8, 4, 2], num_encoder_layers=[1] * 6,
                 encoder_dim=[32, 48, 64, 64, 64, 48], feedforward_dim=[64, 96, 128, 128, 128, 96],
                 num_heads=[2, 2, 2, 4, 2, 2], query_head_dim=[8] * 6, value_head_dim=[6] * 6,
                 pos_head_dim=[2] * 6, pos_dim=16, cnn_module_kernel=[7, 7, 5, 5, 5, 7],
                 output_downsampling_factor=2, subsampling_channels=[4, 8, 16]),
}
PER_STACK = ("num_encoder_layers", "downsampling_factor", "encoder_dim", "feedforward_dim", "num_heads",
             "query_head_dim", "value_head_dim", "pos_head_dim", "cnn_module_kernel")
SUBSAMPLING_CHANNELS = (8, 32, 128)  # icefall Conv2dSubsampling layer1/2/3 channels


def default_config(preset: str = "m") -> ml_collections.ConfigDict:
  """config.model.audio for a Zipformer; `preset` fills the per-stack lists (edit them freely afterwards)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown Zipformer preset {preset!r}; choose from {tuple(PRESETS)}")
  cfg = ml_collections.ConfigDict()
  cfg.name = "zipformer"
  cfg.preset = preset  # a label only: the lists below define the model
  cfg.num_mel_bins = 80  # must equal config.frontend.num_mel_bins (study: 80)
  cfg.subsampling_channels = list(SUBSAMPLING_CHANNELS)
  for key, value in PRESETS[preset].items():
    cfg[key] = list(value) if isinstance(value, list) else value
  cfg.dropout = 0.0  # feed-forward and subsampling dropout (icefall: 0.3 -> 0.1 over 20k batches)
  cfg.pos_dropout = 0.0  # dropout on the relative-position table (icefall: 0.15)
  cfg.dtype = "float32"  # compute dtype; "bfloat16" on accelerators (params stay float32)
  return cfg


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """ValueError naming the config.model.audio field that is wrong and what it must be."""
  num_stacks = len(cfg.downsampling_factor)
  for key in PER_STACK:
    if len(cfg[key]) != num_stacks:
      raise ValueError(f"config.model.audio.{key} has {len(cfg[key])} entries but downsampling_factor has "
                       f"{num_stacks}: give one value per stack")
  if num_stacks == 0:
    raise ValueError("config.model.audio.downsampling_factor is empty: a Zipformer needs at least one stack")
  for i, (width, heads) in enumerate(zip(cfg.encoder_dim, cfg.num_heads)):
    if width % 4:
      raise ValueError(f"config.model.audio.encoder_dim[{i}]={width}: must be a multiple of 4 (NonlinAttention "
                       "uses 3/4 of it)")
  if cfg.output_downsampling_factor < 1 or min(cfg.downsampling_factor) < 1:
    raise ValueError("config.model.audio downsampling factors must be >= 1")
  if cfg.num_mel_bins < 7:
    raise ValueError(f"config.model.audio.num_mel_bins={cfg.num_mel_bins}: the Conv2dSubsampling needs >= 7")


def subsampled_length(num_frames):
  """Valid 50/s frames from `num_frames` valid 10 ms frames (icefall: (T-7)//2, never below 0)."""
  return np.maximum((np.asarray(num_frames) - 7) // 2, 0)


def output_length(num_frames, output_downsampling_factor: int = 2):
  """Valid output frames from `num_frames` valid 10 ms frames: ceil(((T-7)//2) / 2) for the 25/s output."""
  t50 = subsampled_length(num_frames)
  return -(-t50 // output_downsampling_factor)


def _window_all(mask: jax.Array, size: int, stride: int) -> jax.Array:
  """(B,T) -> (B,(T-size)//stride+1): True where every frame of a 'valid' conv window is valid."""
  return jax.lax.reduce_window(mask.astype(jnp.int32), 1, jax.lax.min, (1, size), (1, stride), "VALID") > 0


def _conv2d(x: jax.Array, filters: jax.Array, bias: jax.Array, strides, padding, groups: int = 1) -> jax.Array:
  """(B,T,F,Cin) * (kt,kf,Cin/groups,Cout) + bias -> (B,T',F',Cout)."""
  out = jax.lax.conv_general_dilated(x, filters.astype(x.dtype), window_strides=strides, padding=padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
  return out + bias.astype(x.dtype)


def _conv_param(rngs: nnx.Rngs, shape: tuple[int, ...], fan_in: int, scale: float = 1.0):
  """torch Conv2d init U(+-1/sqrt(fan_in)) (times `scale`, icefall's ScaledConv2d) for filters and bias."""
  bound = scale / np.sqrt(fan_in)
  init = lambda key, shp, dtype=jnp.float32: jax.random.uniform(key, shp, dtype, -bound, bound)  # noqa: E731
  names = (None,) * len(shape)
  return layers.partitioned_param(rngs, init, names, shape, jnp.float32)


class ConvNeXt(nnx.Module):
  """Depthwise 7x7 conv (padding 3) -> 1x1 conv to 3C -> SwooshL -> 1x1 conv back (init x0.01) -> residual."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, kernel: int = 7, hidden_ratio: int = 3):
    hidden = channels * hidden_ratio
    self.kernel = kernel
    self.depthwise_filter = _conv_param(rngs, (kernel, kernel, 1, channels), kernel * kernel)
    self.depthwise_bias = _conv_param(rngs, (channels,), kernel * kernel)
    self.pointwise1_filter = _conv_param(rngs, (1, 1, channels, hidden), channels)
    self.pointwise1_bias = _conv_param(rngs, (hidden,), channels)
    self.pointwise2_filter = _conv_param(rngs, (1, 1, hidden, channels), hidden, 0.01)
    self.pointwise2_bias = _conv_param(rngs, (channels,), hidden, 0.001 * np.sqrt(hidden))  # ScaledConv2d: U(+-0.1 s)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x (B,T,F,C), invalid frames already zero -> (B,T,F,C)."""
    pad = self.kernel // 2
    y = _conv2d(x, self.depthwise_filter[...], self.depthwise_bias[...], (1, 1), ((pad, pad), (pad, pad)),
                groups=x.shape[-1])
    y = parts.swoosh_l(_conv2d(y, self.pointwise1_filter[...], self.pointwise1_bias[...], (1, 1), "VALID"))
    return x + _conv2d(y, self.pointwise2_filter[...], self.pointwise2_bias[...], (1, 1), "VALID")


class Conv2dSubsampling(nnx.Module):
  """log-mel (B,T,M) + mask -> (B,(T-7)//2,D_0) at 50 frames/s + mask (every frame read must be valid)."""

  def __init__(self, num_mel_bins: int, width: int, channels, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               dropout: float = 0.0):
    c1, c2, c3 = channels
    self.conv0_filter = _conv_param(rngs, (3, 3, 1, c1), 9)
    self.conv0_bias = _conv_param(rngs, (c1,), 9)
    self.conv1_filter = _conv_param(rngs, (3, 3, c1, c2), 9 * c1)
    self.conv1_bias = _conv_param(rngs, (c2,), 9 * c1)
    self.conv2_filter = _conv_param(rngs, (3, 3, c2, c3), 9 * c2)
    self.conv2_bias = _conv_param(rngs, (c3,), 9 * c2)
    self.convnext = ConvNeXt(c3, rngs=rngs)
    self.out_bins = ((num_mel_bins - 1) // 2 - 1) // 2  # F'
    self.out = parts.Dense(self.out_bins * c3, (width,), (None, "embed"), rngs=rngs, dtype=dtype)
    self.norm = parts.BiasNorm(width, rngs=rngs)
    self.dropout, self.dtype = dropout, dtype

  def __call__(self, features: jax.Array, mask: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    x = parts.zero_padding(features.astype(jnp.float32), mask)[..., None]  # (B,T,M,1): padding never enters
    x = _conv2d(x, self.conv0_filter[...], self.conv0_bias[...], (1, 1), ((0, 0), (1, 1)))  # (B,T-2,M,c1)
    if not deterministic:
      x = parts.scale_grad(x, 0.2)
    x = parts.swoosh_r(x)
    x = parts.swoosh_r(_conv2d(x, self.conv1_filter[...], self.conv1_bias[...], (2, 2), "VALID"))
    x = parts.swoosh_r(_conv2d(x, self.conv2_filter[...], self.conv2_bias[...], (1, 2), "VALID"))  # (B,T50,F',C)
    mask = _window_all(_window_all(_window_all(mask, 3, 1), 3, 2), 3, 1)  # (B,T50)
    x = parts.zero_padding(x, mask)  # the ConvNeXt's 7-frame window must see padded frames as zeros
    x = self.convnext(x)
    b, t = x.shape[:2]
    x = self.out(x.reshape(b, t, -1))  # (B,T50,F'*C) -> (B,T50,D_0); icefall flattens (C,F'), here (F',C)
    x = self.norm(x, deterministic)
    return parts.time_shared_dropout(x, self.dropout, dropout_key, deterministic), mask


class ZipformerLayer(nnx.Module):
  """One Zipformer2EncoderLayer: (B,T,D) + mask -> (B,T,D)."""

  def __init__(self, width: int, feedforward: int, num_heads: int, query_head_dim: int, value_head_dim: int,
               pos_head_dim: int, pos_dim: int, kernel_size: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               dropout: float = 0.0, pos_dropout: float = 0.0):
    kw = dict(rngs=rngs, dtype=dtype)
    self.attention_weights = parts.RelPositionAttentionWeights(
        width, pos_dim, num_heads, query_head_dim, pos_head_dim, pos_dropout=pos_dropout, **kw)
    self.feed_forward1 = parts.FeedforwardModule(width, feedforward * 3 // 4, dropout=dropout, **kw)
    self.nonlin_attention = parts.NonlinAttention(width, 3 * width // 4, **kw)
    self.self_attention1 = parts.SelfAttention(width, num_heads, value_head_dim, **kw)
    self.conv1 = parts.ConvolutionModule(width, kernel_size, **kw)
    self.feed_forward2 = parts.FeedforwardModule(width, feedforward, dropout=dropout, **kw)
    self.bypass_mid = parts.Bypass(width, rngs=rngs)
    self.self_attention2 = parts.SelfAttention(width, num_heads, value_head_dim, **kw)
    self.conv2 = parts.ConvolutionModule(width, kernel_size, **kw)
    self.feed_forward3 = parts.FeedforwardModule(width, feedforward * 5 // 4, dropout=dropout, **kw)
    self.norm = parts.BiasNorm(width, rngs=rngs)
    self.bypass = parts.Bypass(width, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> jax.Array:
    pos_key, ff1_key, ff2_key, ff3_key = layers.split_key(dropout_key, 4)
    run = dict(deterministic=deterministic)
    orig = x
    weights = self.attention_weights(x, mask, dropout_key=pos_key, **run)  # (B,H,T,T)
    x = x + self.feed_forward1(x, dropout_key=ff1_key, **run)
    x = x + self.nonlin_attention(x, weights, mask)
    x = x + self.self_attention1(x, weights, mask)
    x = x + self.conv1(x, mask)
    x = x + self.feed_forward2(x, dropout_key=ff2_key, **run)
    x = self.bypass_mid(orig, x, deterministic)
    x = x + self.self_attention2(x, weights, mask)
    x = x + self.conv2(x, mask)
    x = x + self.feed_forward3(x, dropout_key=ff3_key, **run)
    x = self.norm(x, deterministic)
    return self.bypass(orig, x, deterministic)


class ZipformerStack(nnx.Module):
  """L layers at 50/R frames/s: downsample by R (if R > 1), the layers, upsample, learned bypass with the input."""

  def __init__(self, cfg: ml_collections.ConfigDict, index: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
    i = index
    self.factor, self.depth = cfg.downsampling_factor[i], cfg.num_encoder_layers[i]
    width = cfg.encoder_dim[i]
    if self.factor > 1:
      self.downsample = parts.DownsampleWeights(self.factor, rngs=rngs)
      self.out_combiner = parts.Bypass(width, rngs=rngs)
    self.layers = nnx.List([
        ZipformerLayer(width, cfg.feedforward_dim[i], cfg.num_heads[i], cfg.query_head_dim[i],
                       cfg.value_head_dim[i], cfg.pos_head_dim[i], cfg.pos_dim, cfg.cnn_module_kernel[i],
                       rngs=rngs, dtype=dtype, dropout=cfg.dropout, pos_dropout=cfg.pos_dropout)
        for _ in range(self.depth)])

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None) -> tuple[jax.Array, list[jax.Array]]:
    """x (B,T50,D_i), mask (B,T50) -> (B,T50,D_i) and each layer's output at the stack's rate (B,T50/R,D_i)."""
    orig, inner_mask = x, mask
    if self.factor > 1:
      x, inner_mask = self.downsample(x, mask)  # (B,ceil(T50/R),D_i)
    keys = layers.split_key(dropout_key, self.depth)
    layer_outputs = []
    for layer, key in zip(self.layers, keys):
      x = layer(x, inner_mask, deterministic=deterministic, dropout_key=key)
      layer_outputs.append(x)
    if self.factor > 1:
      x = self.out_combiner(orig, parts.upsample(x, self.factor, orig.shape[1]), deterministic)
    return x, layer_outputs


def convert_num_channels(x: jax.Array, width: int) -> jax.Array:
  """(B,T,D) -> (B,T,width): the first `width` channels, or zeros appended."""
  if width <= x.shape[-1]:
    return x[..., :width]
  return jnp.pad(x, ((0, 0), (0, 0), (0, width - x.shape[-1])))


class Zipformer(nnx.Module):
  """Log-mel frames (B,T,M) at 100/s -> (B,T',D) at 100 / (2 * output_downsampling_factor) frames/s (25/s)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    check_config(cfg)
    rngs = parts.ParamKeys(rngs)  # its parts only call rngs.params(); this keeps tracing the init linear
    dtype = sizes.compute_dtype(cfg.dtype)
    self.dtype = dtype
    self.encoder_dim = tuple(cfg.encoder_dim)
    self.downsampling_factor = tuple(cfg.downsampling_factor)
    self.output_dim = max(self.encoder_dim)
    self.embed = Conv2dSubsampling(cfg.num_mel_bins, self.encoder_dim[0], cfg.subsampling_channels, rngs=rngs,
                                   dtype=dtype, dropout=cfg.dropout)
    self.stacks = nnx.List([ZipformerStack(cfg, i, rngs=rngs, dtype=dtype) for i in range(len(self.encoder_dim))])
    self.output_downsample = parts.DownsampleWeights(cfg.output_downsampling_factor, rngs=rngs)

  @staticmethod
  def output_frames(cfg: ml_collections.ConfigDict, num_frames: int) -> int:
    """T' output frames for T log-mel frames: ceil(((T - 7) // 2) / output_downsampling_factor)."""
    return int(-(-subsampled_length(num_frames) // cfg.output_downsampling_factor))

  @staticmethod
  def kernel_frames(cfg: ml_collections.ConfigDict, parts_of_name: list[str], num_frames: int) -> int:
    """Rows a kernel named by its path parts is applied to, for T log-mel frames: a stack's kernels at its
    T_i = ceil(T50 / R_i) frames, except the relative-position projection (2 T_i - 1 offsets); the rest at T50.
    (Analytic FLOPs, alp_jax/train/flops.py; the convolutions and attention products are `extra_flops`.)"""
    t50 = int(subsampled_length(num_frames))
    if "stacks" in parts_of_name:
      index = int(parts_of_name[parts_of_name.index("stacks") + 1])
      frames = -(-t50 // cfg.downsampling_factor[index])
      return 2 * frames - 1 if "pos_proj" in parts_of_name else frames
    return t50

  @staticmethod
  def extra_flops(cfg: ml_collections.ConfigDict, num_frames: int) -> float:
    """Forward FLOPs of one example of T log-mel frames that are not a kernel times its rows: the subsampling's
    2-D convolutions and ConvNeXt, the depthwise convolutions, attention (content and relative-position scores,
    the weighted sums of 2 SelfAttentions and the NonlinAttention) and the softmax-weighted downsamplings; 2 per
    multiply-add, what XLA's dot and convolution ops do (tests/test_zipformer.py counts them in the jaxpr)."""
    mel, (c1, c2, c3) = cfg.num_mel_bins, cfg.subsampling_channels
    t0, t50 = num_frames - 2, int(subsampled_length(num_frames))
    t1, f1 = (t0 - 3) // 2 + 1, (mel - 3) // 2 + 1
    f_out = (f1 - 3) // 2 + 1
    flops = 2.0 * 9 * c1 * t0 * mel + 2.0 * 9 * c1 * c2 * t1 * f1 + 2.0 * 9 * c2 * c3 * t50 * f_out
    flops += 2.0 * t50 * f_out * (49 * c3 + 2 * 3 * c3 * c3)  # ConvNeXt: depthwise 7x7, two pointwise
    for i, factor in enumerate(cfg.downsampling_factor):
      t, d, h = -(-t50 // factor), cfg.encoder_dim[i], cfg.num_heads[i]
      per_layer = (2.0 * h * t * t * cfg.query_head_dim[i]          # q . k
                   + 2.0 * h * t * (2 * t - 1) * cfg.pos_head_dim[i]  # positional queries . every offset
                   + 2 * 2.0 * h * t * t * cfg.value_head_dim[i]      # two SelfAttentions' weighted sums
                   + 2.0 * t * t * (3 * d // 4)                       # NonlinAttention's weighted sum
                   + 2 * 2.0 * t * d * cfg.cnn_module_kernel[i])      # two depthwise convolutions
      flops += cfg.num_encoder_layers[i] * per_layer
      if factor > 1:
        flops += 2.0 * t * factor * d  # its downsampling's weighted sum
    out_factor = cfg.output_downsampling_factor
    return flops + 2.0 * (-(-t50 // out_factor)) * out_factor * max(cfg.encoder_dim)

  def _merge(self, outputs: list[jax.Array]) -> jax.Array:
    """Each channel of D = max D_i from the latest stack that has it (icefall _get_full_dim_output)."""
    pieces, have = [outputs[-1]], self.encoder_dim[-1]
    for out, width in zip(outputs[-2::-1], self.encoder_dim[-2::-1]):
      if width > have:
        pieces.append(out[..., have:width])
        have = width
    return jnp.concatenate(pieces, axis=-1)

  def __call__(self, features: jax.Array, frame_mask: jax.Array, *, deterministic: bool = True,
               dropout_key: jax.Array | None = None,
               keep_layers: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (frames (B,T',D), out_dict): "frames", "frame_mask" (B,T'), "pooled" (B,D) masked mean; with
    keep_layers, "patch" (the subsampling output) and "layer_k" for every layer k of every stack in order, each
    brought to the output rate (repeated up to 50/s, then the output downsampling), width D_i of its stack."""
    embed_key, *stack_keys = layers.split_key(dropout_key, 1 + len(self.stacks))
    x, mask = self.embed(features, frame_mask, deterministic=deterministic, dropout_key=embed_key)  # (B,T50,D_0)
    x = embedded = x.astype(self.dtype)
    t50 = x.shape[1]
    outputs, per_layer = [], []
    for stack, width, key in zip(self.stacks, self.encoder_dim, stack_keys):
      x, layer_outputs = stack(convert_num_channels(x, width), mask, deterministic=deterministic, dropout_key=key)
      outputs.append(x)
      per_layer += [(y, stack.factor) for y in layer_outputs]
    frames, out_mask = self.output_downsample(self._merge(outputs), mask)  # (B,T',D)
    frames = parts.zero_padding(frames, out_mask)
    out_dict: dict[str, jax.Array] = {}
    if keep_layers:
      def to_output_rate(y, factor):
        y = parts.upsample(y, factor, t50) if factor > 1 else y
        return parts.zero_padding(self.output_downsample(y, mask)[0], out_mask)
      out_dict["patch"] = to_output_rate(embedded, 1)
      for k, (y, factor) in enumerate(per_layer):
        out_dict[f"layer_{k}"] = to_output_rate(y, factor)
    out_dict["frames"] = frames
    out_dict["frame_mask"] = out_mask
    out_dict["pooled"] = layers.masked_mean(frames.astype(jnp.float32), out_mask)  # (B,D)
    return frames, out_dict
