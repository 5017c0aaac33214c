"""Frame-level linear probe for sound event detection on frozen encoder frames (the study's SED probe task).

Legend: N clips, T frames of one clip, F frames of a split (sum of T), D frame width, C classes, S steps.

Protocol (fixed; docs/evaluation.md, "Sound event detection"):
  1. frames: the encoder's valid frames of the whole clip (alp_jax/evaluate/embed.py; 25 Hz for the study's
     encoders), spread evenly over the clip: frame t of a clip of d seconds covers [t d/T, (t+1) d/T); its target
     (C,) is 1 for every class with an event covering the frame's centre (sed_tasks.frame_targets);
  2. a linear layer D -> C on each frame, sigmoid binary cross-entropy averaged over classes, trained on frames
     as rows (probe.fit: AdamW, zero init, features standardised with the training frames' statistics, minibatches
     of `batch_size` frames from seeded shuffles, S = max(min_steps, epochs * ceil(F / batch_size)));
  3. learning rate x weight decay grid, each trained on the fit clips and scored by PSDS1 on the validation clips
     (valid.tsv, else a seeded `valid_fraction` of the train clips), ties broken by their event F1; the first best
     in grid order wins;
  4. retrain on train + valid, and score the test clips' frame posteriors: PSDS1 and collar-based event F1
     (alp_jax/evaluate/sed_metrics.py), each with a percentile-bootstrap interval over test clips.
No post-processing (median filter) of the posteriors: PSDS is threshold-independent and scores them directly.
Everything is seeded by `seed`: the same frames give the same numbers.

  rows = evaluate_encoder(encoder, [SED_TASK_DIR])        # -> psds1 and event_f1 rows, as probe rows
  result = train_and_evaluate(train_clips, test_clips, classes)   # on your own frames (FrameClip lists)
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from alp_jax.audio import io as audio_io
from alp_jax.evaluate import embed as embed_lib
from alp_jax.evaluate import probe as probe_lib
from alp_jax.evaluate import sed_metrics
from alp_jax.evaluate import sed_tasks
from alp_jax.evaluate import stats
from alp_jax.evaluate import tasks as tasks_lib

METHOD = "frame_linear"
PSDS1, EVENT_F1 = "psds1", "event_f1"


@dataclasses.dataclass(frozen=True)
class SedProbeConfig:
  learning_rates: tuple[float, ...] = (1e-3, 1e-2)
  weight_decays: tuple[float, ...] = (0.0, 1e-4)
  epochs: int = 10                  # passes over the training frames (frames, not clips, are the rows)
  min_steps: int = 300
  batch_size: int = 1024            # frames per step
  valid_fraction: float = 0.15      # of the train clips, when the task has no valid.tsv
  interval_resamples: int = sed_metrics.INTERVAL_RESAMPLES
  interval_level: float = stats.LEVEL
  seed: int = 0

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def probe_config(self) -> probe_lib.ProbeConfig:
    """The linear probe's training settings (probe.fit)."""
    return probe_lib.ProbeConfig(learning_rates=self.learning_rates, weight_decays=self.weight_decays,
                                 epochs=self.epochs, min_steps=self.min_steps, batch_size=self.batch_size,
                                 seed=self.seed)


@dataclasses.dataclass
class FrameClip:
  id: str
  frames: np.ndarray                    # (T, D)
  duration: float                       # seconds the T frames span
  events: tuple[sed_tasks.Event, ...]   # reference events within [0, duration)


def _stack(clips: list[FrameClip], classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """-> frames (F, D), targets (F, C) of all clips, in order."""
  return (np.concatenate([c.frames for c in clips]).astype(np.float32),
          np.concatenate([sed_tasks.frame_targets(c.events, classes, len(c.frames), c.duration)
                          for c in clips]))


def fit(clips: list[FrameClip], classes: list[str], *, learning_rate: float, weight_decay: float,
        config: SedProbeConfig) -> tuple[dict[str, jax.Array], np.ndarray, np.ndarray]:
  """Trains the frame probe on `clips` -> (params, feature mean, feature std)."""
  frames, targets = _stack(clips, classes)
  mean, std = probe_lib.standardiser({"features": frames})
  schedule = probe_lib.Schedule.for_examples(len(frames), config.probe_config())
  params = probe_lib.fit(probe_lib.standardise({"features": frames}, mean, std), targets, np.arange(len(frames)),
                         learning_rate=learning_rate, weight_decay=weight_decay, num_classes=len(classes),
                         multi_label=True, schedule=schedule, config=config.probe_config())
  return params, mean, std


def posteriors(params: dict[str, jax.Array], mean: np.ndarray, std: np.ndarray, clips: list[FrameClip],
               batch_size: int) -> dict[str, np.ndarray]:
  """{clip id: (T, C) sigmoid posteriors}."""
  frames = np.concatenate([c.frames for c in clips]).astype(np.float32)
  logits = probe_lib.predict(params, probe_lib.standardise({"features": frames}, mean, std), batch_size)  # (F,C)
  probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  bounds = np.cumsum([0] + [len(c.frames) for c in clips])
  return {c.id: probabilities[bounds[i]:bounds[i + 1]] for i, c in enumerate(clips)}


def _score(found: dict[str, np.ndarray], clips: list[FrameClip], classes: list[str], config: SedProbeConfig,
           resamples: int) -> dict:
  return sed_metrics.evaluate(found, {c.id: c.events for c in clips}, {c.id: c.duration for c in clips}, classes,
                              resamples=resamples, level=config.interval_level, seed=config.seed)


def train_and_evaluate(train: list[FrameClip], test: list[FrameClip], classes: list[str], *,
                       valid: list[FrameClip] | None = None, config: SedProbeConfig = SedProbeConfig()) -> dict:
  """The protocol (module docstring) on clips' frames. valid=None: a seeded share of `train` is the validation set.

  -> {"psds1", "event_f1", "psds1_interval", "event_f1_interval", "learning_rate", "weight_decay" (chosen),
      "grid": [{"learning_rate", "weight_decay", "valid": PSDS1, "valid_event_f1"}], "steps", "num_fit",
      "num_valid", "num_test" (clips), "num_test_frames", "scored_classes", "test_posteriors": {clip id: (T, C)}}
  """
  if valid is None:
    fit_rows, valid_rows = tasks_lib.validation_split(len(train), config.valid_fraction, seed=0)
    fit_clips, valid_clips = [train[i] for i in fit_rows], [train[i] for i in valid_rows]
  else:
    fit_clips, valid_clips = list(train), list(valid)
  grid, best = [], None
  for learning_rate in config.learning_rates:
    for weight_decay in config.weight_decays:
      params, mean, std = fit(fit_clips, classes, learning_rate=learning_rate, weight_decay=weight_decay,
                              config=config)
      found = posteriors(params, mean, std, valid_clips, config.batch_size)
      try:
        valid = _score(found, valid_clips, classes, config, resamples=0)
      except ValueError as e:
        raise ValueError(f"validation clips ({len(valid_clips)}): {e}; give a valid.tsv with events") from None
      grid.append({"learning_rate": learning_rate, "weight_decay": weight_decay, "valid": valid["psds1"],
                   "valid_event_f1": valid["event_f1"]})
      if best is None or (valid["psds1"], valid["event_f1"]) > (best["valid"], best["valid_event_f1"]):
        best = grid[-1]
  trainval = fit_clips + valid_clips
  params, mean, std = fit(trainval, classes, learning_rate=best["learning_rate"], weight_decay=best["weight_decay"],
                          config=config)
  found = posteriors(params, mean, std, test, config.batch_size)
  scores = _score(found, test, classes, config, resamples=config.interval_resamples)
  num_frames = sum(len(c.frames) for c in trainval)
  return {"psds1": scores["psds1"], "event_f1": scores["event_f1"], "psds1_interval": scores["psds1_interval"],
          "event_f1_interval": scores["event_f1_interval"], "learning_rate": best["learning_rate"],
          "weight_decay": best["weight_decay"], "grid": grid,
          "steps": probe_lib.Schedule.for_examples(num_frames, config.probe_config()).steps,
          "num_fit": len(fit_clips), "num_valid": len(valid_clips), "num_test": len(test),
          "num_test_frames": sum(len(c.frames) for c in test), "scored_classes": scores["scored_classes"],
          "test_posteriors": found}


def clip_seconds(path) -> float:
  """The audio's duration: from the file header, else by decoding it."""
  seconds = audio_io.header_seconds(path)
  if seconds is None:
    samples, sample_rate = audio_io.decode(path)
    seconds = samples.shape[0] / sample_rate
  return float(seconds)


def frame_clips(task: sed_tasks.SedTask, embeddings: Any, split: str) -> list[FrameClip]:
  """The split's embedded clips (those that decoded) with their frames, duration and events cut at the clip's end."""
  clips = task.splits[split]
  emb = embeddings.splits[split]
  out = []
  for index, frames in zip(emb.kept, emb.frames):
    clip = clips[index]
    duration = clip_seconds(clip.path)
    out.append(FrameClip(id=clip.id, frames=frames, duration=duration, events=clip.clipped(duration)))
  return out


def evaluate_encoder(encoder, task_dirs: list, *, config: SedProbeConfig = SedProbeConfig(), cache_dir=None,
                     log=print) -> list[dict]:
  """Embeds every SED task (folders or SedTask objects) with `encoder` (an AudioEncoder, or a baseline) and runs
  the frame probe.

  -> two rows per task, metric "psds1" and "event_f1", method "frame_linear": {"task", "task_dir", "metric",
  "method", "value", "interval", "num_classes", "skipped_files", "skipped", "probe" (train_and_evaluate's
  settings and counts, without posteriors), "embed_seconds", "probe_seconds"}.
  """
  fingerprint = embed_lib.encoder_fingerprint(encoder) if cache_dir is not None else None
  memo, rows = {}, []
  for task_dir in task_dirs:
    task = task_dir if isinstance(task_dir, sed_tasks.SedTask) else sed_tasks.read_sed_task(task_dir)
    embeddings = embed_lib.embed_task(encoder, task.as_probe_task(), cache_dir=cache_dir, memo=memo,
                                      fingerprint=fingerprint, log=log)
    t0 = time.monotonic()
    splits = {split: frame_clips(task, embeddings, split) for split in task.splits}
    result = train_and_evaluate(splits["train"], splits["test"], task.classes, valid=splits.get("valid"),
                                config=config)
    seconds = time.monotonic() - t0
    summary = {k: v for k, v in result.items() if k != "test_posteriors"}
    for metric in (PSDS1, EVENT_F1):
      interval = result[f"{metric}_interval"]
      if log:
        shown = " [{:.4f}, {:.4f}]".format(*interval) if interval else ""
        log(f"[sed] {task.name} {METHOD}: {metric} {result[metric]:.4f}{shown} (lr {result['learning_rate']:g}, "
            f"wd {result['weight_decay']:g}, {result['steps']} steps, {result['scored_classes']} classes scored, "
            f"{seconds:.1f}s)")
      rows.append({"task": task.name, "task_dir": str(task.directory), "metric": metric, "method": METHOD,
                   "value": result[metric], "interval": list(interval), "num_classes": len(task.classes),
                   "skipped_files": len(embeddings.skipped), "skipped": [path for path, _ in embeddings.skipped],
                   "probe": summary, "embed_seconds": round(embeddings.seconds, 2),
                   "probe_seconds": round(seconds, 2)})
  return rows
