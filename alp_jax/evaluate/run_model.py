"""A restored training run, as the evaluators use it: audio frames, contrastive embeddings, caption likelihoods.

Legend: N clips, M texts (prompts or captions), T encoder frames of a clip (valid frames only), D encoder width,
E joint embedding width, L caption tokens (config.data.max_caption_tokens).

What a model can do is read from its declared capabilities (alp_jax/models/encoders.py), never from its name.
An exported or random-init encoder is a RunModel with the audio encoder only (`RunModel.from_encoder`); a
classical-feature baseline (alp_jax/evaluate/baselines.py) is one with AUDIO_FEATURES only (`RunModel.from_features`):
per-clip features for probes, nothing to train or export.

Every clip is encoded whole by the exported-encoder path (`AudioEncoder.embed`: fixed windows of the training
crop, the last one masked), so the run's heads see the same deterministic frames as the probes. From those
frames:
  text tower                        audio_embeddings: the run's audio head and pooling over all valid frames;
                                    text_embeddings: the text tower. Both L2-normalised, compared by cosine.
  caption decoder                   log_likelihoods: log p(text | clip) summed over the text's tokens and EOS,
                                    teacher-forced (alp_jax.models.decoding.score_caption_candidates);
                                    generate: greedy or beam-search captions.
Clips are batched CLIP_BATCH at a time and padded (masked) to the longest clip of the call, so one call
compiles once; padding rows and frames are masked and change no number.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alp_jax import encoder_api
from alp_jax.data import paths
from alp_jax.data import report
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.models import decoding, encoders, heads
from alp_jax.train import runs

AUDIO_FEATURES = "audio_features"   # per-clip frames and pooled features without a trainable encoder: probes only
CLIP_BATCH = 8
PROGRESS_EVERY_S = 10.0
TEXT_BATCH = 64


class MissingHead(ValueError):
  """An evaluation needs a part the run's model does not have (a text tower, a caption decoder)."""


def _pad_batch(frames: list[np.ndarray], length: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-clip (T_i, D) -> (rows, length, D) float32 and mask (rows, length), zero-padded."""
  width = frames[0].shape[-1]
  padded = np.zeros((rows, length, width), np.float32)
  mask = np.zeros((rows, length), bool)
  for i, f in enumerate(frames):
    padded[i, :len(f)], mask[i, :len(f)] = f, True
  return padded, mask


class RunModel:
  """The parts of a restored run (or an encoder alone). Build with `from_workdir`, `from_state`, `from_encoder`."""

  def __init__(self, config, model: nnx.Module | None, tokenizer, *, step: int | None = None, workdir: str = "",
               encoder: encoder_api.AudioEncoder | None = None, encoder_dir: str | None = None):
    self.config, self.model, self.tokenizer, self.step, self.workdir = config, model, tokenizer, step, workdir
    self.encoder_dir = encoder_dir   # an exported encoder folder holding exactly these weights, if there is one
    if model is None:
      self.kind, self.capabilities, self.max_tokens = "audio_encoder", frozenset({encoders.AUDIO_ENCODER}), 0
      self.encoder = encoder
    else:
      self.kind = config.model.name
      self.capabilities = encoders.capabilities_of(model)
      self.max_tokens = int(config.data.max_caption_tokens)
      self.encoder = encoder_api.AudioEncoder(encoder_api.meta_from_config(config), model.audio_encoder)
    has = lambda part: part in self.capabilities
    # The two-tower part: the model itself, or the towers it composes (hybrid).
    self.towers = getattr(model, "towers", model) if has(encoders.TEXT_TOWER) else None
    self.decoder = model.decoder if has(encoders.CAPTION_DECODER) else None
    self._text_fn = self._frames_fn = None
    # path -> whole-clip frames (or why the file is unusable), shared by every evaluation of this model
    # (alp_jax.evaluate.embed.embed_task's memo), so a test split is encoded once for zero-shot, retrieval and
    # captioning; cleared by update().
    self.embed_memo: dict = {}
    if self.towers is not None:
      graphdef, state = nnx.split(self.towers)

      @jax.jit
      def embed_text(state, tokens, mask):
        return nnx.merge(graphdef, state).embed_text(tokens, mask)[0]   # (B,E)

      @jax.jit
      def embed_frames(state, frames, mask):
        towers = nnx.merge(graphdef, state)
        return heads.audio_embedding(towers.audio_head, frames, mask, towers.audio_pooling)   # (B,E)

      self._towers_state, self._text_fn, self._frames_fn = state, embed_text, embed_frames

  def update(self, *states) -> None:
    """New parameters (e.g. the training state's params and rest) for the same model: no recompilation."""
    nnx.update(self.model, *states)
    self.embed_memo.clear()
    self.encoder.sync()
    if self.towers is not None:
      self._towers_state = nnx.split(self.towers)[1]

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, step: int | None = None) -> "RunModel":
    """The run's latest (or `step`) checkpoint, with the run's own tokenizer (runs.tokenizer)."""
    config, graphdef, state, step = runs.restore(workdir, step)
    model = nnx.merge(graphdef, state["params"], state["rest"])
    return cls(config, model, runs.tokenizer(workdir, config), step=step, workdir=os.fspath(paths.resolve(workdir)))

  @classmethod
  def from_state(cls, config, graphdef, state) -> "RunModel":
    """The model of a training state (in-training evaluators; refresh with `update`)."""
    tokenizer = tokenizer_lib.Tokenizer(tokenizer_lib.path_for(config.data))   # the run's own copy in training
    return cls(config, nnx.merge(graphdef, state["params"], state["rest"]), tokenizer)

  @classmethod
  def from_encoder(cls, encoder: encoder_api.AudioEncoder, encoder_dir: str | None = None) -> "RunModel":
    """An audio encoder alone (exported or random init): probes and LiT, no text side."""
    return cls(None, None, None, encoder=encoder, encoder_dir=encoder_dir)

  @classmethod
  def from_features(cls, extractor) -> "RunModel":
    """A feature extractor with AudioEncoder's `embed` and `meta` (a baseline): probes only."""
    run = cls(None, None, None, encoder=extractor)
    run.kind, run.capabilities = "baseline", frozenset({AUDIO_FEATURES})
    return run

  @property
  def contrastive(self) -> bool:
    return self._text_fn is not None

  @property
  def has_decoder(self) -> bool:
    return self.decoder is not None

  def _need(self, contrastive: bool = False, decoder: bool = False) -> None:
    where = self.workdir or self.kind
    if contrastive and not self.contrastive:
      raise MissingHead(f"{where}: {self.kind!r} has no text tower aligned to the audio (it has "
                        f"{', '.join(sorted(self.capabilities))})")
    if decoder and not self.has_decoder:
      raise MissingHead(f"{where}: {self.kind!r} has no caption decoder (it has "
                        f"{', '.join(sorted(self.capabilities))})")

  def _batches(self, frames: list[np.ndarray]):
    length = max(len(f) for f in frames)
    for start in range(0, len(frames), CLIP_BATCH):
      chunk = frames[start:start + CLIP_BATCH]
      padded, mask = _pad_batch(chunk, length, CLIP_BATCH)
      yield len(chunk), jnp.asarray(padded), jnp.asarray(mask)

  def text_embeddings(self, texts: list[str]) -> np.ndarray:
    """(M, E) L2-normalised text-tower embeddings."""
    self._need(contrastive=True)
    out = []
    for start in range(0, len(texts), TEXT_BATCH):
      chunk = list(texts[start:start + TEXT_BATCH])
      tokens, mask = self.tokenizer.encode_padded(chunk + [""] * (TEXT_BATCH - len(chunk)), self.max_tokens)
      out.append(np.asarray(self._text_fn(self._towers_state, tokens, mask))[:len(chunk)])
    return np.concatenate(out)

  def audio_embeddings(self, frames: list[np.ndarray]) -> np.ndarray:
    """Per-clip (T_i, D) frames -> (N, E) L2-normalised audio embeddings."""
    self._need(contrastive=True)
    return np.concatenate([np.asarray(self._frames_fn(self._towers_state, f, m))[:n]
                           for n, f, m in self._batches(frames)])

  def log_likelihoods(self, frames: list[np.ndarray], texts: list[str], log=None) -> np.ndarray:
    """(N, M) log p(text m | clip n): summed token log-probabilities (EOS included)."""
    self._need(decoder=True)
    tokens, mask = self.tokenizer.encode_padded(list(texts), self.max_tokens)
    tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
    out = []
    progress = report.Progress(len(frames), f"likelihood: clips x {len(texts)} texts", quiet=log is None,
                               every_seconds=PROGRESS_EVERY_S)
    for n, f, m in self._batches(frames):
      out.append(np.asarray(decoding.score_caption_candidates(self.decoder, f, m, tokens, mask))[:n])
      progress.update(sum(len(o) for o in out))
    return np.concatenate(out)

  def generate(self, frames: list[np.ndarray], *, beam_size: int = 1, length_penalty: float = 0.0,
               log=None) -> list[str]:
    """One caption per clip: greedy (beam_size 1) or beam search, max config.data.max_caption_tokens tokens."""
    self._need(decoder=True)
    captions = []
    progress = report.Progress(len(frames), f"decode: clips, beam {beam_size}", quiet=log is None,
                               every_seconds=PROGRESS_EVERY_S)
    for n, f, m in self._batches(frames):
      if beam_size == 1:
        tokens, _, _ = decoding.greedy_decode(self.decoder, f, m, self.max_tokens)
      else:
        tokens, _, _ = decoding.beam_search(self.decoder, f, m, self.max_tokens, beam_size, length_penalty)
      captions += [self.tokenizer.decode(row) for row in np.asarray(tokens)[:n]]
      progress.update(len(captions))
    return captions
