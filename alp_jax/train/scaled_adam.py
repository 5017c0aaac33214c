"""ScaledAdam (Povey et al., icefall's Zipformer optimizer) as an optax GradientTransformation.

  tx = scaled_adam(learning_rate=0.045)            # or a schedule: scaled_adam(eden_schedule(...))
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)  # params are required
  params = optax.apply_updates(params, updates)

The update of one tensor p (numel > 1) at step s (0-based), with the step's learning rate lr:
  1. Gradient clipping by a running median (clipping_scale > 0): the "normalized" gradient norm
       N = sqrt( sum_{non-scalar p} ||g_p * rms_p||^2 + sum_{scalar p} (g_p * scalar_lr_scale)^2 )
     (rms_p: the stored parameter RMS) is kept for the last clipping_update_period steps; at steps 10, 20, 40
     and every multiple of clipping_update_period the threshold becomes clipping_scale x median of the norms
     seen (x 2 at steps 10, 20, 40); every gradient is scaled by min(1, threshold / N). No clipping before step 10.
  2. Adam denominator: v = b2 v + (1 - b2) g^2, divided by 1 - b2^(s+1) while that is below 0.99;
       delta = -lr g / (sqrt(v) + eps)
  3. Parameter-scale-relative step: delta *= max(rms_p, param_min_rms); rms_p is re-measured every
     size_update_period steps (at s % period == period - 1).
  4. Learning the scale (every size_update_period steps, s > 0): the gradient w.r.t. the tensor's log scale,
     sum(p * g), collected over the period, drives an Adam-like step (lr x scalar_lr_scale, b2^period) of
     size in [-0.1, 0.1], never taking rms_p above param_max_rms and never shrinking it below param_min_rms:
       delta += p * scale_step
  5. Momentum without bias correction: m = b1 m + (1 - b1) delta; the update is m.
A scalar tensor (numel == 1) gets steps 2 and 5 only, with lr x scalar_lr_scale, and is clamped to
[-scalar_max, scalar_max] after the update. There is no weight decay: step 4 learns each tensor's size.

Every reduction is over one whole tensor (or the whole model, for the clipping norm), so sharded parameters
work unchanged. Differences from icefall's torch code (egs/librispeech/ASR/zipformer/optim.py), all deliberate:
- One state for the whole model instead of icefall's batches of same-shaped tensors (a speed device in torch);
  the per-tensor arithmetic is the same.
- icefall raises "Too many grads were not finite" when the median norm is NaN; a jitted step cannot raise, so
  a non-finite median keeps the previous threshold (the trainer rejects non-finite steps before they reach
  the optimizer state, alp_jax/train/step.py, so this never happens in training).
- icefall's logging (grad-norm quartiles, the dominating parameter) is left out; the clipping factor of the last
  step is kept in the state (`clip_factor`), and the count of clipped steps (`clipped_steps`) gives the trainer's
  `clip_fraction` metric (alp_jax/train/clipping.py), as for the relative clip of AdamW.
- State is float32 whatever the parameter dtype (icefall: float32 too); updates are cast to the parameter dtype.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

# Steps at which the clipping threshold is first estimated (icefall: only those below the update period).
_EARLY_THRESHOLD_STEPS = (10, 20, 40)


class ScaledAdamState(NamedTuple):
  count: jax.Array             # int32 (): updates done
  exp_avg_sq: optax.Updates    # per parameter, like params: Adam's second moment
  momentum: optax.Updates      # per parameter, like params: icefall's "delta" (momentum of the step)
  param_rms: optax.Updates     # per tensor (): the stored RMS of each tensor (unused for scalar tensors)
  scale_grads: optax.Updates   # per tensor (size_update_period,): sum(p * g) of the period's steps
  scale_exp_avg_sq: optax.Updates  # per tensor (): second moment of the scale gradient
  grad_norms: jax.Array        # (clipping_update_period,): normalized gradient norms of recent steps
  norm_threshold: jax.Array    # (): clipping threshold; inf until first estimated
  clip_factor: jax.Array       # (): the factor the last step's gradients were scaled by
  clipped_steps: jax.Array     # int32 (): updates whose gradients were scaled down (factor < 1)


def _is_scalar(p) -> bool:
  return p.size == 1


def _rms(p) -> jax.Array:
  return jnp.sqrt(jnp.mean(jnp.square(p.astype(jnp.float32))))


def scaled_adam(learning_rate: float | optax.Schedule = 0.045, *, b1: float = 0.9, b2: float = 0.98,
                eps: float = 1e-8, clipping_scale: float | None = 2.0, scalar_lr_scale: float = 0.1,
                param_min_rms: float = 1e-5, param_max_rms: float = 3.0, scalar_max: float = 10.0,
                size_update_period: int = 4, clipping_update_period: int = 100) -> optax.GradientTransformation:
  """ScaledAdam with the settings of icefall's zipformer recipe (lr 0.045 and clipping_scale 2.0 from its
  train.py; the class itself defaults to lr 0.03 and no clipping). `clipping_scale` None or 0 disables clipping."""
  if not 0.0 < b1 <= b2 < 1.0:
    raise ValueError(f"scaled_adam needs 0 < b1 <= b2 < 1, got b1={b1}, b2={b2}")
  if size_update_period < 1 or clipping_update_period < 1:
    raise ValueError(f"scaled_adam: size_update_period ({size_update_period}) and clipping_update_period "
                     f"({clipping_update_period}) must be >= 1")
  if not 0.0 < param_min_rms < param_max_rms:
    raise ValueError(f"scaled_adam needs 0 < param_min_rms < param_max_rms, got {param_min_rms}, {param_max_rms}")
  period = size_update_period
  early_steps = tuple(i for i in _EARLY_THRESHOLD_STEPS if i < clipping_update_period)

  def init_fn(params):
    f32_zeros = lambda p: jnp.zeros(jnp.shape(p), jnp.float32)
    return ScaledAdamState(
        count=jnp.zeros((), jnp.int32),
        exp_avg_sq=jax.tree.map(f32_zeros, params),
        momentum=jax.tree.map(f32_zeros, params),
        param_rms=jax.tree.map(_rms, params),
        scale_grads=jax.tree.map(lambda _: jnp.zeros((period,), jnp.float32), params),
        scale_exp_avg_sq=jax.tree.map(lambda _: jnp.zeros((), jnp.float32), params),
        grad_norms=jnp.zeros((clipping_update_period,), jnp.float32),
        norm_threshold=jnp.full((), jnp.inf, jnp.float32),
        clip_factor=jnp.ones((), jnp.float32),
        clipped_steps=jnp.zeros((), jnp.int32))

  def clip(grads, state, step):
    """-> (clipped gradient leaves, grad_norms, norm_threshold, factor)."""
    if not clipping_scale:
      return [g.astype(jnp.float32) for g in grads], state.grad_norms, state.norm_threshold, jnp.ones((), jnp.float32)
    rms = jax.tree.leaves(state.param_rms)
    sumsq = jnp.zeros((), jnp.float32)
    for g, r in zip(grads, rms):
      g = g.astype(jnp.float32)
      sumsq += jnp.sum(jnp.square(g)) * scalar_lr_scale ** 2 if _is_scalar(g) else jnp.sum(jnp.square(g * r))
    norm = jnp.sqrt(sumsq)
    recorded = step > 0   # icefall returns before recording at step 0
    norms = jnp.where(recorded, state.grad_norms.at[step % clipping_update_period].set(norm), state.grad_norms)
    early = jnp.zeros((), bool)
    for i in early_steps:
      early |= step == i
    # The median of the norms seen so far: at an early step s only the top s of the sorted buffer are filled.
    num = jnp.where(early, step, clipping_update_period)
    median = jnp.sort(norms)[clipping_update_period - num + jnp.minimum(num - 1, (num // 4) * 2)]
    estimate = recorded & (early | (step % clipping_update_period == 0)) & jnp.isfinite(median)
    threshold = jnp.where(estimate, clipping_scale * median * jnp.where(early, 2.0, 1.0), state.norm_threshold)
    factor = jnp.where(recorded, jnp.minimum(1.0, threshold / (norm + 1e-20)), 1.0)
    factor = jnp.where(jnp.isnan(factor), 0.0, factor)
    clipped = [jnp.where(factor == 0.0, 0.0, g.astype(jnp.float32) * factor) for g in grads]
    return clipped, norms, threshold, factor

  def update_fn(grads, state, params=None):
    if params is None:
      raise ValueError("scaled_adam needs the parameters: call tx.update(grads, state, params)")
    lr = jnp.asarray(learning_rate(state.count) if callable(learning_rate) else learning_rate, jnp.float32)
    step = state.count
    g_leaves, treedef = jax.tree.flatten(grads)
    p_leaves = jax.tree.leaves(params)
    if len(p_leaves) != len(g_leaves):
      raise ValueError(f"scaled_adam: {len(g_leaves)} gradient leaves but {len(p_leaves)} parameter leaves")
    g_leaves, grad_norms, norm_threshold, factor = clip(g_leaves, state, step)
    bias_correction = 1.0 - b2 ** (step + 1).astype(jnp.float32)
    size_step_now = (step % period == period - 1) & (step > 0)
    rms_now = step % period == period - 1
    b2_period = b2 ** period
    size_bias_correction = 1.0 - b2_period ** ((step + 1) // period).astype(jnp.float32)
    slot = step % period
    outs = {k: [] for k in ("update", "v", "m", "rms", "sg", "sv")}
    for g, p, v, m, rms, sg, sv in zip(g_leaves, p_leaves, *(jax.tree.leaves(x) for x in (
        state.exp_avg_sq, state.momentum, state.param_rms, state.scale_grads, state.scale_exp_avg_sq))):
      p32 = p.astype(jnp.float32)
      v = b2 * v + (1.0 - b2) * jnp.square(g)
      v_hat = jnp.where(bias_correction < 0.99, v / bias_correction, v)
      if _is_scalar(p):
        delta = -lr * scalar_lr_scale * g / (jnp.sqrt(v_hat) + eps)
        m = b1 * m + (1.0 - b1) * delta
        update = jnp.clip(p32 + m, -scalar_max, scalar_max) - p32
      else:
        delta = -lr * g / (jnp.sqrt(v_hat) + eps)
        sg = sg.at[slot].set(jnp.sum(p32 * g))
        rms = jnp.where(rms_now, _rms(p32), rms)
        delta = delta * jnp.maximum(rms, param_min_rms)
        new_sv = b2_period * sv + (1.0 - b2_period) * jnp.mean(jnp.square(sg))
        scale_step = -lr * scalar_lr_scale * jnp.sqrt(size_bias_correction) * jnp.sum(sg) / (jnp.sqrt(new_sv) + eps)
        scale_step = jnp.where(rms < param_min_rms, 0.0, scale_step)
        scale_step = jnp.minimum(jnp.clip(scale_step, -0.1, 0.1), (param_max_rms - rms) / rms)
        delta = delta + jnp.where(size_step_now, scale_step, 0.0) * p32
        sv = jnp.where(size_step_now, new_sv, sv)
        m = b1 * m + (1.0 - b1) * delta
        update = m
      for key, value in zip(outs, (update.astype(p.dtype), v, m, rms, sg, sv)):
        outs[key].append(value)
    tree = lambda key: jax.tree.unflatten(treedef, outs[key])
    new_state = ScaledAdamState(count=optax.safe_increment(step), exp_avg_sq=tree("v"), momentum=tree("m"),
                                param_rms=tree("rms"), scale_grads=tree("sg"), scale_exp_avg_sq=tree("sv"),
                                grad_norms=grad_norms, norm_threshold=norm_threshold, clip_factor=factor,
                                clipped_steps=state.clipped_steps + (factor < 1.0).astype(jnp.int32))
    return tree("update"), new_state

  return optax.GradientTransformation(init_fn, update_fn)
