"""Decoding and scoring: greedy against a step-by-step reference, beam search against greedy and
against exhaustive search, scores against an independent log-softmax, cached decoding against the
uncached reference path and its steps against teacher-forced logits (tiny random decoders)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alp_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from alp_jax.models import decoding
from alp_jax.models.caption_decoder import CaptionDecoder

WIDTH, DEPTH, HEADS, MLP_DIM = 16, 2, 2, 32
B, T, MAX_LEN = 4, 5, 8


def _decoder(vocab: int, seed: int, eos_bias: float, **variant) -> CaptionDecoder:
  with nnx.use_eager_sharding(False):
    model = CaptionDecoder(vocab, rngs=nnx.Rngs(seed), width=WIDTH, depth=DEPTH, num_heads=HEADS,
                           mlp_dim=MLP_DIM, max_len=MAX_LEN, dropout=0.0, **variant)
  # An EOS bias makes some captions end early and others run to max_len.
  model.output_bias[...] = model.output_bias[...].at[EOS_ID].set(eos_bias)
  return model


@pytest.fixture(scope="module")
def decoder():
  return _decoder(16, seed=0, eos_bias=1.0)


@pytest.fixture(scope="module")
def audio():
  rng = np.random.default_rng(0)
  frames = rng.normal(size=(B, T, WIDTH)).astype(np.float32)
  frame_mask = np.arange(T)[None] < np.array([[5], [3], [4], [2]])
  return frames, frame_mask


@nnx.jit
def forward(model, tokens, mask, frames, frame_mask):
  return model(tokens, mask, frames, frame_mask)


def _log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _check_eos_then_pad(tokens, mask):
  for row, row_mask in zip(tokens, mask):
    eos = np.flatnonzero(row == EOS_ID)
    length = eos[0] + 1 if eos.size else len(row)
    np.testing.assert_array_equal(row_mask, np.arange(len(row)) < length)
    assert (row[length:] == PAD_ID).all()
    assert not np.isin(row[:length], [PAD_ID, BOS_ID]).any()


def test_greedy_equals_step_by_step_argmax(decoder, audio):
  frames, frame_mask = audio
  tokens, mask, scores = map(np.asarray, decoding.greedy_decode(decoder, frames, frame_mask,
                                                                max_len=MAX_LEN))
  # Reference: feed only the prefix (mask True on positions <= i, PAD after), take the argmax
  # over the allowed ids, stop a row at its first EOS.
  ref = np.full((B, MAX_LEN), PAD_ID, np.int32)
  ref_scores = np.zeros(B)
  done = np.zeros(B, bool)
  for i in range(MAX_LEN):
    prefix_mask = np.broadcast_to(np.arange(MAX_LEN) <= i, (B, MAX_LEN))
    log_probs = _log_softmax(forward(decoder, ref, prefix_mask, frames, frame_mask)[:, i])
    allowed = log_probs.copy()
    allowed[:, [PAD_ID, BOS_ID]] = -np.inf
    choice = allowed.argmax(-1)
    for b in np.flatnonzero(~done):
      ref[b, i] = choice[b]
      ref_scores[b] += log_probs[b, choice[b]]
    done |= ref[:, i] == EOS_ID
  np.testing.assert_array_equal(tokens, ref)
  np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
  lengths = mask.sum(1)
  assert (lengths < MAX_LEN).any() and (lengths == MAX_LEN).any(), lengths  # both cases covered
  _check_eos_then_pad(tokens, mask)
  np.testing.assert_allclose(
      np.asarray(decoding.score_captions(decoder, frames, frame_mask, tokens, mask)), scores,
      rtol=1e-5, atol=1e-5)


def test_beam_of_one_is_greedy(decoder, audio):
  frames, frame_mask = audio
  greedy = decoding.greedy_decode(decoder, frames, frame_mask, max_len=MAX_LEN)
  beam = decoding.beam_search(decoder, frames, frame_mask, max_len=MAX_LEN, beam_size=1)
  for g, b in zip(greedy[:2], beam[:2]):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(b))
  np.testing.assert_allclose(np.asarray(beam[2]), np.asarray(greedy[2]), rtol=1e-5, atol=1e-5)


def test_beam_scores_are_the_scores_of_the_returned_captions(decoder, audio):
  frames, frame_mask = audio
  tokens, mask, scores = map(np.asarray, decoding.beam_search(decoder, frames, frame_mask,
                                                              max_len=MAX_LEN, beam_size=3))
  _check_eos_then_pad(tokens, mask)
  np.testing.assert_allclose(
      np.asarray(decoding.score_captions(decoder, frames, frame_mask, tokens, mask)), scores,
      rtol=1e-5, atol=1e-5)


def test_score_captions_is_minus_summed_token_cross_entropy(decoder, audio):
  frames, frame_mask = audio
  tokens = np.array([[5, 6, 7, EOS_ID, 0, 0, 0, 0], [8, EOS_ID, 0, 0, 0, 0, 0, 0],
                     [9, 9, 9, 9, 9, 9, 9, EOS_ID], [EOS_ID, 0, 0, 0, 0, 0, 0, 0]], np.int32)
  mask = tokens != PAD_ID
  log_probs = _log_softmax(forward(decoder, tokens, mask, frames, frame_mask))  # (B,L,V)
  expected = np.zeros(B)
  for b, i in zip(*np.nonzero(mask)):
    expected[b] -= -log_probs[b, i, tokens[b, i]]  # minus the token's cross-entropy
  np.testing.assert_allclose(
      np.asarray(decoding.score_captions(decoder, frames, frame_mask, tokens, mask)), expected,
      rtol=1e-5, atol=1e-5)
  # Candidate scoring: every (clip, candidate) pair, in chunks that do not divide N.
  candidates = decoding.score_caption_candidates(decoder, frames, frame_mask, tokens[:3],
                                                 mask[:3], chunk_size=2)
  assert candidates.shape == (B, 3)
  for n in range(3):
    tiled = np.broadcast_to(tokens[n], (B, MAX_LEN))
    np.testing.assert_allclose(
        np.asarray(candidates[:, n]),
        np.asarray(decoding.score_captions(decoder, frames, frame_mask, tiled, tiled != PAD_ID)),
        rtol=1e-5, atol=1e-5)


def test_wide_beam_is_exhaustive_search():
  """V=6 (4 generable ids), 3 positions: 40 possible captions; 40 beams keep all of them."""
  vocab, max_len, beams = 6, 3, 40
  model = _decoder(vocab, seed=3, eos_bias=0.5)
  rng = np.random.default_rng(1)
  frames = rng.normal(size=(2, T, WIDTH)).astype(np.float32)
  frame_mask = np.arange(T)[None] < np.array([[5], [3]])
  words = [i for i in range(vocab) if i not in (PAD_ID, BOS_ID, EOS_ID)]
  captions = []
  for length in range(max_len + 1):
    for body in itertools.product(words, repeat=length):
      caption = list(body) + ([EOS_ID] if length < max_len else [])
      captions.append(caption + [PAD_ID] * (max_len - len(caption)))
  captions = np.array(captions, np.int32)  # (40, 3)
  mask = captions != PAD_ID
  lengths = mask.sum(1)
  for length_penalty in (0.0, 1.0):
    tokens, _, scores = map(np.asarray, decoding.beam_search(
        model, frames, frame_mask, max_len=max_len, beam_size=beams,
        length_penalty=length_penalty))
    for b in range(2):
      log_probs = _log_softmax(forward(model, captions, mask,
                                       np.broadcast_to(frames[b], (len(captions), T, WIDTH)),
                                       np.broadcast_to(frame_mask[b], (len(captions), T))))
      exact = np.where(mask, np.take_along_axis(log_probs, captions[..., None], -1)[..., 0],
                       0.0).sum(1)
      best = np.argmax(exact / lengths ** length_penalty)
      np.testing.assert_array_equal(tokens[b], captions[best])
      np.testing.assert_allclose(scores[b], exact[best], rtol=1e-5, atol=1e-5)


def _assert_same_decoding(cached, uncached):
  tokens, mask, scores = map(np.asarray, cached)
  np.testing.assert_array_equal(tokens, np.asarray(uncached[0]))
  np.testing.assert_array_equal(mask, np.asarray(uncached[1]))
  np.testing.assert_allclose(scores, np.asarray(uncached[2]), rtol=1e-5, atol=1e-5)
  lengths = mask.sum(-1)
  # EOS comes at different steps, and at least one caption ends before max_len.
  assert len(set(lengths.tolist())) > 1 and (lengths < tokens.shape[-1]).any(), lengths
  return tokens


def test_cached_decoding_equals_uncached(decoder, audio):
  """Greedy and beam search with the KV cache give today's uncached decoding token for token."""
  frames, frame_mask = audio
  _assert_same_decoding(
      decoding.greedy_decode(decoder, frames, frame_mask, max_len=MAX_LEN),
      decoding.greedy_decode(decoder, frames, frame_mask, max_len=MAX_LEN, kv_cache=False))
  beam = _assert_same_decoding(
      decoding.beam_search(decoder, frames, frame_mask, max_len=MAX_LEN, beam_size=3),
      decoding.beam_search(decoder, frames, frame_mask, max_len=MAX_LEN, beam_size=3,
                           kv_cache=False))
  greedy = np.asarray(decoding.greedy_decode(decoder, frames, frame_mask, max_len=MAX_LEN)[0])
  assert (beam != greedy).any()  # the beams were reordered, not just greedy continued


def test_cached_beam_search_equals_uncached_in_the_other_layout():
  """Scanned blocks, the fused attention impl (the other cache layout), learned positions, tied
  embeddings, projected audio frames, a decode length below the decoder's max_len."""
  model = _decoder(16, seed=5, eos_bias=0.1, scan_layers=True,
                   attention_impl="dot_product_attention", positions="learned",
                   tie_embeddings=True, audio_width=12)
  rng = np.random.default_rng(2)
  frames = rng.normal(size=(3, T, 12)).astype(np.float32)
  frame_mask = np.arange(T)[None] < np.array([[2], [5], [4]])
  max_len = MAX_LEN - 2
  _assert_same_decoding(
      decoding.beam_search(model, frames, frame_mask, max_len=max_len, beam_size=2),
      decoding.beam_search(model, frames, frame_mask, max_len=max_len, beam_size=2,
                           kv_cache=False))


@nnx.jit
def _cached_step(model, inputs, cache):
  return model.decode_step(inputs, cache)


def test_decode_steps_give_the_teacher_forced_logits(decoder, audio):
  """Feeding fixed captions one token at a time (2 rows per clip) through the cache gives, at every
  position, the logits of one teacher-forced pass over the whole caption."""
  frames, frame_mask = audio
  beams, vocab = 2, decoder.vocab_size
  captions = np.random.default_rng(3).integers(3, vocab, (B, beams, MAX_LEN)).astype(np.int32)
  flat = captions.reshape(B * beams, MAX_LEN)
  expected = np.asarray(forward(decoder, flat, np.ones_like(flat, bool),
                                np.repeat(frames, beams, 0), np.repeat(frame_mask, beams, 0)))
  cache = decoder.init_cache(jnp.asarray(frames), jnp.asarray(frame_mask), MAX_LEN, beams)
  inputs = np.concatenate([np.full((B, beams, 1), BOS_ID, np.int32), captions[..., :-1]], -1)
  for i in range(MAX_LEN):
    logits, cache = _cached_step(decoder, inputs[..., i], cache)
    assert int(cache.index) == i + 1
    np.testing.assert_allclose(np.asarray(logits).reshape(B * beams, vocab), expected[:, i],
                               rtol=1e-4, atol=1e-4)


def test_decoding_longer_than_the_decoder_is_refused(decoder, audio):
  frames, frame_mask = audio
  with pytest.raises(ValueError, match="exceeds the decoder's max_len"):
    decoder.init_cache(jnp.asarray(frames), jnp.asarray(frame_mask), MAX_LEN + 1)
