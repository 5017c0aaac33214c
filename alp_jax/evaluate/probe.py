"""Linear probes on frozen features: mean pooling (a linear classifier) and attention pooling.

Legend: N clips, B minibatch, T frames (a minibatch's clips padded to a length bucket), D feature width,
H attention heads, E head width, C classes, S optimizer steps.

Protocol (fixed; docs/evaluation.md):
  1. standardise features with train statistics (per dimension; attention: over valid train frames);
  2. AdamW (optax), minibatches of `batch_size` drawn from seeded shuffles, a fixed number of steps
     S = max(min_steps, epochs * ceil(N_trainval / batch_size));
  3. grid over learning rate x weight decay, each trained on the fit split and scored on the validation
     split (valid.csv if given, else a seeded `valid_fraction` carved from train); the first best in grid
     order wins;
  4. retrain with the chosen setting on train + valid, report the test metric: accuracy (single-label,
     softmax cross-entropy) or mAP (multi-label, sigmoid cross-entropy), with its 95% percentile-bootstrap
     interval over the test clips (alp_jax/evaluate/stats.py, `interval_resamples` draws, seeded by `seed`).
Mean pooling: the (N, D) features live in memory and one compiled scan runs all S steps. Attention pooling
reads clips from an embed_store.ClipFrames (the float16 store on disk, or in-memory clips): its standardiser is
two streamed passes over the fit clips' frames (float64), and each step gathers its B clips, pads them to the
length bucket of the longest (embed_store.bucket_length: a handful of compiled shapes per task) and
standardises them on the device, so memory holds one minibatch of frames, however many clips the task has.
Padding is masked, so the bucket changes no number. All randomness comes from `seed`: the same features give
the same numbers.

Attention pooling: learned queries (H, E) attend over K/V projections of the frames, the H pooled vectors
are concatenated and a linear classifier reads them. Padding frames are masked out. The projections are
applied after the frame reductions (exact, and ~E times cheaper per step).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alp_jax.evaluate import embed as embed_lib
from alp_jax.evaluate import embed_store
from alp_jax.evaluate import stats
from alp_jax.evaluate import tasks as tasks_lib

MEAN, ATTENTION = "mean", "attention"
POOLINGS = (MEAN, ATTENTION)
NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  learning_rates: tuple[float, ...] = (1e-3, 1e-2)
  weight_decays: tuple[float, ...] = (0.0, 1e-4)
  epochs: int = 30
  min_steps: int = 300
  batch_size: int = 256
  valid_fraction: float = 0.15
  attention_heads: int = 4
  interval_resamples: int = stats.RESAMPLES
  interval_level: float = stats.LEVEL
  seed: int = 0

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class ProbeResult:
  metric: str                    # "accuracy" or "map"
  value: float                   # test metric after retraining on train + valid
  learning_rate: float           # chosen
  weight_decay: float            # chosen
  grid: list[dict]               # [{"learning_rate", "weight_decay", "valid": score}, ...]
  steps: int
  num_fit: int
  num_valid: int
  num_test: int
  interval: list[float] = dataclasses.field(default_factory=list)   # [low, high], bootstrap over test clips
  # Per-clip test outputs (kept clips, task order), for paired comparisons (stats.paired_gap); not in to_dict.
  test_scores: np.ndarray | None = dataclasses.field(default=None, repr=False)    # (N, C) logits
  test_targets: np.ndarray | None = dataclasses.field(default=None, repr=False)   # (N,) ids or (N, C) multi-hot

  def to_dict(self) -> dict:
    """JSON-ready: everything but the per-clip test outputs."""
    return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
            if f.name not in ("test_scores", "test_targets")}


# --------------------------------------------------------------------------------------------------------
# Metrics (NumPy).

def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """AP of one class: sum over score thresholds of (recall step) x precision, ties forming one threshold.

  scores (N,), positives (N,) bool. NaN when there is no positive.
  """
  positives = np.asarray(positives, bool)
  num_pos = positives.sum()
  if num_pos == 0:
    return float("nan")
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  sorted_scores, hits = np.asarray(scores, np.float64)[order], positives[order]
  true_pos = np.cumsum(hits)
  last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]   # a threshold ends at each distinct score
  tp, counted = true_pos[last_of_tie], np.arange(1, len(hits) + 1)[last_of_tie]
  precision, recall = tp / counted, tp / num_pos
  recall_step = np.diff(np.r_[0.0, recall])
  return float(np.sum(recall_step * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
  """mAP over classes that have at least one positive. scores, targets (N, C)."""
  aps = [average_precision(scores[:, c], targets[:, c] > 0.5) for c in range(targets.shape[1])]
  aps = [ap for ap in aps if not math.isnan(ap)]
  return float(np.mean(aps)) if aps else float("nan")


def accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
  return float(np.mean(np.argmax(scores, axis=-1) == targets))


def score(scores: np.ndarray, targets: np.ndarray, multi_label: bool) -> float:
  return mean_average_precision(scores, targets) if multi_label else accuracy(scores, targets)


# --------------------------------------------------------------------------------------------------------
# Features: {"features": (N, D)} for mean pooling; for attention {"clips": embed_store.ClipFrames} (in-memory
# {"frames": (N, T, D), "mask": (N, T)} is accepted and turned into clips), after standardising also "mean", "std".

def pad_frames(frames: list[np.ndarray], length: int | None = None) -> dict[str, np.ndarray]:
  """Per-clip (T_i, D) frames -> {"frames": (N, T, D), "mask": (N, T)}, T = length or the longest clip."""
  length = length or max(len(f) for f in frames)
  width = frames[0].shape[-1]
  padded = np.zeros((len(frames), length, width), np.float32)
  mask = np.zeros((len(frames), length), bool)
  for i, f in enumerate(frames):
    padded[i, :len(f)], mask[i, :len(f)] = f, True
  return {"frames": padded, "mask": mask}


def _as_clips(data: dict) -> dict:
  if "frames" in data:
    return {"clips": embed_store.ClipFrames.from_padded(data["frames"], data["mask"])}
  return data


STATISTICS_CHUNK = 512   # clips per read in the streamed standardiser


def _standardiser(train: dict) -> tuple[np.ndarray, np.ndarray]:
  """Per-dimension mean and std (float64, two passes) of the features, or of every valid frame of the clips."""
  if "features" in train:
    values = train["features"]                                                                 # (N,D)
    mean, std = values.mean(axis=0, dtype=np.float64), values.std(axis=0, dtype=np.float64)
  else:
    clips = train["clips"]
    chunks = lambda: (np.concatenate(clips[start:start + STATISTICS_CHUNK])
                      for start in range(0, len(clips), STATISTICS_CHUNK))                    # (rows,D)
    count = int(clips.lengths.sum())
    mean = sum(chunk.sum(axis=0, dtype=np.float64) for chunk in chunks()) / count
    std = np.sqrt(sum(np.square(chunk - mean).sum(axis=0) for chunk in chunks()) / count)
  std = np.where(std < 1e-6, 1.0, std)   # constant dimensions stay constant (zero) instead of blowing up
  return mean.astype(np.float32), std.astype(np.float32)


def _standardise(data: dict, mean: np.ndarray, std: np.ndarray) -> dict:
  """Features standardised now; clips carry mean and std, applied per minibatch on the device."""
  if "features" in data:
    return {"features": (data["features"] - mean) / std}
  return {"clips": data["clips"], "mean": mean, "std": std}


def _take(data: dict, rows: np.ndarray) -> dict:
  if "features" in data:
    return {"features": data["features"][rows]}
  return {**data, "clips": data["clips"].take(rows)}


def _concat(a: dict, b: dict) -> dict:
  if "features" in a:
    return {"features": np.concatenate([a["features"], b["features"]])}
  return {"clips": a["clips"].concat(b["clips"])}


# --------------------------------------------------------------------------------------------------------
# Models: pure functions of a parameter dict.

def init_params(key: jax.Array, pooling: str, width: int, num_classes: int, heads: int) -> dict[str, jax.Array]:
  if pooling == MEAN:
    return {"w": jnp.zeros((width, num_classes)), "b": jnp.zeros((num_classes,))}
  head_width = max(1, width // heads)
  k_query, k_key, k_value = jax.random.split(key, 3)
  scale = 1.0 / math.sqrt(width)
  return {
      "query": jax.random.normal(k_query, (heads, head_width)),
      "key": jax.random.normal(k_key, (width, heads * head_width)) * scale,
      "value": jax.random.normal(k_value, (width, heads * head_width)) * scale,
      "w": jnp.zeros((heads * head_width, num_classes)), "b": jnp.zeros((num_classes,)),
  }


def attention_pool(params: dict[str, jax.Array], frames: jax.Array, mask: jax.Array) -> jax.Array:
  """(B, T, D) frames, (B, T) mask -> (B, H*E): H learned queries over K/V projections of the valid frames.

  Computed re-associated, which is exact and cheaper: a query against projected keys is a D-vector against
  the frames, q.(W_k x) = (W_k^T q).x, and projecting values after pooling them equals pooling projections.
  """
  heads, head_width = params["query"].shape
  width = frames.shape[-1]
  key = params["key"].reshape(width, heads, head_width)
  value = params["value"].reshape(width, heads, head_width)
  query_keys = jnp.einsum("dhe,he->dh", key, params["query"])                          # (D,H)
  logits = jnp.einsum("btd,dh->bht", frames, query_keys) / math.sqrt(head_width)       # (B,H,T)
  logits = jnp.where(mask[:, None, :], logits, NEG_INF)
  weights = jax.nn.softmax(logits, axis=-1)                                            # (B,H,T)
  pooled_frames = jnp.einsum("bht,btd->bhd", weights, frames)                          # (B,H,D)
  pooled = jnp.einsum("bhd,dhe->bhe", pooled_frames, value)                            # (B,H,E)
  return pooled.reshape(frames.shape[0], heads * head_width)


def apply(params: dict[str, jax.Array], batch: dict[str, jax.Array]) -> jax.Array:
  """Class logits (B, C) of {"features": (B, D)} or {"frames": (B, T, D), "mask": (B, T)} (+ "mean", "std" (D,):
  the frames are standardised first, padding set to zero)."""
  if "mean" in batch:
    frames = (batch["frames"] - batch["mean"]) / batch["std"] * batch["mask"][..., None]
    batch = {"frames": frames, "mask": batch["mask"]}
  pooled = batch["features"] if "features" in batch else attention_pool(params, batch["frames"], batch["mask"])
  return jnp.einsum("bd,dc->bc", pooled, params["w"]) + params["b"]   # (B,C)


def _loss(params, batch, targets, weights, multi_label: bool) -> jax.Array:
  logits = apply(params, batch)
  if multi_label:
    per_example = optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=-1)   # (B,)
  else:
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, targets)    # (B,)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# --------------------------------------------------------------------------------------------------------
# Training.

def _optimizer() -> optax.GradientTransformation:
  return optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=0.0)


@functools.partial(jax.jit, static_argnames=("multi_label",))
def _train_steps(params, opt_state, data, targets, batch_rows, batch_weights, multi_label: bool):
  """S AdamW steps (a scan over (S, B) row indices into `data`); lr and wd live in opt_state."""
  tx = _optimizer()

  def step(carry, rows_weights):
    params, opt_state = carry
    rows, weights = rows_weights
    batch = {k: v[rows] for k, v in data.items()}
    grads = jax.grad(_loss)(params, batch, targets[rows], weights, multi_label)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, opt_state), (batch_rows, batch_weights))
  return params


@functools.partial(jax.jit, static_argnames=("multi_label",), donate_argnums=(0, 1))
def _train_step(params, opt_state, batch, targets, weights, multi_label: bool):
  """One AdamW step on a (B, T, D) minibatch (attention pooling, fed from the host); lr and wd in opt_state."""
  grads = jax.grad(_loss)(params, batch, targets, weights, multi_label)
  updates, opt_state = _optimizer().update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


_predict = jax.jit(apply)


@dataclasses.dataclass(frozen=True)
class _Schedule:
  batch_size: int
  steps: int

  @classmethod
  def for_examples(cls, num_examples: int, config: ProbeConfig) -> "_Schedule":
    batch_size = min(config.batch_size, num_examples)
    return cls(batch_size, max(config.min_steps, config.epochs * -(-num_examples // batch_size)))

  def batches(self, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, B) row indices from seeded shuffles of `rows`, and (S, B) weights (0 on padding)."""
    rng = np.random.default_rng(seed)
    per_epoch = -(-len(rows) // self.batch_size)
    epoch_weights = np.zeros(per_epoch * self.batch_size, np.float32)
    epoch_weights[:len(rows)] = 1.0
    all_rows, all_weights = [], []
    while len(all_rows) < self.steps:
      epoch_rows = np.zeros(per_epoch * self.batch_size, np.int32)
      epoch_rows[:len(rows)] = rng.permutation(rows)
      all_rows += list(epoch_rows.reshape(per_epoch, -1))
      all_weights += list(epoch_weights.reshape(per_epoch, -1))
    return np.stack(all_rows[:self.steps]), np.stack(all_weights[:self.steps])


def fit(data: dict[str, np.ndarray], targets: np.ndarray, rows: np.ndarray, *, learning_rate: float,
        weight_decay: float, num_classes: int, multi_label: bool, schedule: _Schedule,
        config: ProbeConfig) -> dict[str, jax.Array]:
  """Probe parameters trained on `rows` of `data` (standardised features) with one grid setting."""
  pooling = MEAN if "features" in data else ATTENTION
  width = data["features"].shape[-1] if pooling == MEAN else data["clips"].width
  params = init_params(jax.random.key(config.seed), pooling, width, num_classes, config.attention_heads)
  opt_state = _optimizer().init(params)
  opt_state.hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
  opt_state.hyperparams["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)
  batch_rows, batch_weights = schedule.batches(np.asarray(rows), config.seed)
  if pooling == MEAN:
    return _train_steps(params, opt_state, data, targets, batch_rows, batch_weights, multi_label)
  statistics = {"mean": jnp.asarray(data["mean"]), "std": jnp.asarray(data["std"])}
  for step_rows, step_weights in zip(batch_rows, batch_weights):
    frames, mask = data["clips"].padded(step_rows)   # the next batch is gathered while the device runs this one
    batch = {"frames": frames, "mask": mask, **statistics}
    params, opt_state = _train_step(params, opt_state, batch, targets[step_rows], step_weights, multi_label)
  return params


def predict(params: dict[str, jax.Array], data: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
  """Logits (N, C), computed in fixed-size chunks (one compiled shape; attention: one per length bucket)."""
  if "clips" in data:
    out, clips = [], data["clips"]
    for start in range(0, len(clips), batch_size):
      rows = np.arange(start, min(start + batch_size, len(clips)))
      frames, mask = clips.padded(np.pad(rows, (0, batch_size - len(rows))))   # short chunk: repeats of row 0
      batch = {"frames": frames, "mask": mask, "mean": data["mean"], "std": data["std"]}
      out.append(np.asarray(_predict(params, batch))[:len(rows)])
    return np.concatenate(out)
  n = len(next(iter(data.values())))
  out = []
  for start in range(0, n, batch_size):
    chunk = {k: v[start:start + batch_size] for k, v in data.items()}
    size = len(next(iter(chunk.values())))
    if size < batch_size:
      chunk = {k: np.concatenate([v, np.zeros((batch_size - size,) + v.shape[1:], v.dtype)]) for k, v in chunk.items()}
    out.append(np.asarray(_predict(params, chunk))[:size])
  return np.concatenate(out)


def train_and_evaluate(train: dict[str, np.ndarray], train_targets: np.ndarray, test: dict[str, np.ndarray],
                       test_targets: np.ndarray, *, num_classes: int, multi_label: bool,
                       valid: tuple[dict[str, np.ndarray], np.ndarray] | None = None,
                       config: ProbeConfig = ProbeConfig()) -> ProbeResult:
  """The probe protocol on features. `train`/`test`/`valid`: {"features": (N, D)} (mean pooling) or
  {"clips": embed_store.ClipFrames} or {"frames": (N, T, D), "mask": (N, T)} (attention pooling). Targets: class
  ids (N,) or multi-hot (N, C).
  """
  train, test = _as_clips(train), _as_clips(test)
  valid = None if valid is None else (_as_clips(valid[0]), valid[1])
  if valid is None:
    fit_rows, valid_rows = tasks_lib.validation_split(len(train_targets), config.valid_fraction, seed=0)
    trainval, trainval_targets = train, train_targets
  else:
    trainval = _concat(train, valid[0])
    trainval_targets = np.concatenate([train_targets, valid[1]])
    fit_rows, valid_rows = np.arange(len(train_targets)), np.arange(len(train_targets), len(trainval_targets))
  schedule = _Schedule.for_examples(len(trainval_targets), config)
  common = dict(num_classes=num_classes, multi_label=multi_label, schedule=schedule, config=config)
  mean, std = _standardiser(_take(trainval, fit_rows))
  fit_data = _standardise(trainval, mean, std)
  valid_data, valid_targets = _take(fit_data, valid_rows), trainval_targets[valid_rows]
  grid, best = [], None
  for learning_rate in config.learning_rates:
    for weight_decay in config.weight_decays:
      params = fit(fit_data, trainval_targets, fit_rows, learning_rate=learning_rate, weight_decay=weight_decay,
                   **common)
      valid_score = score(predict(params, valid_data, schedule.batch_size), valid_targets, multi_label)
      grid.append({"learning_rate": learning_rate, "weight_decay": weight_decay, "valid": valid_score})
      if best is None or valid_score > best["valid"]:
        best = grid[-1]
  # Retrain on train + valid, standardised with train + valid statistics.
  mean, std = _standardiser(trainval)
  params = fit(_standardise(trainval, mean, std), trainval_targets, np.arange(len(trainval_targets)),
               learning_rate=best["learning_rate"], weight_decay=best["weight_decay"], **common)
  test_scores = predict(params, _standardise(test, mean, std), schedule.batch_size)
  metric = functools.partial(score, multi_label=multi_label)
  interval = stats.bootstrap_interval(metric, (test_scores, test_targets), resamples=config.interval_resamples,
                                      level=config.interval_level, seed=config.seed)
  return ProbeResult(metric="map" if multi_label else "accuracy", value=metric(test_scores, test_targets),
                     learning_rate=best["learning_rate"], weight_decay=best["weight_decay"], grid=grid,
                     steps=schedule.steps, num_fit=len(fit_rows), num_valid=len(valid_rows),
                     num_test=len(test_targets), interval=list(interval), test_scores=test_scores,
                     test_targets=np.asarray(test_targets))


def probe_task(embeddings: Any, pooling: str, config: ProbeConfig = ProbeConfig()) -> ProbeResult:
  """Runs the protocol on a TaskEmbeddings (alp_jax.evaluate.embed) with `pooling` in POOLINGS."""
  if pooling not in POOLINGS:
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
  splits = embeddings.splits
  if pooling == MEAN:
    features = {split: {"features": emb.pooled} for split, emb in splits.items()}
  else:
    features = {split: {"clips": emb.frames} for split, emb in splits.items()}
  valid = (features["valid"], embeddings.targets("valid")) if "valid" in splits else None
  return train_and_evaluate(features["train"], embeddings.targets("train"), features["test"],
                            embeddings.targets("test"), num_classes=len(embeddings.task.classes),
                            multi_label=embeddings.task.multi_label, valid=valid, config=config)


def evaluate_encoder(encoder, task_dirs: list, *, poolings: tuple[str, ...] = POOLINGS,
                     config: ProbeConfig = ProbeConfig(), cache_dir=None, log=print,
                     keep_outputs: bool = False) -> list[dict]:
  """Embeds every task with `encoder` (an AudioEncoder, or a baseline from alp_jax.evaluate.baselines) and probes
  it with each pooling.

  task_dirs: task folders, or tasks.Task objects (e.g. from tfds_tasks.read_tfds_task), in any mix.

  -> one row per (task, pooling): {"task", "task_dir", "metric", "method" (the pooling), "value", "interval"
  ([low, high], 95% bootstrap over test clips), "skipped_files", "num_classes", "probe": ProbeResult.to_dict(),
  "embed_seconds", "probe_seconds"}. keep_outputs: each row also holds "outputs": (test_scores (N, C), test_targets)
  as NumPy arrays (for stats.paired_gap between systems on the same clips); such rows are not JSON-serialisable,
  so drop "outputs" before writing them.
  """
  import time
  fingerprint = embed_lib.encoder_fingerprint(encoder) if cache_dir is not None else None
  memo, rows = {}, []
  for task_dir in task_dirs:
    task = task_dir if isinstance(task_dir, tasks_lib.Task) else tasks_lib.read_task(task_dir)
    embeddings = embed_lib.embed_task(encoder, task, cache_dir=cache_dir, memo=memo, fingerprint=fingerprint,
                                      frames=ATTENTION in poolings, log=log)
    for pooling in poolings:
      t0 = time.monotonic()
      result = probe_task(embeddings, pooling, config)
      seconds = time.monotonic() - t0
      if log:
        low, high = result.interval
        log(f"[probe] {task.name} {pooling}: {result.metric} {result.value:.4f} [{low:.4f}, {high:.4f}] "
            f"(lr {result.learning_rate:g}, wd {result.weight_decay:g}, {result.steps} steps, {seconds:.1f}s)")
      rows.append({"task": task.name, "task_dir": str(task.directory), "metric": result.metric, "method": pooling,
                   "value": result.value, "interval": list(result.interval), "num_classes": len(task.classes),
                   "skipped_files": len(embeddings.skipped), "skipped": [path for path, _ in embeddings.skipped],
                   "probe": result.to_dict(), "embed_seconds": round(embeddings.seconds, 2),
                   "probe_seconds": round(seconds, 2)})
      if keep_outputs:
        rows[-1]["outputs"] = (result.test_scores, result.test_targets)
  return rows
