"""Optimizer and learning-rate schedules from config (optax).

Optimizers (config.optimizer.name):
  "adamw":       optax.adamw; clip_norm clips the global gradient norm first.
  "scaled_adam": ScaledAdam (alp_jax/train/scaled_adam.py, icefall's Zipformer optimizer), settings in
                 config.optimizer.scaled_adam; it has its own clipping (by a running median of gradient norms)
                 and learns each tensor's size instead of decaying weights, so weight_decay and
                 decay_matrices_only are not used, and clip_norm and clip_relative must be 0 (an error names them). The study's setting: learning_rate=0.045 with schedule "eden".
Parameter averaging (config.optimizer.average_period = P > 0, icefall's model_avg): the train state keeps
params_avg, the mean of the parameters after steps P, 2P, 3P, ... (alp_jax/train/state.py, step.py);
`python -m alp_jax.export --averaged` exports it.

Schedules:
  "cosine":            linear warmup, then cosine decay to end_fraction x lr at total steps.
  "constant_cooldown": linear warmup, constant, then linear cooldown over the last cooldown_fraction of the
                       steps (warmup-stable-decay): one long run can be cooled down at several points, which
                       makes scaling-law fits cheap.
  "constant":          linear warmup, then constant.
  "eden":              icefall's Eden, settings in config.optimizer.eden (warmup_steps is not used):
                         lr = learning_rate * ((b^2 + B^2) / B^2)^-1/4 * ((e^2 + E^2) / E^2)^-1/4 * warmup(b)
                       b = step + 1 (icefall's batch index when it sets the rate of an update; step counts
                       the updates done, so the first update is b = 1), B = lr_batches, E = lr_epochs,
                       warmup(b) = warmup_start + (1 - warmup_start) * b / warmup_batches below warmup_batches,
                       then 1. Our trainer counts steps, not epochs: e = step // steps_per_epoch (icefall's
                       epoch index, 0 in the first epoch), or with fractional_epochs e = b / steps_per_epoch
                       (the Auden toolkit's "Eden3" with lr_steps_per_epoch). steps_per_epoch must be set.
  "eden2":             icefall's Eden2 (no epochs): lr = learning_rate * ((b^2 + B^2) / B^2)^-1/2 * warmup(b).
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
from alp_jax.train import scaled_adam as scaled_adam_lib


def default_optimizer_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="adamw",
      learning_rate=1e-3,
      b1=0.9, b2=0.98, eps=1e-8,
      weight_decay=0.01,
      schedule="cosine",        # cosine | constant_cooldown | constant | eden | eden2
      warmup_steps=100,
      end_fraction=0.0,          # cosine: final lr = end_fraction x lr
      cooldown_fraction=0.2,     # constant_cooldown: share of steps spent cooling down linearly to 0
      clip_norm=1.0,             # global gradient norm clipping at this absolute norm (of the raw gradient); 0 disables
      clip_relative=0.0,         # clip at this x the median norm of the last clip_window steps (train/clipping.py;
      clip_window=100,           #   study toolkit: ScaledAdam clipping_scale 2.0, clipping_update_period 100); 0 disables
      decay_matrices_only=True,
      frozen=(),                 # parameter groups never updated, e.g. ("audio_encoder",) for LiT (train/freeze.py)
      frozen_eval_mode=True,     # a wholly frozen audio encoder runs without SpecAugment/dropout while training
      # name="scaled_adam": icefall's ScaledAdam defaults (zipformer/optim.py; the study's recipe, STUDY.md 4).
      # b1, b2, eps above are shared with it (icefall: betas (0.9, 0.98), eps 1e-8).
      scaled_adam=ml_collections.ConfigDict(dict(
          clipping_scale=2.0,         # icefall zipformer/train.py (the class default is None); 0 disables
          scalar_lr_scale=0.1, param_min_rms=1e-5, param_max_rms=3.0, scalar_max=10.0,
          size_update_period=4, clipping_update_period=100)),
      # schedule="eden"/"eden2" (docs/optimizers.md): lr_batches 7500, lr_epochs 3.5 as icefall's zipformer/train.py
      # and the Auden CLAP recipe (STUDY.md 4); warmup 500 batches from 0.5 as icefall's Eden class and Auden
      # (icefall's zipformer/train.py passes warmup_start 0.1).
      eden=ml_collections.ConfigDict(dict(
          lr_batches=7500.0, lr_epochs=3.5,
          steps_per_epoch=0,          # steps in one epoch of the data: must be set for "eden"
          fractional_epochs=False,    # False: whole epochs (icefall); True: step / steps_per_epoch (Auden "Eden3")
          warmup_batches=500.0, warmup_start=0.5)),
      average_period=0,          # > 0: keep params_avg, updated every this many steps (icefall: 200); 0: none
  ))


_SCHEDULES = ("cosine", "constant_cooldown", "constant", "eden", "eden2")


def eden_schedule(base_lr: float, *, lr_batches: float, lr_epochs: float = 0.0, steps_per_epoch: int = 0,
                  fractional_epochs: bool = False, warmup_batches: float = 500.0, warmup_start: float = 0.5,
                  power: float = 0.25) -> optax.Schedule:
  """icefall's Eden (power 1/4, with epochs) or Eden2 (power 1/2, lr_epochs=0: no epoch factor) as a function
  of optax's update count (see the module docstring for b and e)."""
  if lr_batches <= 0 or (lr_epochs and steps_per_epoch <= 0) or not 0.0 <= warmup_start <= 1.0:
    raise ValueError(f"eden: need lr_batches > 0 (got {lr_batches}), steps_per_epoch > 0 when lr_epochs > 0 "
                     f"(got {steps_per_epoch}) and 0 <= warmup_start <= 1 (got {warmup_start})")

  def schedule(count):
    batch = jnp.asarray(count, jnp.float32) + 1.0
    factor = ((batch ** 2 + lr_batches ** 2) / lr_batches ** 2) ** -power
    if lr_epochs:
      epoch = batch / steps_per_epoch if fractional_epochs else jnp.floor((batch - 1.0) / steps_per_epoch)
      factor = factor * ((epoch ** 2 + lr_epochs ** 2) / lr_epochs ** 2) ** -power
    warmup = jnp.where(batch >= warmup_batches, 1.0,
                       warmup_start + (1.0 - warmup_start) * batch / max(warmup_batches, 1e-9))
    return base_lr * factor * warmup
  return schedule


def _eden_from_config(cfg: ml_collections.ConfigDict) -> optax.Schedule:
  eden = _sub(cfg, "eden")
  if cfg.schedule == "eden2":
    return eden_schedule(cfg.learning_rate, lr_batches=eden["lr_batches"], warmup_batches=eden["warmup_batches"],
                         warmup_start=eden["warmup_start"], power=0.5)
  if int(eden["steps_per_epoch"]) <= 0:
    raise ValueError(f"optimizer.schedule='eden' needs optimizer.eden.steps_per_epoch > 0 (steps in one epoch of "
                     f"the data; got {eden['steps_per_epoch']}): pass --config.optimizer.eden.steps_per_epoch=N, "
                     f"or use schedule 'eden2', which has no epochs")
  return eden_schedule(cfg.learning_rate, lr_batches=eden["lr_batches"], lr_epochs=eden["lr_epochs"],
                       steps_per_epoch=int(eden["steps_per_epoch"]), fractional_epochs=eden["fractional_epochs"],
                       warmup_batches=eden["warmup_batches"], warmup_start=eden["warmup_start"])


def _sub(cfg: ml_collections.ConfigDict, name: str) -> dict:
  """config.optimizer.<name> over its defaults (a config.json written before the field existed has none)."""
  defaults = default_optimizer_config()[name].to_dict()
  given = cfg.get(name)
  given = given.to_dict() if given is not None else {}
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"config.optimizer.{name} has unknown field(s) {unknown}; known: {sorted(defaults)}")
  return {**defaults, **given}


def average_period(cfg: ml_collections.ConfigDict) -> int:
  """config.optimizer.average_period (0: no parameter average kept)."""
  period = int(cfg.get("average_period", 0) or 0)
  if period < 0:
    raise ValueError(f"config.optimizer.average_period must be >= 0 (0: no averaging), got {period}")
  return period


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  if cfg.schedule in ("eden", "eden2"):
    return _eden_from_config(cfg)
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
    raise ValueError(f"optimizer.schedule must be {' | '.join(_SCHEDULES)}, got {cfg.schedule!r}")
  return optax.join_schedules([warm, rest], [warmup])


def _decay_mask(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                                 optax.Schedule]:
  schedule = learning_rate_schedule(cfg, total_steps)
  average_period(cfg)   # a bad value fails here, with the other optimizer settings
  if cfg.name == "adamw":
    parts = []
    if cfg.clip_norm:
      parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.get("clip_relative", 0.0):
      parts.append(clipping.clip_relative_to_median(cfg.clip_relative, cfg.get("clip_window", 100)))
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=_decay_mask if cfg.decay_matrices_only else None))
    tx = optax.chain(*parts)
  elif cfg.name == "scaled_adam":
    tx = scaled_adam_lib.scaled_adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, **_sub(cfg, "scaled_adam"))
    if cfg.clip_norm or cfg.get("clip_relative", 0.0):
      raise ValueError(
          f"optimizer.name 'scaled_adam' clips by itself (optimizer.scaled_adam.clipping_scale: the toolkit's "
          f"2.0 x the median of recent norms); set optimizer.clip_norm=0 and optimizer.clip_relative=0 (got "
          f"{cfg.clip_norm} and {cfg.get('clip_relative', 0.0)})")
  else:
    raise ValueError(f"optimizer.name {cfg.name!r} is not supported (adamw | scaled_adam)")
  frozen = freeze.names(cfg.get("frozen", ()))
  if frozen:
    # Frozen gradients are zeros (step.py), so clipping by the global norm over all leaves is unchanged.
    tx = optax.multi_transform({freeze.TRAINABLE: tx, freeze.FROZEN: optax.set_to_zero()},
                               functools.partial(freeze.labels, frozen=frozen))
  return tx, schedule
