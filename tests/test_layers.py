"""Shared Transformer layers against NumPy references (tiny shapes, few compiles)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alp_jax.models import layers

WIDTH, HEADS, MLP_DIM, DEPTH = 16, 2, 32, 3


@pytest.fixture(autouse=True)
def _no_eager_sharding():
  with nnx.use_eager_sharding(False):
    yield


def _masks():
  # Row 0: 3 valid frames; row 1: all 5 valid.
  return np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)


def _numpy_attention(attention, queries, keys_values, mask):
  """Plain NumPy multi-head attention with the module's weights, head by head."""
  p = {name: np.asarray(getattr(attention, name)[...], np.float64) for name in (
      "query_kernel", "key_kernel", "value_kernel", "query_bias", "key_bias", "value_bias",
      "out_kernel", "out_bias")}
  b, t, _ = queries.shape
  out = np.zeros((b, t, p["out_bias"].shape[0]))
  for batch in range(b):
    for head in range(p["query_kernel"].shape[1]):
      q = queries[batch] @ p["query_kernel"][:, head] + p["query_bias"][head]
      k = keys_values[batch] @ p["key_kernel"][:, head] + p["key_bias"][head]
      v = keys_values[batch] @ p["value_kernel"][:, head] + p["value_bias"][head]
      for i in range(t):
        valid = mask[batch, 0, i]
        if not valid.any():
          continue  # a query with no valid key contributes nothing
        scores = (q[i] @ k.T) / np.sqrt(q.shape[-1])
        scores = np.where(valid, scores, -np.inf)
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        out[batch, i] += (weights @ v) @ p["out_kernel"][head]
    rows_valid = mask[batch, 0].any(-1)
    out[batch][rows_valid] += p["out_bias"]
  return out


def test_make_attention_mask_matches_numpy():
  q = np.array([[1, 1, 0], [1, 1, 1]], bool)
  k = np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool)
  got = np.asarray(layers.make_attention_mask(jnp.asarray(q), jnp.asarray(k), causal=True))
  want = np.zeros((2, 1, 3, 4), bool)
  for b in range(2):
    for i in range(3):
      for j in range(4):
        want[b, 0, i, j] = q[b, i] and k[b, j] and j <= i
  np.testing.assert_array_equal(got, want)


def test_attention_matches_numpy_and_impls_agree():
  rng = np.random.default_rng(0)
  queries = rng.normal(size=(2, 5, WIDTH)).astype(np.float32)
  keys_values = rng.normal(size=(2, 4, WIDTH)).astype(np.float32)
  query_mask = _masks()
  key_mask = np.array([[1, 0, 1, 0], [1, 1, 1, 1]], bool)
  mask = np.asarray(layers.make_attention_mask(jnp.asarray(query_mask), jnp.asarray(key_mask)))
  attention = layers.Attention(WIDTH, HEADS, rngs=nnx.Rngs(0))
  # Non-zero biases so the reference checks them too.
  for name in ("query_bias", "key_bias", "value_bias", "out_bias"):
    param = getattr(attention, name)
    param.set_value(jnp.asarray(rng.normal(size=param.shape), jnp.float32))
  got = np.asarray(attention(jnp.asarray(queries), jnp.asarray(keys_values), jnp.asarray(mask)))
  want = _numpy_attention(attention, queries.astype(np.float64), keys_values.astype(np.float64),
                          mask)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Padded queries (row 0, positions 3, 4) have no valid key: exact zeros.
  np.testing.assert_array_equal(got[0, 3:], 0.0)

  attention.impl = "dot_product_attention"
  fused = np.asarray(attention(jnp.asarray(queries), jnp.asarray(keys_values), jnp.asarray(mask)))
  np.testing.assert_allclose(fused, got, rtol=1e-5, atol=1e-5)


def test_fully_masked_attention_gives_zeros_and_finite_gradients():
  attention = layers.Attention(WIDTH, HEADS, rngs=nnx.Rngs(1))
  x = jnp.ones((1, 3, WIDTH))
  mask = jnp.zeros((1, 1, 3, 3), bool)

  def loss(module):
    return jnp.sum(module(x, x, mask) ** 2)

  value, grads = nnx.value_and_grad(loss)(attention)
  assert float(value) == 0.0
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def _copy_stacked_into_list(scanned, unscanned):
  stacked = nnx.state(scanned.blocks)
  for i, block in enumerate(unscanned.blocks):
    nnx.update(block, jax.tree.map(lambda v: v[i], stacked))
  nnx.update(unscanned.final_norm, nnx.state(scanned.final_norm))


def test_scan_and_loop_encoders_agree_with_remat():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 5, WIDTH)), jnp.float32)
  mask = jnp.asarray(_masks())
  scanned = layers.Encoder(WIDTH, DEPTH, HEADS, MLP_DIM, rngs=nnx.Rngs(3), scan_layers=True)
  looped = layers.Encoder(WIDTH, DEPTH, HEADS, MLP_DIM, rngs=nnx.Rngs(4), scan_layers=False,
                          remat_policy="dots_saveable")
  _copy_stacked_into_list(scanned, looped)

  def run(encoder):
    out, out_dict = encoder(x, mask, keep_layers=True)
    return out, out_dict

  (out_s, dict_s), (out_l, dict_l) = run(scanned), run(looped)
  np.testing.assert_allclose(np.asarray(out_s), np.asarray(out_l), rtol=1e-5, atol=1e-5)
  for i in range(DEPTH):
    np.testing.assert_allclose(np.asarray(dict_s[f"layer_{i}"]), np.asarray(dict_l[f"layer_{i}"]),
                               rtol=1e-5, atol=1e-5)
  # Padded frames do not leak into valid ones: changing them leaves valid outputs unchanged.
  x_noisy = x.at[0, 3:].set(100.0)
  out_noisy, _ = scanned(x_noisy, mask)
  np.testing.assert_allclose(np.asarray(out_noisy[0, :3]), np.asarray(out_s[0, :3]),
                             rtol=1e-5, atol=1e-5)

  def loss(encoder):
    out, _ = encoder(x, mask)
    return jnp.sum(out[mask] ** 2)

  grad_s = nnx.grad(loss)(scanned)
  grad_l = nnx.grad(loss)(looped)
  for i in range(DEPTH):
    got = jax.tree.leaves(jax.tree.map(lambda v: v[i], grad_s["blocks"]))
    want = jax.tree.leaves(grad_l["blocks"][i])
    for g, w in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)


def test_dropout_needs_key_and_changes_outputs():
  encoder = layers.Encoder(WIDTH, 1, HEADS, MLP_DIM, rngs=nnx.Rngs(5), dropout=0.5)
  x = jax.random.normal(jax.random.key(1), (1, 5, WIDTH))
  mask = jnp.ones((1, 5), bool)
  with pytest.raises(ValueError, match="dropout_key"):
    encoder(x, mask, deterministic=False)
  clean, _ = encoder(x, mask)
  noisy, _ = encoder(x, mask, deterministic=False, dropout_key=jax.random.key(0))
  assert not np.allclose(np.asarray(clean), np.asarray(noisy))


def test_sinusoidal_positions_and_masked_mean_match_numpy():
  length, width = 7, 6
  got = np.asarray(layers.sinusoidal_positions(length, width))
  want = np.zeros((length, width))
  for pos in range(length):
    for i in range(width // 2):
      freq = 10_000.0 ** (-i / (width // 2 - 1))
      want[pos, i], want[pos, width // 2 + i] = np.sin(pos * freq), np.cos(pos * freq)
  np.testing.assert_allclose(got, want, atol=1e-6)

  x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
  mask = _masks()
  got = np.asarray(layers.masked_mean(jnp.asarray(x), jnp.asarray(mask)))
  want = np.stack([x[b][mask[b]].mean(0) for b in range(2)])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  empty = np.asarray(layers.masked_mean(jnp.asarray(x), jnp.zeros((2, 5), bool)))
  np.testing.assert_array_equal(empty, 0.0)
