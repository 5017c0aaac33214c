"""Gradient accumulation is exact: the jitted train step with grad_accum_steps=k gives the loss and the gradients
of the k=1 step on the same global batch, for every objective of the objective table (contrastive softmax mean/sum,
sigmoid, ring-chunked sigmoid, captioning with parallel rows and label smoothing, hybrid, tagging).

Dimension letters: B global batch, b = B / k rows per micro-batch, E joint embedding width.

Both steps run the production code (train/step.py make_train_step) on a real demo-corpus batch sharded over the
8-device mesh (fsdp=8). The optimizer is replaced by one that leaves the parameters alone and keeps the step's
gradients as its state, so each step hands back exactly the gradients it computed. SpecAugment is off and dropout
is 0: the k=1 step draws them for the whole batch and the k-step per micro-batch, a legitimate difference. The row
modes (parallel / autoregressive) are drawn once per batch in both paths.
The contrastive losses are also checked against a NumPy formula on the model's embeddings, and the naive
accumulation (mean of the micro-batch losses, fewer negatives) against it, so the equality is not vacuous.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from alp_jax import sharding as sharding_lib
from alp_jax.data import pipeline
from alp_jax.train import runs
from alp_jax.train import state as state_lib
from alp_jax.train import step as step_lib

from conftest import make_test_config

BATCH = 32  # k=4 -> b=8 rows per micro-batch: one per batch shard of the 8-device mesh
K = 4


def _keep_gradients() -> optax.GradientTransformation:
  """An 'optimizer' whose updates are zero and whose state is the last step's gradients."""
  def init(params):
    return jax.tree.map(jnp.zeros_like, params)

  def update(grads, state, params=None):
    del state, params
    return jax.tree.map(jnp.zeros_like, grads), grads

  return optax.GradientTransformation(init, update)


class Setup:
  """A config, its mesh, a gradient-keeping train state and one global batch of the demo corpus."""

  def __init__(self, name: str, corpus_dir, **overrides):
    cfg = make_test_config(name, corpus_dir, batch_size=BATCH, frontend__spec_augment__enabled=False, **overrides)
    for tower in ("audio", "text", "decoder"):
      if tower in cfg.model:
        cfg.model[tower].dropout = 0.0
        assert not cfg.model[tower].get("scan_layers", False)  # scanned layers deadlock on CPU meshes
    runs.set_data_sizes(cfg)
    self.cfg = cfg
    self.mesh = sharding_lib.mesh_from_config(cfg.mesh)
    assert self.mesh.shape["fsdp"] == 8
    self.tx = _keep_gradients()
    self.graphdef, _, self.shardings = state_lib.state_shardings(cfg, self.mesh, self.tx)
    self.state = state_lib.init_state(cfg, self.mesh, self.tx, self.shardings, seed=0)
    self.batch = sharding_lib.host_to_global(pipeline.train_dataset(cfg.data, BATCH)[0], self.mesh)

  def loss_and_grads(self, k: int, **loss_overrides) -> tuple[float, dict[str, np.ndarray]]:
    """One train step with grad_accum_steps=k -> (loss, {parameter path: gradient})."""
    cfg = self.cfg.copy_and_resolve_references()
    cfg.grad_accum_steps = k
    cfg.loss.update(loss_overrides)
    train_step = step_lib.make_train_step(self.graphdef, self.tx, lambda step: jnp.zeros(()), cfg, self.mesh,
                                          self.shardings)
    state = jax.device_put(self.state, may_alias=False)  # a fresh copy: the step donates its state
    with jax.set_mesh(self.mesh):
      new_state, metrics = train_step(state, self.batch)
    step_lib.assert_single_trace(train_step)
    assert int(new_state["nonfinite"]) == 0
    grads = jax.tree_util.tree_flatten_with_path(jax.device_get(new_state["opt_state"]))[0]
    return float(metrics["loss"]), {jax.tree_util.keystr(path): np.asarray(g) for path, g in grads}

  def embeddings(self) -> dict[str, np.ndarray]:
    """The model's (B, E) audio and text embeddings (and temperature, bias) on the batch, evaluation mode."""
    @jax.jit
    def forward(params, rest, batch):
      _, out = nnx.merge(self.graphdef, params, rest)(batch, train=False)
      return {k: out[k] for k in ("audio_embedding", "text_embedding", "temperature", "bias") if k in out}

    with jax.set_mesh(self.mesh):
      out = forward(self.state["params"], self.state["rest"], self.batch)
    return {k: np.asarray(v, np.float64) for k, v in jax.device_get(out).items()}


def _assert_same_gradients(got: dict, want: dict) -> None:
  """Every leaf equal up to float32 summation order: 1e-5 of the leaf's largest entry, and 1e-7 of the largest
  gradient entry overall for leaves whose true gradient is zero (attention key biases: softmax is shift invariant,
  so they hold only roundoff)."""
  assert got.keys() == want.keys()
  overall = max(float(np.max(np.abs(w))) for w in want.values())
  reached = 0
  for name, w in want.items():
    scale = float(np.max(np.abs(w)))
    np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5 * scale + 1e-7 * overall, err_msg=name)
    reached += scale > 1e-6 * overall
  # Gradients reach (almost) every parameter leaf, so the comparison covers the whole model.
  assert reached >= 0.8 * len(want), f"only {reached} of {len(want)} gradient leaves are non-zero"


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _numpy_softmax(a: np.ndarray, t: np.ndarray, temperature: float, reduction: str) -> float:
  logits = a @ t.T / temperature  # (B,E) x (E,B) -> (B,B)
  diagonal = np.diag(logits)
  a2t, t2a = _logsumexp(logits, 1) - diagonal, _logsumexp(logits, 0) - diagonal
  return 0.5 * (a2t.mean() + t2a.mean()) if reduction == "mean" else a2t.sum() + t2a.sum()


def _numpy_sigmoid(a: np.ndarray, t: np.ndarray, temperature: float, bias: float) -> float:
  logits = a @ t.T / temperature + bias  # (B,E) x (E,B) -> (B,B)
  labels = 2.0 * np.eye(len(a)) - 1.0
  return float(np.sum(np.logaddexp(0.0, -labels * logits)) / len(a))


def _naive_mean(loss_fn, emb: dict, k: int) -> float:
  """Mean of the micro-batch losses (rows j, j+k, ... as in the step): what plain accumulation optimises."""
  a, t = emb["audio_embedding"], emb["text_embedding"]
  return float(np.mean([loss_fn(a[j::k], t[j::k]) for j in range(k)]))


@pytest.fixture(scope="module")
def softmax_setup(tiny_corpus_dir):
  return Setup("clap", tiny_corpus_dir)


@pytest.fixture(scope="module")
def sigmoid_setup(tiny_corpus_dir):
  """The sigmoid two towers and their k=1 reference (shared by the sigmoid and chunked-sigmoid tests)."""
  # SigLIP's initial bias -10 leaves the negative pairs nearly silent at step 0; at 0 they weigh, so a step that
  # scored each micro-batch against its own negatives only would fail the comparison.
  setup = Setup("clap", tiny_corpus_dir, loss__kind="sigmoid", model__logit_bias=True, model__sigmoid__bias_init=0.0)
  setup.reference = setup.loss_and_grads(1)
  return setup


@pytest.mark.parametrize("reduction", ["mean", pytest.param("sum", marks=pytest.mark.slow)])
def test_contrastive_softmax_accumulation_is_exact(softmax_setup, reduction):
  loss1, grads1 = softmax_setup.loss_and_grads(1, reduction=reduction)
  loss_k, grads_k = softmax_setup.loss_and_grads(K, reduction=reduction)
  emb = softmax_setup.embeddings()
  loss_fn = lambda a, t: _numpy_softmax(a, t, float(emb["temperature"]), reduction)
  want = loss_fn(emb["audio_embedding"], emb["text_embedding"])
  np.testing.assert_allclose(loss1, want, rtol=1e-5)
  np.testing.assert_allclose(loss_k, want, rtol=1e-5)
  naive = _naive_mean(loss_fn, emb, K)
  assert abs(naive - want) > 0.05 * abs(want), (naive, want)  # fewer negatives: a different objective
  _assert_same_gradients(grads_k, grads1)


@pytest.mark.slow
def test_contrastive_sigmoid_accumulation_is_exact(sigmoid_setup):
  loss1, grads1 = sigmoid_setup.reference
  loss_k, grads_k = sigmoid_setup.loss_and_grads(K)
  emb = sigmoid_setup.embeddings()
  loss_fn = lambda a, t: _numpy_sigmoid(a, t, float(emb["temperature"]), float(emb["bias"]))
  want = loss_fn(emb["audio_embedding"], emb["text_embedding"])
  np.testing.assert_allclose(loss1, want, rtol=1e-5)
  np.testing.assert_allclose(loss_k, want, rtol=1e-5)
  naive = _naive_mean(loss_fn, emb, K)
  assert abs(naive - want) > 0.05 * abs(want), (naive, want)
  _assert_same_gradients(grads_k, grads1)


def test_sigmoid_chunked_accumulation_equals_full_batch_sigmoid(sigmoid_setup):
  """The ring loss over the 8 devices, 2 micro-batches of 16, against the plain sigmoid loss on 32 rows."""
  loss1, grads1 = sigmoid_setup.reference
  loss_k, grads_k = sigmoid_setup.loss_and_grads(2, kind="sigmoid_chunked")
  np.testing.assert_allclose(loss_k, loss1, rtol=1e-5)
  _assert_same_gradients(grads_k, grads1)


def test_captioning_accumulation_is_exact(tiny_corpus_dir):
  setup = Setup("cappa", tiny_corpus_dir)
  assert setup.cfg.loss.parallel_fraction == 0.75 and setup.cfg.loss.label_smoothing == 0.1
  loss1, grads1 = setup.loss_and_grads(1)
  loss_k, grads_k = setup.loss_and_grads(K)
  np.testing.assert_allclose(loss_k, loss1, rtol=1e-5)
  _assert_same_gradients(grads_k, grads1)


@pytest.mark.slow
def test_hybrid_accumulation_is_exact(tiny_corpus_dir):
  setup = Setup("hybrid", tiny_corpus_dir)
  assert setup.cfg.loss.parallel_fraction == 0.75 and setup.cfg.loss.label_smoothing == 0.1
  loss1, grads1 = setup.loss_and_grads(1)
  loss_k, grads_k = setup.loss_and_grads(K)
  np.testing.assert_allclose(loss_k, loss1, rtol=1e-5)
  _assert_same_gradients(grads_k, grads1)


def test_tagging_accumulation_is_exact(tiny_corpus_dir):
  """Clip-weighted tagging loss: micro-batches hold different numbers of labelled clips, and each contributes its
  sum over the WHOLE batch's labelled count (objective table), so k=4 equals k=1."""
  setup = Setup("tagging", tiny_corpus_dir, data__label_task="sound_type")
  weight = np.asarray(jax.device_get(setup.batch["label_weight"]))
  per_micro = [weight[j::K].sum() for j in range(K)]
  assert 0 < weight.sum() < len(weight) and len(set(per_micro)) > 1, per_micro  # not a plain mean of means
  loss1, grads1 = setup.loss_and_grads(1)
  loss_k, grads_k = setup.loss_and_grads(K)
  np.testing.assert_allclose(loss_k, loss1, rtol=1e-5)
  _assert_same_gradients(grads_k, grads1)
