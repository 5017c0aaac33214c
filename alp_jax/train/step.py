"""The update step: one pure function of (train state, global batch), jitted once with the state donated.

Gradient accumulation (config.grad_accum_steps = k) is exact for every objective:
- Micro-batches are strided (rows j, j+k, j+2k, ...) so each stays evenly sharded over the batch axes.
- Captioning: caption cross-entropy is a token-weighted mean; each micro-batch contributes
  caption_sum_j / (token count of the WHOLE batch), whose gradients add up to the full-batch gradient.
- Contrastive (softmax / sigmoid / chunked): plain accumulation would change the objective (fewer negatives).
  We use the two-pass embedding cache (GradCache): pass 1 embeds every micro-batch without gradients; the loss
  and its gradient w.r.t. the (k*b, E) embeddings are computed on the full batch; pass 2 re-embeds each
  micro-batch with the same RNG and back-propagates the cached embedding gradients:
      grad = sum_j d/dparams [ <g_A_j, A_j(params)> + <g_T_j, T_j(params)> ] + d/dparams L(sg A, sg T; temperature)
  which equals the gradient of the loss on one large batch, at the memory of one micro-batch.
- Hybrid: both of the above in the same pass 2.
The same micro-batch RNG is used in both passes, so SpecAugment/dropout draw identically.

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
from alp_jax.train import freeze

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


def _contrastive_from_embeddings(model, audio_emb, text_emb, loss_cfg, mesh):
  out = {"audio_embedding": audio_emb, "text_embedding": text_emb, "temperature": model.temperature()}
  bias = getattr(model, "logit_bias", None)
  if bias is not None:
    out["bias"] = bias.value
  kind = objectives.contrastive_loss_kind(loss_cfg)
  return objectives.contrastive_loss_from_outputs(kind, out, loss_cfg, mesh)


def accumulated_loss_and_grads(graphdef, params, rest, batch, loss_cfg, rng, k: int, mesh, frozen_mask=None):
  """Exact full-batch loss and gradients from k micro-batches (see module docstring); frozen_mask as in
  freeze.value_and_grad (None: every parameter trains)."""
  if objectives.loss_kind(loss_cfg) == "tagging":
    raise ValueError("grad_accum_steps > 1 is not implemented for the tagging objective; use 1")
  contrastive_kind = objectives.contrastive_loss_kind(loss_cfg)
  has_caption = objectives.has_caption_loss(loss_cfg)
  batch_size = batch["audio"].shape[0]
  parallel_rng, micro_rng = jax.random.split(rng)
  model = nnx.merge(graphdef, params, rest)
  parallel = None
  total_count = jnp.zeros((), jnp.float32)
  if has_caption:
    parallel = objectives.draw_parallel(parallel_rng, batch_size, loss_cfg.get("parallel_fraction", 0.0))
    total_count = objectives.caption_target_count(model, batch, parallel)
    batch = dict(batch, parallel=parallel)
  micro = _split_micro(batch, k, mesh)
  micro_rngs = jax.random.split(micro_rng, k)
  kind = objectives.loss_kind(loss_cfg)
  w_contrastive = loss_cfg.get("contrastive_weight", 1.0) if kind == "hybrid" else 1.0
  w_caption = loss_cfg.get("caption_weight", 1.0) if kind == "hybrid" else 1.0

  def forward(p, mb, key):
    m = nnx.merge(graphdef, p, rest)
    mb = dict(mb)
    par = mb.pop("parallel", None)
    terms, metrics, out = objectives.loss_terms_with_outputs(m, mb, loss_cfg, train=True, rng=key, parallel=par,
                                                             mesh=mesh, contrastive=False)
    return terms, metrics, out

  # Pass 1: embeddings of every micro-batch, no gradients.
  contrastive_loss = jnp.zeros((), jnp.float32)
  grads = jax.tree.map(jnp.zeros_like, params)
  g_audio = g_text = None
  if contrastive_kind is not None:
    def embed(_, xs):
      mb, key = xs
      _, _, out = forward(params, mb, key)
      return None, (out["audio_embedding"], out["text_embedding"])
    _, (audio_embs, text_embs) = jax.lax.scan(embed, None, (micro, micro_rngs))
    audio_all, text_all = _merge_micro(audio_embs), _merge_micro(text_embs)

    def full_loss(p, a, t):
      return _contrastive_from_embeddings(nnx.merge(graphdef, p, rest), a, t, loss_cfg, mesh)
    contrastive_loss, (g_params, g_audio, g_text) = freeze.value_and_grad(
        full_loss, params, frozen_mask, jax.lax.stop_gradient(audio_all), jax.lax.stop_gradient(text_all),
        argnums_extra=True)
    grads = jax.tree.map(lambda g: w_contrastive * g, g_params)
    g_audio = _split_micro({"a": g_audio}, k, mesh)["a"]
    g_text = _split_micro({"t": g_text}, k, mesh)["t"]

  # Pass 2: per micro-batch surrogate whose gradients sum to the full-batch gradient.
  def backward(carry, xs):
    acc, caption_sum = carry
    mb, key, ga, gt = xs

    def surrogate(p):
      terms, metrics, out = forward(p, mb, key)
      value = jnp.zeros((), jnp.float32)
      if contrastive_kind is not None:
        value += w_contrastive * (jnp.sum(ga * out["audio_embedding"]) + jnp.sum(gt * out["text_embedding"]))
      if has_caption:
        value += w_caption * terms["caption_sum"] / jnp.maximum(total_count, 1.0)
      return value, (terms, metrics)

    (_, (terms, metrics)), g = freeze.value_and_grad(surrogate, params, frozen_mask, has_aux=True)
    acc = jax.tree.map(jnp.add, acc, g)
    return (acc, caption_sum + terms["caption_sum"]), metrics

  zeros_e = jnp.zeros((k, batch_size // k, 1), jnp.float32)
  xs = (micro, micro_rngs, g_audio if g_audio is not None else zeros_e, g_text if g_text is not None else zeros_e)
  (grads, caption_sum), metrics = jax.lax.scan(backward, (grads, jnp.zeros((), jnp.float32)), xs)
  metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
  caption_loss = caption_sum / jnp.maximum(total_count, 1.0)
  if kind == "hybrid":
    loss = w_contrastive * contrastive_loss + w_caption * caption_loss
  elif has_caption:
    loss = caption_loss
  else:
    loss = contrastive_loss
  if contrastive_kind is not None:
    metrics["contrastive_loss"] = contrastive_loss
  if has_caption:
    metrics["caption_loss"] = caption_loss
  metrics["loss"] = loss
  return loss, metrics, grads


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule, config, mesh, shardings):
  loss_cfg = config.loss
  k = int(config.get("grad_accum_steps", 1) or 1)
  frozen = freeze.names(config.optimizer.get("frozen", ()))

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
      if objectives.has_caption_loss(loss_cfg):
        parallel = objectives.draw_parallel(parallel_rng, batch["audio"].shape[0],
                                            loss_cfg.get("parallel_fraction", 0.0))

      def loss_fn(p):
        model = nnx.merge(graphdef, p, rest)
        return objectives.compute_loss(model, batch, loss_cfg, train=True, rng=model_rng, parallel=parallel,
                                       mesh=mesh)
      (loss, metrics), grads = freeze.value_and_grad(loss_fn, params, frozen_mask, has_aux=True)
    else:
      loss, metrics, grads = accumulated_loss_and_grads(graphdef, params, rest, batch, loss_cfg, rng, k, mesh,
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
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, learning_rate=schedule(step),
                   nonfinite=nonfinite.astype(jnp.float32), first_nonfinite_step=first.astype(jnp.float32))
    return new_state, metrics

  batch_sharding = sharding_lib.batch_sharding(mesh)
  jitted = jax.jit(train_step, in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
                   donate_argnums=(0,))
  _TRACE_COUNTERS[id(jitted)] = traces
  return jitted


def trace_count(jitted) -> int:
  return _TRACE_COUNTERS[id(jitted)][0]


def assert_single_trace(jitted) -> None:
  n = trace_count(jitted)
  if n != 1:
    raise AssertionError(f"the train step was traced {n} times; it must compile once per run "
                         f"(a changing shape, dtype or Python value reached it)")
