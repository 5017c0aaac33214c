"""The objective table: one entry per objective, built from config.loss, used by the update step, the
validation-loss evaluator and the tests alike.

Dimension letters: B batch, E joint embedding width, L caption tokens, V vocabulary, C tagging classes.

Padded rows (duration-bucketed batches, data.batch_seconds) contribute nothing to any term: the contrastive term
gets `row_mask(batch)` (no positive, no negative), a padded row has no caption tokens (caption_mask all False) and
no label (label_weight 0), so the mean terms count none of its units.

An objective is a weighted sum of loss terms. A term is one of two kinds, and its kind says how it accumulates
exactly over micro-batches (alp_jax/train/step.py runs this generically, with no per-objective branch):
  ContrastiveTerm  a function of the whole batch's (B,E) audio and text embeddings (plus temperature and logit
                   bias). Accumulated with the two-pass embedding cache (GradCache).
  MeanTerm         sum over units / number of units in the whole batch (caption tokens; labelled clips). Each
                   micro-batch contributes its sum divided by the WHOLE batch's count, which `counts` computes
                   before any forward pass, so the gradients add up to the full-batch gradient.

config.loss fields read here (study values in brackets):
  kind                 a key of OBJECTIVES: "contrastive" (= "softmax") | "sigmoid" | "sigmoid_chunked" |
                       "captioning" | "hybrid" | "tagging"
  reduction            softmax loss: "mean" (ours) | "sum" [toolkit: sum]
  embedding_regulariser  weight of losses.embedding_regulariser added to the contrastive loss [toolkit: on, 1.0]
  label_smoothing      caption token cross-entropy [0.1]
  parallel_fraction    share of rows decoded in parallel-prediction mode [0.75]
  contrastive_kind     hybrid only: a key of CONTRASTIVE_LOSSES
  contrastive_weight, caption_weight   hybrid only: loss = cw * contrastive + capw * caption (configs/hybrid.py:
                       tau and 1 on mean reductions, which balances the two gradients; docs/objectives.md)
  multilabel           tagging: per-class BCE (True) or softmax cross-entropy (False)

To add a contrastive variant: its loss in alp_jax/losses.py, one CONTRASTIVE_LOSSES entry, a config variant.
To add an objective: its loss terms in alp_jax/losses.py, one OBJECTIVES entry, a config.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from alp_jax import losses
from alp_jax.models import caption_decoder, encoders

Batch = dict[str, Any]
CAPTION_KEYS = ("caption_tokens", "caption_mask")
LABEL_KEYS = ("labels", "label_weight")


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


def row_mask(batch: Batch) -> jax.Array:
  """(B,) bool: the real rows of a batch. A padded row (duration-bucketed batches, data.batch_seconds) has no
  audio at all (audio_mask all False); every real clip has at least one sample."""
  return jnp.any(batch["audio_mask"], axis=1)


# --- Contrastive losses: name -> (loss of embeddings, does it need the model's logit bias).

@dataclasses.dataclass(frozen=True)
class ContrastiveLoss:
  fn: Callable[..., jax.Array]   # (audio_emb, text_emb, temperature, bias, loss_cfg, mesh, valid) -> scalar
  needs_logit_bias: bool


def _softmax(audio_emb, text_emb, temperature, bias, loss_cfg, mesh, valid=None):
  del bias, mesh
  return losses.contrastive_softmax(audio_emb, text_emb, temperature, reduction=loss_cfg.get("reduction", "mean"),
                                    valid=valid)


def _sigmoid(audio_emb, text_emb, temperature, bias, loss_cfg, mesh, valid=None):
  del loss_cfg, mesh
  return losses.contrastive_sigmoid(audio_emb, text_emb, temperature, bias, valid=valid)


def _sigmoid_chunked(audio_emb, text_emb, temperature, bias, loss_cfg, mesh, valid=None):
  del loss_cfg
  mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    raise ValueError("loss 'sigmoid_chunked' needs a mesh: pass mesh= or run under jax.set_mesh(mesh)")
  return losses.contrastive_sigmoid_chunked(audio_emb, text_emb, temperature, bias, mesh=mesh, valid=valid)


CONTRASTIVE_LOSSES: dict[str, ContrastiveLoss] = {
    "softmax": ContrastiveLoss(_softmax, needs_logit_bias=False),
    "sigmoid": ContrastiveLoss(_sigmoid, needs_logit_bias=True),
    "sigmoid_chunked": ContrastiveLoss(_sigmoid_chunked, needs_logit_bias=True),
}


# --- Loss terms.

@dataclasses.dataclass(frozen=True)
class ContrastiveTerm:
  """A contrastive loss on the (B,E) audio and text embeddings of the whole batch."""
  loss: str                                 # a key of CONTRASTIVE_LOSSES
  loss_cfg: ml_collections.FrozenConfigDict
  batch_keys = CAPTION_KEYS
  needs = encoders.TEXT_TOWER

  def value(self, audio_emb, text_emb, temperature, bias, mesh, valid=None) -> jax.Array:
    """valid: (B,) bool, False on padded rows (`row_mask`), which take no part in the loss."""
    entry = CONTRASTIVE_LOSSES[self.loss]
    if entry.needs_logit_bias and bias is None:
      raise ValueError(f"the {self.loss!r} loss needs a logit bias, but the model has none: set "
                       f"config.model.logit_bias=True")
    loss = entry.fn(audio_emb, text_emb, temperature, bias, self.loss_cfg, mesh, valid)
    weight = self.loss_cfg.get("embedding_regulariser", 0.0)
    if weight:
      loss = loss + weight * losses.embedding_regulariser(audio_emb, text_emb, valid)
    return loss

  def metrics(self, out: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    valid = row_mask(batch)  # (B,)
    similarities = jnp.einsum("be,ce->bc", out["audio_embedding"], out["text_embedding"])  # (B,E) x (B,E) -> (B,B)
    similarities = jnp.where(valid[None, :], similarities, -jnp.inf)  # padded captions are no candidates
    hits = (jnp.argmax(similarities, axis=1) == jnp.arange(similarities.shape[0])) & valid
    a2t_top1 = jnp.sum(hits, dtype=jnp.float32) / jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0)
    metrics = {"a2t_top1": a2t_top1, "temperature": out["temperature"]}
    if "bias" in out:
      metrics["bias"] = out["bias"]
    return metrics


@dataclasses.dataclass(frozen=True)
class CaptionTerm:
  """Label-smoothed token cross-entropy of the caption decoder: a token-weighted mean."""
  label_smoothing: float
  batch_keys = CAPTION_KEYS
  needs = encoders.CAPTION_DECODER

  def sum_and_count(self, out: dict[str, jax.Array], batch: Batch) -> tuple[jax.Array, jax.Array]:
    return losses.caption_xent(out["logits"], batch["caption_tokens"], out["caption_target_mask"],
                               label_smoothing=self.label_smoothing, reduction="sum_and_count")

  def count(self, model: nnx.Module, batch: Batch, parallel: jax.Array) -> jax.Array:
    """Caption target tokens (float32 scalar) of `batch` under the row modes `parallel`, without a forward."""
    mask = caption_decoder.caption_target_mask(batch["caption_tokens"], batch["caption_mask"], parallel,
                                               model.decoder.parallel_predicts_eos)
    return jnp.sum(mask, dtype=jnp.float32)

  def metrics(self, out: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    mask = out["caption_target_mask"]
    correct = (jnp.argmax(out["logits"], axis=-1) == batch["caption_tokens"]) & mask  # (B,L)
    count = jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)
    return {"token_accuracy": jnp.sum(correct, dtype=jnp.float32) / count,
            "parallel_fraction": jnp.mean(out["parallel"].astype(jnp.float32))}


@dataclasses.dataclass(frozen=True)
class TaggingTerm:
  """Supervised tagging on manifest labels: a clip-weighted mean over the labelled clips."""
  multilabel: bool
  batch_keys = LABEL_KEYS
  needs = encoders.CLASSIFIER

  def sum_and_count(self, out: dict[str, jax.Array], batch: Batch) -> tuple[jax.Array, jax.Array]:
    return losses.tagging_xent(out["logits"], batch["labels"], batch["label_weight"], self.multilabel,
                               reduction="sum_and_count")

  def count(self, model: nnx.Module, batch: Batch, parallel: jax.Array | None) -> jax.Array:
    del model, parallel
    return jnp.sum(batch["label_weight"], dtype=jnp.float32)

  def metrics(self, out: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    logits = out["logits"].astype(jnp.float32)
    labels, weight = batch["labels"].astype(jnp.float32), batch["label_weight"].astype(jnp.float32)
    if self.multilabel:
      correct = jnp.all((logits > 0) == (labels > 0.5), axis=-1)
    else:
      correct = jnp.argmax(logits, -1) == jnp.argmax(labels, -1)
    count = jnp.maximum(jnp.sum(weight), 1.0)
    return {"tag_accuracy": jnp.sum(correct.astype(jnp.float32) * weight) / count,
            "labelled_fraction": jnp.mean(weight)}


Term = ContrastiveTerm | CaptionTerm | TaggingTerm


# --- The objective.

@dataclasses.dataclass(frozen=True)
class Objective:
  """A weighted sum of named loss terms. Metrics: NAME_loss per term, the terms' own metrics, loss."""
  name: str
  terms: tuple[tuple[str, Term, float], ...]   # (term name, term, weight)
  parallel_fraction: float = 0.0               # caption rows decoded in parallel-prediction mode

  @property
  def batch_keys(self) -> tuple[str, ...]:
    """Batch entries the loss reads besides audio and audio_mask."""
    return tuple(dict.fromkeys(k for _, term, _ in self.terms for k in term.batch_keys))

  @property
  def needs(self) -> frozenset[str]:
    """Model capabilities the terms need (alp_jax/models/encoders.py)."""
    return frozenset(term.needs for _, term, _ in self.terms)

  @property
  def contrastive(self) -> tuple[str, ContrastiveTerm, float] | None:
    """The (at most one) contrastive term."""
    found = [t for t in self.terms if isinstance(t[1], ContrastiveTerm)]
    return found[0] if found else None

  @property
  def mean_terms(self) -> tuple[tuple[str, Term, float], ...]:
    return tuple(t for t in self.terms if not isinstance(t[1], ContrastiveTerm))

  @property
  def draws_parallel(self) -> bool:
    """Whether the model takes row modes (a caption term)."""
    return any(isinstance(term, CaptionTerm) for _, term, _ in self.terms)

  def check(self, model_cls_or_model, batch_keys=None, *, model_cfg=None) -> None:
    """A clear error when the model lacks a part the terms need, the batch lacks a key, or the logit bias
    setting of the model does not fit the contrastive loss."""
    have = encoders.capabilities_of(model_cls_or_model)
    missing = sorted(self.needs - have)
    if missing:
      raise ValueError(f"objective {self.name!r} needs a model with {', '.join(missing)}; the model has "
                       f"{', '.join(sorted(have)) or 'none of the parts'}: pick another config.model.name or "
                       f"config.loss.kind")
    if batch_keys is not None:
      absent = [k for k in self.batch_keys if k not in batch_keys]
      if absent:
        hint = " (set config.data.label_task)" if set(absent) & set(LABEL_KEYS) else ""
        raise ValueError(f"objective {self.name!r} reads batch entries {absent} that the data pipeline does not "
                         f"produce{hint}")
    contrastive = self.contrastive
    if contrastive is not None and model_cfg is not None:
      wanted = CONTRASTIVE_LOSSES[contrastive[1].loss].needs_logit_bias
      if bool(model_cfg.get("logit_bias", False)) != wanted:
        raise ValueError(f"objective {self.name!r} uses the {contrastive[1].loss!r} loss, which "
                         f"{'needs' if wanted else 'has no use for'} a logit bias: set "
                         f"config.model.logit_bias={wanted}")

  def forward(self, model: nnx.Module, batch: Batch, *, train: bool, rng: jax.Array | None,
              parallel: jax.Array | None = None) -> dict[str, jax.Array]:
    """The model's out_dict. rng drives SpecAugment, dropout and (unless `parallel` is given) the row modes;
    None: no augmentation or dropout, all rows autoregressive."""
    if rng is None:
      model_rngs, parallel_rng = None, None
    else:
      augment_key, dropout_key, parallel_rng = jax.random.split(rng, 3)
      model_rngs = nnx.Rngs(augment=augment_key, dropout=dropout_key)
    if not self.draws_parallel:
      return model(batch, train=train, rngs=model_rngs)[1]
    if parallel is None:
      parallel = draw_parallel(parallel_rng, batch["caption_tokens"].shape[0], self.parallel_fraction)
    return model(batch, train=train, rngs=model_rngs, parallel=parallel)[1]

  def terms_and_metrics(self, model: nnx.Module, batch: Batch, *, train: bool, rng: jax.Array | None,
                        parallel: jax.Array | None = None, mesh: jax.sharding.Mesh | None = None,
                        contrastive: bool = True):
    """-> (values, metrics, out). values[name]: the contrastive term's scalar, or a mean term's (sum, count).

    contrastive=False leaves the contrastive value out (the embedding cache computes it on the whole batch).
    """
    out = self.forward(model, batch, train=train, rng=rng, parallel=parallel)
    values: dict[str, Any] = {}
    metrics: dict[str, jax.Array] = {}
    for name, term, _ in self.terms:
      if isinstance(term, ContrastiveTerm):
        if contrastive:
          values[name] = term.value(out["audio_embedding"], out["text_embedding"], out["temperature"],
                                    out.get("bias"), mesh, row_mask(batch))
          metrics[f"{name}_loss"] = values[name]
      else:
        values[name] = term.sum_and_count(out, batch)
        metrics[f"{name}_loss"] = values[name][0] / jnp.maximum(values[name][1], 1.0)
      metrics.update(term.metrics(out, batch))
    return values, metrics, out

  def combine(self, values: dict[str, Any], *, counts: dict[str, jax.Array] | None = None,
              contrastive_scale: float = 1.0) -> jax.Array:
    """The scalar loss: sum of weight * term. A mean term divides its sum by counts[name] (the whole batch's
    count when accumulating; default: its own); the contrastive value is multiplied by contrastive_scale."""
    loss = jnp.zeros((), jnp.float32)
    for name, term, weight in self.terms:
      if isinstance(term, ContrastiveTerm):
        loss = loss + weight * contrastive_scale * values[name]
      else:
        total, count = values[name]
        count = count if counts is None else counts[name]
        loss = loss + weight * total / jnp.maximum(count, 1.0)
    return loss

  def counts(self, model: nnx.Module, batch: Batch, parallel: jax.Array | None) -> dict[str, jax.Array]:
    """The whole batch's unit count of every mean term (float32 scalars), computed without a forward pass."""
    return {name: term.count(model, batch, parallel) for name, term, _ in self.mean_terms}

  def loss(self, model: nnx.Module, batch: Batch, *, train: bool, rng: jax.Array | None,
           parallel: jax.Array | None = None, mesh: jax.sharding.Mesh | None = None
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) on one batch; metrics["loss"] is the loss."""
    values, metrics, _ = self.terms_and_metrics(model, batch, train=train, rng=rng, parallel=parallel, mesh=mesh)
    loss = self.combine(values)
    metrics["loss"] = loss
    return loss, metrics


def _contrastive(loss: str) -> Callable[[ml_collections.ConfigDict], Objective]:
  def build(loss_cfg):
    return Objective(loss, (("contrastive", ContrastiveTerm(loss, _frozen(loss_cfg)), 1.0),))
  return build


def _captioning(loss_cfg) -> Objective:
  return Objective("captioning", (("caption", CaptionTerm(loss_cfg.get("label_smoothing", 0.0)), 1.0),),
                   parallel_fraction=loss_cfg.get("parallel_fraction", 0.0))


def _hybrid(loss_cfg) -> Objective:
  kind = loss_cfg.get("contrastive_kind", "softmax")
  if kind not in CONTRASTIVE_LOSSES:
    raise ValueError(f"config.loss.contrastive_kind must be one of {tuple(CONTRASTIVE_LOSSES)}, got {kind!r}")
  return Objective("hybrid", (
      ("contrastive", ContrastiveTerm(kind, _frozen(loss_cfg)), loss_cfg.get("contrastive_weight", 1.0)),
      ("caption", CaptionTerm(loss_cfg.get("label_smoothing", 0.0)), loss_cfg.get("caption_weight", 1.0)),
  ), parallel_fraction=loss_cfg.get("parallel_fraction", 0.0))


def _tagging(loss_cfg) -> Objective:
  return Objective("tagging", (("tagging", TaggingTerm(bool(loss_cfg.get("multilabel", True))), 1.0),))


def _frozen(loss_cfg) -> ml_collections.FrozenConfigDict:
  return ml_collections.FrozenConfigDict(loss_cfg)


OBJECTIVES: dict[str, Callable[[ml_collections.ConfigDict], Objective]] = {
    "contrastive": _contrastive("softmax"),
    "softmax": _contrastive("softmax"),
    "sigmoid": _contrastive("sigmoid"),
    "sigmoid_chunked": _contrastive("sigmoid_chunked"),
    "captioning": _captioning,
    "hybrid": _hybrid,
    "tagging": _tagging,
}


def get(loss_cfg: ml_collections.ConfigDict) -> Objective:
  """The objective of config.loss."""
  kind = loss_cfg.get("kind")
  if kind not in OBJECTIVES:
    raise ValueError(f"config.loss.kind must be one of {tuple(OBJECTIVES)}, got {kind!r}")
  return OBJECTIVES[kind](loss_cfg)
