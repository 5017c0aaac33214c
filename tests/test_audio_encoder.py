"""Audio encoder: frame stacking, padding invariance, the size table, logical axis names."""
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alp_jax.models import audio_encoder, heads, sizes, text_encoder

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "models.md"
LOGICAL_NAMES = {"embed", "mlp", "heads", "kv", "vocab", "mel", "joint", "layers", None}
VOCAB = 8000  # the vocabulary docs/models.md counts the text encoder with


@pytest.fixture(autouse=True)
def _no_eager_sharding():
  with nnx.use_eager_sharding(False):
    yield


def _tiny_config(**overrides):
  cfg = audio_encoder.default_config()
  cfg.num_mel_bins = 8
  cfg.update(overrides)
  return cfg


def test_stack_frames_matches_numpy():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 10, 3)).astype(np.float32)
  mask = np.zeros((2, 10), bool)
  mask[0, :5], mask[1, :] = True, True
  got, got_mask = (np.asarray(a) for a in audio_encoder.stack_frames(
      jnp.asarray(features), jnp.asarray(mask), 4))
  want = np.zeros((2, 3, 12), np.float32)
  want_mask = np.zeros((2, 3), bool)
  for b in range(2):
    for out in range(3):
      for j in range(4):
        t = out * 4 + j
        if t < 10 and mask[b, t]:
          want[b, out, j * 3:(j + 1) * 3] = features[b, t]
          want_mask[b, out] = True
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got_mask, want_mask)


@pytest.mark.parametrize("position_embedding", ["sinusoidal", "learned"])
def test_appended_padding_changes_nothing(position_embedding):
  encoder = audio_encoder.TransformerAudioEncoder(
      _tiny_config(position_embedding=position_embedding, max_frames=16), rngs=nnx.Rngs(0))
  head_cfg = heads.default_config()
  head_cfg.hidden_dim, head_cfg.embed_dim = 32, 16
  head = heads.ProjectionHead(encoder.output_dim, head_cfg, rngs=nnx.Rngs(1))
  rng = np.random.default_rng(1)
  features = rng.normal(size=(2, 22, 8)).astype(np.float32)
  mask = np.zeros((2, 22), bool)
  mask[0, :9], mask[1, :] = True, True  # row 0 ends inside a stack of 4
  # The longer input appends 10 padded frames and puts garbage in every padded frame.
  long_features = np.concatenate([features, np.zeros((2, 10, 8), np.float32)], axis=1)
  long_mask = np.concatenate([mask, np.zeros((2, 10), bool)], axis=1)
  long_features[~long_mask] = 1e3

  def run(f, m):
    frames, out = encoder(jnp.asarray(f), jnp.asarray(m))
    embeddings = {pooling: np.asarray(heads.audio_embedding(head, frames, out["frame_mask"],
                                                            pooling))
                  for pooling in heads.AUDIO_POOLINGS}
    return np.asarray(frames), np.asarray(out["frame_mask"]), np.asarray(out["pooled"]), embeddings

  frames, frame_mask, pooled, embeddings = run(features, mask)
  long_frames, long_frame_mask, long_pooled, long_embeddings = run(long_features, long_mask)
  assert frame_mask.shape == (2, 6) and long_frame_mask.shape == (2, 8)
  np.testing.assert_array_equal(frame_mask.sum(1), [3, 6])  # 9 frames -> 3 stacks (any rule)
  np.testing.assert_array_equal(long_frame_mask[:, :6], frame_mask)
  assert not long_frame_mask[:, 6:].any()
  np.testing.assert_allclose(long_frames[:, :6][frame_mask], frames[frame_mask], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(long_pooled, pooled, rtol=1e-5, atol=1e-5)
  for pooling in heads.AUDIO_POOLINGS:
    np.testing.assert_allclose(long_embeddings[pooling], embeddings[pooling], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embeddings[pooling], axis=-1), 1.0, rtol=1e-5)
  # The masked mean, checked against NumPy on the valid frames.
  want = np.stack([frames[b][frame_mask[b]].mean(0) for b in range(2)])
  np.testing.assert_allclose(pooled, want, rtol=1e-5, atol=1e-6)


def test_learned_positions_refuse_too_long_inputs():
  encoder = audio_encoder.TransformerAudioEncoder(
      _tiny_config(position_embedding="learned", max_frames=2), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="max_frames"):
    encoder(jnp.zeros((1, 12, 8)), jnp.ones((1, 12), bool))


# --- Size family -----------------------------------------------------------------------------


def _block_params(width, mlp_dim):
  attention = 4 * width * width + 4 * width  # q, k, v, out kernels and biases
  mlp = 2 * width * mlp_dim + mlp_dim + width
  norms = 2 * 2 * width
  return attention + mlp + norms


def _audio_params(width, depth, mlp_dim, stack=4, mel=80):
  patch = stack * mel * width + width
  return patch + depth * _block_params(width, mlp_dim) + 2 * width


def _text_params(width, depth, mlp_dim, vocab=VOCAB, max_tokens=128):
  embeddings = vocab * width + width + (max_tokens + 1) * width  # tokens, CLS, positions
  return embeddings + depth * _block_params(width, mlp_dim) + 2 * width


def _param_count(module):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _documented_counts():
  """{size: (audio params, text params)} from the size table in docs/models.md."""
  counts = {}
  for line in DOCS.read_text().splitlines():
    match = re.match(r"\|\s*(tiny|mini|small|base|large)\s*\|(.*)\|\s*$", line)
    if match:
      cells = [c.strip().replace(",", "") for c in match.group(2).split("|")]
      if len(cells) >= 6 and all(c.isdigit() for c in cells[:6]):
        counts[match.group(1)] = (int(cells[4]), int(cells[5]))
  return counts


def test_size_family_parameter_counts():
  documented = _documented_counts()
  assert set(documented) == set(sizes.SIZES)
  counts = {}
  for name, size in sizes.SIZES.items():
    audio_cfg, text_cfg = audio_encoder.default_config(), text_encoder.default_config()
    audio_cfg.size = text_cfg.size = name
    audio = nnx.eval_shape(lambda: audio_encoder.TransformerAudioEncoder(audio_cfg,
                                                                         rngs=nnx.Rngs(0)))
    text = nnx.eval_shape(lambda: text_encoder.TextEncoder(text_cfg, vocab_size=VOCAB,
                                                           rngs=nnx.Rngs(0)))
    counts[name] = (_param_count(audio), _param_count(text))
    width, depth, mlp_dim = size["width"], size["depth"], size["mlp_dim"]
    assert counts[name] == (_audio_params(width, depth, mlp_dim),
                            _text_params(width, depth, mlp_dim)), name
    assert counts[name] == documented[name], name
  # At least two orders of magnitude from tiny to large.
  assert counts["large"][0] >= 100 * counts["tiny"][0]
  # base is ViT-B / BERT-base sized: ~85M in the Transformer stack.
  assert 80e6 < counts["base"][0] < 90e6


@pytest.mark.parametrize("scan_layers", [True, False])
def test_every_matrix_has_logical_axis_names(scan_layers):
  audio_cfg = audio_encoder.default_config()
  audio_cfg.update(scan_layers=scan_layers, position_embedding="learned")
  text_cfg = text_encoder.default_config()
  text_cfg.scan_layers = scan_layers
  head_cfg = heads.default_config()

  def build():
    audio = audio_encoder.TransformerAudioEncoder(audio_cfg, rngs=nnx.Rngs(0))
    return (audio, text_encoder.TextEncoder(text_cfg, vocab_size=VOCAB, rngs=nnx.Rngs(0)),
            heads.ProjectionHead(audio.output_dim, head_cfg, rngs=nnx.Rngs(0)))

  checked = 0
  for module in nnx.eval_shape(build):
    for path, param in nnx.to_flat_state(nnx.state(module, nnx.Param)):
      names = param.get_metadata().get("out_sharding")
      if len(param.shape) >= 2:
        assert names is not None and len(names) == len(param.shape), (path, names)
        assert set(names) <= LOGICAL_NAMES, (path, names)
        assert any(n is not None for n in names), path
        checked += 1
      if scan_layers and "blocks" in path:
        assert names[0] == "layers", (path, names)
  assert checked > 10


def test_parameters_are_born_sharded_under_a_mesh_with_rules():
  from alp_jax import models
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = (("embed", "fsdp"), ("mlp", None), ("heads", None), ("kv", None), ("mel", None),
           ("layers", None))
  cfg = _tiny_config()
  cfg.scan_layers = True  # stacked blocks: the "layers" axis must stay unsharded
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules), nnx.use_eager_sharding(True):
    abstract = nnx.eval_shape(lambda: models.encoder_from_config(cfg, rngs=nnx.Rngs(0)))
    specs = nnx.get_partition_spec(nnx.state(abstract, nnx.Param))
    hidden_spec = specs["encoder"]["blocks"]["mlp"]["hidden_kernel"].get_value()
    assert hidden_spec == jax.P(None, "fsdp", None)  # ("layers", "embed", "mlp") under the rules
    encoder = nnx.jit(lambda: models.encoder_from_config(cfg, rngs=nnx.Rngs(0)))()
  kernel = encoder.encoder.blocks.mlp.hidden_kernel[...]  # (L,D,F) stacked over layers
  assert kernel.sharding.spec == jax.P(None, "fsdp")
  assert kernel.addressable_shards[0].data.shape == (4, 128 // 4, 512)
