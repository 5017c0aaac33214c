"""Frozen-encoder embeddings of a probe task: frames of every whole clip (the encoder's layer, default the
last), cached per task.

Legend: N clips, T frames of one clip (valid frames only), D encoder width, P pooled width (D unless the encoder
gives its own pooled vector, e.g. the statistics of a classical baseline, alp_jax/evaluate/baselines.py).

Each clip is decoded (any format/rate/channels), downmixed and resampled to 16 kHz, then encoded whole by
`AudioEncoder.embed`, which cuts it into fixed windows of the training crop length (the last padded and
masked): no randomness, so the same encoder and files always give the same embeddings. A file that does not
decode (or holds no samples) is reported by name, skipped and counted; it never stops the evaluation.

The cache (optional) is one .npz per (task, encoder fingerprint, file list) under `cache_dir`; the encoder
fingerprint hashes the exported settings and every parameter's bytes (or is the encoder's own `fingerprint()`,
as baselines give), so another checkpoint never reuses stale embeddings. In-memory clips (Example.audio, e.g. TFDS records) are decoded by their loader and
fingerprinted by their key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from alp_jax.audio import io as audio_io
from alp_jax.evaluate import tasks as tasks_lib

PROGRESS_EVERY_S = 10.0


@dataclasses.dataclass
class SplitEmbeddings:
  frames: list[np.ndarray]   # per kept clip: (T, D) float32
  pooled: np.ndarray         # (N, P) the encoder's "pooled" output: for an AudioEncoder the mean over valid frames
  kept: np.ndarray           # (N,) indices into the split's examples that decoded


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


def _embed_file(encoder, example: tasks_lib.Example) -> tuple[np.ndarray, np.ndarray] | str:
  """((T, D) frames, (P,) pooled) as the encoder gives them, or the reason the clip cannot be used."""
  path = example.path
  try:
    samples, sample_rate = example.audio.load() if example.audio is not None else audio_io.decode(path)
  except audio_io.AudioDecodeError as e:
    return str(e)
  if samples.shape[0] == 0:
    return f"{path}: no audio samples"
  out = encoder.embed(samples, sample_rate)
  frames = out["frames"]
  if len(frames) == 0:
    return f"{path}: too short for one encoder frame ({samples.shape[0]} samples at {sample_rate} Hz)"
  pooled = out["pooled"] if "pooled" in out else frames.mean(axis=0)
  return frames, np.asarray(pooled, np.float32)


def _save(cache_path: Path, result: TaskEmbeddings) -> None:
  arrays = {}
  for split, emb in result.splits.items():
    arrays[f"{split}/lengths"] = np.array([len(f) for f in emb.frames], np.int64)
    arrays[f"{split}/frames"] = np.concatenate(emb.frames) if emb.frames else np.zeros((0, 0), np.float32)
    arrays[f"{split}/pooled"] = emb.pooled
    arrays[f"{split}/kept"] = emb.kept
  arrays["skipped"] = np.array(json.dumps(result.skipped))
  tmp = cache_path.with_suffix(".tmp.npz")
  np.savez(tmp, **arrays)
  os.replace(tmp, cache_path)


def _load(cache_path: Path, task: tasks_lib.Task) -> TaskEmbeddings:
  with np.load(cache_path) as data:
    splits = {}
    for split in task.splits:
      lengths = data[f"{split}/lengths"]
      frames = np.split(data[f"{split}/frames"], np.cumsum(lengths)[:-1]) if len(lengths) else []
      splits[split] = SplitEmbeddings(frames=list(frames), pooled=data[f"{split}/pooled"], kept=data[f"{split}/kept"])
    skipped = [tuple(s) for s in json.loads(str(data["skipped"]))]
  return TaskEmbeddings(task=task, splits=splits, skipped=skipped, seconds=0.0, cached=True)


def embed_task(encoder, task: tasks_lib.Task, *, cache_dir: str | os.PathLike | None = None,
               memo: dict | None = None, fingerprint: str | None = None,
               log: Callable[[str], None] | None = print) -> TaskEmbeddings:
  """Embeds every clip of every split of `task` with `encoder` (an AudioEncoder, or anything with the same
  `embed(waveform, sample_rate) -> {"frames", "pooled"}` and `meta`, such as alp_jax.evaluate.baselines).

  Each clip keeps the encoder's frames (attention probes) and the encoder's own "pooled" vector (mean probes; the
  mean of the frames when the encoder gives none).
  cache_dir: reuse/write TASK-FINGERPRINT.npz there. memo: a dict shared between calls with the same encoder
  (path -> (frames, pooled) or error), so clips shared by several tasks are embedded once. log: progress lines,
  or None.
  """
  cache_path = None
  if cache_dir is not None:
    fingerprint = fingerprint or encoder_fingerprint(encoder)
    safe_name = re.sub(r"[^\w.-]", "_", task.name)   # TFDS names hold "/" and ":"
    cache_path = Path(cache_dir) / f"{safe_name}-{fingerprint[:16]}-{_files_fingerprint(task)[:12]}.npz"
    if cache_path.exists():
      result = _load(cache_path, task)
      if log:
        log(f"[embed] {task.name}: embeddings from cache {cache_path}")
      return result
  memo = {} if memo is None else memo
  total = sum(len(examples) for examples in task.splits.values())
  t0 = last_report = time.monotonic()
  done, computed = 0, 0
  splits, skipped = {}, []
  for split, examples in task.splits.items():
    frames, pooled, kept = [], [], []
    for index, example in enumerate(examples):
      key = example.audio.key if example.audio is not None else str(example.path)
      if key not in memo:
        memo[key] = _embed_file(encoder, example)
        computed += 1
      outcome = memo[key]
      done += 1
      if isinstance(outcome, str):
        skipped.append((key, outcome))
        if log:
          log(f"[embed] {task.name}: skipping {example.path.name}: {outcome}")
      else:
        frames.append(outcome[0])
        pooled.append(outcome[1])
        kept.append(index)
      now = time.monotonic()
      if log and now - last_report > PROGRESS_EVERY_S:
        rate = computed / (now - t0)
        eta = (total - done) / rate if rate > 0 else float("nan")
        log(f"[embed] {task.name}: {done}/{total} files, {rate:.1f} files/s, ETA {eta:.0f}s")
        last_report = now
    if not frames:
      raise tasks_lib.TaskFormatError(f"{task.directory}: no clip of the {split} split could be decoded")
    splits[split] = SplitEmbeddings(frames=frames, pooled=np.stack(pooled), kept=np.array(kept, np.int64))  # (N,P)
  seconds = time.monotonic() - t0
  result = TaskEmbeddings(task=task, splits=splits, skipped=skipped, seconds=seconds, cached=False)
  if log:
    note = f", {len(skipped)} file(s) skipped" if skipped else ""
    log(f"[embed] {task.name}: {total} files ({computed} encoded) in {seconds:.1f}s{note}")
  if cache_path is not None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    _save(cache_path, result)
  return result
