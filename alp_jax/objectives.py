"""Objective glue: model forward + the losses of alp_jax.losses + metrics, for every loss kind.

Dimension letters: B batch, E joint embedding width, L caption tokens, V vocabulary.

config.loss (`loss_cfg`) fields read here (study values in brackets):
  kind                "contrastive" (= "softmax") | "sigmoid" | "sigmoid_chunked" | "captioning" |
                      "hybrid"
  reduction           softmax loss: "mean" (ours) | "sum" [toolkit: sum]
  embedding_regulariser  weight of losses.embedding_regulariser added to the contrastive loss
                      [toolkit: embed_reg on, weight 1.0]
  label_smoothing     caption token cross-entropy [0.1]
  parallel_fraction   share of rows decoded in parallel-prediction mode [0.75]
  contrastive_kind    hybrid only: "softmax" | "sigmoid" | "sigmoid_chunked"
  contrastive_weight, caption_weight   hybrid only: loss = cw * contrastive + capw * caption

Exact token-weighted gradient accumulation. `loss_terms` returns additive pieces: the contrastive
loss of the (micro)batch and the caption cross-entropy as (sum over tokens, token count). For M
microbatches of one batch, draw `parallel` once for the whole batch (`draw_parallel`), count the
batch's caption targets (`caption_target_count`), and differentiate on microbatch m
    combine_terms(terms_m, loss_cfg, caption_count=total_count, contrastive_scale=1 / M);
the sum of these gradients is the gradient of the full-batch token-mean caption loss (and of the
mean of the microbatch contrastive losses, the usual accumulation, with fewer negatives).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax import losses
from alp_jax.models import caption_decoder

KINDS = ("contrastive", "softmax", "sigmoid", "sigmoid_chunked", "captioning", "hybrid", "tagging")
CONTRASTIVE_KINDS = ("softmax", "sigmoid", "sigmoid_chunked")


def loss_kind(loss_cfg: ml_collections.ConfigDict) -> str:
  kind = loss_cfg.kind
  if kind not in KINDS:
    raise ValueError(f"config.loss.kind must be one of {KINDS}, got {kind!r}")
  return "softmax" if kind == "contrastive" else kind


def contrastive_loss_kind(loss_cfg: ml_collections.ConfigDict) -> str | None:
  """The contrastive loss in play ("softmax" | "sigmoid" | "sigmoid_chunked"), None if none."""
  kind = loss_kind(loss_cfg)
  if kind == "hybrid":
    kind = loss_cfg.get("contrastive_kind", "softmax")
    if kind not in CONTRASTIVE_KINDS:
      raise ValueError(f"config.loss.contrastive_kind must be one of {CONTRASTIVE_KINDS}, "
                       f"got {kind!r}")
  return kind if kind in CONTRASTIVE_KINDS else None


def has_caption_loss(loss_cfg: ml_collections.ConfigDict) -> bool:
  return loss_kind(loss_cfg) in ("captioning", "hybrid")


def draw_parallel(rng: jax.Array | None, batch_size: int, fraction: float) -> jax.Array:
  """(B,) bool: round(B * fraction) rows chosen uniformly at random for parallel prediction.

  An exact count per batch (as the study toolkit does) rather than independent coin flips; each row
  is still parallel with probability `fraction`. rng None or fraction 0 -> all autoregressive.
  """
  count = int(round(batch_size * fraction))
  if rng is None or count == 0:
    return jnp.zeros((batch_size,), bool)
  ranks = jnp.argsort(jax.random.uniform(rng, (batch_size,)))  # a random permutation of rows
  return jnp.zeros((batch_size,), bool).at[ranks[:count]].set(True)


def _parallel_predicts_eos(model: nnx.Module) -> bool:
  return model.decoder.parallel_predicts_eos


def caption_target_count(model: nnx.Module, batch: dict[str, Any],
                         parallel: jax.Array) -> jax.Array:
  """Number of caption target tokens (float32 scalar) of `batch` under the row modes `parallel`."""
  mask = caption_decoder.caption_target_mask(batch["caption_tokens"], batch["caption_mask"],
                                             parallel, _parallel_predicts_eos(model))
  return jnp.sum(mask, dtype=jnp.float32)


def contrastive_loss_from_outputs(kind: str, out: dict[str, jax.Array], loss_cfg: ml_collections.ConfigDict,
                      mesh: jax.sharding.Mesh | None) -> jax.Array:
  audio_emb, text_emb = out["audio_embedding"], out["text_embedding"]
  temperature = out["temperature"]
  if kind == "softmax":
    loss = losses.contrastive_softmax(audio_emb, text_emb, temperature,
                                      reduction=loss_cfg.get("reduction", "mean"))
  else:
    if "bias" not in out:
      raise ValueError(f"a {kind!r} loss needs a logit bias, but the model has none; build the "
                       "two-tower model with config.loss.kind = 'sigmoid'")
    if kind == "sigmoid":
      loss = losses.contrastive_sigmoid(audio_emb, text_emb, temperature, out["bias"])
    else:
      mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
      if mesh is None or mesh.empty:
        raise ValueError("loss kind 'sigmoid_chunked' needs a mesh: pass mesh= or run under "
                         "jax.set_mesh(mesh)")
      loss = losses.contrastive_sigmoid_chunked(audio_emb, text_emb, temperature, out["bias"],
                                                mesh=mesh)
  weight = loss_cfg.get("embedding_regulariser", 0.0)
  if weight:
    loss = loss + weight * losses.embedding_regulariser(audio_emb, text_emb)
  return loss


def _contrastive_metrics(out: dict[str, jax.Array]) -> dict[str, jax.Array]:
  similarities = jnp.einsum("be,ce->bc", out["audio_embedding"],
                            out["text_embedding"])  # (B,E) x (B,E) -> (B,B)
  a2t_top1 = jnp.mean(jnp.argmax(similarities, axis=1) == jnp.arange(similarities.shape[0]))
  metrics = {"a2t_top1": a2t_top1.astype(jnp.float32), "temperature": out["temperature"]}
  if "bias" in out:
    metrics["bias"] = out["bias"]
  return metrics


def _caption_metrics(out: dict[str, jax.Array], targets: jax.Array) -> dict[str, jax.Array]:
  mask = out["caption_target_mask"]
  correct = (jnp.argmax(out["logits"], axis=-1) == targets) & mask  # (B,L)
  count = jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)
  return {
      "token_accuracy": jnp.sum(correct, dtype=jnp.float32) / count,
      "parallel_fraction": jnp.mean(out["parallel"].astype(jnp.float32)),
  }


def loss_terms_with_outputs(model: nnx.Module, batch: dict[str, Any],
                            loss_cfg: ml_collections.ConfigDict, *, train: bool,
                            rng: jax.Array | None, parallel: jax.Array | None = None,
                            mesh: jax.sharding.Mesh | None = None, contrastive: bool = True
                            ) -> tuple[dict[str, jax.Array], dict[str, jax.Array],
                                       dict[str, jax.Array]]:
  """`loss_terms` plus the model's out_dict; contrastive=False skips the contrastive loss (terms
  keep 0 there), for callers that compute it themselves on gathered embeddings (GradCache)."""
  contrastive_kind = contrastive_loss_kind(loss_cfg)
  has_caption = has_caption_loss(loss_cfg)
  if rng is None:
    model_rngs, parallel_rng = None, None
  else:
    augment_key, dropout_key, parallel_rng = jax.random.split(rng, 3)
    model_rngs = nnx.Rngs(augment=augment_key, dropout=dropout_key)
  if has_caption:
    if parallel is None:
      parallel = draw_parallel(parallel_rng, batch["caption_tokens"].shape[0],
                               loss_cfg.get("parallel_fraction", 0.0))
    _, out = model(batch, train=train, rngs=model_rngs, parallel=parallel)
  else:
    _, out = model(batch, train=train, rngs=model_rngs)

  zero = jnp.zeros((), jnp.float32)
  terms = {"contrastive": zero, "caption_sum": zero, "caption_count": zero}
  metrics: dict[str, jax.Array] = {}
  if contrastive_kind is not None:
    if contrastive:
      terms["contrastive"] = contrastive_loss_from_outputs(contrastive_kind, out, loss_cfg, mesh)
      metrics["contrastive_loss"] = terms["contrastive"]
    metrics.update(_contrastive_metrics(out))
  if has_caption:
    targets = batch["caption_tokens"]
    caption_sum, caption_count = losses.caption_xent(
        out["logits"], targets, out["caption_target_mask"],
        label_smoothing=loss_cfg.get("label_smoothing", 0.0), reduction="sum_and_count")
    terms["caption_sum"], terms["caption_count"] = caption_sum, caption_count
    metrics["caption_loss"] = caption_sum / jnp.maximum(caption_count, 1.0)
    metrics.update(_caption_metrics(out, targets))
  return terms, metrics, out


def loss_terms(model: nnx.Module, batch: dict[str, Any], loss_cfg: ml_collections.ConfigDict, *,
               train: bool, rng: jax.Array | None, parallel: jax.Array | None = None,
               mesh: jax.sharding.Mesh | None = None
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Forward pass and the additive pieces of the loss.

  Args:
    model: a TwoTowers (contrastive kinds), Captioner ("captioning") or Hybrid ("hybrid").
    batch: the contract batch (audio, audio_mask, caption_tokens, caption_mask, ...).
    loss_cfg: config.loss.
    train: SpecAugment and dropout on.
    rng: the step key: drives SpecAugment, dropout and (unless `parallel` is given) the choice of
      parallel-prediction rows. None: no augmentation or dropout, all rows autoregressive.
    parallel: (B,) bool row modes, to share one draw across microbatches; None draws it from rng.
    mesh: for "sigmoid_chunked"; None uses the ambient mesh (jax.set_mesh).

  Returns:
    terms: contrastive (scalar; 0 without a contrastive part), caption_sum and caption_count
      (float32 scalars; 0 without a caption part), and metrics: a2t_top1, temperature (and bias),
      token_accuracy, parallel_fraction, contrastive_loss / caption_loss as applicable.
  """
  terms, metrics, _ = loss_terms_with_outputs(model, batch, loss_cfg, train=train, rng=rng,
                                              parallel=parallel, mesh=mesh)
  return terms, metrics


def combine_terms(terms: dict[str, jax.Array], loss_cfg: ml_collections.ConfigDict, *,
                  caption_count: jax.Array | None = None,
                  contrastive_scale: float = 1.0) -> jax.Array:
  """The scalar loss from `loss_terms` pieces.

  caption = caption_sum / caption_count, where caption_count defaults to the terms' own count
  (pass the whole batch's count when accumulating microbatches); contrastive is multiplied by
  contrastive_scale (1 / number of microbatches when accumulating). Pure kinds return their part;
  "hybrid" returns contrastive_weight * contrastive + caption_weight * caption.
  """
  count = terms["caption_count"] if caption_count is None else caption_count
  caption = terms["caption_sum"] / jnp.maximum(count, 1.0)
  contrastive = terms["contrastive"] * contrastive_scale
  kind = loss_kind(loss_cfg)
  if kind == "captioning":
    return caption
  if kind == "hybrid":
    return (loss_cfg.get("contrastive_weight", 1.0) * contrastive
            + loss_cfg.get("caption_weight", 1.0) * caption)
  return contrastive


def tagging_loss(model: nnx.Module, batch: dict[str, Any], loss_cfg: ml_collections.ConfigDict, *,
                 train: bool, rng: jax.Array | None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Supervised tagging on manifest labels: multi-label BCE (default) or single-label CE.

  batch["labels"] (B,C) float32 multi-hot; batch["label_weight"] (B,) 1 for clips that carry the task's label.
  The loss is averaged over weighted clips (BCE summed over classes, as in AudioSet taggers).
  """
  model_rngs = None
  if rng is not None:
    augment_key, dropout_key = jax.random.split(rng)
    model_rngs = nnx.Rngs(augment=augment_key, dropout=dropout_key)
  logits, _ = model(batch, train=train, rngs=model_rngs)
  logits = logits.astype(jnp.float32)                    # (B,C)
  labels, weight = batch["labels"].astype(jnp.float32), batch["label_weight"].astype(jnp.float32)
  count = jnp.maximum(jnp.sum(weight), 1.0)
  if loss_cfg.get("multilabel", True):
    per_clip = jnp.sum(optax_sigmoid_bce(logits, labels), axis=-1)  # (B,)
    correct = jnp.all((logits > 0) == (labels > 0.5), axis=-1)
  else:
    per_clip = -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    correct = jnp.argmax(logits, -1) == jnp.argmax(labels, -1)
  loss = jnp.sum(per_clip * weight) / count
  accuracy = jnp.sum(correct.astype(jnp.float32) * weight) / count
  return loss, {"loss": loss, "tag_accuracy": accuracy, "labelled_fraction": jnp.mean(weight)}


def optax_sigmoid_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Elementwise binary cross-entropy with logits, numerically stable."""
  return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def compute_loss(model: nnx.Module, batch: dict[str, Any], loss_cfg: ml_collections.ConfigDict, *,
                 train: bool, rng: jax.Array | None, parallel: jax.Array | None = None,
                 mesh: jax.sharding.Mesh | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss scalar, metrics) for config.loss.kind; arguments as in `loss_terms`.

  metrics["loss"] is the returned loss.
  """
  if loss_kind(loss_cfg) == "tagging":
    return tagging_loss(model, batch, loss_cfg, train=train, rng=rng)
  terms, metrics = loss_terms(model, batch, loss_cfg, train=train, rng=rng, parallel=parallel,
                              mesh=mesh)
  loss = combine_terms(terms, loss_cfg)
  metrics["loss"] = loss
  return loss, metrics
