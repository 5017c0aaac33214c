"""Frozen-encoder embeddings of a probe task: each clip's pooled vector (mean probes) and, when asked, its frames
(attention probes, zero-shot, retrieval, captioning; the encoder's layer, default the last), in a float16 store per
split on disk (alp_jax/evaluate/embed_store.py), never all in memory.

Legend: N clips, T frames of one clip (valid frames only), D encoder width, P pooled width (D unless the encoder
gives its own pooled vector, e.g. the statistics of a classical baseline, alp_jax/evaluate/baselines.py).

  emb = embed_task(encoder, task, cache_dir=DIR, frames=False)   # pooled only: what mean probes read
  emb.splits["train"].pooled      (N, P) float32
  emb = embed_task(encoder, task, cache_dir=DIR, frames=True)    # + frames
  clips = emb.splits["test"].frames          # embed_store.ClipFrames: clips[i] -> (T_i, D) float32 read from the
  clips.lengths, clips.padded(rows)          # store; (B, T_b, D) + mask batches, T_b a length bucket
  emb.splits["test"].kept, emb.targets("test")

Each clip is decoded (any format/rate/channels), downmixed and resampled to 16 kHz and cut into fixed windows of
the encoder's training crop length (the last padded and masked), as `AudioEncoder.embed` does: no randomness, so the
same encoder and files always give the same embeddings. An AudioEncoder (anything with `encode_windows`) encodes
the windows of consecutive clips in fixed batches of `windows_per_batch` (alp_jax/evaluate/clip_batches.py: one
compiled shape, the last batch padded) and its pooled vector is the masked mean reduced on the device, so a mean
probe never brings frames to the host. Other encoders (the baselines) are called clip by clip through `embed`. A
file that does not decode (or holds no samples) is reported by name, skipped and counted; it never stops the
evaluation.

Where embeddings go: a store per (task, split, encoder fingerprint, kind) folder
  CACHE_DIR/TASK-ENCODERHASH-FILESHASH/SPLIT.pooled    pooled vectors only
  CACHE_DIR/TASK-ENCODERHASH-FILESHASH/SPLIT.frames    pooled vectors and frames
written as the clips are encoded and made visible (renamed into place with a "complete" marker) only when the split
is whole, so a killed run is never read back as a whole store. A frames store also serves pooled requests. The
encoder fingerprint hashes the exported settings and every parameter's bytes (or is the encoder's own
`fingerprint()`, as baselines give), the files fingerprint each file's path, size and mtime, so another checkpoint
or changed files never reuse stale embeddings. In-memory clips (Example.audio, e.g. TFDS records) are decoded by
their loader and fingerprinted by their key. Without a cache dir the stores go to a temporary folder ($TMPDIR,
/tmp by default) that is deleted when nothing refers to them any more.

memo (a dict shared between calls with the same encoder): clip key (path) -> (SplitStore, row) or the reason it is
unusable, so a clip shared by several tasks, or a test split read by zero-shot, retrieval and captioning, is
encoded once; it refers to rows on disk and holds no frames in memory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from alp_jax.audio import io as audio_io
from alp_jax.audio import windows as windows_lib
from alp_jax.evaluate import clip_batches
from alp_jax.evaluate import embed_store
from alp_jax.evaluate import tasks as tasks_lib

PROGRESS_EVERY_S = 10.0
POOLED, FRAMES = "pooled", "frames"   # the two kinds of store


@dataclasses.dataclass
class SplitEmbeddings:
  store: embed_store.SplitStore
  _pooled: np.ndarray | None = dataclasses.field(default=None, repr=False)

  @property
  def pooled(self) -> np.ndarray:
    """(N, P) float32: the encoder's pooled output (an AudioEncoder: the mean over valid frames)."""
    if self._pooled is None:
      self._pooled = self.store.pooled
    return self._pooled

  @property
  def frames(self) -> embed_store.ClipFrames:
    """Per kept clip (T, D) float32 frames, read from the store on demand (ValueError for a pooled-only store)."""
    return self.store.frames

  @property
  def has_frames(self) -> bool:
    return self.store.has_frames

  @property
  def kept(self) -> np.ndarray:
    """(N,) indices into the split's examples that decoded."""
    return self.store.kept


@dataclasses.dataclass
class TaskEmbeddings:
  task: tasks_lib.Task
  splits: dict[str, SplitEmbeddings]
  skipped: list[tuple[str, str]]   # (path, reason) of every file that did not decode
  seconds: float                   # time spent embedding (0 when read from the cache)
  cached: bool

  def targets(self, split: str) -> np.ndarray:
    examples = self.task.splits[split]
    return self.task.targets([examples[i] for i in self.splits[split].kept])


def encoder_fingerprint(encoder) -> str:
  """sha1 of the encoder's exported settings (without provenance), its layer (any but the default "last", so
  earlier caches stay valid) and all of its parameter bytes; an object with its own `fingerprint()` (a baseline
  without parameters) gives that instead."""
  if hasattr(encoder, "fingerprint"):
    return encoder.fingerprint()
  digest = hashlib.sha1()
  meta = {k: encoder.meta[k] for k in ("frontend", "audio", "crop_seconds") if k in encoder.meta}
  digest.update(json.dumps(meta, sort_keys=True).encode())
  if getattr(encoder, "layer_name", "last") != "last":
    digest.update(f"layer={encoder.layer_name}".encode())
  leaves = jax.tree_util.tree_leaves_with_path(encoder.encoder_params_pure())
  for path, leaf in leaves:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _files_fingerprint(task: tasks_lib.Task) -> str:
  digest = hashlib.sha1()
  for split in sorted(task.splits):
    for example in task.splits[split]:
      if example.audio is not None:
        digest.update(f"{split}|{example.audio.key}\n".encode())
        continue
      stat = example.path.stat() if example.path.exists() else None
      digest.update(f"{split}|{example.path}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()


def _load(example: tasks_lib.Example) -> tuple[np.ndarray, int] | str:
  """(samples, sample_rate) of a clip, or the reason it cannot be used."""
  try:
    samples, sample_rate = example.audio.load() if example.audio is not None else audio_io.decode(example.path)
  except audio_io.AudioDecodeError as e:
    return str(e)
  if samples.shape[0] == 0:
    return f"{example.path}: no audio samples"
  return samples, sample_rate


def _too_short(example: tasks_lib.Example, samples: np.ndarray, sample_rate: int) -> str:
  return f"{example.path}: too short for one encoder frame ({samples.shape[0]} samples at {sample_rate} Hz)"


def _embed_file(encoder, example: tasks_lib.Example) -> tuple[np.ndarray, np.ndarray] | str:
  """((P,) pooled, (T, D) frames) through the encoder's own `embed` (encoders without `encode_windows`), or the
  reason the clip cannot be used."""
  loaded = _load(example)
  if isinstance(loaded, str):
    return loaded
  out = encoder.embed(*loaded)
  frames = out["frames"]
  if len(frames) == 0:
    return _too_short(example, *loaded)
  pooled = out["pooled"] if "pooled" in out else frames.mean(axis=0)
  return np.asarray(pooled, np.float32), frames


def cache_folder(cache_dir: str | os.PathLike, task: tasks_lib.Task, fingerprint: str) -> Path:
  """CACHE_DIR/TASK-ENCODERHASH-FILESHASH, which holds the task's SPLIT.KIND stores (module docstring)."""
  safe_name = re.sub(r"[^\w.-]", "_", task.name)   # TFDS names hold "/" and ":"
  return Path(cache_dir) / f"{safe_name}-{fingerprint[:16]}-{_files_fingerprint(task)[:12]}"


def _cached(folder: Path, split: str, frames: bool) -> embed_store.SplitStore | None:
  for kind in (FRAMES,) if frames else (POOLED, FRAMES):
    store = embed_store.open_store(folder / f"{split}.{kind}")
    if store is not None:
      return store
  return None


def _temporary_folder(split: str, kind: str) -> Path:
  return Path(tempfile.mkdtemp(prefix="alp-embed-")) / f"{split}.{kind}"


def _from_memo(outcome, frames: bool):
  """A memo entry as a batcher outcome, or None when it cannot serve (frames asked of a pooled-only store)."""
  if isinstance(outcome, str):
    return outcome
  store, row = outcome
  if frames and not store.has_frames:
    return None
  return np.asarray(store.pooled16[row], np.float32), (store.frames[row] if frames else None)


def embed_task(encoder, task: tasks_lib.Task, *, cache_dir: str | os.PathLike | None = None,
               memo: dict | None = None, fingerprint: str | None = None, frames: bool = True,
               windows_per_batch: int = clip_batches.DEFAULT_WINDOWS_PER_BATCH,
               log: Callable[[str], None] | None = print) -> TaskEmbeddings:
  """Embeds every clip of every split of `task` with `encoder` (an AudioEncoder, or anything with the same
  `embed(waveform, sample_rate) -> {"frames", "pooled"}` and `meta`, such as alp_jax.evaluate.baselines).

  frames: keep each clip's frames too (attention probes, zero-shot, retrieval); False stores pooled vectors only.
  cache_dir: reuse/write the split stores there (module docstring). memo: a dict shared between calls with the
  same encoder (clip key -> (store, row) or error), so clips shared by several tasks are encoded once.
  windows_per_batch: windows per encoder call (one compiled shape). log: progress lines, or None.
  """
  memo = {} if memo is None else memo
  entry = None if cache_dir is None else cache_folder(cache_dir, task, fingerprint or encoder_fingerprint(encoder))
  kind = FRAMES if frames else POOLED
  total = sum(len(examples) for examples in task.splits.values())
  t0 = last_report = time.monotonic()
  done, computed, all_cached = 0, 0, True
  splits, skipped = {}, []
  for split, examples in task.splits.items():
    store = _cached(entry, split, frames) if entry is not None else None
    if store is not None:
      if log:
        log(f"[embed] {task.name}: {split} embeddings from cache {store.folder}")
      splits[split], done = SplitEmbeddings(store), done + len(examples)
      skipped += store.skipped
      continue
    all_cached = False
    folder = entry / f"{split}.{kind}" if entry is not None else _temporary_folder(split, kind)
    writer = embed_store.Writer(folder, frames=frames)
    batcher = clip_batches.ClipBatcher(encoder, windows_per_batch=windows_per_batch, frames=frames)
    batched = hasattr(encoder, "encode_windows")
    rows, reasons = [], []   # memo keys of the kept clips in store order; (key, reason) of the skipped

    def consume(finished):
      nonlocal done, last_report
      for (index, key, name), outcome in finished:
        done += 1
        if isinstance(outcome, str):
          writer.skip(key, outcome)
          reasons.append((key, outcome))
          if log:
            log(f"[embed] {task.name}: skipping {name}: {outcome}")
        else:
          writer.add(index, outcome[0], outcome[1] if frames else None)
          rows.append(key)
        now = time.monotonic()
        if log and now - last_report > PROGRESS_EVERY_S:
          rate = computed / (now - t0)
          eta = (total - done) / rate if rate > 0 else float("nan")
          log(f"[embed] {task.name}: {done}/{total} files, {rate:.1f} files/s, ETA {eta:.0f}s")
          last_report = now

    for index, example in enumerate(examples):
      key = example.audio.key if example.audio is not None else str(example.path)
      tag = (index, key, example.path.name)
      known = _from_memo(memo[key], frames) if key in memo else None
      if known is not None:
        consume(batcher.add_done(tag, known))
        continue
      computed += 1
      if not batched:
        consume(batcher.add_done(tag, _embed_file(encoder, example)))
        continue
      loaded = _load(example)
      if isinstance(loaded, str):
        consume(batcher.add_done(tag, loaded))
        continue
      consume(batcher.add(tag, windows_lib.mono_16k(*loaded), too_short=_too_short(example, *loaded)))
    consume(batcher.finish())
    if not rows:
      raise tasks_lib.TaskFormatError(f"{task.directory}: no clip of the {split} split could be decoded")
    store = writer.finish()
    if entry is None:   # the temporary folder goes when nothing refers to the store any more
      weakref.finalize(store, shutil.rmtree, str(folder.parent), True)
    memo.update({key: (store, row) for row, key in enumerate(rows)})
    memo.update(dict(reasons))
    splits[split] = SplitEmbeddings(store)
    skipped += reasons
  seconds = 0.0 if all_cached else time.monotonic() - t0
  if log and not all_cached:
    note = f", {len(skipped)} file(s) skipped" if skipped else ""
    log(f"[embed] {task.name}: {total} files ({computed} encoded) in {seconds:.1f}s{note}")
  return TaskEmbeddings(task=task, splits=splits, skipped=skipped, seconds=seconds, cached=all_cached)
