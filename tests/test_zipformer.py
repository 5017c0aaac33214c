"""Zipformer audio encoder: its odd parts against NumPy, output rate and lengths, padding invariance (whole encoder
and one stack, NaN padding), parameter counts (icefall's published ones and docs/models.md), logical axis names and
the default sharding rules, the config variants, the analytic FLOPs against the forward pass's own dots and
convolutions; a training run on 8 devices + export + embed (slow)."""
import json
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alp_jax import AudioEncoder
from alp_jax import sharding as sharding_lib
from alp_jax.audio import frontend
from alp_jax.configs import common
from alp_jax.models import encoders, zipformer
from alp_jax.models import zipformer_parts as parts
from alp_jax.train import flops
from alp_jax.train import trainer

from conftest import load_config, make_test_config

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "models.md"
MEL = 16  # mel bins of the tiny test encoder


@pytest.fixture(scope="module", autouse=True)
def _cheap_compiles():
  """XLA's optimisations mostly off for this module: its programs run in milliseconds but compile in seconds (the
  tiny encoder's forward: 3.8 instead of 6.2 CPU seconds)."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


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


def _host_init(abstract_module, seed: int):
  """The module with parameters drawn on the host (U(+-1/sqrt(fan-in)), 1-D ones in [0.2, 0.8]): nothing to
  compile, where the Zipformer's own initialiser compiles one random op per parameter shape (minutes on 2 CPUs)."""
  graphdef, state = nnx.split(abstract_module)
  rng = np.random.default_rng(seed)

  def draw(x):
    if x.ndim >= 2:
      bound = 1.0 / np.sqrt(np.prod(x.shape[:-1]))
      return rng.uniform(-bound, bound, x.shape).astype(np.float32)
    return rng.uniform(0.2, 0.8, x.shape).astype(np.float32)

  return graphdef, jax.tree.map(draw, state)


def _tiny_config(stacks=(0, 1, 2, 3, 4, 5)):
  """The tiny preset at MEL mel bins, keeping the given stacks (each compiled stack costs ~0.6 CPU seconds)."""
  cfg = zipformer.default_config("tiny")
  cfg.num_mel_bins = MEL
  for key in zipformer.PER_STACK:
    cfg[key] = [cfg[key][i] for i in stacks]
  return cfg


# Stacks 0, 3, 5 of the tiny preset: R = 1, 8, 2 at widths 32, 64, 48, so the slowest rate (partial groups of 8),
# a widening and a narrowing merge are all there at half the compile time of the six stacks.
THREE_STACKS = (0, 3, 5)


@pytest.fixture(scope="module")
def tiny():
  cfg = _tiny_config(THREE_STACKS)
  graphdef, state = _host_init(nnx.eval_shape(lambda: encoders.encoder_from_config(cfg, rngs=nnx.Rngs(0))), 0)

  @jax.jit
  def run(state, features, mask):
    return nnx.merge(graphdef, state)(features, mask, keep_layers=True)

  return nnx.merge(graphdef, state), state, run


LENGTHS = np.asarray([203, 150, 118, 61])  # valid 10 ms frames per clip; the batch is padded to 203, then 240


def test_output_rate_and_shapes_for_several_lengths_and_padding_changes_nothing(tiny):
  encoder, state, run = tiny
  rng = np.random.default_rng(4)
  t = int(LENGTHS.max())
  features = rng.normal(size=(len(LENGTHS), t, MEL)).astype(np.float32)
  mask = np.arange(t)[None] < LENGTHS[:, None]
  features[~mask] = np.nan  # whatever the padding holds never reaches a valid frame
  frames, out = run(state, jnp.asarray(features), jnp.asarray(mask))
  frames, frame_mask = np.asarray(frames), np.asarray(out["frame_mask"])
  # 25 frames/s: T' = ceil(((T - 7) // 2) / 2), icefall's lengths ((x - 7) // 2 + 1) // 2, for every clip.
  t_out = (((t - 7) // 2) + 1) // 2
  assert frames.shape == (len(LENGTHS), t_out, encoder.output_dim) == (4, 49, 64)
  np.testing.assert_array_equal(frame_mask.sum(1), ((LENGTHS - 7) // 2 + 1) // 2)
  np.testing.assert_array_equal(frame_mask.sum(1), zipformer.output_length(LENGTHS))
  assert zipformer.Zipformer.output_frames(_tiny_config(THREE_STACKS), t) == t_out
  assert np.all(frames[~frame_mask] == 0) and np.isfinite(frames).all()
  assert np.abs(frames[frame_mask]).mean() > 0.01
  np.testing.assert_allclose(out["pooled"], [frames[i][frame_mask[i]].mean(0) for i in range(len(LENGTHS))],
                             rtol=1e-5, atol=1e-6)
  layer_names = sorted(k for k in out if k.startswith("layer_"))
  assert len(layer_names) == len(THREE_STACKS) and "patch" in out
  assert out["layer_1"].shape == (4, t_out, 64) and out["patch"].shape == (4, t_out, 32)
  # 37 more padded frames, other garbage (large values) where NaN was: every valid output is unchanged.
  extra = 37
  longer = np.concatenate([np.where(mask[..., None], features, 1e3), np.full((4, extra, MEL), -1e3)], axis=1)
  long_mask = np.concatenate([mask, np.zeros((4, extra), bool)], axis=1)
  _, long_out = run(state, jnp.asarray(longer.astype(np.float32)), jnp.asarray(long_mask))
  long_frame_mask = np.asarray(long_out["frame_mask"])
  np.testing.assert_array_equal(long_frame_mask[:, :t_out], frame_mask)
  assert not long_frame_mask[:, t_out:].any()
  np.testing.assert_allclose(long_out["pooled"], out["pooled"], rtol=1e-4, atol=1e-5)
  for name in layer_names + ["patch", "frames"]:
    got, want = np.asarray(long_out[name])[:, :t_out][frame_mask], np.asarray(out[name])[frame_mask]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_stacks_never_read_their_padded_frames():
  """Inside the encoder (where the input zeroing does not reach): a stack at the full rate (its layer's attention,
  NonlinAttention, convolutions, bypasses) and one that downsamples by 4 (groups partly or wholly padded), given
  NaN or other values on their padded frames, give the same finite valid frames."""
  cfg = _tiny_config((0, 1))
  cfg.downsampling_factor, cfg.encoder_dim = [1, 4], [32, 32]

  def make():
    return nnx.List([zipformer.ZipformerStack(cfg, i, rngs=nnx.Rngs(0)) for i in range(2)])

  graphdef, state = _host_init(nnx.eval_shape(make), 1)
  run = jax.jit(lambda state, x, mask: [stack(x, mask)[0] for stack in nnx.merge(graphdef, state)])
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3, 23, 32)).astype(np.float32)
  mask = np.arange(23)[None] < np.asarray([23, 14, 9])[:, None]
  with_nan, with_big = x.copy(), x.copy()
  with_nan[~mask], with_big[~mask] = np.nan, 1e4
  nan_out, big_out = (run(state, jnp.asarray(v), jnp.asarray(mask)) for v in (with_nan, with_big))
  for a, b in zip(nan_out, big_out):
    a, b = np.asarray(a), np.asarray(b)
    assert np.isfinite(a[mask]).all()
    np.testing.assert_allclose(a[mask], b[mask], rtol=1e-5, atol=1e-5)
  # The stacks do mix frames (so the masking is what keeps the padding out): moving one valid input frame moves
  # valid output frames far from it.
  moved = with_big.copy()
  moved[1, 0] += 1.0
  for c, b in zip(run(state, jnp.asarray(moved), jnp.asarray(mask)), big_out):
    assert np.abs(np.asarray(c)[1, 8:14] - np.asarray(b)[1, 8:14]).max() > 1e-3


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
  # The study's Zipformer-M (the toolkit's `m`, feed-forwards 3x instead of icefall's 512/1024): within 1% of the
  # published Zipformer-M figure (65.5M; STUDY.md 2.2 "M ~ 65M").
  assert abs(counts["m"] - 65_549_011) < 0.01 * 65_549_011
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


# --- Config route, sharding rules, analytic FLOPs --------------------------------------------------------------


def test_a_config_variant_selects_the_zipformer_and_its_preset():
  config = load_config("clap", "tiny,zipformer")
  assert config.model.audio.name == "zipformer" and config.model.audio.preset == "tiny"
  config = load_config("cappa", "base,zipformer_768")
  assert config.model.audio.encoder_dim == zipformer.PRESETS["768"]["encoder_dim"]
  assert config.model.audio.dtype == "bfloat16"  # the size variant's compute dtype is kept
  assert load_config("tagging", "zipformer").model.audio.encoder_dim == zipformer.PRESETS["m"]["encoder_dim"]
  assert load_config("hybrid", "tiny,zipformer_m").model.audio.preset == "m"
  with pytest.raises(ValueError, match="choose one Zipformer preset"):
    load_config("clap", "zipformer_m,zipformer_768")


def test_the_zipformer_is_sharded_by_the_default_rules():
  config = load_config("clap", "tiny,zipformer")
  config.mesh.update(data=1, fsdp=4, tensor=2)
  mesh = sharding_lib.mesh_from_config(config.mesh)
  abstract = nnx.eval_shape(lambda: encoders.encoder_from_config(config.model.audio, rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  shardings = sharding_lib.state_shardings(params, mesh, config.mesh.rules)
  assert sharding_lib.sharding_report(params, shardings, mesh, config.mesh.rules, 0) == []  # every rule applies
  flat = dict(nnx.to_flat_state(shardings))
  spec = flat[("stacks", 3, "layers", 0, "feed_forward2", "hidden", "kernel")].get_value().spec
  assert tuple(spec) == ("fsdp", "tensor")  # (D, F): embed -> fsdp, mlp -> tensor


def _jaxpr_matmul_flops(jaxpr) -> float:
  """2 x multiply-adds of every dot_general and conv_general_dilated in a jaxpr (sub-jaxprs included)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out = eqn.outvars[0].aval.shape
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * np.prod(out) * np.prod([lhs[i] for i in contract])
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *spatial)
      total += 2.0 * np.prod(out) * rhs[rhs_spec[1]] * np.prod([rhs[i] for i in rhs_spec[2:]])
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          total += _jaxpr_matmul_flops(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          total += _jaxpr_matmul_flops(sub)
  return total


def test_analytic_flops_equal_the_dots_and_convolutions_of_the_forward_pass():
  config = load_config("tagging", "tiny,zipformer")  # the smallest model around an audio encoder
  config.model.num_classes = 10
  config.data.crop_seconds = 1.0
  audio_part = flops.breakdown(config)["audio_encoder"]
  num_frames = flops._input_frames(config)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: encoders.encoder_from_config(config.model.audio,
                                                                                  rngs=nnx.Rngs(0))))
  features = jax.ShapeDtypeStruct((1, num_frames, config.model.audio.num_mel_bins), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, num_frames), bool)
  jaxpr = jax.make_jaxpr(lambda st, f, m: nnx.merge(graphdef, st)(f, m)[0])(state, features, mask)
  forward = _jaxpr_matmul_flops(jaxpr.jaxpr)
  assert audio_part == pytest.approx(flops.BACKWARD_FACTOR * config.batch_size * forward, rel=1e-9)
  extra = zipformer.Zipformer.extra_flops(config.model.audio, num_frames)
  assert 0.2 * forward < extra < 0.8 * forward  # both halves (kernels, convolutions + attention) matter


# --- Training on 8 devices, export, embed (slow: compiles the tiny Zipformer's training step) ------------------


@pytest.mark.slow
def test_tiny_zipformer_trains_on_8_devices_exports_and_embeds(tiny_corpus_dir, tmp_path):
  config = make_test_config("clap", tiny_corpus_dir, mesh__num_devices=8, total_steps=6, checkpoint_every=6)
  common.use_zipformer(config, "tiny")
  config.optimizer.learning_rate = 3e-3
  workdir = tmp_path / "run"
  summary = trainer.train(config, workdir)
  assert summary["final_step"] == 6
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  assert np.isfinite(losses).all() and np.mean(losses[-2:]) < np.mean(losses[:2]), losses
  subprocess.run([sys.executable, "-m", "alp_jax.export", "--workdir", str(workdir), "--out", str(tmp_path / "enc")],
                 check=True, capture_output=True)
  encoder = AudioEncoder.load(tmp_path / "enc")
  assert encoder.output_dim == max(zipformer.PRESETS["tiny"]["encoder_dim"])
  clip = np.random.default_rng(0).standard_normal(int(2.5 * 16000)).astype(np.float32) * 0.1
  out = encoder.embed(clip, 16000)
  # Three 1 s windows, the last half full: each gives the Zipformer's own count (23 for 1 s, not 25).
  window, last = (zipformer.output_length(frontend.num_frames(n, config.frontend)) for n in (16000, 8000))
  assert len(out["frames"]) == 2 * window + last and np.isfinite(out["frames"]).all()
  np.testing.assert_allclose(out["pooled"], out["frames"].mean(axis=0), rtol=1e-5, atol=1e-6)
