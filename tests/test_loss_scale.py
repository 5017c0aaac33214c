"""Loss scale and clipping: the relative clip against a NumPy reference; under clap:base's summed loss the old
absolute clip (1.0) clipped every step and the relative one does not; hybrid:base's default weights put its two
terms' gradients within an order of magnitude of each other.

One tiny hybrid model and batch (tests/test_objectives.py) and one compiled function serve both model tests: the
gradients of [contrastive mean, contrastive sum, caption] from one forward pass."""
import conftest
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alp_jax import losses, objectives
from alp_jax.train import clipping, optimizer as optimizer_lib

from test_objectives import B, PARALLEL, _config, _global_norm, _model, batch  # noqa: F401  (batch: a fixture)


def _reference_clip(norms: np.ndarray, scale: float, window: int) -> tuple[np.ndarray, np.ndarray]:
  """(clipped?, threshold) per step: scale x median of up to `window` earlier norms; never on the first step."""
  thresholds = np.array([scale * np.median(norms[max(0, t - window):t]) if t else np.inf for t in range(len(norms))])
  return norms > thresholds, thresholds


def test_relative_clip_matches_a_numpy_reference():
  rng = np.random.default_rng(0)
  scales = np.array([1.0, 1.2, 0.9, 5.0, 1.1, 0.3, 4.0, 1.0, 9.0, 1.0])   # spikes at steps 3, 6, 8
  tx = clipping.clip_relative_to_median(2.0, window=3)
  state = tx.init(None)
  update = jax.jit(tx.update)
  norms, outputs = [], []
  for s in scales:
    grads = {"w": jnp.asarray(s * rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(s * rng.normal(size=4))}
    norms.append(float(optax_norm(grads)))
    out, state = update(grads, state)
    outputs.append(float(optax_norm(out)))
  clipped, thresholds = _reference_clip(np.array(norms), 2.0, 3)
  np.testing.assert_allclose(outputs, np.where(clipped, thresholds, norms), rtol=1e-5)
  assert int(state.clipped_steps) == clipped.sum() and int(state.steps) == len(scales)
  assert 0 < float(clipping.clip_fraction(state)) < 1
  assert clipped.sum() == 3


def optax_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


@pytest.fixture(scope="module")
def term_grads(batch):
  """(params, jitted params -> stacked gradients (3, ...) of [contrastive 'mean', contrastive 'sum', caption])."""
  model = _model("hybrid", "hybrid")   # shared with tests/test_objectives.py in one session
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  caption = objectives.get(_config("hybrid", kind="captioning").loss).terms[0][1]

  def values(p):
    out = nnx.merge(graphdef, p, rest)(batch, parallel=PARALLEL)[1]
    a, t, tau = out["audio_embedding"], out["text_embedding"], out["temperature"]
    total, count = caption.sum_and_count(out, batch)
    return jnp.stack([losses.contrastive_softmax(a, t, tau, "mean"), losses.contrastive_softmax(a, t, tau, "sum"),
                      total / count])
  return params, jax.jit(jax.jacrev(values))


def test_clap_base_clip_is_no_longer_every_step(term_grads):
  """Six AdamW steps on the contrastive term under clap:base's loss reduction and optimizer settings.

  Measured: each step's raw global gradient norm under the summed loss. The old setting (absolute clip_norm 1.0)
  clips a step when that norm exceeds 1.0: every step, since the summed gradient is 2B times the per-example one.
  The base config's relative clip (2 x the median of earlier norms) clips only spikes."""
  base = conftest.load_config("clap", "base")
  assert base.loss.reduction == "sum" and not base.optimizer.clip_norm and base.optimizer.clip_relative == 2.0
  params, grads_of = term_grads
  tx, _ = optimizer_lib.make_optimizer(base.optimizer, total_steps=100)
  apply = jax.jit(lambda grads, state, params: tx.update(grads, state, params))
  opt_state, norms = tx.init(params), []
  for _ in range(6):
    grads = jax.tree.map(lambda g: g[1], grads_of(params))   # the summed contrastive loss
    updates, opt_state = apply(grads, opt_state, params)
    params = jax.tree.map(jnp.add, params, updates)
    norms.append(float(_global_norm(grads)))
  norms = np.array(norms)
  print(f"raw gradient norms under the summed loss: {np.round(norms, 1)}")
  old_default = optimizer_lib.default_optimizer_config().clip_norm
  assert old_default == 1.0 and np.mean(norms > old_default) == 1.0      # the old setting clipped every step
  clipped, _ = _reference_clip(norms, base.optimizer.clip_relative, base.optimizer.clip_window)
  fraction = float(clipping.clip_fraction(opt_state))
  assert fraction == pytest.approx(clipped.mean()) and fraction < 1.0


def test_hybrid_base_weights_balance_the_terms(term_grads):
  """||w_c grad L_c|| / ||w_cap grad L_cap||: above 2B before (summed, 1:1), within 10x of 1 with the defaults."""
  base = conftest.load_config("hybrid", "base").loss
  assert base.reduction == "mean"
  params, grads_of = term_grads
  grads = grads_of(params)
  mean_c, sum_c, cap = (float(_global_norm(jax.tree.map(lambda g: g[i], grads))) for i in range(3))
  new, old = base.contrastive_weight * mean_c / (base.caption_weight * cap), sum_c / cap
  print(f"contrastive / caption gradient norm: new {new:.2f}, old {old:.1f} (2B / tau = {2 * B / 0.07:.0f})")
  assert 0.1 < new < 10
  assert old > 2 * B   # the summed term dominated by more than its 2B factor
  np.testing.assert_allclose(sum_c, 2 * B * mean_c, rtol=1e-4)
