"""Duration buckets (data.batch_seconds > 0): the fixed batch shapes and each epoch's plan of global batches.

  shapes = bucket_shapes(cfg, row_multiple)     # [BucketShape(rows, seconds)], shortest bucket first
  planner = EpochPlanner(durations, weights, shapes, seed)
  bucket, visits = planner.batch(i)            # the i-th global batch: its bucket and (rows,) visit ids
  source, local = planner.locate(visit)        # a visit id -> (source index, visit index in that source)

Why fixed shapes: the train step compiles once per batch shape, so batches of "about N seconds" (the study's
lhotse DynamicBucketingSampler) become a small fixed set of shapes. Bucket k has an upper edge e_k seconds
(data.bucket_seconds) and the shape (rows_k, e_k x 16000), rows_k = the largest multiple of `row_multiple` with
rows_k x e_k <= data.batch_seconds. A clip of d seconds goes to the first bucket with d <= e_k (longer than the
last edge: that bucket, cropped to it), so a batch never holds more than batch_seconds of real audio, and every
row but the padded ones holds more than e_{k-1} seconds. Rows are a multiple of the process count, the batch
shards and the accumulation steps (the caller's `row_multiple`), so every global batch splits evenly.

The plan is global and deterministic: every process computes the same plan from the whole corpus (all subset
indices of all sources, their durations, the seed) and reads only its own slice of each batch's rows, so all
processes agree on the bucket (the compiled shape) of every step. Epoch e:
  1. each source s contributes q_s = round(w_s x N) visits (N = visits of all sources, w = mixture weights), the
     next q_s of its endless stream of shuffled passes (a pass = a permutation of its visits, seeded by (seed, s,
     pass)); with one source, or weights proportional to the visit counts, every visit appears exactly once;
  2. the epoch's visits are shuffled (seed, e) and grouped by bucket (one sort by bucket + a uniform draw);
  3. each bucket is cut into batches of rows_k; its last batch is filled with padded rows (visit -1) rather than
     dropped, so no clip is lost;
  4. the epoch's batches are put in a random order (seed, e).
Batch i's position in the plan depends only on (seed, i): the grain iterator's position restores it exactly.

Legend: K buckets, N visits (a clip, or a (clip, caption) pair with caption_policy "every"), q_s visits per epoch
of source s, rows_k rows of a bucket-k batch.
"""
from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np

SAMPLE_RATE = 16000
PADDING = -1   # the visit id of a padded row


@dataclasses.dataclass(frozen=True)
class BucketShape:
  rows: int        # global rows of a batch of this bucket
  seconds: float   # upper edge: the longest clip of this bucket, and its padded length

  @property
  def samples(self) -> int:
    return int(round(self.seconds * SAMPLE_RATE))


def bucket_shapes(cfg, row_multiple: int = 1) -> list[BucketShape]:
  """The batch shapes of data.batch_seconds with data.bucket_seconds edges (ValueError on a bad setting)."""
  budget, edges = float(cfg.batch_seconds), tuple(float(e) for e in cfg.bucket_seconds)
  if budget <= 0:
    raise ValueError(f"data.batch_seconds must be > 0 for duration buckets, got {cfg.batch_seconds}")
  if not edges or any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
    raise ValueError(f"data.bucket_seconds must be increasing positive seconds (e.g. 3,6,10,15,30), got "
                     f"{tuple(cfg.bucket_seconds)}")
  shapes = []
  for edge in edges:
    rows = int(budget // edge) // row_multiple * row_multiple
    if rows < 1:
      raise ValueError(f"data.batch_seconds={budget:g} holds no batch of the {edge:g} s bucket: its rows must be a "
                       f"multiple of {row_multiple} (processes x batch shards x grad_accum_steps), which needs "
                       f"batch_seconds >= {row_multiple * edge:g}; raise data.batch_seconds or lower the longest "
                       f"data.bucket_seconds")
    shapes.append(BucketShape(rows, edge))
  return shapes


def bucket_of(seconds: np.ndarray, shapes: list[BucketShape]) -> np.ndarray:
  """(N,) durations in seconds -> (N,) bucket index (the last bucket for clips longer than its edge)."""
  edges = np.array([s.seconds for s in shapes])
  return np.minimum(np.searchsorted(edges, seconds, side="left"), len(shapes) - 1)


class EpochPlanner:
  """The global batches of every epoch (module docstring), computed lazily and cached (thread-safe)."""

  def __init__(self, durations: list[np.ndarray], weights: list[float], shapes: list[BucketShape], seed: int):
    """durations: per source, (n_s,) seconds of each visit; weights: mixture weights summing to 1."""
    self.shapes, self.seed = list(shapes), int(seed)
    self.counts = np.array([len(d) for d in durations], np.int64)
    if self.counts.min(initial=1) == 0 or len(durations) == 0:
      raise ValueError(f"every source needs at least one clip for duration buckets, got counts {self.counts}")
    self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
    self.buckets = bucket_of(np.concatenate(durations), self.shapes)   # (N,) bucket of each global visit id
    total = int(self.counts.sum())
    self.quota = np.maximum(np.round(np.asarray(weights, np.float64) * total), 1).astype(np.int64)
    self._lock = threading.Lock()
    self._epoch_starts = [0]          # global batch index where epoch e starts (grows as epochs are planned)
    self._plans: dict[int, list[tuple[int, np.ndarray]]] = {}
    self._same_epochs: int | None = None   # batches per epoch when every epoch holds each visit once

  def __getstate__(self):   # grain worker processes get a copy without the lock and the cached plans
    state = dict(self.__dict__)
    state.update(_lock=None, _plans={}, _epoch_starts=[0])
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def locate(self, visit: int) -> tuple[int, int]:
    source = int(np.searchsorted(self.offsets, visit, side="right") - 1)
    return source, int(visit - self.offsets[source])

  def _pass(self, source: int, index: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, 17, source, index])
    return rng.permutation(int(self.counts[source]))

  def epoch_visits(self, epoch: int) -> np.ndarray:
    """Global visit ids of epoch `epoch` (step 1 of the module docstring), before the shuffle."""
    parts = []
    for s, (n, q) in enumerate(zip(self.counts, self.quota)):
      start, stop = epoch * q, (epoch + 1) * q   # positions in the source's endless stream of passes
      taken = [self._pass(s, p)[max(start - p * n, 0):min(stop - p * n, n)]
               for p in range(int(start // n), int((stop - 1) // n) + 1)]
      parts.append(self.offsets[s] + np.concatenate(taken))
    return np.concatenate(parts)

  def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng([self.seed, 29, epoch])
    visits = self.epoch_visits(epoch)
    # Shuffled, then grouped by bucket, in one sort: key = bucket + a uniform draw in [0, 1).
    keys = self.buckets[visits] + rng.random(len(visits))
    order = np.argsort(keys)
    visits, keys = visits[order], keys[order]
    bounds = np.searchsorted(keys, np.arange(len(self.shapes) + 1))
    batches = []
    for k, shape in enumerate(self.shapes):
      members = visits[bounds[k]:bounds[k + 1]]
      padded = np.full(math.ceil(len(members) / shape.rows) * shape.rows, PADDING, np.int64)
      padded[:len(members)] = members
      batches += [(k, rows) for rows in padded.reshape(-1, shape.rows)]
    return [batches[j] for j in rng.permutation(len(batches))]

  def _count(self, epoch: int) -> int:
    """Batches of `epoch` without planning it (a resume far into a run counts every earlier epoch)."""
    if self._same_epochs is not None and epoch > 0:
      return self._same_epochs
    per_bucket = np.bincount(self.buckets[self.epoch_visits(epoch)], minlength=len(self.shapes))
    n = int(sum(math.ceil(c / s.rows) for c, s in zip(per_bucket, self.shapes)))
    if np.array_equal(self.quota, self.counts):   # every epoch holds every visit once: the same count
      self._same_epochs = n
    return n

  def plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    """The global batches of `epoch` in order, each (bucket k, (rows_k,) visit ids; PADDING for padded rows)."""
    with self._lock:
      if epoch not in self._plans:
        if len(self._plans) >= 2:
          del self._plans[min(self._plans)]
        self._plans[epoch] = self._plan(epoch)
      return self._plans[epoch]

  def batch(self, i: int) -> tuple[int, np.ndarray]:
    """Global batch i -> (bucket index, (rows,) visit ids)."""
    epoch = self._epoch_of(i)
    return self.plan(epoch)[i - self._epoch_starts[epoch]]

  def _epoch_of(self, i: int) -> int:
    while True:
      with self._lock:
        starts = list(self._epoch_starts)
      e = int(np.searchsorted(starts, i, side="right") - 1)
      if e < len(starts) - 1:
        return e
      n = self._count(len(starts) - 1)   # count the next epoch's batches to learn where the one after starts
      with self._lock:
        if len(self._epoch_starts) == len(starts):
          self._epoch_starts.append(starts[-1] + n)

  def batches_in_epoch(self, epoch: int) -> int:
    return self._count(epoch)
