"""The update step: one pure function of (train state, global batch), jitted once with the state donated.

The objective comes from the objective table (alp_jax/objectives.py); this file never branches on its name.
Gradient accumulation (config.grad_accum_steps = k) is exact for every objective, term by term:
- Micro-batches are strided (rows j, j+k, j+2k, ...) so each stays evenly sharded over the batch axes.
- Mean terms (caption tokens, labelled clips for tagging): each micro-batch contributes its sum divided by the
  WHOLE batch's count (Objective.counts, computed before any forward pass); the gradients add up to the
  full-batch gradient.
- The contrastive term: plain accumulation would change the objective (fewer negatives). We use the two-pass
  embedding cache (GradCache): pass 1 embeds every micro-batch without gradients; the loss and its gradient
  w.r.t. the (k*b, E) embeddings are computed on the full batch; pass 2 re-embeds each micro-batch with the same
  RNG and back-propagates the cached embedding gradients:
      grad = sum_j d/dparams [ <g_A_j, A_j(params)> + <g_T_j, T_j(params)> ] + d/dparams L(sg A, sg T; temperature)
  which equals the gradient of the loss on one large batch, at the memory of one micro-batch.
- Several terms (hybrid): both of the above in the same pass 2, each with its weight.
The same micro-batch RNG is used in both passes, so SpecAugment/dropout draw identically; row modes (parallel /
autoregressive caption rows) are drawn once for the whole batch in both the k=1 and the k>1 paths.

Parameter averaging (config.optimizer.average_period = P > 0, icefall's model_avg): after the update that makes
the step count n a multiple of P, params_avg = params_avg * (1 - P/n) + params * P/n, so at step kP it is the
mean of the parameters after steps P, 2P, ..., kP (each standing for P steps). Between those steps it is left
alone (lax.cond: no work). The average is float32 like the parameters (icefall keeps float64 on rank 0).

Padded rows (duration-bucketed batches) are found by objectives.row_mask on the whole batch in both paths and take
no part in any term (alp_jax/objectives.py).

Frozen parameter groups (config.optimizer.frozen, train/freeze.py): gradients are taken w.r.t. the trainable
leaves only (no backward pass through a wholly frozen encoder) and frozen leaves keep their exact values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from alp_jax import objectives
from alp_jax import sharding as sharding_lib
from alp_jax.train import clipping
from alp_jax.train import freeze
from alp_jax.train import optimizer as optimizer_lib

_TRACE_COUNTERS: dict[int, list] = {}


def _split_micro(batch: dict, k: int, mesh) -> dict:
  """(B, ...) -> (k, B/k, ...) with micro-batch j = rows j, j+k, ... (evenly sharded)."""
  def split(x):
    b = x.shape[0]
    if b % k:
      raise ValueError(f"batch size {b} is not divisible by grad_accum_steps={k}")
    y = jnp.swapaxes(x.reshape((b // k, k) + x.shape[1:]), 0, 1)
    spec = P(None, sharding_lib.BATCH_AXES, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(y, NamedSharding(mesh, spec))
  return jax.tree.map(split, batch)


def _merge_micro(x: jax.Array) -> jax.Array:
  """(k, b, ...) -> (k*b, ...) in the original row order (inverse of _split_micro)."""
  k, b = x.shape[:2]
  return jnp.swapaxes(x, 0, 1).reshape((k * b,) + x.shape[2:])


def accumulated_loss_and_grads(graphdef, params, rest, batch, objective: objectives.Objective, rng, k: int, mesh,
                               frozen_mask=None):
  """Exact full-batch loss and gradients from k micro-batches (see module docstring); frozen_mask as in
  freeze.value_and_grad (None: every parameter trains)."""
  contrastive = objective.contrastive
  batch_size = batch["audio"].shape[0]
  parallel_rng, micro_rng = jax.random.split(rng)
  model = nnx.merge(graphdef, params, rest)
  parallel = None
  if objective.draws_parallel:
    parallel = objectives.draw_parallel(parallel_rng, batch_size, objective.parallel_fraction)
  counts = objective.counts(model, batch, parallel)  # whole-batch units of every mean term
  if parallel is not None:
    batch = dict(batch, parallel=parallel)
  micro = _split_micro(batch, k, mesh)
  micro_rngs = jax.random.split(micro_rng, k)

  def forward(p, mb, key):
    mb = dict(mb)
    par = mb.pop("parallel", None)
    return objective.terms_and_metrics(nnx.merge(graphdef, p, rest), mb, train=True, rng=key, parallel=par,
                                       mesh=mesh, contrastive=False)

  # Pass 1: embeddings of every micro-batch, no gradients; the contrastive loss on the whole batch.
  values: dict = {}
  grads = jax.tree.map(jnp.zeros_like, params)
  zeros_e = jnp.zeros((k, batch_size // k, 1), jnp.float32)
  g_audio = g_text = zeros_e
  if contrastive is not None:
    name, term, weight = contrastive
    valid = objectives.row_mask(batch)  # (B,) the whole batch's real rows, as in the k=1 path

    def embed(_, xs):
      mb, key = xs
      _, _, out = forward(params, mb, key)
      return None, (out["audio_embedding"], out["text_embedding"])
    _, (audio_embs, text_embs) = jax.lax.scan(embed, None, (micro, micro_rngs))
    audio_all, text_all = _merge_micro(audio_embs), _merge_micro(text_embs)

    def full_loss(p, a, t):
      m = nnx.merge(graphdef, p, rest)
      bias = getattr(m, "logit_bias", None)
      return term.value(a, t, m.temperature(), None if bias is None else bias[...], mesh, valid)
    values[name], (g_params, g_audio, g_text) = freeze.value_and_grad(
        full_loss, params, frozen_mask, jax.lax.stop_gradient(audio_all), jax.lax.stop_gradient(text_all),
        argnums_extra=True)
    grads = jax.tree.map(lambda g: weight * g, g_params)
    g_audio = _split_micro({"a": g_audio}, k, mesh)["a"]
    g_text = _split_micro({"t": g_text}, k, mesh)["t"]

  # Pass 2: per micro-batch surrogate whose gradients sum to the full-batch gradient.
  def backward(carry, xs):
    acc, sums = carry
    mb, key, ga, gt = xs

    def surrogate(p):
      micro_values, metrics, out = forward(p, mb, key)
      value = jnp.zeros((), jnp.float32)
      if contrastive is not None:
        value += contrastive[2] * (jnp.sum(ga * out["audio_embedding"]) + jnp.sum(gt * out["text_embedding"]))
      for name, _, weight in objective.mean_terms:
        value += weight * micro_values[name][0] / jnp.maximum(counts[name], 1.0)
      return value, ({name: micro_values[name][0] for name, _, _ in objective.mean_terms}, metrics)

    (_, (micro_sums, metrics)), g = freeze.value_and_grad(surrogate, params, frozen_mask, has_aux=True)
    acc = jax.tree.map(jnp.add, acc, g)
    return (acc, jax.tree.map(jnp.add, sums, micro_sums)), metrics

  zero_sums = {name: jnp.zeros((), jnp.float32) for name, _, _ in objective.mean_terms}
  (grads, sums), metrics = jax.lax.scan(backward, (grads, zero_sums), (micro, micro_rngs, g_audio, g_text))
  metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
  for name, _, _ in objective.mean_terms:
    values[name] = (sums[name], counts[name])
    metrics[f"{name}_loss"] = sums[name] / jnp.maximum(counts[name], 1.0)
  if contrastive is not None:
    metrics[f"{contrastive[0]}_loss"] = values[contrastive[0]]
  loss = objective.combine(values)
  metrics["loss"] = loss
  return loss, metrics, grads


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule, config, mesh, shardings):
  objective = objectives.get(config.loss)
  k = int(config.get("grad_accum_steps", 1) or 1)
  frozen = freeze.names(config.optimizer.get("frozen", ()))
  period = optimizer_lib.average_period(config.optimizer)

  traces = [0]

  def train_step(state: dict, batch: dict):
    traces[0] += 1  # runs at trace time only
    step = state["step"]
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
    params, rest = state["params"], state["rest"]
    frozen_mask = freeze.frozen_mask(params, frozen) if frozen else None  # Python bools, fixed at trace time
    if k == 1:
      # Row modes drawn exactly as in the accumulated path, so both give the same gradients.
      parallel_rng, model_rng = jax.random.split(rng)
      parallel = None
      if objective.draws_parallel:
        parallel = objectives.draw_parallel(parallel_rng, batch["audio"].shape[0], objective.parallel_fraction)

      def loss_fn(p):
        return objective.loss(nnx.merge(graphdef, p, rest), batch, train=True, rng=model_rng, parallel=parallel,
                              mesh=mesh)
      (loss, metrics), grads = freeze.value_and_grad(loss_fn, params, frozen_mask, has_aux=True)
    else:
      loss, metrics, grads = accumulated_loss_and_grads(graphdef, params, rest, batch, objective, rng, k, mesh,
                                                        frozen_mask)
    grad_norm = optax.global_norm(grads)
    updates, new_opt_state = tx.update(grads, state["opt_state"], params)
    new_params = freeze.keep_frozen(optax.apply_updates(params, updates), params, frozen_mask)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(updates))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    nonfinite = state["nonfinite"] + (~finite).astype(jnp.int32)
    # Steps are numbered as logged: the update that takes the state from step s to s+1 is step s+1.
    first = jnp.where((~finite) & (state["first_nonfinite_step"] < 0), step + 1, state["first_nonfinite_step"])
    new_state = dict(step=step + 1, params=keep(new_params, params), rest=rest,
                     opt_state=keep(new_opt_state, state["opt_state"]), rng=state["rng"],
                     nonfinite=nonfinite, first_nonfinite_step=first)
    if period:
      new_state["params_avg"] = update_average(state["params_avg"], new_state["params"], step + 1, period)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, learning_rate=schedule(step),
                   nonfinite=nonfinite.astype(jnp.float32), first_nonfinite_step=first.astype(jnp.float32))
    fraction = clipping.clip_fraction(new_state["opt_state"])  # relative clipping: share of steps clipped so far
    if fraction is not None:
      metrics["clip_fraction"] = fraction
    return new_state, metrics

  batch_sharding = sharding_lib.batch_sharding(mesh)
  jitted = jax.jit(train_step, in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
                   donate_argnums=(0,))
  _TRACE_COUNTERS[id(jitted)] = traces
  return jitted


def update_average(params_avg, params, step, period: int):
  """icefall's update_averaged_model at step `step` (the count after the update): at a multiple of `period`,
  params_avg * (1 - period/step) + params * period/step; otherwise params_avg unchanged."""
  def average():
    weight = period / step.astype(jnp.float32)
    return jax.tree.map(lambda a, p: a * (1.0 - weight) + p * weight, params_avg, params)
  return jax.lax.cond((step > 0) & (step % period == 0), average, lambda: params_avg)


def trace_count(jitted) -> int:
  return _TRACE_COUNTERS[id(jitted)][0]


def assert_single_trace(jitted, shapes: int = 1) -> None:
  """The step was traced exactly once per batch shape (`shapes`: 1, or the number of duration buckets)."""
  n = trace_count(jitted)
  if n != shapes:
    raise AssertionError(f"the train step was traced {n} times for {shapes} batch shape(s); it must compile once "
                         f"per shape (a changing shape, dtype or Python value reached it)")
