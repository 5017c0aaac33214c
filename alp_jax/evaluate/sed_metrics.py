"""SED metrics on frame posteriors: PSDS1 and collar-based event F1, computed by sed_scores_eval (the DCASE task 4
evaluation package, github.com/fgnt/sed_scores_eval), with percentile-bootstrap intervals over clips.

Legend: T frames of one clip, C classes, N clips.

  posteriors  {clip_id: (T, C) sigmoid outputs}, frame t covering [t d/T, (t+1) d/T) of the clip's d seconds
  events      {clip_id: [(onset, offset, label), ...]}  (sed_tasks.Event or plain tuples; same-label overlaps merged)
  durations   {clip_id: d seconds}

  PSDS1     intersection-based PSD-ROC area (DCASE 2021-2024 task 4 scenario 1, as its baseline calls
            sed_scores_eval): dtc 0.7, gtc 0.7, no cross-trigger term (cttc None, alpha_ct 0), alpha_st 1 (the
            per-class TPR spread is subtracted), up to 100 false positives per hour. Threshold-independent: the
            posteriors themselves are scored, no binarisation or median filter.
  event F1  collar-based (event-based, as sed_eval counts it) at threshold 0.5: an onset within 200 ms, an offset
            within max(200 ms, 20% of the event's length), one-to-one matching; F1 per class, macro-averaged.
Only classes with at least one event among the scored clips are scored (as mAP skips classes without positives):
a class without reference events has no true-positive rate.

  result = evaluate(posteriors, events, durations, classes)   # {"psds1", "event_f1", intervals, ...}

sed_scores_eval is the optional `sed` extra (pip install 'alp_jax[sed]'; make setup installs it); it is imported on
first use, so the rest of the evaluation package runs without it.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from alp_jax.evaluate import sed_tasks
from alp_jax.evaluate import stats

PSDS1 = {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0, "alpha_st": 1.0,
         "unit_of_time": "hour", "max_efpr": 100.0}
EVENT_F1 = {"threshold": 0.5, "onset_collar": 0.2, "offset_collar": 0.2, "offset_collar_rate": 0.2}
INTERVAL_RESAMPLES = 100   # each draw rebuilds the PSD-ROC (evaluate); the probes' 1000 would take too long


class MissingSedLibrary(ImportError):
  """sed_scores_eval is not installed."""


def library():
  """The sed_scores_eval module; MissingSedLibrary saying what to install when it is absent."""
  try:
    import sed_scores_eval
  except ImportError as e:
    raise MissingSedLibrary("SED metrics need the sed_scores_eval package: pip install 'alp_jax[sed]' "
                            f"(or make setup) ({e})") from e
  return sed_scores_eval


def score_dataframes(posteriors: Mapping[str, np.ndarray], durations: Mapping[str, float],
                     classes: list[str]) -> dict:
  """{clip_id: sed_scores_eval score DataFrame}: (T, C) posteriors on T equal frames spanning the clip."""
  create = library().base_modules.scores.create_score_dataframe
  frames = {}
  for clip_id, scores in posteriors.items():
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(classes) or len(scores) == 0:
      raise ValueError(f"{clip_id}: posteriors must be (T > 0, {len(classes)}), got {scores.shape}")
    timestamps = np.linspace(0.0, float(durations[clip_id]), len(scores) + 1)   # (T+1,)
    frames[clip_id] = create(scores, timestamps, list(classes))
  return frames


def ground_truth(events: Mapping[str, Iterable]) -> dict[str, list[tuple[float, float, str]]]:
  """{clip_id: [(onset, offset, label), ...]} from sed_tasks.Event lists or tuples; same-label events that overlap
  or touch are merged (sed_scores_eval refuses them)."""
  def as_event(event) -> sed_tasks.Event:
    onset, offset, label = (event.onset, event.offset, event.label) if hasattr(event, "onset") else event
    return sed_tasks.Event(float(onset), float(offset), str(label))
  return {clip_id: [(e.onset, e.offset, e.label) for e in sed_tasks.merge_events([as_event(e) for e in found])]
          for clip_id, found in events.items()}


def scored_classes(truth: Mapping[str, list]) -> list[str]:
  """Classes with at least one reference event, sorted."""
  return sorted({label for found in truth.values() for _, _, label in found})


def _restrict(posteriors: Mapping[str, np.ndarray], classes: list[str], keep: list[str]) -> dict[str, np.ndarray]:
  columns = [classes.index(c) for c in keep]
  return {clip_id: np.asarray(p)[:, columns] for clip_id, p in posteriors.items()}


def psds1(scores: dict, truth: dict, durations: Mapping[str, float]) -> float:
  """PSDS1 of score DataFrames (score_dataframes) against `truth` (ground_truth)."""
  value, *_ = library().intersection_based.psds(scores, truth, dict(durations), **PSDS1)
  return float(value)


def event_f1(scores: dict, truth: dict) -> float:
  """Macro-averaged collar-based event F1 at threshold 0.5 (EVENT_F1)."""
  f1, *_ = library().collar_based.fscore(scores, truth, **EVENT_F1)
  return float(f1["macro_average"])


def _psds1_deltas(scores, truth):
  parameters = {k: PSDS1[k] for k in ("dtc_threshold", "gtc_threshold", "cttc_threshold")}
  return library().intersection_based.intermediate_statistics_deltas(scores=scores, ground_truth=truth, **parameters)


def event_f1_counts(scores: dict, truth: dict, ids: list[str], classes: list[str]) -> np.ndarray:
  """(N, C, 3) per clip and class: true positives, false positives and reference events at the F1 threshold.
  The library's collar-based statistics of all clips are computed once, then read per clip at the threshold by
  the library's own curve lookup (collar matching never crosses clips, so the counts add up over clips)."""
  lib = library()
  parameters = {k: v for k, v in EVENT_F1.items() if k != "threshold"}
  deltas = lib.collar_based.intermediate_statistics_deltas(scores, truth, **parameters)
  curve_index = lib.base_modules.curves.get_curve_idx_for_threshold
  counts = np.zeros((len(ids), len(classes), 3), np.int64)
  for row, clip_id in enumerate(ids):
    clip_stats = lib.collar_based.intermediate_statistics.accumulated_intermediate_statistics_from_deltas(
        {clip_id: deltas[clip_id]}, {clip_id: truth[clip_id]})
    for column, name in enumerate(classes):
      change_points, found = clip_stats[name]
      index = curve_index(change_points, EVENT_F1["threshold"])
      counts[row, column] = found["tps"][index], found["fps"][index], found["n_ref"]
  return counts


def macro_f1_from_counts(counts: np.ndarray) -> float:
  """Macro F1 over classes from (C, 3) summed [true positives, false positives, reference events]; a class with
  no reference event gives NaN (callers skip such draws). F1 = 2 TP / (2 TP + FP + FN), FN = references - TP."""
  tps, fps, refs = counts[..., 0].astype(np.float64), counts[..., 1], counts[..., 2]
  if np.any(refs == 0):
    return float("nan")
  return float(np.mean(2.0 * tps / (tps + fps + refs)))


def _resampled(rows: np.ndarray, ids: list[str], per_clip: tuple[dict, ...]) -> tuple[dict, ...]:
  """The clips `rows` (with repeats) of each {clip_id: value} dict, under fresh ids so repeats count twice."""
  return tuple({f"{ids[r]}#{k}": values[ids[r]] for k, r in enumerate(rows)} for values in per_clip)


def evaluate(posteriors: Mapping[str, np.ndarray], events: Mapping[str, Iterable], durations: Mapping[str, float],
             classes: list[str], *, resamples: int = INTERVAL_RESAMPLES, level: float = stats.LEVEL,
             seed: int = 0) -> dict:
  """PSDS1 and event F1 of the clips' posteriors, with percentile-bootstrap intervals over clips.

  Each of `resamples` draws takes N clips with replacement (stats.bootstrap_interval: the probes' draws and
  percentiles). PSDS1 is recomputed by the library from per-clip intermediate statistics ("deltas") computed once
  (the PSD-ROC is rebuilt per draw: ~0.7 s per draw for 200 clips of 10 s and 10 classes on a loaded 2-core CPU);
  event F1 from per-clip TP/FP/reference counts at the threshold (sums, exact). A draw in which a scored class has
  no event is skipped (that class's TPR and recall are undefined). resamples=0: no intervals.
  -> {"psds1", "event_f1", "psds1_interval", "event_f1_interval" ([low, high] or []), "scored_classes",
      "num_clips", "num_events", "hours"}.
  """
  lib = library()
  truth = ground_truth(events)
  ids = sorted(posteriors)
  missing = sorted(set(ids) - set(truth) - set(durations))
  if missing:
    raise ValueError(f"clips without events list or duration: {missing[:5]}")
  keep = scored_classes({i: truth[i] for i in ids})
  if not keep:
    raise ValueError("no reference event among the scored clips: PSDS and F1 are undefined")
  scores = score_dataframes(_restrict({i: posteriors[i] for i in ids}, classes, keep), durations, keep)
  truth = {i: truth[i] for i in ids}
  clip_durations = {i: float(durations[i]) for i in ids}
  result = {"psds1": psds1(scores, truth, clip_durations), "event_f1": event_f1(scores, truth),
            "psds1_interval": [], "event_f1_interval": [], "scored_classes": len(keep), "num_clips": len(ids),
            "num_events": sum(len(v) for v in truth.values()), "hours": sum(clip_durations.values()) / 3600.0}
  if resamples > 0:
    psds_deltas, f1_counts = _psds1_deltas(scores, truth), event_f1_counts(scores, truth, ids, keep)

    def draw_psds1(rows):
      deltas, draw_truth, draw_durations = _resampled(rows, ids, (psds_deltas, truth, clip_durations))
      if len(scored_classes(draw_truth)) < len(keep):
        return float("nan")
      value, *_ = lib.intersection_based.psds(None, draw_truth, draw_durations, deltas=deltas, **PSDS1)
      return float(value)

    rows = (np.arange(len(ids)),)
    result["psds1_interval"] = list(stats.bootstrap_interval(draw_psds1, rows, resamples=resamples, level=level,
                                                             seed=seed))
    result["event_f1_interval"] = list(stats.bootstrap_interval(
        lambda rows: macro_f1_from_counts(f1_counts[rows].sum(axis=0)), rows, resamples=resamples, level=level,
        seed=seed))
  return result
