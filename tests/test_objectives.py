"""Objective glue: hybrid = weighted parts, metrics against NumPy, exact token-weighted
accumulation, the parallel-row draw, one jitted grad step per loss kind (tiny models, batch 8)."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from alp_jax import losses, models, objectives
from alp_jax.audio import frontend
from alp_jax.data.tokenizer import EOS_ID, PAD_ID
from alp_jax.models import captioner, decoding, hybrid, two_towers

B, SAMPLES, VOCAB, MEL = 8, 4000, 32, 16
MODULES = {"two_towers": two_towers, "captioner": captioner, "hybrid": hybrid}


def _config(name: str, **loss) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = MODULES[name].default_config()
  c.model.vocab_size = VOCAB
  c.model.audio.num_mel_bins = MEL
  if "decoder" in c.model:
    c.model.decoder.update(size="tiny", dropout=0.1, max_len=8)
  if "head" in c.model:
    c.model.head.update(hidden_dim=32, embed_dim=16)
    c.model.text.max_tokens = 8
  c.frontend = frontend.default_frontend_config()
  c.frontend.num_mel_bins = MEL
  c.frontend.spec_augment.update(num_time_masks=2, max_time_width=5, max_freq_width=4,
                                 time_warp_factor=0)
  c.loss = ml_collections.ConfigDict(dict(label_smoothing=0.1, parallel_fraction=0.75, **loss))
  c.model.logit_bias = "sigmoid" in (loss.get("kind", "") + loss.get("contrastive_kind", ""))
  return c


@functools.lru_cache(maxsize=None)
def _model(name: str, kind: str):
  return models.build_model(_config(name, kind=kind), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  lengths = np.array([4000, 3000, 2500, 4000, 3500, 2000, 4000, 3800])
  audio_mask = np.arange(SAMPLES)[None] < lengths[:, None]
  audio = np.where(audio_mask, rng.normal(size=(B, SAMPLES)) * 3000, 0).astype(np.int16)
  caption_lengths = np.array([3, 5, 2, 7, 4, 1, 6, 3])  # words; then EOS, then PAD
  tokens = np.full((B, 8), PAD_ID, np.int32)
  for b, n in enumerate(caption_lengths):
    tokens[b, :n] = rng.integers(4, VOCAB, n)
    tokens[b, n] = EOS_ID
  return {"audio": audio, "audio_mask": audio_mask, "caption_tokens": tokens,
          "caption_mask": tokens != PAD_ID, "source": np.zeros(B, np.int32)}


def _global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


PARALLEL = np.array([True, False, True, True, False, True, True, True])  # 6 of 8


def _numpy_xent(logits, targets, mask, eps):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  per_token = (1 - eps) * nll - eps * log_probs.mean(-1)
  return (per_token * mask).sum() / mask.sum()


def test_hybrid_loss_is_the_weighted_sum_of_its_parts(batch):
  model = _model("hybrid", "hybrid")
  loss_cfg = _config("hybrid", kind="hybrid", contrastive_weight=0.5, caption_weight=2.0).loss

  @nnx.jit
  def loss_and_outputs(model, batch):
    loss, metrics = objectives.get(loss_cfg).loss(model, batch, train=False, rng=None, parallel=PARALLEL)
    return loss, metrics, model(batch, parallel=PARALLEL)[1]

  loss, metrics, out = loss_and_outputs(model, batch)
  tokens, mask = batch["caption_tokens"], batch["caption_mask"]
  target_mask = mask & ~(PARALLEL[:, None] & (tokens == EOS_ID))  # parallel rows: no EOS target
  caption = _numpy_xent(out["logits"], tokens, target_mask, 0.1)
  contrastive = float(losses.contrastive_softmax(out["audio_embedding"], out["text_embedding"],
                                                 out["temperature"]))
  np.testing.assert_allclose(float(loss), 0.5 * contrastive + 2.0 * caption, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["caption_loss"]), caption, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["contrastive_loss"]), contrastive, rtol=1e-6)
  similarities = np.asarray(out["audio_embedding"]) @ np.asarray(out["text_embedding"]).T
  assert float(metrics["a2t_top1"]) == np.mean(similarities.argmax(1) == np.arange(B))
  predicted = np.asarray(out["logits"]).argmax(-1)
  assert np.isclose(float(metrics["token_accuracy"]),
                    ((predicted == tokens) & target_mask).sum() / target_mask.sum())
  assert float(metrics["parallel_fraction"]) == 0.75
  assert float(metrics["temperature"]) == pytest.approx(0.07)


def test_token_weighted_accumulation_is_exact(batch):
  """Two microbatches with combine(counts=whole batch) give the full-batch gradient."""
  model = _model("captioner", "captioning")
  objective = objectives.get(_config("captioner", kind="captioning").loss)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def grads(params, batch, parallel, total):
    def loss_fn(p):
      values, _, _ = objective.terms_and_metrics(nnx.merge(graphdef, p, rest), batch, train=False, rng=None,
                                                 parallel=parallel)
      return objective.combine(values, counts={"caption": total}, contrastive_scale=0.5)
    return jax.grad(loss_fn)(params)

  total = objective.counts(model, batch, PARALLEL)["caption"]
  assert float(total) == (batch["caption_mask"].sum() - PARALLEL.sum())  # parallel rows drop EOS
  full = grads(params, batch, PARALLEL, total)
  # Microbatches of unequal token counts (rows 0-3 hold 21 tokens, rows 4-7 hold 18).
  halves = [jax.tree.map(lambda x, s=s: x[s], batch) for s in (slice(0, 4), slice(4, 8))]
  summed = jax.tree.map(jnp.add, *[grads(params, half, PARALLEL[s], total)
                                   for half, s in zip(halves, (slice(0, 4), slice(4, 8)))])
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(full)]
  for path, full_grad, summed_grad in zip(paths, jax.tree.leaves(full), jax.tree.leaves(summed)):
    np.testing.assert_allclose(np.asarray(summed_grad), np.asarray(full_grad), rtol=1e-4,
                               atol=1e-7, err_msg=path)


def test_draw_parallel_exact_count_uniform_rows():
  draws = jax.vmap(lambda k: objectives.draw_parallel(k, B, 0.75))(
      jax.random.split(jax.random.key(0), 400))
  draws = np.asarray(draws)
  assert (draws.sum(1) == 6).all()
  assert len({tuple(d) for d in draws}) > 20  # different rows from different keys
  assert np.all(np.abs(draws.mean(0) - 0.75) < 0.1)  # every row equally likely
  assert not np.asarray(objectives.draw_parallel(None, B, 0.75)).any()
  assert not np.asarray(objectives.draw_parallel(jax.random.key(1), B, 0.0)).any()


def test_unknown_kind_is_rejected():
  with pytest.raises(ValueError, match="config.loss.kind"):
    objectives.get(ml_collections.ConfigDict(dict(kind="ctc")))


# The softmax and captioning steps also run (through the production train step, with exact numbers) in
# tests/test_accumulation.py, so CI runs them there only; `make test-slow` runs them here too.
@pytest.mark.parametrize("name,kind,extra", [
    pytest.param("two_towers", "contrastive", {}, marks=pytest.mark.slow),
    ("two_towers", "sigmoid", {}),
    ("two_towers", "sigmoid_chunked", {}),
    pytest.param("captioner", "captioning", {}, marks=pytest.mark.slow),
    ("hybrid", "hybrid", {"contrastive_kind": "softmax"}),
])
def test_jitted_grad_step_runs(batch, name, kind, extra):
  model = _model(name, kind)
  loss_cfg = _config(name, kind=kind, **extra).loss
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  global_batch = {k: jax.device_put(v, NamedSharding(mesh, PartitionSpec("data")))
                  for k, v in batch.items()}

  @jax.jit
  def step(params, batch, key):
    def loss_fn(p):
      return objectives.get(loss_cfg).loss(nnx.merge(graphdef, p, rest), batch, train=True, rng=key)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    new_params = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
    return loss, metrics, _global_norm(grads), new_params

  with jax.set_mesh(mesh):  # sigmoid_chunked finds the ambient mesh
    loss, metrics, grad_norm, _ = step(params, global_batch, jax.random.key(0))
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert np.isfinite(float(grad_norm)) and float(grad_norm) > 0
  assert float(metrics["loss"]) == float(loss)
  if kind in ("captioning", "hybrid"):
    assert float(metrics["parallel_fraction"]) == 0.75
    assert 0.0 <= float(metrics["token_accuracy"]) <= 1.0
  if kind != "captioning":
    assert 0.0 <= float(metrics["a2t_top1"]) <= 1.0 and "temperature" in metrics
  if "sigmoid" in kind:
    np.testing.assert_allclose(float(metrics["bias"]), -10.0)


def test_captioner_generates_eos_terminated_captions(batch):
  model = _model("captioner", "captioning")
  tokens, mask, scores = model.generate(batch["audio"][:2], batch["audio_mask"][:2], max_len=6,
                                        beam_size=2)
  tokens, mask = np.asarray(tokens), np.asarray(mask)
  assert tokens.shape == (2, 6) and np.isfinite(np.asarray(scores)).all()
  assert (tokens[~mask] == PAD_ID).all()
  frames, out = model.encode_audio(batch["audio"][:2], batch["audio_mask"][:2])
  np.testing.assert_allclose(
      np.asarray(scores),
      np.asarray(decoding.score_captions(model.decoder, frames, out["frame_mask"], tokens, mask)),
      rtol=1e-5)


def test_objective_table_declares_keys_needs_and_checks_models():
  """Each entry declares what it reads and needs; check() names what is missing before any compile."""
  hybrid_objective = objectives.get(_config("hybrid", kind="hybrid").loss)
  assert hybrid_objective.batch_keys == ("caption_tokens", "caption_mask")
  assert hybrid_objective.needs == {"text_tower", "caption_decoder"} and hybrid_objective.draws_parallel
  tagging = objectives.get(ml_collections.ConfigDict(dict(kind="tagging")))
  assert tagging.batch_keys == ("labels", "label_weight") and not tagging.draws_parallel
  with pytest.raises(ValueError, match="caption_decoder"):
    objectives.get(_config("captioner", kind="captioning").loss).check(two_towers.TwoTowers)
  with pytest.raises(ValueError, match="label_task"):
    tagging.check(models.MODELS["tagger"], ("audio", "audio_mask", "caption_tokens"))
  sigmoid_cfg = _config("two_towers", kind="sigmoid")
  objectives.get(sigmoid_cfg.loss).check(two_towers.TwoTowers, model_cfg=sigmoid_cfg.model)
  sigmoid_cfg.model.logit_bias = False
  with pytest.raises(ValueError, match="logit_bias=True"):
    objectives.get(sigmoid_cfg.loss).check(two_towers.TwoTowers, model_cfg=sigmoid_cfg.model)


def test_tagging_loss_against_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 5)).astype(np.float32)
  labels = (rng.random((6, 5)) < 0.4).astype(np.float32)
  weight = np.array([1, 0, 1, 1, 0, 1], np.float32)
  bce = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
  want = (bce.sum(-1) * weight).sum() / weight.sum()
  np.testing.assert_allclose(float(losses.tagging_xent(logits, labels, weight)), want, rtol=1e-6)
  one_hot = np.eye(5, dtype=np.float32)[[0, 3, 1, 4, 2, 2]]
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = (-(one_hot * log_softmax).sum(-1) * weight).sum() / weight.sum()
  np.testing.assert_allclose(float(losses.tagging_xent(logits, one_hot, weight, multilabel=False)), want, rtol=1e-6)
