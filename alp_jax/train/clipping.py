"""Gradient clipping relative to the recent gradient norms (the study toolkit's rule), as an optax transform.

  tx = optax.chain(clip_relative_to_median(2.0, window=100), optax.adamw(...))
  # in config: optimizer.clip_relative=2.0, optimizer.clip_window=100 (alp_jax/train/optimizer.py)

The threshold at step t is `scale x median(norms of the last `window` steps before t)`; a gradient whose global
norm exceeds it is scaled down to it. The first step has no history and is never clipped; until `window` steps
have been seen the median is over all earlier steps. This follows the rule of the toolkit's ScaledAdam
(clipping_scale 2.0: twice the median of the recent norms), on the plain global gradient norm and recomputed every
step; as far as we know ScaledAdam measures a parameter-scale-weighted norm and refreshes its median every
clipping_update_period (100) steps, which this does not copy.

Why relative: the threshold moves with the gradient, so it means the same thing for a summed loss (whose
gradient is 2B times the per-example mean's, alp_jax/losses.py) and a mean one, for any model size and at any
point of training. Only steps that spike above `scale` times the recent median are clipped; an absolute
`clip_norm` of 1.0 under the summed loss clips every step instead (docs/objectives.md, "Loss scale and
clipping").

The state also counts the steps seen and the steps clipped, so `clip_fraction = clipped_steps / steps`; the update
step reports it as a metric (alp_jax/train/step.py).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ClipRelativeState(NamedTuple):
  norms: jax.Array           # (window,) float32: the last `window` global norms (ring buffer), NaN where unused
  steps: jax.Array           # int32: updates seen
  clipped_steps: jax.Array   # int32: updates whose norm exceeded the threshold


def threshold(state: ClipRelativeState, scale: float) -> jax.Array:
  """The clipping threshold for the next update: scale x median of the stored norms (inf before any)."""
  median = jnp.nanmedian(state.norms)
  return jnp.where(state.steps > 0, scale * median, jnp.inf)


def clip_relative_to_median(scale: float, window: int = 100) -> optax.GradientTransformation:
  """Clips the global gradient norm at `scale` x the median of the previous `window` norms (see module doc)."""
  if scale <= 0 or window < 1:
    raise ValueError(f"relative clipping needs optimizer.clip_relative > 0 and optimizer.clip_window >= 1, got "
                     f"{scale} and {window}")

  def init_fn(params):
    del params
    return ClipRelativeState(norms=jnp.full((window,), jnp.nan, jnp.float32), steps=jnp.zeros((), jnp.int32),
                             clipped_steps=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    norm = optax.global_norm(updates).astype(jnp.float32)
    limit = threshold(state, scale)
    clipped = norm > limit
    factor = jnp.where(clipped, limit / norm, 1.0)
    updates = jax.tree.map(lambda g: (g * factor).astype(g.dtype), updates)
    finite = jnp.isfinite(norm)   # a non-finite step (skipped by the update step) leaves no trace in the history
    norms = jnp.where(finite, state.norms.at[state.steps % window].set(norm), state.norms)
    return updates, ClipRelativeState(norms=norms, steps=state.steps + finite.astype(jnp.int32),
                                      clipped_steps=state.clipped_steps + (clipped & finite).astype(jnp.int32))

  return optax.GradientTransformation(init_fn, update_fn)


def clip_fraction(opt_state) -> jax.Array | None:
  """The share of updates clipped so far by the relative clip or by ScaledAdam's own clipping inside `opt_state`
  (any nesting of optax states); None when neither is there."""
  found = optax.tree_utils.tree_get(opt_state, "ClipRelativeState")
  if found is not None:
    return found.clipped_steps.astype(jnp.float32) / jnp.maximum(found.steps, 1).astype(jnp.float32)
  found = optax.tree_utils.tree_get(opt_state, "ScaledAdamState")
  if found is not None:
    return found.clipped_steps.astype(jnp.float32) / jnp.maximum(found.count, 1).astype(jnp.float32)
  return None
