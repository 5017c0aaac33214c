"""Optimizer and learning-rate schedules from config (optax).

Schedules:
  "cosine":            linear warmup, then cosine decay to end_fraction x lr at total steps.
  "constant_cooldown": linear warmup, constant, then linear cooldown over the last cooldown_fraction of the
                       steps (warmup-stable-decay): one long run can be cooled down at several points, which
                       makes scaling-law fits cheap.
  "constant":          linear warmup, then constant.
Clipping: `clip_norm` (absolute, on the raw gradient) and/or `clip_relative` (a multiple of the recent median
norm, train/clipping.py); docs/objectives.md says which fits which loss reduction.
Weight decay applies to matrices only (ndim >= 2): no decay on biases, norm scales, temperature/bias scalars.
Frozen parameter groups (`frozen`, see alp_jax/train/freeze.py) get optax.set_to_zero: no update, no decay, no
optimizer state; an empty `frozen` leaves the optimizer (and its checkpointed state) exactly as without it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from alp_jax.train import clipping
from alp_jax.train import freeze


def default_optimizer_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="adamw",
      learning_rate=1e-3,
      b1=0.9, b2=0.98, eps=1e-8,
      weight_decay=0.01,
      schedule="cosine",        # cosine | constant_cooldown | constant
      warmup_steps=100,
      end_fraction=0.0,          # cosine: final lr = end_fraction x lr
      cooldown_fraction=0.2,     # constant_cooldown: share of steps spent cooling down linearly to 0
      clip_norm=1.0,             # global gradient norm clipping at this absolute norm (of the raw gradient); 0 disables
      clip_relative=0.0,         # clip at this x the median norm of the last clip_window steps (train/clipping.py;
      clip_window=100,           #   study toolkit: ScaledAdam clipping_scale 2.0, clipping_update_period 100); 0 disables
      decay_matrices_only=True,
      frozen=(),                 # parameter groups never updated, e.g. ("audio_encoder",) for LiT (train/freeze.py)
      frozen_eval_mode=True,     # a wholly frozen audio encoder runs without SpecAugment/dropout while training
  ))


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  peak, warmup = cfg.learning_rate, min(cfg.warmup_steps, max(total_steps - 1, 0))
  warm = optax.linear_schedule(0.0, peak, max(warmup, 1))
  if cfg.schedule == "cosine":
    rest = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1), alpha=cfg.end_fraction)
  elif cfg.schedule == "constant_cooldown":
    cooldown = max(int(round(cfg.cooldown_fraction * total_steps)), 1)
    stable = max(total_steps - warmup - cooldown, 0)
    rest = optax.join_schedules([optax.constant_schedule(peak), optax.linear_schedule(peak, 0.0, cooldown)],
                                [stable])
  elif cfg.schedule == "constant":
    rest = optax.constant_schedule(peak)
  else:
    raise ValueError(f"optimizer.schedule must be cosine | constant_cooldown | constant, got {cfg.schedule!r}")
  return optax.join_schedules([warm, rest], [warmup])


def _decay_mask(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                                 optax.Schedule]:
  schedule = learning_rate_schedule(cfg, total_steps)
  if cfg.name != "adamw":
    raise ValueError(f"optimizer.name {cfg.name!r} is not supported (adamw)")
  parts = []
  if cfg.clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  if cfg.get("clip_relative", 0.0):
    parts.append(clipping.clip_relative_to_median(cfg.clip_relative, cfg.get("clip_window", 100)))
  parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                           mask=_decay_mask if cfg.decay_matrices_only else None))
  tx = optax.chain(*parts)
  frozen = freeze.names(cfg.get("frozen", ()))
  if frozen:
    # Frozen gradients are zeros (step.py), so clipping by the global norm over all leaves is unchanged.
    tx = optax.multi_transform({freeze.TRAINABLE: tx, freeze.FROZEN: optax.set_to_zero()},
                               functools.partial(freeze.labels, frozen=frozen))
  return tx, schedule
