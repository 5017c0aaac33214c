"""ScaledAdam (alp_jax/train/scaled_adam.py) against an independent float64 NumPy re-implementation of icefall's
update rule (zipformer/optim.py, written here in icefall's own shape: a state dict per tensor, stepped in place),
and the Eden schedules against their closed forms."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alp_jax.train import clipping
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import scaled_adam as scaled_adam_lib


class IcefallScaledAdam:
  """icefall's ScaledAdam.step for a list of float64 tensors (one param group, no batching)."""

  def __init__(self, params, lr_fn, *, betas=(0.9, 0.98), eps=1e-8, clipping_scale=2.0, scalar_lr_scale=0.1,
               param_min_rms=1e-5, param_max_rms=3.0, scalar_max=10.0, size_update_period=4,
               clipping_update_period=100):
    self.params = [np.array(p, np.float64) for p in params]
    self.lr_fn = lr_fn
    self.h = dict(betas=betas, eps=eps, clipping_scale=clipping_scale, scalar_lr_scale=scalar_lr_scale,
                  param_min_rms=param_min_rms, param_max_rms=param_max_rms, scalar_max=scalar_max,
                  size_update_period=size_update_period, clipping_update_period=clipping_update_period)
    self.states = [{} for _ in params]
    self.clip_factors = []

  def _clipping_scale(self, grads):
    h, first = self.h, self.states[0]
    if not self.states[0] or h["clipping_scale"] is None or first["step"] == 0:
      return 1.0
    step, period = first["step"], h["clipping_update_period"]
    sumsq = 0.0
    for p, g, st in zip(self.params, grads, self.states):
      sumsq += np.sum(g ** 2) * h["scalar_lr_scale"] ** 2 if p.size == 1 else np.sum((g * st["param_rms"]) ** 2)
    norm = math.sqrt(sumsq)
    first.setdefault("model_norms", np.zeros(period))[step % period] = norm
    early = [i for i in (10, 20, 40) if i < period]
    if step % period == 0 or step in early:
      norms = np.sort(first["model_norms"])
      if step in early:
        norms = norms[-step:]
      n = norms.size
      median = [norms[min(n - 1, (n // 4) * k)] for k in range(5)][2]
      first["model_norm_threshold"] = h["clipping_scale"] * median * (2.0 if step in early else 1.0)
    if "model_norm_threshold" not in first:
      return 1.0
    return min(1.0, first["model_norm_threshold"] / (norm + 1e-20))

  def step(self, grads):
    lr = self.lr_fn(self.states[0].get("step", 0))
    h = self.h
    b1, b2 = h["betas"]
    factor = self._clipping_scale(grads)
    self.clip_factors.append(factor)
    for i, (p, g, st) in enumerate(zip(self.params, grads, self.states)):
      step = st.setdefault("step", 0)
      g = np.asarray(g, np.float64) * factor
      scalar = p.size == 1
      # basic_step
      lr_p = lr * h["scalar_lr_scale"] if scalar else lr
      v = st.setdefault("exp_avg_sq", np.zeros_like(p))
      v *= b2
      v += (1 - b2) * g * g
      bc2 = 1 - b2 ** (step + 1)
      v_hat = v / bc2 if bc2 < 0.99 else v
      delta = -lr_p * g / (np.sqrt(v_hat) + h["eps"])
      # scaling_step
      if not scalar:
        period = h["size_update_period"]
        if "param_rms" not in st:
          st["param_rms"] = np.sqrt(np.mean(p ** 2))
          st["scale_grads"] = np.zeros(period)
          st["scale_exp_avg_sq"] = 0.0
        st["scale_grads"][step % period] = np.sum(p * g)
        if step % period == period - 1:
          st["param_rms"] = np.sqrt(np.mean(p ** 2))
        delta = delta * max(st["param_rms"], h["param_min_rms"])
        if step % period == period - 1 and step > 0:
          b2c = b2 ** period
          st["scale_exp_avg_sq"] = b2c * st["scale_exp_avg_sq"] + (1 - b2c) * np.mean(st["scale_grads"] ** 2)
          bc = 1 - b2c ** ((step + 1) // period)
          scale_step = (-lr * h["scalar_lr_scale"] * bc ** 0.5 * np.sum(st["scale_grads"])
                        / (np.sqrt(st["scale_exp_avg_sq"]) + h["eps"]))
          if st["param_rms"] < h["param_min_rms"]:
            scale_step = 0.0
          scale_step = min(max(scale_step, -0.1), 0.1)
          scale_step = min(scale_step, (h["param_max_rms"] - st["param_rms"]) / st["param_rms"])
          delta = delta + p * scale_step
      # momentum_step
      m = st.setdefault("delta", np.zeros_like(p))
      m *= b1
      m += (1 - b1) * delta
      p = p + m
      if scalar:
        p = np.clip(p, -h["scalar_max"], h["scalar_max"])
      self.params[i] = p
      st["step"] = step + 1


def _initial_params(rng):
  return {"kernel": rng.normal(size=(3, 5)) * 0.8,   # rms near param_max_rms below: the size cap binds
          "bias": rng.normal(size=(5,)) * 0.05,
          "tiny": rng.normal(size=(2, 2)) * 3e-6,     # rms below param_min_rms: steps scaled by the floor
          "gain": np.array([0.45])}                   # a scalar tensor: clamped to scalar_max


SETTINGS = dict(clipping_scale=2.0, scalar_lr_scale=1.0, param_min_rms=1e-5, param_max_rms=0.85,
                scalar_max=0.5, size_update_period=3, clipping_update_period=16)
STEPS = 36


def _gradient(params, t, noise, spikes):
  """A gradient that depends on the parameters (so the scale gradient sum(p*g) has a sign): the kernel is pushed
  to grow (and hits param_max_rms), the bias to shrink (its scale steps hit -0.1), the tiny tensor to shrink
  (below param_min_rms it must not shrink further); spikes make the clipping bind."""
  out = {}
  for name, p in params.items():
    p = np.asarray(p, np.float64)
    g = {"kernel": noise[name][t] - 2.0 * p, "bias": noise[name][t] + 20.0 * p, "tiny": 1e6 * p,
         "gain": noise[name][t] - 1.0}[name]
    out[name] = g * spikes[t]
  return out


def test_scaled_adam_follows_icefalls_update_rule_step_by_step():
  rng = np.random.default_rng(0)
  params0 = _initial_params(rng)
  noise = {k: rng.normal(size=(STEPS,) + v.shape) for k, v in params0.items()}
  spikes = np.where(np.isin(np.arange(STEPS), (12, 17, 18, 30)), 40.0, 1.0)
  lr_fn = optimizer_lib.eden_schedule(0.05, lr_batches=20.0, lr_epochs=2.0, steps_per_epoch=10,
                                      warmup_batches=5.0, warmup_start=0.5)
  names = sorted(params0)
  ref = IcefallScaledAdam([params0[k] for k in names], lambda s: float(lr_fn(s)), **SETTINGS)
  tx = scaled_adam_lib.scaled_adam(lr_fn, **SETTINGS)
  params = {k: jnp.asarray(v, jnp.float32) for k, v in params0.items()}
  state = tx.init(params)
  update = jax.jit(tx.update)
  clip_factors = []
  for t in range(STEPS):
    grads = _gradient(params, t, noise, spikes)
    ref.step([_gradient(dict(zip(names, ref.params)), t, noise, spikes)[k] for k in names])
    updates, state = update({k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}, state, params)
    params = optax.apply_updates(params, updates)
    clip_factors.append(float(state.clip_factor))
    for k, expected in zip(names, ref.params):
      atol = 1e-3 * np.sqrt(np.mean(expected ** 2))   # elements crossing zero, at each tensor's own scale
      np.testing.assert_allclose(np.asarray(params[k]), expected, rtol=2e-4, atol=atol, err_msg=f"{k} step {t}")
  np.testing.assert_allclose(clip_factors, ref.clip_factors, rtol=1e-4)
  # The trainer's clip_fraction metric counts the steps icefall's rule scaled down.
  want_fraction = np.mean(np.asarray(ref.clip_factors) < 1.0)
  assert float(clipping.clip_fraction(state)) == pytest.approx(want_fraction, rel=1e-6)
  # The run went through every branch it is meant to check: clipping, the size cap, the rms floor, the clamp.
  assert min(ref.clip_factors) < 0.5 and ref.clip_factors[:10] == [1.0] * 10
  kernel_rms = np.sqrt(np.mean(ref.params[names.index("kernel")] ** 2))
  assert kernel_rms <= SETTINGS["param_max_rms"] * 1.05 and kernel_rms > np.sqrt(np.mean(params0["kernel"] ** 2))
  assert abs(ref.params[names.index("gain")][0]) == SETTINGS["scalar_max"]
  assert ref.states[names.index("tiny")]["param_rms"] < SETTINGS["param_min_rms"]


def test_scaled_adam_under_multisteps_and_without_clipping():
  """optax.MultiSteps (k micro-steps per update) applies ScaledAdam to the mean gradient; clipping_scale=None
  matches icefall's clipping_scale=None."""
  rng = np.random.default_rng(1)
  params0 = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,)) * 0.1}
  tx = optax.MultiSteps(scaled_adam_lib.scaled_adam(0.03, clipping_scale=None), every_k_schedule=2)
  ref = IcefallScaledAdam([params0["b"], params0["w"]], lambda s: 0.03, clipping_scale=None)
  params = {k: jnp.asarray(v, jnp.float32) for k, v in params0.items()}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(6):
    g1, g2 = ({k: rng.normal(size=v.shape) for k, v in params0.items()} for _ in range(2))
    for g in (g1, g2):
      updates, state = update({k: jnp.asarray(v, jnp.float32) for k, v in g.items()}, state, params)
      params = optax.apply_updates(params, updates)
    ref.step([(g1["b"] + g2["b"]) / 2, (g1["w"] + g2["w"]) / 2])
    np.testing.assert_allclose(np.asarray(params["b"]), ref.params[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(params["w"]), ref.params[1], rtol=1e-4, atol=1e-7)


def test_scaled_adam_needs_params():
  tx = scaled_adam_lib.scaled_adam(0.01)
  params = {"w": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match="needs the parameters"):
    tx.update(params, tx.init(params))


def _icefall_eden(batch, epoch, base, lr_batches, lr_epochs, warmup_batches, warmup_start):
  factor = ((batch ** 2 + lr_batches ** 2) / lr_batches ** 2) ** -0.25 * (
      ((epoch ** 2 + lr_epochs ** 2) / lr_epochs ** 2) ** -0.25)
  warm = 1.0 if batch >= warmup_batches else warmup_start + (1.0 - warmup_start) * batch / warmup_batches
  return base * factor * warm


def _config(**overrides):
  cfg = optimizer_lib.default_optimizer_config()
  cfg.learning_rate = 0.045
  for key, value in overrides.items():
    if isinstance(value, dict):
      cfg[key].update(value)
    else:
      cfg[key] = value
  return cfg


def test_eden_equals_its_closed_form_at_chosen_steps():
  steps_per_epoch = 1000
  cfg = _config(schedule="eden", eden=dict(steps_per_epoch=steps_per_epoch))
  eden = optimizer_lib.learning_rate_schedule(cfg, total_steps=100_000)
  fractional = optimizer_lib.learning_rate_schedule(
      _config(schedule="eden", eden=dict(steps_per_epoch=steps_per_epoch, fractional_epochs=True)), 100_000)
  eden2 = optimizer_lib.learning_rate_schedule(_config(schedule="eden2"), 100_000)
  for step in (0, 1, 249, 498, 499, 500, 999, 1000, 7499, 20_000, 99_999):
    b = step + 1   # icefall's batch index of the update
    want = _icefall_eden(b, step // steps_per_epoch, 0.045, 7500.0, 3.5, 500.0, 0.5)
    assert float(eden(step)) == pytest.approx(want, rel=1e-6), step
    # Auden's Eden3 (STUDY.md 4): [((b^2+B^2)(b^2+(E S)^2)) / (B^2 (E S)^2)]^(-1/4) x warmup
    es = 3.5 * steps_per_epoch
    warm = 1.0 if b >= 500 else 0.5 + 0.5 * b / 500
    want3 = 0.045 * (((b ** 2 + 7500 ** 2) * (b ** 2 + es ** 2)) / (7500 ** 2 * es ** 2)) ** -0.25 * warm
    assert float(fractional(step)) == pytest.approx(want3, rel=1e-6), step
    want2 = 0.045 * ((b ** 2 + 7500 ** 2) / 7500 ** 2) ** -0.5 * warm
    assert float(eden2(step)) == pytest.approx(want2, rel=1e-6), step


def test_eden_without_steps_per_epoch_and_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match=r"optimizer.eden.steps_per_epoch > 0"):
    optimizer_lib.make_optimizer(_config(schedule="eden"), 100)
  with pytest.raises(ValueError, match=r"adamw \| scaled_adam"):
    optimizer_lib.make_optimizer(_config(name="sgd"), 100)
  with pytest.raises(ValueError, match=r"scaled_adam' clips by itself.*clip_norm=0"):
    optimizer_lib.make_optimizer(_config(name="scaled_adam"), 100)   # the AdamW default clip_norm 1.0 is left
  optimizer_lib.make_optimizer(_config(name="scaled_adam", clip_norm=0.0), 100)
  cfg = _config(name="scaled_adam")
  cfg.scaled_adam = ml_collections.ConfigDict(dict(clipping_scael=2.0))
  with pytest.raises(ValueError, match=r"config.optimizer.scaled_adam has unknown field\(s\) \['clipping_scael'\]"):
    optimizer_lib.make_optimizer(cfg, 100)


def test_scaled_adam_on_sharded_parameters_equals_one_device():
  """Parameters sharded over 8 devices: the state gets the parameters' shardings where it is parameter-shaped
  and is replicated where it is per-tensor (alp_jax/train/state.py); the updates equal the unsharded ones."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from alp_jax import sharding as sharding_lib
  from alp_jax.train import state as state_lib
  mesh = sharding_lib.mesh_from_config(sharding_lib.default_mesh_config(), jax.devices()[:8])
  rng = np.random.default_rng(2)
  params = {"w": rng.normal(size=(16, 4)).astype(np.float32), "b": rng.normal(size=(8,)).astype(np.float32),
            "s": np.float32(0.3)}
  specs = {"w": P("fsdp", None), "b": P("fsdp"), "s": P()}
  param_shardings = {k: NamedSharding(mesh, spec) for k, spec in specs.items()}
  tx = scaled_adam_lib.scaled_adam(0.05, clipping_update_period=8, size_update_period=2)
  abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float32), params)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_shardings = state_lib.optimizer_state_shardings(tx, abstract_opt, abstract_params, param_shardings, mesh)
  assert opt_shardings.exp_avg_sq["w"].spec == P("fsdp", None) and opt_shardings.momentum["b"].spec == P("fsdp")
  assert opt_shardings.param_rms["w"].spec == P() and opt_shardings.scale_grads["w"].spec == P()
  with jax.set_mesh(mesh):
    sharded = jax.device_put(params, param_shardings)
    state = jax.jit(tx.init, out_shardings=opt_shardings)(sharded)
    update = jax.jit(tx.update, out_shardings=(param_shardings, opt_shardings))
    plain_params, plain_state = params, jax.jit(tx.init)(params)
    for t in range(12):
      grads = {k: rng.normal(size=np.shape(v)).astype(np.float32) * (30.0 if t == 11 else 1.0)
               for k, v in params.items()}
      updates, state = update(jax.device_put(grads, param_shardings), state, sharded)
      sharded = optax.apply_updates(sharded, updates)
      plain_updates, plain_state = jax.jit(tx.update)(grads, plain_state, plain_params)
      plain_params = optax.apply_updates(plain_params, plain_updates)
  assert sharded["w"].sharding.spec == P("fsdp", None)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7),
               sharded, plain_params)
  assert float(plain_state.clip_factor) < 1.0   # the spike at the last step was clipped
