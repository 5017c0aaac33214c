"""The embeddings store of one split: float16 arrays on disk, written as a stream, read back memory-mapped.

Legend: N kept clips, T_i valid frames of clip i, F = sum_i T_i, D frame width, P pooled width.

  store = embed_store.Writer(folder, frames=True)       # frames=False: pooled vectors only (mean probes)
  store.add(index, pooled (P,), frames (T_i, D) | None)  # in clip order; appended to the files at once
  store.skip(key, reason)
  split = store.finish()                                 # -> SplitStore (memory-mapped)
  split = embed_store.open_store(folder)                 # None when absent or never finished
  split.pooled (N, P) float32, split.frames (ClipFrames), split.kept, split.skipped

A store is a folder:
  pooled.f16    (N, P) float16, row i = the i-th kept clip
  frames.f16    (F, D) float16, every kept clip's frames one after another (only in a frames store)
  lengths.npy   (N,) int64 frames per clip (0 in a pooled store)
  kept.npy      (N,) int64 index of each kept clip among the split's examples
  complete.json shapes, widths and the skipped clips [(key, reason)], written last
The writer fills FOLDER.tmp-PID-HEX (any earlier FOLDER.tmp-* of a dead process is removed first), flushes and
fsyncs the arrays, writes complete.json, then renames the folder to FOLDER. A killed run leaves only a .tmp-*
folder, which `open_store` never reads: a half-written store is never taken for a whole one. float16 keeps the
store at half the size of float32 (relative rounding <= 2^-11); readers get float32 back. Pooled vectors are
memory-mapped; frames are read clip by clip with pread, so going through every clip's frames (the attention
probe's standardiser, an epoch) leaves them in the page cache, not in the reader's resident memory.

`SplitStore.frames` is a read-only sequence of per-clip (T_i, D) float32 arrays (ClipFrames), read from the
memory map on demand: `frames[i]`, `frames[a:b]` (a list), `len(frames)`, `frames.lengths`,
`frames.padded(rows)` -> ((B, T_b, D) float32, (B, T_b) mask) with T_b a length bucket (`bucket_length`).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import weakref
from pathlib import Path

import numpy as np

COMPLETE = "complete.json"
VERSION = 1
_TMP = ".tmp-"


def bucket_length(length: int) -> int:
  """The padded length of a batch whose longest clip has `length` frames: the next power of two (at least 8), so
  batches of a task compile a handful of shapes however long its clips are."""
  return max(8, 1 << max(0, int(length) - 1).bit_length())


class ClipFrames:
  """Per-clip (T_i, D) float32 frames over one or more (F, D) arrays (memory maps or in memory): `clips[i]`,
  `clips[a:b]`, `len`, `lengths`, `width`, `take(rows)` and `concat(other)` (views, nothing copied) and
  `padded(rows)` (a batch)."""

  def __init__(self, flat: np.ndarray, lengths: np.ndarray):
    lengths = np.asarray(lengths, np.int64)
    self._init([flat], np.zeros(len(lengths), np.int64), np.cumsum(lengths) - lengths, lengths)

  def _init(self, flats, part, starts, lengths):
    self._flats, self._part, self._starts, self.lengths = flats, part, starts, lengths
    self.width = int(flats[0].shape[-1])
    return self

  @classmethod
  def from_list(cls, frames: list[np.ndarray]) -> "ClipFrames":
    """In-memory clips, a list of (T_i, D) arrays."""
    return cls(np.concatenate(frames).astype(np.float32), [len(f) for f in frames])

  @classmethod
  def from_padded(cls, frames: np.ndarray, mask: np.ndarray) -> "ClipFrames":
    """(N, T, D) padded frames with their (N, T) mask, each clip's valid frames first."""
    mask = np.asarray(mask, bool)
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(mask.shape[1])[None, :] < lengths[:, None]):
      raise ValueError("frame mask: each clip's valid frames must come first, then padding (mask True...False)")
    return cls(np.asarray(frames, np.float32)[mask], lengths)

  def __len__(self) -> int:
    return len(self.lengths)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    index = range(len(self))[index]
    start = self._starts[index]
    return np.asarray(self._flats[self._part[index]][start:start + self.lengths[index]], np.float32)

  def __iter__(self):
    return (self[i] for i in range(len(self)))

  def take(self, rows: np.ndarray) -> "ClipFrames":
    rows = np.asarray(rows, np.int64)
    return ClipFrames.__new__(ClipFrames)._init(self._flats, self._part[rows], self._starts[rows],
                                                 self.lengths[rows])

  def concat(self, other: "ClipFrames") -> "ClipFrames":
    if other.width != self.width:
      raise ValueError(f"cannot join clips of width {self.width} and {other.width}")
    return ClipFrames.__new__(ClipFrames)._init(
        self._flats + other._flats, np.concatenate([self._part, other._part + len(self._flats)]),
        np.concatenate([self._starts, other._starts]), np.concatenate([self.lengths, other.lengths]))

  def padded(self, rows: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clips `rows` zero-padded to `length` (default: the bucket of their longest) -> (B, T, D), (B, T) mask."""
    rows = np.asarray(rows)
    length = length or bucket_length(self.lengths[rows].max() if len(rows) else 1)
    frames = np.zeros((len(rows), length, self.width), np.float32)
    mask = np.zeros((len(rows), length), bool)
    for b, row in enumerate(rows):
      clip = self[int(row)][:length]
      frames[b, :len(clip)], mask[b, :len(clip)] = clip, True
    return frames, mask


class SplitStore:
  """A finished store, memory-mapped (module docstring)."""

  def __init__(self, folder: Path):
    self.folder = Path(folder)
    meta = json.loads((self.folder / COMPLETE).read_text())
    self.meta = meta
    self.kept = np.load(self.folder / "kept.npy")
    self.lengths = np.load(self.folder / "lengths.npy")
    self.skipped = [tuple(s) for s in meta["skipped"]]
    self.has_frames = bool(meta["frames"])
    self.pooled16 = _map(self.folder / "pooled.f16", (meta["num_clips"], meta["pooled_width"]))
    self._frames = None
    if self.has_frames:
      flat = _FileRows(self.folder / "frames.f16", (int(self.lengths.sum()), meta["frame_width"]))
      self._frames = ClipFrames(flat, self.lengths)

  @property
  def pooled(self) -> np.ndarray:
    """(N, P) float32 (a copy in memory: N x P is what a mean probe trains on)."""
    return np.asarray(self.pooled16, np.float32)

  @property
  def frames(self) -> ClipFrames:
    if self._frames is None:
      raise ValueError(f"{self.folder} holds pooled vectors only (embedded for mean probes): embed the task with "
                       f"frames=True for frame-level use")
    return self._frames


class _FileRows:
  """(F, D) float16 rows of a file, read with pread on demand: `rows[a:b]` -> (b - a, D). Not a memory map, so
  the frames a reader goes through stay in the page cache instead of counting as this process's memory."""

  def __init__(self, path: Path, shape: tuple[int, int]):
    self.path, self.shape = path, shape
    self._fd = os.open(path, os.O_RDONLY)
    weakref.finalize(self, os.close, self._fd)

  def __getitem__(self, rows: slice) -> np.ndarray:
    start, stop, _ = rows.indices(self.shape[0])
    width = self.shape[1]
    count = max(0, stop - start) * width * 2
    data = os.pread(self._fd, count, start * width * 2) if count else b""
    if len(data) != count:
      raise ValueError(f"{self.path}: {len(data)} bytes where rows {start}..{stop} need {count}: the store is "
                       f"damaged; delete its folder {self.path.parent} to embed again")
    return np.frombuffer(data, np.float16).reshape(-1, width)


def _map(path: Path, shape: tuple[int, int]) -> np.ndarray:
  if shape[0] == 0:
    return np.zeros(shape, np.float16)
  return np.memmap(path, dtype=np.float16, mode="r", shape=shape)


def open_store(folder: str | os.PathLike) -> SplitStore | None:
  """The finished store in `folder`, or None when there is none (never written, or a write that did not finish)."""
  folder = Path(folder)
  if not (folder / COMPLETE).exists():
    return None
  meta = json.loads((folder / COMPLETE).read_text())
  return SplitStore(folder) if meta.get("version") == VERSION else None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale_tmp(folder: Path) -> None:
  """Deletes FOLDER.tmp-PID-HEX folders left by processes that are gone (a killed write)."""
  pattern = re.compile(re.escape(folder.name + _TMP) + r"(\d+)-[0-9a-f]{8}")
  if not folder.parent.is_dir():
    return
  for entry in folder.parent.iterdir():
    match = pattern.fullmatch(entry.name)
    if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
      shutil.rmtree(entry, ignore_errors=True)


class Writer:
  """Streams one split's embeddings into FOLDER.tmp-*, renamed to FOLDER by `finish` (module docstring)."""

  def __init__(self, folder: str | os.PathLike, *, frames: bool):
    self.folder = Path(folder)
    self.folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(self.folder)
    self.tmp = self.folder.parent / f"{self.folder.name}{_TMP}{os.getpid()}-{secrets.token_hex(4)}"
    self.tmp.mkdir()
    self.with_frames = frames
    self._pooled = open(self.tmp / "pooled.f16", "wb")
    self._frames = open(self.tmp / "frames.f16", "wb") if frames else None
    self.kept, self.lengths, self.skipped = [], [], []
    self.pooled_width = self.frame_width = None
    self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.tmp), True)   # an abandoned writer leaves nothing

  def add(self, index: int, pooled: np.ndarray, frames: np.ndarray | None) -> None:
    pooled = np.asarray(pooled, np.float32).reshape(-1)
    self.pooled_width = _check_width(self.pooled_width, pooled.shape[-1], "pooled", index)
    self._pooled.write(pooled.astype(np.float16).tobytes())
    length = 0
    if self.with_frames:
      frames = np.asarray(frames, np.float32)
      self.frame_width = _check_width(self.frame_width, frames.shape[-1], "frame", index)
      self._frames.write(frames.astype(np.float16).tobytes())
      length = len(frames)
    self.kept.append(index)
    self.lengths.append(length)

  def skip(self, key: str, reason: str) -> None:
    self.skipped.append((key, reason))

  def finish(self) -> SplitStore:
    for f in (self._pooled, self._frames):
      if f is not None:
        f.flush()
        os.fsync(f.fileno())
        f.close()
    np.save(self.tmp / "kept.npy", np.array(self.kept, np.int64))
    np.save(self.tmp / "lengths.npy", np.array(self.lengths, np.int64))
    meta = {"version": VERSION, "num_clips": len(self.kept), "pooled_width": self.pooled_width or 0,
            "frame_width": self.frame_width or 0, "frames": self.with_frames, "skipped": self.skipped}
    with open(self.tmp / COMPLETE, "w") as f:
      json.dump(meta, f)
      f.flush()
      os.fsync(f.fileno())
    if self.folder.exists():   # an earlier store for the same key (e.g. pooled-only, now with frames): replace it
      shutil.rmtree(self.folder)
    os.rename(self.tmp, self.folder)
    self._cleanup.detach()
    return SplitStore(self.folder)


def _check_width(known: int | None, width: int, what: str, index: int) -> int:
  if known is not None and known != width:
    raise ValueError(f"clip {index}: {what} width {width} differs from the earlier clips' {known}")
  return width
