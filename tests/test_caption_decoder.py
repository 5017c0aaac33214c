"""Caption decoder: NumPy reference forward, no target leakage in parallel mode, causality in AR
mode, padding invariance, mixed batches (tiny shapes, few compiles)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from alp_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from alp_jax.models import caption_decoder
from alp_jax.models.caption_decoder import CaptionDecoder

VOCAB, WIDTH, DEPTH, HEADS, MLP_DIM, MAX_LEN = 16, 16, 2, 2, 32, 12
B, L, T = 2, 6, 7


@pytest.fixture(autouse=True)
def _no_eager_sharding():
  with nnx.use_eager_sharding(False):
    yield


def _perturbed_decoder(**variant):
  with nnx.use_eager_sharding(False):
    model = CaptionDecoder(VOCAB, rngs=nnx.Rngs(0), width=WIDTH, depth=DEPTH, num_heads=HEADS,
                           mlp_dim=MLP_DIM, max_len=MAX_LEN, dropout=0.1, **variant)
  # Non-zero biases and norm parameters, so the reference also checks where they enter.
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


@pytest.fixture(scope="module")
def decoder():
  return _perturbed_decoder()


@nnx.jit
def forward(model, tokens, mask, frames, frame_mask, parallel):
  return model(tokens, mask, frames, frame_mask, parallel)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  tokens = np.array([[5, 6, 7, 8, EOS_ID, PAD_ID], [9, 10, 11, EOS_ID, PAD_ID, PAD_ID]], np.int32)
  frames = rng.normal(size=(B, T, WIDTH)).astype(np.float32)
  frame_mask = np.arange(T)[None] < np.array([[T], [4]])
  return tokens, tokens != PAD_ID, frames, frame_mask


# ---------------------------------------------------------------------------------------------
# NumPy reference


def _layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _bias(p, name, shape=()):
  """A bias of the reference, or zeros where the model was built without biases (use_bias=False)."""
  return p[name] if name in p else np.zeros(shape)


def _head_bias(p, name):
  """A (H,K) projection bias broadcast over positions, or 0 without biases."""
  return p[name][:, None] if name in p else 0.0


def _attention(p, queries, keys_values, mask):
  """queries (L,D), keys_values (S,D), mask (L,S) -> (L,D); rows without keys give zeros."""
  q = np.einsum("ld,dhk->hlk", queries, p["query_kernel"]) + _head_bias(p, "query_bias")
  k = np.einsum("sd,dhk->hsk", keys_values, p["key_kernel"]) + _head_bias(p, "key_bias")
  v = np.einsum("sd,dhk->hsk", keys_values, p["value_kernel"]) + _head_bias(p, "value_bias")
  scores = np.einsum("hlk,hsk->hls", q, k) / np.sqrt(q.shape[-1])
  scores = np.where(mask[None], scores, -np.inf)
  out = np.zeros((queries.shape[0], p["out_kernel"].shape[-1]))
  for i in range(queries.shape[0]):
    if not mask[i].any():
      continue
    w = np.exp(scores[:, i] - scores[:, i].max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)  # (H,S)
    out[i] = np.einsum("hs,hsk,hkd->d", w, v, p["out_kernel"]) + _bias(p, "out_bias")
  return out


def _reference_logits(model, tokens, mask, frames, frame_mask, parallel, post_norm=False):
  """The decoder spelled out in NumPy (float64), example by example. post_norm: PyTorch's
  nn.TransformerDecoderLayer(norm_first=False) blocks, no final LayerNorm."""
  params = jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.to_pure_dict(nnx.state(model)))
  blocks = params["blocks"]
  length = tokens.shape[1]
  half = WIDTH // 2
  inv_freq = 10_000.0 ** (-np.arange(half) / (half - 1))
  angles = np.arange(length)[:, None] * inv_freq[None]
  positions = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  out = np.zeros(tokens.shape + (VOCAB,))
  for b in range(tokens.shape[0]):
    if parallel[b]:
      valid = mask[b] & (tokens[b] != EOS_ID)
      x = np.tile(params["mask_embedding"], (length, 1))
      self_mask = valid[:, None] & valid[None, :]
    else:
      valid = mask[b]
      inputs = np.concatenate([[BOS_ID], tokens[b, :-1]])
      x = params["token_embedding"][inputs]
      self_mask = valid[:, None] & valid[None, :] & np.tri(length, dtype=bool)
    x = x * np.sqrt(WIDTH) + positions
    cross_mask = valid[:, None] & frame_mask[b][None, :]
    for i in range(DEPTH):
      p = jax.tree.map(lambda a: a[i], blocks)
      norm = lambda name, y: _layer_norm(y, p[name]["scale"], _bias(p[name], "bias"))

      def mlp(y):
        h = y @ p["mlp"]["hidden_kernel"] + _bias(p["mlp"], "hidden_bias")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        return h @ p["mlp"]["out_kernel"] + _bias(p["mlp"], "out_bias")

      if post_norm:
        x = norm("self_attention_norm", x + _attention(p["self_attention"], x, x, self_mask))
        x = norm("cross_attention_norm", x + _attention(p["cross_attention"], x, frames[b], cross_mask))
        x = norm("mlp_norm", x + mlp(x))
        continue
      h = norm("self_attention_norm", x)
      x = x + _attention(p["self_attention"], h, h, self_mask)
      x = x + _attention(p["cross_attention"], norm("cross_attention_norm", x), frames[b],
                         cross_mask)
      x = x + mlp(norm("mlp_norm", x))
    if not post_norm:
      x = _layer_norm(x, params["final_norm"]["scale"], params["final_norm"]["bias"])
    out[b] = x @ params["output_kernel"] + params["output_bias"]
  return out


def test_matches_numpy_reference_on_a_mixed_batch(decoder):
  tokens, mask, frames, frame_mask = _inputs()
  for parallel in (np.array([True, False]), np.array([False, True])):
    logits = np.asarray(forward(decoder, tokens, mask, frames, frame_mask, parallel))
    assert logits.dtype == np.float32 and logits.shape == (B, L, VOCAB)
    reference = _reference_logits(decoder, tokens, mask, frames.astype(np.float64), frame_mask,
                                  parallel)
    valid = np.asarray(caption_decoder.caption_target_mask(tokens, mask, parallel))
    np.testing.assert_allclose(logits[valid], reference[valid], rtol=2e-4, atol=2e-4)


def test_post_ln_bias_free_variant_matches_its_reference():
  """The study toolkit's decoder layer (post-LN, bias=False): no biases anywhere but the vocabulary
  projection, no final LayerNorm, and the same logits as the post-LN NumPy reference."""
  model = _perturbed_decoder(norm="post", use_bias=False)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  names = {"/".join(str(getattr(k, "key", k)) for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert [n for n in names if "bias" in n] == ["output_bias"] and not any("final_norm" in n for n in names)
  tokens, mask, frames, frame_mask = _inputs()
  parallel = np.array([True, False])
  logits = np.asarray(forward(model, tokens, mask, frames, frame_mask, parallel))
  reference = _reference_logits(model, tokens, mask, frames.astype(np.float64), frame_mask, parallel,
                                post_norm=True)
  valid = np.asarray(caption_decoder.caption_target_mask(tokens, mask, parallel))
  np.testing.assert_allclose(logits[valid], reference[valid], rtol=2e-4, atol=2e-4)


def test_caption_target_mask_drops_eos_only_for_parallel_rows():
  tokens, mask, _, _ = _inputs()
  parallel = np.array([True, False])
  target = np.asarray(caption_decoder.caption_target_mask(tokens, mask, parallel))
  np.testing.assert_array_equal(target[0], [1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(target[1], mask[1])
  with_eos = caption_decoder.caption_target_mask(tokens, mask, parallel, parallel_predicts_eos=True)
  np.testing.assert_array_equal(np.asarray(with_eos), mask)


def test_parallel_rows_never_see_the_caption_tokens(decoder):
  tokens, mask, frames, frame_mask = _inputs()
  parallel = np.array([True, False])
  changed = tokens.copy()
  changed[:, :3] = [[12, 13, 14], [4, 4, 4]]  # every row, EOS and padding kept in place
  before = np.asarray(forward(decoder, tokens, mask, frames, frame_mask, parallel))
  after = np.asarray(forward(decoder, changed, mask, frames, frame_mask, parallel))
  np.testing.assert_array_equal(before[0], after[0])  # parallel row: identical, all positions
  assert np.abs(before[1] - after[1]).max() > 1e-3  # the autoregressive row does read them


def test_autoregressive_position_i_sees_only_earlier_tokens(decoder):
  tokens, mask, frames, frame_mask = _inputs()
  parallel = np.array([False, False])
  before = np.asarray(forward(decoder, tokens, mask, frames, frame_mask, parallel))
  for j in (1, 3):
    changed = tokens.copy()
    changed[0, j] = 15
    after = np.asarray(forward(decoder, changed, mask, frames, frame_mask, parallel))
    np.testing.assert_array_equal(before[0, :j + 1], after[0, :j + 1])  # positions <= j
    assert np.abs(before[0, j + 1] - after[0, j + 1]).max() > 1e-3  # position j+1 reads token j
    np.testing.assert_array_equal(before[1], after[1])  # other rows untouched


def test_mixed_batch_rows_equal_single_mode_batches(decoder):
  tokens, mask, frames, frame_mask = _inputs()
  mixed = np.asarray(forward(decoder, tokens, mask, frames, frame_mask, np.array([True, False])))
  all_ar = np.asarray(forward(decoder, tokens, mask, frames, frame_mask, np.array([False, False])))
  all_par = np.asarray(forward(decoder, tokens, mask, frames, frame_mask, np.array([True, True])))
  np.testing.assert_allclose(mixed[0], all_par[0], atol=1e-6)
  np.testing.assert_allclose(mixed[1], all_ar[1], atol=1e-6)


def test_padding_tokens_and_masked_frames_change_nothing(decoder):
  tokens, mask, frames, frame_mask = _inputs()
  parallel = np.array([True, False])
  base = np.asarray(forward(decoder, tokens, mask, frames, frame_mask, parallel))
  # Two more PAD tokens and three more (garbage, masked) audio frames in one call.
  long_tokens = np.pad(tokens, ((0, 0), (0, 2)))
  long_frames = np.concatenate([frames, 100.0 * np.ones((B, 3, WIDTH), np.float32)], axis=1)
  long_frame_mask = np.pad(frame_mask, ((0, 0), (0, 3)))
  longer = np.asarray(forward(decoder, long_tokens, long_tokens != PAD_ID, long_frames,
                              long_frame_mask, parallel))
  valid = np.asarray(caption_decoder.caption_target_mask(tokens, mask, parallel))
  np.testing.assert_allclose(longer[:, :L][valid], base[valid], rtol=1e-5, atol=1e-5)
  # Garbage inside the masked frames of row 1 (4 valid frames) changes nothing either.
  noisy = frames.copy()
  noisy[1, 4:] = -50.0
  np.testing.assert_array_equal(
      np.asarray(forward(decoder, tokens, mask, noisy, frame_mask, parallel)), base)


def test_dropout_needs_train_mode_and_a_key(decoder):
  tokens, mask, frames, frame_mask = _inputs()
  parallel = jnp.array([True, False])
  eval_logits = decoder(tokens, mask, frames, frame_mask, parallel)
  train_logits = decoder(tokens, mask, frames, frame_mask, parallel, deterministic=False,
                         dropout_key=jax.random.key(3))
  assert np.isfinite(np.asarray(train_logits)).all()
  assert np.abs(np.asarray(train_logits - eval_logits)).max() > 1e-3
  with pytest.raises(ValueError, match="dropout_key"):
    decoder(tokens, mask, frames, frame_mask, parallel, deterministic=False)


def test_variant_tied_learned_projected_unscanned_is_causal_and_leak_free():
  with nnx.use_eager_sharding(False):
    model = CaptionDecoder(VOCAB, rngs=nnx.Rngs(1), width=WIDTH, depth=DEPTH, num_heads=HEADS,
                           mlp_dim=MLP_DIM, max_len=MAX_LEN, audio_width=24, positions="learned",
                           tie_embeddings=True, scan_layers=False, dropout=0.0)
  assert not hasattr(model, "output_kernel")
  tokens, mask, _, frame_mask = _inputs()
  frames = np.random.default_rng(2).normal(size=(B, T, 24)).astype(np.float32)
  parallel = np.array([True, False])
  changed = tokens.copy()
  changed[:, 2] = 15
  before = np.asarray(forward(model, tokens, mask, frames, frame_mask, parallel))
  after = np.asarray(forward(model, changed, mask, frames, frame_mask, parallel))
  np.testing.assert_array_equal(before[0], after[0])
  np.testing.assert_array_equal(before[1, :3], after[1, :3])
  assert np.abs(before[1, 3] - after[1, 3]).max() > 1e-3
