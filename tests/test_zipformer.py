"""Zipformer audio encoder: its odd parts against NumPy, output rate and lengths, padding invariance, parameter
counts (icefall's published ones and docs/models.md), logical axis names; a sharded training run + export (slow)."""
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alp_jax.models import encoders, zipformer
from alp_jax.models import zipformer_parts as parts

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "models.md"
MEL = 16  # mel bins of the tiny test encoder


@pytest.fixture(autouse=True)
def _no_eager_sharding():
  with nnx.use_eager_sharding(False):
    yield


def _param_count(module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


# --- Parts against independent NumPy computations ------------------------------------------------------------


def test_swoosh_activations_match_numpy():
  x = np.linspace(-30.0, 30.0, 301)
  np.testing.assert_allclose(parts.swoosh_l(jnp.asarray(x, jnp.float32)),
                             np.logaddexp(0.0, x - 4.0) - 0.08 * x - 0.035, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(parts.swoosh_r(jnp.asarray(x, jnp.float32)),
                             np.logaddexp(0.0, x - 1.0) - 0.08 * x - 0.313261687, rtol=1e-5, atol=1e-5)
  assert abs(float(parts.swoosh_r(jnp.zeros(())))) < 1e-6  # SwooshR(0) = 0 by its constant


def test_bias_norm_matches_numpy_and_limits_its_gradient():
  norm = parts.BiasNorm(6, rngs=nnx.Rngs(0))
  norm.bias[...] = jnp.arange(6.0) / 10
  norm.log_scale[...] = jnp.asarray(0.3)
  x = np.random.default_rng(0).normal(size=(2, 3, 6)).astype(np.float32)
  want = x * np.exp(0.3) / np.sqrt(np.mean((x - np.arange(6.0) / 10) ** 2, axis=-1, keepdims=True))
  np.testing.assert_allclose(norm(jnp.asarray(x)), want, rtol=1e-5)
  # limit_param_value: identity forward; a gradient that would push the value further out is reversed.
  grad = jax.grad(lambda v: jnp.sum(parts.limit_param_value(v, -1.0, 1.0) * jnp.asarray([1.0, 1.0, -1.0])))
  np.testing.assert_array_equal(grad(jnp.asarray([-2.0, 0.0, 2.0])), [-1.0, 1.0, 1.0])


def test_relative_scores_use_key_minus_query_offsets():
  rng = np.random.default_rng(1)
  b, h, t, p = 2, 3, 5, 4
  queries = rng.normal(size=(b, h, t, p)).astype(np.float32)
  by_offset = rng.normal(size=(2 * t - 1, h, p)).astype(np.float32)  # row n: offset n - (t - 1)
  got = np.asarray(parts.relative_scores(jnp.asarray(queries), jnp.asarray(by_offset)))
  want = np.zeros((b, h, t, t), np.float32)
  for i in range(t):
    for j in range(t):
      want[:, :, i, j] = np.einsum("bhp,hp->bh", queries[:, :, i], by_offset[(j - i) + (t - 1)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_position_table_depends_on_the_offset_only():
  short, long = parts.compact_rel_positions(4, 16), parts.compact_rel_positions(9, 16)
  np.testing.assert_allclose(long[5:12], short)  # offsets -3..3 in both
  offsets = np.arange(-8, 9)
  compressed = 4.0 * np.sign(offsets) * np.log1p(np.abs(offsets) / 4.0)  # sqrt(16) = 4
  angle = np.arctan(compressed * 2 * np.pi / 16)
  np.testing.assert_allclose(long[:, 2], np.cos(2 * angle), atol=1e-6)  # channel 2k: cos((k+1) angle)
  np.testing.assert_allclose(long[:, 3], np.sin(2 * angle), atol=1e-6)
  np.testing.assert_array_equal(long[:, -1], 1.0)


def test_masked_downsample_and_upsample_match_numpy():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 7, 3)).astype(np.float32)
  mask = np.ones((2, 7), bool)
  mask[0, 4:] = False
  logits = np.asarray([0.3, -0.2, 0.5], np.float32)
  got, got_mask = (np.asarray(a) for a in parts.downsample(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(logits)))
  w = np.exp(logits) / np.exp(logits).sum()
  want = np.zeros((2, 3, 3), np.float32)
  for bi in range(2):
    for g in range(3):
      idx = [t for t in range(3 * g, 3 * g + 3) if t < 7 and mask[bi, t]]
      if idx:
        want[bi, g] = sum(w[t - 3 * g] * x[bi, t] for t in idx) / sum(w[t - 3 * g] for t in idx)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got_mask, [[True, True, False], [True, True, True]])
  np.testing.assert_array_equal(parts.upsample(jnp.asarray(got), 3, 7), np.repeat(got, 3, axis=1)[:, :7])


def test_depthwise_conv_matches_numpy():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 9, 4)).astype(np.float32)
  filters = rng.normal(size=(5, 4)).astype(np.float32)
  padded = np.pad(x, ((0, 0), (2, 2), (0, 0)))
  want = sum(padded[:, k:k + 9] * filters[k] for k in range(5))
  np.testing.assert_allclose(parts.depthwise_conv1d(jnp.asarray(x), jnp.asarray(filters)), want, rtol=1e-5,
                             atol=1e-5)


# --- The whole encoder (tiny preset) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
  cfg = zipformer.default_config("tiny")
  cfg.num_mel_bins = MEL
  with nnx.use_eager_sharding(False):
    encoder = encoders.encoder_from_config(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(encoder)

  @jax.jit
  def run(state, features, mask):
    frames, out = nnx.merge(graphdef, state)(features, mask, keep_layers=True)
    return frames, out

  return encoder, state, run


def test_output_rate_lengths_and_padding_invariance(tiny):
  encoder, state, run = tiny
  rng = np.random.default_rng(4)
  t = 203  # 2.03 s of 10 ms frames
  lengths = np.asarray([203, 118])
  features = rng.normal(size=(2, t, MEL)).astype(np.float32)
  mask = np.arange(t)[None] < lengths[:, None]
  frames, out = run(state, jnp.asarray(features), jnp.asarray(mask))
  frames, frame_mask = np.asarray(frames), np.asarray(out["frame_mask"])
  # 25 frames/s: T' = ceil(((T - 7) // 2) / 2), icefall's lengths ((x - 7) // 2 + 1) // 2.
  assert frames.shape == (2, (((t - 7) // 2) + 1) // 2, encoder.output_dim) == (2, 49, 64)
  np.testing.assert_array_equal(frame_mask.sum(1), ((lengths - 7) // 2 + 1) // 2)
  np.testing.assert_array_equal(frame_mask.sum(1), zipformer.output_length(lengths))
  assert np.all(frames[~frame_mask] == 0) and np.isfinite(frames).all()
  assert np.abs(frames[frame_mask]).mean() > 0.1
  np.testing.assert_allclose(out["pooled"], [frames[i][frame_mask[i]].mean(0) for i in range(2)], rtol=1e-5,
                             atol=1e-6)
  layer_names = sorted(k for k in out if k.startswith("layer_"))
  assert len(layer_names) == sum(zipformer.PRESETS["tiny"]["num_encoder_layers"]) and "patch" in out
  assert out["layer_3"].shape == (2, 49, 64) and out["patch"].shape == (2, 49, 32)
  # 37 more padded frames full of garbage: every valid output (and every layer's) is unchanged.
  long_features = np.concatenate([features, np.full((2, 37, MEL), 1e3, np.float32)], axis=1)
  long_mask = np.concatenate([mask, np.zeros((2, 37), bool)], axis=1)
  long_frames, long_out = run(state, jnp.asarray(long_features), jnp.asarray(long_mask))
  long_mask_out = np.asarray(long_out["frame_mask"])
  np.testing.assert_array_equal(long_mask_out[:, :49], frame_mask)
  assert not long_mask_out[:, 49:].any()
  np.testing.assert_allclose(np.asarray(long_frames)[:, :49][frame_mask], frames[frame_mask], rtol=1e-4,
                             atol=1e-5)
  for name in layer_names + ["patch", "pooled"]:
    got, want = np.asarray(long_out[name]), np.asarray(out[name])
    if got.ndim == 3:
      got, want = got[:, :49][frame_mask], want[frame_mask]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_bad_config_names_the_field():
  cfg = zipformer.default_config("tiny")
  cfg.num_heads = [2, 2]
  with pytest.raises(ValueError, match=r"config.model.audio.num_heads has 2 entries"):
    zipformer.Zipformer(cfg, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown Zipformer preset"):
    zipformer.default_config("xl")


# --- Parameter counts and axis names (abstract: nothing allocated) -------------------------------------------


def _transducer_extras(encoder_out: int, vocab: int = 500, decoder_dim: int = 512, joiner_dim: int = 512) -> int:
  """icefall's pruned-transducer parts beyond the encoder (model.py, decoder.py, joiner.py): decoder embedding +
  grouped context conv, joiner encoder/decoder/output projections, simple_am_proj and simple_lm_proj."""
  decoder = vocab * decoder_dim + decoder_dim * 4 * 2  # Embedding; Conv1d(groups=dim/4, kernel 2, no bias)
  joiner = (encoder_out + 1) * joiner_dim + (decoder_dim + 1) * joiner_dim + (joiner_dim + 1) * vocab
  simple = (encoder_out + 1) * vocab + (decoder_dim + 1) * vocab
  return decoder + joiner + simple


def _unused_bypass_scales(preset: str) -> int:
  """icefall's per-layer `bypass_scale` (marked "TODO: remove it", never used): not created here."""
  p = zipformer.PRESETS[preset]
  return sum(n * d for n, d in zip(p["num_encoder_layers"], p["encoder_dim"]))


def _abstract_count(preset: str) -> int:
  cfg = zipformer.default_config(preset)
  return _param_count(nnx.eval_shape(lambda: zipformer.Zipformer(cfg, rngs=nnx.Rngs(0))))


def _documented_counts() -> dict[str, int]:
  """{preset: params} from the Zipformer table in docs/models.md (rows '| `preset` | ... | params |')."""
  counts = {}
  for line in DOCS.read_text().splitlines():
    match = re.match(r"\|\s*`zipformer:(\w+)`\s*\|.*\|\s*([\d,]+)\s*\|\s*$", line)
    if match:
      counts[match.group(1)] = int(match.group(2).replace(",", ""))
  return counts


def test_parameter_counts_match_icefall_and_the_docs():
  counts = {preset: _abstract_count(preset) for preset in zipformer.PRESETS}
  # icefall egs/librispeech/ASR RESULTS.md: normal-scaled 65,549,011, large-scaled 148,439,574 (transducers,
  # 500 BPE tokens). Take away what is not the encoder: what is left must be exactly ours.
  assert counts["m_icefall"] == 65_549_011 - _transducer_extras(512) - _unused_bypass_scales("m_icefall")
  assert counts["l_icefall"] == 148_439_574 - _transducer_extras(768) - _unused_bypass_scales("l_icefall")
  assert _documented_counts() == counts


def test_every_matrix_has_logical_axis_names():
  cfg = zipformer.default_config("tiny")
  abstract = nnx.eval_shape(lambda: zipformer.Zipformer(cfg, rngs=nnx.Rngs(0)))
  known = {"embed", "mlp", "heads", "kv", None}
  sharded = 0
  for path, param in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
    names = param.get_metadata().get("out_sharding")
    assert names is not None and len(names) == len(param.shape), (path, names)
    assert set(names) <= known, (path, names)
    if len(param.shape) >= 2 and "embed" in names:
      sharded += 1
  assert sharded >= 12 * 6  # every layer's projections carry the model axis


@pytest.mark.xfail(strict=True, reason="KNOWN BUG, not yet found: changing the values of already-padded log-mel "
                   "frames moves the last 3 valid 50/s frames after Conv2dSubsampling (5e-3..5e-2), although "
                   "its ConvNeXt input is zeroed there; appending padding (test above) is unaffected")
def test_values_inside_the_padding_change_nothing():
  cfg = zipformer.default_config("tiny")
  sub = zipformer.Conv2dSubsampling(MEL, 32, cfg.subsampling_channels, rngs=nnx.Rngs(0))
  run = jax.jit(lambda f, m: sub(f, m))
  rng = np.random.default_rng(4)
  features = rng.normal(size=(1, 203, MEL)).astype(np.float32)
  mask = np.arange(203)[None] < 118
  garbage = features.copy()
  garbage[0, 118:] = -1e3
  (a, a_mask), (b, _) = run(features, mask), run(garbage, mask)
  np.testing.assert_allclose(np.asarray(b)[np.asarray(a_mask)], np.asarray(a)[np.asarray(a_mask)], atol=1e-5)
