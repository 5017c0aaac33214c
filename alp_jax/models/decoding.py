"""Caption decoding and scoring with a CaptionDecoder: greedy, beam search, log p(caption | audio).

Dimension letters:
  B batch (audio clips), K beams, N candidate captions, L caption length (static max_len),
  T audio frames, A audio-frame width, V vocabulary.

Decoding keeps a key/value cache by default (`CaptionDecoder.init_cache` / `decode_step`): the
audio frames' cross-attention keys and values are computed once per clip, each step embeds one token
per row, writes its self-attention keys and values at the step's position of a static (max_len)
cache and attends to the positions written so far. Beam search decodes the K beams of a clip as K
rows of the self-attention cache (reordered by the chosen parents after every step) and as K
queries of one cross-attention over the clip's frames. One step costs one token's pass.

`kv_cache=False` keeps the original uncached path, the reference the cache is tested against (and
the "before" of `alp_jax.benchmarks.decoding`): it recomputes the whole decoder over the (B,L)
token buffer at every step. At step i the buffer holds the tokens chosen so far followed by PAD, the
caption mask is all True and self-attention is causal, so the logits at position i depend only on
[BOS] + tokens[:i] and are exactly the teacher-forced logits `score_captions` uses. That costs up to
L full decoder passes (the cross-attention keys and values included). Both paths give the same
tokens and the same scores up to float rounding (tests/test_decoding.py).

Every loop is a `jax.lax.while_loop` over positions with a static max_len that stops early once
every sequence has emitted EOS; the functions are `nnx.jit`-ed (max_len, beam_size, kv_cache,
chunk_size static), so the one-token step is compiled once per shape. A finished sequence stays
finished: every later position holds PAD and adds nothing to its score. PAD and BOS are never
generated. Scores are sums of log-probabilities under the full vocabulary softmax, so the score of a
returned caption equals `score_captions` of it. Training and teacher-forced scoring
(`score_captions`, `score_caption_candidates`) use the decoder's uncached `__call__`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from alp_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from alp_jax.models.caption_decoder import CaptionDecoder

NEG_INF = -1e30


def _next_token_log_probs(decoder: CaptionDecoder, tokens: jax.Array, audio_frames: jax.Array,
                          audio_frame_mask: jax.Array, step: jax.Array) -> jax.Array:
  """Log-probabilities (B,V) float32 of the token at position `step` given tokens[:, :step]."""
  full_mask = jnp.ones(tokens.shape, bool)  # causal attention hides positions >= step
  logits = decoder(tokens, full_mask, audio_frames, audio_frame_mask)  # (B,L,V)
  step_logits = jax.lax.dynamic_index_in_dim(logits, step, axis=1, keepdims=False)  # (B,V)
  return jax.nn.log_softmax(step_logits, axis=-1)


def _never_generated(vocab_size: int) -> jax.Array:
  """(V,) True on the ids decoding never emits (PAD and BOS)."""
  return jnp.zeros((vocab_size,), bool).at[PAD_ID].set(True).at[BOS_ID].set(True)


def _mask_through_eos(tokens: jax.Array) -> jax.Array:
  """(...,L) decoded tokens -> (...,L) caption mask: True up to and including the first EOS."""
  is_eos = tokens == EOS_ID
  eos_before = jnp.cumsum(is_eos, axis=-1) - is_eos  # EOS strictly before each position
  return eos_before == 0


@functools.partial(nnx.jit, static_argnames=("max_len", "kv_cache"))
def greedy_decode(decoder: CaptionDecoder, audio_frames: jax.Array, audio_frame_mask: jax.Array,
                  max_len: int, kv_cache: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Greedy captions for a batch of clips.

  Args:
    decoder: the caption decoder (in eval mode; no dropout is applied).
    audio_frames: (B,T,A) audio encoder output.
    audio_frame_mask: (B,T) bool.
    max_len: static caption length L (EOS included); must be <= the decoder's max_len.
    kv_cache: decode with the key/value cache (default); False recomputes the whole decoder at
      every step (the reference; same tokens and scores up to float rounding).

  Returns:
    tokens (B,L) int32 (caption, EOS, then PAD; no EOS if max_len was reached first),
    caption_mask (B,L) bool, scores (B,) float32 = sum of log p of the emitted tokens.
  """
  graphdef, state = nnx.split(decoder)
  batch = audio_frames.shape[0]
  banned = _never_generated(decoder.vocab_size)

  def cond(carry):
    step, _, finished, _, _ = carry
    return (step < max_len) & ~jnp.all(finished)

  def body(carry):
    step, tokens, finished, scores, cache = carry
    model = nnx.merge(graphdef, state)
    if kv_cache:
      previous = jax.lax.dynamic_index_in_dim(tokens, jnp.maximum(step - 1, 0), axis=1)  # (B,1)
      inputs = jnp.where(step == 0, BOS_ID, previous)
      logits, cache = model.decode_step(inputs, cache)  # (B,1,V)
      log_probs = jax.nn.log_softmax(logits[:, 0], axis=-1)  # (B,V)
    else:
      log_probs = _next_token_log_probs(model, tokens, audio_frames, audio_frame_mask,
                                        step)  # (B,V)
    choice = jnp.argmax(jnp.where(banned, NEG_INF, log_probs), axis=-1).astype(jnp.int32)  # (B,)
    choice_log_prob = jnp.take_along_axis(log_probs, choice[:, None], axis=-1)[:, 0]  # (B,)
    choice = jnp.where(finished, PAD_ID, choice)
    scores = scores + jnp.where(finished, 0.0, choice_log_prob)
    tokens = jax.lax.dynamic_update_index_in_dim(tokens, choice, step, axis=1)
    return step + 1, tokens, finished | (choice == EOS_ID), scores, cache

  cache = decoder.init_cache(audio_frames, audio_frame_mask, max_len) if kv_cache else None
  init = (jnp.int32(0), jnp.full((batch, max_len), PAD_ID, jnp.int32), jnp.zeros((batch,), bool),
          jnp.zeros((batch,), jnp.float32), cache)
  _, tokens, _, scores, _ = jax.lax.while_loop(cond, body, init)
  return tokens, _mask_through_eos(tokens), scores


@functools.partial(nnx.jit, static_argnames=("max_len", "beam_size", "kv_cache"))
def beam_search(decoder: CaptionDecoder, audio_frames: jax.Array, audio_frame_mask: jax.Array,
                max_len: int, beam_size: int = 4, length_penalty: float | jax.Array = 0.0,
                kv_cache: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Beam-search captions: the best of `beam_size` beams per clip.

  Beams are ranked by their raw summed log-probability while searching; a finished beam keeps its
  score and extends only with PAD (log-probability 0), so it stays in the beam until K better
  continuations exist. The final choice among the K beams maximises score / length**length_penalty
  (length counts tokens through EOS; 0.0 = raw score, 1.0 = mean log-probability per token).
  `kv_cache` as in `greedy_decode`; the cache's self-attention rows follow their beams' parents.

  Returns:
    tokens (B,L) int32, caption_mask (B,L) bool, scores (B,) float32 raw summed log-probabilities of
    the returned captions (not length-normalised).
  """
  graphdef, state = nnx.split(decoder)
  batch, vocab = audio_frames.shape[0], decoder.vocab_size
  beams = beam_size
  frames = jnp.repeat(audio_frames, beams, axis=0)  # (B*K,T,A), uncached path only
  frame_mask = jnp.repeat(audio_frame_mask, beams, axis=0)  # (B*K,T)
  banned = _never_generated(vocab)
  pad_only = jnp.where(jnp.arange(vocab) == PAD_ID, 0.0, NEG_INF)  # (V,)
  # Cache row of beam k of clip b: b*K + k.
  first_row = (jnp.arange(batch) * beams)[:, None]  # (B,1)

  def cond(carry):
    step, _, finished, _, _ = carry
    return (step < max_len) & ~jnp.all(finished)

  def body(carry):
    step, tokens, finished, scores, cache = carry  # (B,K,L), (B,K), (B,K)
    model = nnx.merge(graphdef, state)
    if kv_cache:
      previous = jax.lax.dynamic_index_in_dim(tokens, jnp.maximum(step - 1, 0), axis=2,
                                              keepdims=False)  # (B,K)
      inputs = jnp.where(step == 0, BOS_ID, previous)
      logits, cache = model.decode_step(inputs, cache)  # (B,K,V)
      log_probs = jax.nn.log_softmax(logits, axis=-1)
    else:
      log_probs = _next_token_log_probs(model, tokens.reshape(batch * beams, max_len), frames,
                                        frame_mask, step).reshape(batch, beams, vocab)  # (B,K,V)
    log_probs = jnp.where(banned, NEG_INF, log_probs)
    log_probs = jnp.where(finished[..., None], pad_only, log_probs)
    candidates = (scores[..., None] + log_probs).reshape(batch, beams * vocab)  # (B,K*V)
    scores, flat_index = jax.lax.top_k(candidates, beams)  # (B,K)
    parent, choice = flat_index // vocab, (flat_index % vocab).astype(jnp.int32)  # (B,K)
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1)  # (B,K,L)
    tokens = jax.lax.dynamic_update_index_in_dim(tokens, choice, step, axis=2)
    finished = jnp.take_along_axis(finished, parent, axis=1) | (choice == EOS_ID)
    if kv_cache:
      cache = cache.reorder_rows((first_row + parent).reshape(batch * beams))
    return step + 1, tokens, finished, scores, cache

  cache = (decoder.init_cache(audio_frames, audio_frame_mask, max_len, beams) if kv_cache
           else None)
  # Only beam 0 is live at the start, so the first step does not pick K copies of one token.
  init_scores = jnp.where(jnp.arange(beams) == 0, 0.0, NEG_INF)[None].repeat(batch, axis=0)
  init = (jnp.int32(0), jnp.full((batch, beams, max_len), PAD_ID, jnp.int32),
          jnp.zeros((batch, beams), bool), init_scores.astype(jnp.float32), cache)
  _, tokens, _, scores, _ = jax.lax.while_loop(cond, body, init)
  masks = _mask_through_eos(tokens)  # (B,K,L)
  lengths = jnp.maximum(jnp.sum(masks, axis=-1), 1).astype(jnp.float32)  # (B,K)
  best = jnp.argmax(scores / lengths ** length_penalty, axis=1)  # (B,)
  pick = lambda x: jnp.take_along_axis(x, best.reshape((batch,) + (1,) * (x.ndim - 1)),
                                       axis=1)[:, 0]
  return pick(tokens), pick(masks), pick(scores)


def _score(decoder: CaptionDecoder, audio_frames: jax.Array, audio_frame_mask: jax.Array,
           caption_tokens: jax.Array, caption_mask: jax.Array) -> jax.Array:
  logits = decoder(caption_tokens, caption_mask, audio_frames, audio_frame_mask)  # (B,L,V)
  log_probs = jax.nn.log_softmax(logits, axis=-1)  # (B,L,V)
  token_log_probs = jnp.take_along_axis(log_probs, caption_tokens[..., None].astype(jnp.int32),
                                        axis=-1)[..., 0]  # (B,L)
  return jnp.sum(jnp.where(caption_mask.astype(bool), token_log_probs, 0.0), axis=-1)


@nnx.jit
def score_captions(decoder: CaptionDecoder, audio_frames: jax.Array, audio_frame_mask: jax.Array,
                   caption_tokens: jax.Array, caption_mask: jax.Array) -> jax.Array:
  """log p(caption | audio) (B,) float32: autoregressive log-probabilities summed over valid tokens.

  Args:
    audio_frames: (B,T,A), audio_frame_mask: (B,T) bool.
    caption_tokens: (B,L) int ids (caption, EOS, PAD), caption_mask: (B,L) bool (EOS included).
  """
  return _score(decoder, audio_frames, audio_frame_mask, caption_tokens, caption_mask)


@functools.partial(nnx.jit, static_argnames=("chunk_size",))
def score_caption_candidates(decoder: CaptionDecoder, audio_frames: jax.Array,
                             audio_frame_mask: jax.Array, candidate_tokens: jax.Array,
                             candidate_mask: jax.Array, chunk_size: int = 8) -> jax.Array:
  """log p(candidate n | clip b) for every pair: (B,N) float32, for zero-shot and retrieval.

  Args:
    audio_frames: (B,T,A), audio_frame_mask: (B,T) bool: the clips.
    candidate_tokens: (N,L) int ids, candidate_mask: (N,L) bool: the candidate captions (class
      prompts, or the captions of a retrieval set), shared by every clip.
    chunk_size: candidates scored together in one (chunk_size*B, L) decoder pass.
  """
  graphdef, state = nnx.split(decoder)
  batch = audio_frames.shape[0]

  def score_one(candidate):
    tokens, mask = candidate  # (L,), (L,)
    tokens = jnp.broadcast_to(tokens, (batch,) + tokens.shape)  # (B,L)
    mask = jnp.broadcast_to(mask, (batch,) + mask.shape)  # (B,L)
    return _score(nnx.merge(graphdef, state), audio_frames, audio_frame_mask, tokens, mask)  # (B,)

  scores = jax.lax.map(score_one, (candidate_tokens, candidate_mask.astype(bool)),
                       batch_size=chunk_size)  # (N,B)
  return scores.T
