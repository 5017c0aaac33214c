"""SpecAugment on device (time warp, frequency masks, time masks), pure jnp, random per example.

Follows lhotse `SpecAugment` (the study toolkit's), per example and with a jax PRNG key:
  - applied to each example with probability `prob` (lhotse p=0.9);
  - time warp: a centre frame c in (W, L - W) moves to c' in [c - W, c + W] and both sides are
    resampled linearly (lhotse: bicubic) so the valid length L is kept; W = time_warp_factor;
  - `num_freq_masks` bands of width uniform in [0, max_freq_width] (inclusive) at a uniform start;
  - time masks like lhotse's: at most `max_time_fraction` of the valid frames in total, so
    min(num_time_masks, ceil(fraction * L / max_time_width)) masks of width uniform in
    [0, min(max_time_width, fraction * L / masks)], all inside the valid frames;
  - masked entries take the example's mean over its valid frames (lhotse: the matrix mean) or 0.
Padded frames (frame_mask False) are never changed; masks and warps use each example's own L.

Dimension letters: B batch, T frames, M mel bins, K masks.
"""
import jax
import jax.numpy as jnp
import ml_collections


def default_spec_augment_config() -> ml_collections.ConfigDict:
  """The study toolkit's SpecAugment (Auden's lhotse settings); shrink for tiny runs."""
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True  # study toolkit: on (whether the paper used it is unknown)
  cfg.prob = 0.9  # study (lhotse p): 0.9
  cfg.time_warp_factor = 80  # study: 80; 0 disables
  cfg.num_freq_masks = 2  # study: 2
  cfg.max_freq_width = 27  # study: 27
  cfg.num_time_masks = 10  # study: 10
  cfg.max_time_width = 100  # study: 100
  cfg.max_time_fraction = 0.15  # study (lhotse max_frames_mask_fraction): 0.15; 0 disables the cap
  cfg.mask_value = "mean"  # study: "mean"; or "zero"
  return cfg


def _bands(key: jax.Array, shape: tuple[int, int], max_width: jax.Array,
           length: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Random [start, start + width) bands (B, K) with width in [0, max_width] inside [0, length)."""
  width_key, start_key = jax.random.split(key)
  width_cap = jnp.minimum(max_width, length)[:, None]  # (B, 1)
  widths = jnp.floor(jax.random.uniform(width_key, shape) * (width_cap + 1)).astype(jnp.int32)
  widths = jnp.minimum(widths, width_cap)
  room = (length[:, None] - widths + 1).astype(jnp.float32)  # (B, K) start choices
  starts = jnp.floor(jax.random.uniform(start_key, shape) * room).astype(jnp.int32)
  starts = jnp.clip(starts, 0, length[:, None] - widths)
  return starts, widths


def _covered(positions: jax.Array, starts: jax.Array, widths: jax.Array) -> jax.Array:
  """(B, N) True where a position lies in any of the (B, K) bands."""
  inside = ((positions[None, :, None] >= starts[:, None, :])
            & (positions[None, :, None] < (starts + widths)[:, None, :]))  # (B, N, K)
  return jnp.any(inside, axis=-1)


def _time_warp(key: jax.Array, features: jax.Array, lengths: jax.Array,
               factor: int) -> jax.Array:
  """Piecewise-linear time warp of each example's valid frames (B, T, M); T and L unchanged."""
  num_frames = features.shape[1]
  centre_key, target_key = jax.random.split(key)
  batch = features.shape[0]
  lengths_f = lengths.astype(jnp.float32)
  can_warp = lengths - factor > factor + 1  # lhotse leaves shorter examples alone
  # centre c in [factor + 1, L - factor - 1], target c' in [c - factor, c + factor]
  centre_choices = jnp.maximum(lengths - 2 * factor - 1, 1).astype(jnp.float32)
  centre = factor + 1 + jnp.floor(jax.random.uniform(centre_key, (batch,)) * centre_choices)
  target = centre - factor + jnp.floor(jax.random.uniform(target_key, (batch,)) * (2 * factor + 1))
  out_pos = jnp.arange(num_frames, dtype=jnp.float32)[None, :] + 0.5  # (1, T) frame centres
  left_src = out_pos * (centre / target)[:, None] - 0.5
  right_src = (centre[:, None] + (out_pos - target[:, None])
               * ((lengths_f - centre) / (lengths_f - target))[:, None] - 0.5)
  source = jnp.where(out_pos < target[:, None], jnp.clip(left_src, 0, centre[:, None] - 1),
                     jnp.clip(right_src, centre[:, None], lengths_f[:, None] - 1))  # (B, T)
  source = jnp.where(can_warp[:, None], source, jnp.arange(num_frames, dtype=jnp.float32))
  source = jnp.clip(source, 0, num_frames - 1)
  below = jnp.floor(source)
  frac = (source - below)[..., None]  # (B, T, 1)
  below = below.astype(jnp.int32)
  above = jnp.minimum(below + 1, num_frames - 1)
  lower = jnp.take_along_axis(features, below[..., None], axis=1)  # (B, T, M)
  upper = jnp.take_along_axis(features, above[..., None], axis=1)  # (B, T, M)
  return lower + frac * (upper - lower)


def spec_augment(rng: jax.Array, features: jax.Array, frame_mask: jax.Array,
                 cfg: ml_collections.ConfigDict) -> jax.Array:
  """SpecAugment of log-mel features (B, T, M) with frame_mask (B, T); training only.

  Returns features unchanged when cfg.enabled is False. Different keys give different masks,
  the same key the same masks. Padded frames are left as they are.
  """
  if not cfg.enabled:
    return features
  batch, num_frames, num_bins = features.shape
  apply_key, warp_key, freq_key, time_key = jax.random.split(rng, 4)
  lengths = jnp.sum(frame_mask, axis=1, dtype=jnp.int32)  # (B,)
  valid = frame_mask[..., None]  # (B, T, 1)
  augmented = features
  if cfg.time_warp_factor > 0:
    augmented = _time_warp(warp_key, augmented, lengths, int(cfg.time_warp_factor))

  masked = jnp.zeros((batch, num_frames, num_bins), bool)
  if cfg.num_freq_masks > 0:
    starts, widths = _bands(freq_key, (batch, cfg.num_freq_masks),
                            jnp.int32(cfg.max_freq_width), jnp.full((batch,), num_bins))
    masked |= _covered(jnp.arange(num_bins), starts, widths)[:, None, :]  # (B, 1, M)
  if cfg.num_time_masks > 0:
    if cfg.max_time_fraction > 0:
      budget = cfg.max_time_fraction * lengths.astype(jnp.float32)  # (B,) frames
      active = jnp.clip(jnp.ceil(budget / cfg.max_time_width), 1, cfg.num_time_masks)
      max_width = jnp.minimum(cfg.max_time_width, jnp.floor(budget / active)).astype(jnp.int32)
    else:
      active = jnp.full((batch,), cfg.num_time_masks)
      max_width = jnp.full((batch,), cfg.max_time_width, jnp.int32)
    starts, widths = _bands(time_key, (batch, cfg.num_time_masks), max_width, lengths)
    widths = jnp.where(jnp.arange(cfg.num_time_masks)[None, :] < active[:, None], widths, 0)
    masked |= _covered(jnp.arange(num_frames), starts, widths)[:, :, None]  # (B, T, 1)

  if cfg.mask_value == "mean":
    counts = jnp.maximum(lengths, 1).astype(jnp.float32) * num_bins
    fill = jnp.sum(jnp.where(valid, augmented, 0.0), axis=(1, 2)) / counts  # (B,)
  elif cfg.mask_value == "zero":
    fill = jnp.zeros((batch,), features.dtype)
  else:
    raise ValueError(f"unknown mask_value {cfg.mask_value!r}; use 'mean' or 'zero'")
  augmented = jnp.where(masked, fill[:, None, None].astype(features.dtype), augmented)
  applied = jax.random.uniform(apply_key, (batch,)) < cfg.prob  # (B,)
  keep_new = applied[:, None, None] & valid
  return jnp.where(keep_new, augmented, features)
