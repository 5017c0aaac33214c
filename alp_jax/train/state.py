"""The train state, born sharded: abstract shapes -> shardings from logical names -> jitted init.

TrainState is a plain dict pytree (what Orbax saves):
  step int32 scalar | params nnx.State (nnx.Param) | rest nnx.State (other model variables, may be empty)
  opt_state optax state | rng uint32 key data (the base key; step keys are fold_in(rng, step))
  nonfinite int32 scalar (steps whose update was rejected) | first_nonfinite_step int32 (-1 if none)
  params_avg nnx.State like params, only with config.optimizer.average_period > 0: the running mean of the
             parameters after steps P, 2P, ... (the initial parameters until step P; alp_jax/train/step.py)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alp_jax import models
from alp_jax import sharding as sharding_lib
from alp_jax.train import freeze
from alp_jax.train import optimizer as optimizer_lib


def build_model(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
  """models.build_model plus the training-only static settings: frozen parts (train/freeze.py)."""
  model = models.build_model(config, rngs=rngs)
  freeze.mark_frozen_modules(model, config.get("optimizer"))
  return model


def build_abstract_model(config: ml_collections.ConfigDict):
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))


def split_model(model):
  return nnx.split(model, nnx.Param, ...)


def _replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(config, mesh: Mesh, tx: optax.GradientTransformation):
  """(graphdef, abstract train state, shardings of the train state)."""
  graphdef, abstract_params, abstract_rest = split_model(build_abstract_model(config))
  rules = config.mesh.rules
  param_shardings = sharding_lib.state_shardings(abstract_params, mesh, rules)
  rest_shardings = sharding_lib.state_shardings(abstract_rest, mesh, rules)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_shardings = optimizer_state_shardings(tx, abstract_opt, abstract_params, param_shardings, mesh)
  rep = _replicated(mesh)
  shardings = dict(step=rep, params=param_shardings, rest=rest_shardings, opt_state=opt_shardings, rng=rep,
                   nonfinite=rep, first_nonfinite_step=rep)
  abstract = dict(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, rest=abstract_rest,
                  opt_state=abstract_opt, rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
                  nonfinite=jax.ShapeDtypeStruct((), jnp.int32),
                  first_nonfinite_step=jax.ShapeDtypeStruct((), jnp.int32))
  if keeps_average(config):
    shardings["params_avg"] = param_shardings
    abstract["params_avg"] = abstract_params
  return graphdef, abstract, shardings


def optimizer_state_shardings(tx: optax.GradientTransformation, abstract_opt, abstract_params, param_shardings,
                              mesh: Mesh):
  """Shardings of tx's state: a parameter-shaped part takes the parameters' shardings; a per-tensor statistic
  built from the parameter tree (ScaledAdam's parameter RMS: another shape) and everything else is replicated.
  Frozen parameters have no state (optax.masked leaves empty nodes there), which stay empty."""
  rep = _replicated(mesh)

  def opt_sharding(value, param_sharding, param):
    if not jax.tree.leaves(value):
      return value
    if jax.tree.leaves(value)[0].shape == jax.tree.leaves(param)[0].shape:
      return param_sharding
    return jax.tree.map(lambda _: rep, value)
  return optax.tree_map_params(tx, opt_sharding, abstract_opt, param_shardings, abstract_params,
                               transform_non_params=lambda _: rep,
                               is_leaf=lambda x: isinstance(x, nnx.Variable))


def keeps_average(config) -> bool:
  """Whether the train state holds params_avg (config.optimizer.average_period > 0)."""
  return optimizer_lib.average_period(config.optimizer) > 0


def init_state(config, mesh: Mesh, tx: optax.GradientTransformation, shardings, seed: int):
  """Parameters and optimizer state created directly with their shardings (never on one device first)."""

  def init(seed_array):
    key = jax.random.key(seed_array)
    init_key, base_key = jax.random.split(key)
    with nnx.use_eager_sharding(False):
      model = build_model(config, rngs=nnx.Rngs(params=init_key, dropout=init_key))
    _, params, rest = split_model(model)
    state = dict(step=jnp.zeros((), jnp.int32), params=params, rest=rest, opt_state=tx.init(params),
                 rng=jax.random.key_data(base_key), nonfinite=jnp.zeros((), jnp.int32),
                 first_nonfinite_step=jnp.full((), -1, jnp.int32))
    if keeps_average(config):
      state["params_avg"] = jax.tree.map(jnp.copy, params)
    return state

  with jax.set_mesh(mesh):
    return jax.jit(init, out_shardings=shardings)(jnp.uint32(seed))


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
