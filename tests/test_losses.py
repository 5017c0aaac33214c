"""Losses against plain float64 NumPy references written from the formulas, with finite-difference gradients.

Dimension legend: B batch, n per-device batch, D embedding width, L caption length, V vocabulary.
"""
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from alp_jax import losses

EMBED_DIM = 12  # differs from every batch size used, so a (B, B) array is never confused with a (B, D) one
GLOBAL_BATCH = 16


# ----------------------------------------------------------------------------------------------- NumPy references

def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def softmax_reference(audio, text, temperature, reduction):
  logits = audio @ text.T / temperature  # (B, D) x (D, B) -> (B, B)
  batch = len(audio)
  a2t = -np.array([_log_softmax(logits[i], 0)[i] for i in range(batch)])
  t2a = -np.array([_log_softmax(logits[:, j], 0)[j] for j in range(batch)])
  if reduction == "mean":
    return (a2t.mean() + t2a.mean()) / 2
  return a2t.sum() + t2a.sum()


def sigmoid_reference(audio, text, temperature, bias):
  batch = len(audio)
  total = 0.0
  for i in range(batch):
    for j in range(batch):
      label = 1.0 if i == j else -1.0
      total -= _log_sigmoid(label * (audio[i] @ text[j] / temperature + bias))
  return total / batch


def caption_reference(logits, targets, mask, eps):
  vocab = logits.shape[-1]
  total, count = 0.0, 0
  for b in range(logits.shape[0]):
    for position in range(logits.shape[1]):
      if not mask[b, position]:
        continue
      target_dist = np.full(vocab, eps / vocab)
      target_dist[targets[b, position]] += 1.0 - eps
      total -= target_dist @ _log_softmax(logits[b, position], 0)
      count += 1
  return total, count


def regulariser_reference(audio, text):
  return sum(np.abs(x).mean() / np.sqrt((x ** 2).sum()) for x in (audio, text))


def central_differences(reference, args, arg_index, coordinates, step=1e-5):
  """d reference / d args[arg_index][coordinate] in float64, for a few coordinates."""
  grads = []
  for coordinate in coordinates:
    plus = [np.array(a, np.float64) for a in args]
    minus = [np.array(a, np.float64) for a in args]
    plus[arg_index][coordinate] += step
    minus[arg_index][coordinate] -= step
    grads.append((reference(*plus) - reference(*minus)) / (2 * step))
  return np.array(grads)


def unit_rows(rng, batch, dim=EMBED_DIM):
  x = rng.normal(size=(batch, dim))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def some_coordinates(rng, shape, count=4):
  return [tuple(int(rng.integers(s)) for s in shape) for _ in range(count)]


# ------------------------------------------------------------------------------------------ contrastive softmax

@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_contrastive_softmax_matches_numpy(batch, reduction):
  rng = np.random.default_rng(batch)
  audio, text = unit_rows(rng, batch), unit_rows(rng, batch)
  got = losses.contrastive_softmax(audio, text, 0.07, reduction=reduction)
  want = softmax_reference(audio.astype(np.float64), text.astype(np.float64), 0.07, reduction)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_contrastive_softmax_gradients_match_finite_differences(reduction):
  rng = np.random.default_rng(11)
  audio, text = unit_rows(rng, 3), unit_rows(rng, 3)
  temperature = np.float32(0.2)
  grads = jax.grad(lambda a, t, tau: losses.contrastive_softmax(a, t, tau, reduction), argnums=(0, 1, 2))(
      audio, text, jnp.float32(temperature))
  reference = lambda a, t, tau: softmax_reference(a, t, tau, reduction)
  args = [audio, text, np.array(temperature)]
  for arg_index in (0, 1):
    coordinates = some_coordinates(rng, args[arg_index].shape)
    want = central_differences(reference, args, arg_index, coordinates)
    got = np.array([grads[arg_index][c] for c in coordinates])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  want_tau = central_differences(reference, args, 2, [()])
  np.testing.assert_allclose(float(grads[2]), want_tau[0], rtol=1e-4)


def test_contrastive_softmax_rejects_unknown_reduction():
  audio = np.eye(2, EMBED_DIM, dtype=np.float32)
  with pytest.raises(ValueError, match="reduction"):
    losses.contrastive_softmax(audio, audio, 0.07, reduction="avg")


# ------------------------------------------------------------------------------------------ contrastive sigmoid

@pytest.mark.parametrize("batch", [1, 3, 8])
def test_contrastive_sigmoid_matches_numpy(batch):
  rng = np.random.default_rng(100 + batch)
  audio, text = unit_rows(rng, batch), unit_rows(rng, batch)
  got = losses.contrastive_sigmoid(audio, text, 0.1, -10.0)
  want = sigmoid_reference(audio.astype(np.float64), text.astype(np.float64), 0.1, -10.0)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), want, rtol=2e-6)


def test_contrastive_sigmoid_gradients_match_finite_differences():
  rng = np.random.default_rng(12)
  audio, text = unit_rows(rng, 3), unit_rows(rng, 3)
  temperature, bias = np.float32(0.5), np.float32(-1.5)  # moderate logits, so no pair's gradient is ~0
  grads = jax.grad(losses.contrastive_sigmoid, argnums=(0, 1, 2, 3))(audio, text, jnp.float32(temperature),
                                                                   jnp.float32(bias))
  args = [audio, text, np.array(temperature), np.array(bias)]
  for arg_index in (0, 1):
    coordinates = some_coordinates(rng, args[arg_index].shape)
    want = central_differences(sigmoid_reference, args, arg_index, coordinates)
    got = np.array([grads[arg_index][c] for c in coordinates])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  for arg_index in (2, 3):
    want = central_differences(sigmoid_reference, args, arg_index, [()])
    np.testing.assert_allclose(float(grads[arg_index]), want[0], rtol=1e-4)


@pytest.mark.parametrize("loss_name", ["softmax", "sigmoid"])
def test_contrastive_losses_compute_in_float32_from_bfloat16(loss_name):
  """bf16 inputs: float32 result equal to the float64 reference of the bf16 values (a bf16 matmul is ~1e-2 off)."""
  rng = np.random.default_rng(13)
  audio = jnp.asarray(unit_rows(rng, 8), jnp.bfloat16)
  text = jnp.asarray(unit_rows(rng, 8), jnp.bfloat16)
  audio64, text64 = np.asarray(audio, np.float64), np.asarray(text, np.float64)
  if loss_name == "softmax":
    got = losses.contrastive_softmax(audio, text, 0.07)
    want = softmax_reference(audio64, text64, 0.07, "mean")
  else:
    got = losses.contrastive_sigmoid(audio, text, 0.1, -10.0)
    want = sigmoid_reference(audio64, text64, 0.1, -10.0)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- caption xent

def caption_batch(rng, batch=3, length=5, vocab=7):
  logits = rng.normal(size=(batch, length, vocab)).astype(np.float32) * 2
  targets = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
  lengths = rng.integers(1, length + 1, size=batch)
  lengths[0] = 1  # one caption of a single token, so the token-weighted mean differs from a mean of means
  mask = np.arange(length)[None, :] < lengths[:, None]
  return logits, targets, mask


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_caption_xent_matches_numpy(label_smoothing):
  rng = np.random.default_rng(21)
  logits, targets, mask = caption_batch(rng)
  total, count = caption_reference(logits.astype(np.float64), targets, mask, label_smoothing)
  mean = losses.caption_xent(logits, targets, mask, label_smoothing=label_smoothing)
  got_total, got_count = losses.caption_xent(logits, targets, mask, label_smoothing=label_smoothing,
                                             reduction="sum_and_count")
  assert mean.dtype == jnp.float32
  np.testing.assert_allclose(float(mean), total / count, rtol=2e-6)
  np.testing.assert_allclose(float(got_total), total, rtol=2e-6)
  assert float(got_count) == count


def test_caption_xent_gradient_matches_finite_differences():
  rng = np.random.default_rng(22)
  logits, targets, mask = caption_batch(rng)
  grad = jax.grad(losses.caption_xent)(logits, targets, mask, 0.1)
  reference = lambda x: (lambda total, count: total / count)(*caption_reference(x, targets, mask, 0.1))
  coordinates = some_coordinates(rng, logits.shape, count=6) + [(0, 0, int(targets[0, 0]))]
  want = central_differences(reference, [logits], 0, coordinates)
  got = np.array([grad[c] for c in coordinates])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_caption_xent_ignores_masked_positions():
  rng = np.random.default_rng(23)
  logits, targets, mask = caption_batch(rng)
  assert not mask.all()
  changed = np.where(mask[..., None], logits, rng.normal(size=logits.shape).astype(np.float32) * 50)
  loss_and_grad = jax.value_and_grad(losses.caption_xent)
  value, grad = loss_and_grad(logits, targets, mask, 0.1)
  changed_value, changed_grad = loss_and_grad(changed, targets, mask, 0.1)
  assert float(value) == float(changed_value)
  np.testing.assert_array_equal(np.asarray(grad), np.asarray(changed_grad))
  assert not np.asarray(grad)[~mask].any()  # masked positions get exactly zero gradient


def test_caption_xent_of_an_all_padding_batch_is_zero_not_nan():
  rng = np.random.default_rng(26)
  logits, targets, mask = caption_batch(rng)
  value = losses.caption_xent(logits, targets, np.zeros_like(mask), 0.1)
  assert float(value) == 0.0


def test_caption_xent_sums_and_counts_accumulate_exactly():
  """Micro-batches with different token counts: summed numerators / summed counts = the full-batch reference."""
  rng = np.random.default_rng(24)
  logits, targets, mask = caption_batch(rng, batch=4)
  total, count = caption_reference(logits.astype(np.float64), targets, mask, 0.1)
  parts = [losses.caption_xent(logits[s], targets[s], mask[s], 0.1, reduction="sum_and_count")
           for s in (slice(0, 1), slice(1, 4))]
  accumulated = sum(float(p[0]) for p in parts) / sum(float(p[1]) for p in parts)
  mean_of_means = np.mean([float(p[0]) / float(p[1]) for p in parts])
  np.testing.assert_allclose(accumulated, total / count, rtol=2e-6)
  assert abs(mean_of_means - total / count) > 1e-3  # the naive average would have been wrong here


def test_caption_xent_from_bfloat16_logits_is_float32():
  rng = np.random.default_rng(25)
  logits, targets, mask = caption_batch(rng)
  logits_bf16 = jnp.asarray(logits, jnp.bfloat16)
  total, count = caption_reference(np.asarray(logits_bf16, np.float64), targets, mask, 0.1)
  got = losses.caption_xent(logits_bf16, targets, mask, 0.1)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), total / count, rtol=1e-5)


# ------------------------------------------------------------------------------------------- embedding regulariser

def test_embedding_regulariser_value_and_gradient():
  rng = np.random.default_rng(31)
  audio, text = rng.normal(size=(5, EMBED_DIM)).astype(np.float32), rng.normal(size=(5, EMBED_DIM)).astype(np.float32)
  value, grads = jax.value_and_grad(losses.embedding_regulariser, argnums=(0, 1))(audio, text)
  np.testing.assert_allclose(float(value), regulariser_reference(audio.astype(np.float64), text.astype(np.float64)),
                             rtol=2e-6)
  for arg_index in (0, 1):
    coordinates = some_coordinates(rng, audio.shape)
    want = central_differences(regulariser_reference, [audio, text], arg_index, coordinates)
    got = np.array([grads[arg_index][c] for c in coordinates])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------- chunked sigmoid on a mesh

MESHES = {
    "data8": ((8,), ("data",)),
    "data2_fsdp4": ((2, 4), ("data", "fsdp")),
    "data4_fsdp1_tensor2": ((4, 1, 2), ("data", "fsdp", "tensor")),
    "one_device": ((1, 1), ("data", "fsdp")),
}


def make_mesh(name):
  shape, axis_names = MESHES[name]
  devices = jax.devices()[:int(np.prod(shape))]
  return jax.make_mesh(shape, axis_names, axis_types=(AxisType.Auto,) * len(shape), devices=devices)


def sharded_embeddings(mesh, seed):
  rng = np.random.default_rng(seed)
  audio, text = unit_rows(rng, GLOBAL_BATCH), unit_rows(rng, GLOBAL_BATCH)
  batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
  sharding = NamedSharding(mesh, PartitionSpec(batch_axes, None))
  return audio, text, jax.device_put(audio, sharding), jax.device_put(text, sharding)


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_chunked_sigmoid_equals_dense_value_and_gradients(mesh_name):
  mesh = make_mesh(mesh_name)
  audio, text, audio_sharded, text_sharded = sharded_embeddings(mesh, seed=41)
  temperature, bias = jnp.float32(0.3), jnp.float32(-2.0)
  weight = 2.5  # as in a weighted hybrid objective: the backward pass must use the incoming cotangent
  chunked = jax.jit(jax.value_and_grad(
      lambda a, t, tau, b: weight * losses.contrastive_sigmoid_chunked(a, t, tau, b, mesh=mesh),
      argnums=(0, 1, 2, 3)))
  dense = jax.value_and_grad(lambda a, t, tau, b: weight * losses.contrastive_sigmoid(a, t, tau, b),
                             argnums=(0, 1, 2, 3))
  value, grads = chunked(audio_sharded, text_sharded, temperature, bias)
  want_value, want_grads = dense(audio, text, temperature, bias)
  np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
  np.testing.assert_allclose(float(value), weight * sigmoid_reference(
      audio.astype(np.float64), text.astype(np.float64), 0.3, -2.0), rtol=1e-5)
  assert grads[0].sharding.is_equivalent_to(audio_sharded.sharding, 2)  # gradients come back batch-sharded
  for name, got, want in zip(("audio", "text", "temperature", "bias"), grads, want_grads):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6, err_msg=name)


def _all_shapes(jaxpr, per_device=False):
  """(shape, is_per_device) for every variable of a jaxpr and its sub-jaxprs (shard_map, loop and remat bodies).

  Shapes inside a shard_map body are per-device; outside it they are global views (a per-device (n, n) residual
  stacked over P devices shows up as (B, n) there while each device holds only its own (n, n)).
  """
  shapes = [(tuple(v.aval.shape), per_device) for v in list(jaxpr.invars) + list(jaxpr.constvars)]
  for eqn in jaxpr.eqns:
    shapes.extend((tuple(v.aval.shape), per_device) for v in eqn.outvars)
    inside = per_device or eqn.primitive.name == "shard_map"
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes.extend(_all_shapes(sub, inside))
  return shapes


def _touches_global_batch(shape, is_per_device):
  """Per-device: any axis of the global batch size (a gathered block). Global view: a (B, B) array of pairs."""
  return shape.count(GLOBAL_BATCH) >= (1 if is_per_device else 2)


@pytest.mark.parametrize("mesh_name", ["data8", "data2_fsdp4"])
def test_chunked_sigmoid_never_builds_global_logits(mesh_name):
  mesh = make_mesh(mesh_name)
  per_device = GLOBAL_BATCH // 8
  _, _, audio_sharded, text_sharded = sharded_embeddings(mesh, seed=42)
  chunked = jax.value_and_grad(
      lambda a, t, tau, b: losses.contrastive_sigmoid_chunked(a, t, tau, b, mesh=mesh), argnums=(0, 1, 2, 3))
  shapes = _all_shapes(jax.make_jaxpr(chunked)(audio_sharded, text_sharded, 0.3, -2.0).jaxpr)
  assert ((per_device, per_device), True) in shapes  # the per-device block of logits is there ...
  assert not [s for s in shapes if _touches_global_batch(*s)]  # ... and nothing spanning the global batch,
  largest_block = per_device * max(per_device, EMBED_DIM)
  assert not [s for s, is_per_device in shapes if is_per_device and np.prod(s) > largest_block]  # nor a stack of
  # per-step residuals: in both passes each device holds O(n (n + D)) floats, whatever the number of devices.
  # The same scan finds the (B, B) logits of the dense loss, so the check above can fail.
  dense_shapes = _all_shapes(jax.make_jaxpr(jax.grad(losses.contrastive_sigmoid, argnums=(0, 1)))(
      audio_sharded, text_sharded, 0.3, -2.0).jaxpr)
  assert [s for s in dense_shapes if _touches_global_batch(*s)]


def test_chunked_sigmoid_rejects_indivisible_batch():
  mesh = make_mesh("data8")
  audio = np.eye(12, EMBED_DIM, dtype=np.float32)
  with pytest.raises(ValueError, match="divisible"):
    losses.contrastive_sigmoid_chunked(audio, audio, 0.1, -10.0, mesh=mesh)
