"""Leakage check: evaluation clips whose audio (or captions) also occur in a prepared pretraining corpus.

  python -m alp_jax.data.leakage --corpus DIR --task-dir DIR [--task-dir DIR ...] [--out report.json] [--strict]

Three checks (docs/leakage.md has the method, the thresholds, measured scores and what they miss):
  exact     sha1 of the 16 kHz int16 samples: the corpus's stored samples against each task file decoded the way
            prepare decodes (load_audio + to_int16). The same samples in another container are exact.
  near      a coarse spectral fingerprint: 32 Slaney mel bands of the power spectrum (32 ms window, 10 ms hop)
            averaged over 200 ms every 100 ms, first 10 s, in dB floored 80 dB below the clip's peak. Its
            `pattern` removes each band's mean and each frame's mean (gain, spectral colour and loudness envelope
            cancel: what is left is how the spectrum moves); two clips score the cosine of their patterns over the
            frames they share, maximised over shifts of up to +-0.5 s in 100 ms steps, with the eval clip also
            fingerprinted from 25, 50 and 75 ms in (sub-frame alignment). Stationary clips (steady tones or
            noise: pattern RMS < STATIONARY_DB) have no usable pattern: two of them are compared by spectral
            profile (the band means) instead, so distinct steady sounds of the same colour are reported too.
            A score >= NEAR_THRESHOLD (0.9) is a near duplicate. On the demo corpus, resampled and gain-changed
            copies score >= 0.999, trimmed ones >= 0.9 (95% >= 0.96), Ogg Vorbis ones 0.8-1.0 (95% >= 0.93);
            distinct renders of one synthetic voice and phrase also reach 0.9-0.99, so a near pair is a pair to
            inspect (docs/leakage.md).
  captions  eval captions (a `caption` column in a task CSV, or a caption task's jsonl captions) against DIR/captions.txt after caption tokenisation:
            the fraction that occur verbatim, and the mean fraction of each eval caption's 4-grams that occur in
            any pretraining caption (captions under 4 tokens are left out of that mean).

Task folders hold train.csv / valid.csv / test.csv with columns path,label (paths relative to the folder), or are
caption tasks (train/valid/test.jsonl: audio, captions).
The corpus is read once for all task folders; all eval clips are compared with all corpus clips with matrix
products over corpus chunks; the cost grows as eval clips x corpus clips x shifts (docs/leakage.md: about
16 us per pair on a busy 2-core machine, so 1k eval x 10k corpus clips takes about 3 minutes).

Library: read_corpus_audio (once), then check_files (audio files), check_task (one task folder) or check (the
whole report). The demo's probe-task builders (alp_jax/demo/tasks.py, ood_tasks.py, through
alp_jax/demo/redraw.py) draw again any clip this finds.

Legend: E eval clips, N corpus clips (a chunk), T coarse frames (FINGERPRINT_FRAMES), M mel bands.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader

from alp_jax.audio import io as audio_io
from alp_jax.audio.frontend import slaney_mel_filterbank
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import records
from alp_jax.data import report
from alp_jax.data.text import SPLITS, tokenize

SAMPLE_RATE = audio_io.TARGET_SAMPLE_RATE
N_FFT = 512                 # 32 ms window
HOP = 160                   # 10 ms
MEL_BANDS = 32
BLOCK = 20                  # STFT frames averaged into one coarse frame (200 ms) ...
BLOCK_HOP = 10              # ... every 100 ms
FLOOR_DB = 80.0             # below the clip's peak
MAX_SECONDS = 10.0          # the fingerprint covers a clip's first 10 s
FINGERPRINT_FRAMES = int(MAX_SECONDS * SAMPLE_RATE / HOP / BLOCK_HOP)
MAX_SHIFT_FRAMES = 5        # +-0.5 s (--max-shift-seconds)
MIN_OVERLAP = 0.5           # of the shorter clip's frames
STATIONARY_DB = 1.5         # activity below which a clip is compared by spectral profile
EVAL_OFFSETS = (0, 400, 800, 1200)  # eval fingerprints also start 25, 50, 75 ms in: sub-frame alignment
NEAR_THRESHOLD = 0.9
NGRAM = 4


def coarse_log_mel(samples: np.ndarray) -> np.ndarray:
  """16 kHz mono samples (float) -> (T', M) float32 dB of 200 ms mel energies every 100 ms, T' <= FINGERPRINT_FRAMES.

  Floored FLOOR_DB below the clip's peak (relative, so a gain change shifts every value by the same amount).
  """
  samples = np.asarray(samples, np.float32)[:int(MAX_SECONDS * SAMPLE_RATE) + N_FFT]
  if samples.size < N_FFT:
    samples = np.pad(samples, (0, N_FFT - samples.size))
  window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
  frames = np.lib.stride_tricks.sliding_window_view(samples, N_FFT)[::HOP] * window              # (F, W)
  spectrum = np.fft.rfft(frames, axis=1)                                                         # (F, K)
  power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
  mel = power @ slaney_mel_filterbank(MEL_BANDS, N_FFT, float(SAMPLE_RATE), 0.0, 0.0)            # (F, K) x (K, M)
  num_frames = mel.shape[0]
  num_blocks = min(max(1, 1 + (num_frames - BLOCK) // BLOCK_HOP), FINGERPRINT_FRAMES)
  cumulative = np.concatenate([np.zeros((1, MEL_BANDS)), np.cumsum(mel, axis=0, dtype=np.float64)])  # (F+1, M)
  block_start = np.arange(num_blocks) * BLOCK_HOP
  block_end = np.minimum(block_start + BLOCK, num_frames)
  blocks = (cumulative[block_end] - cumulative[block_start]) / (block_end - block_start)[:, None]  # (T', M)
  db = 10.0 * np.log10(np.maximum(blocks, 1e-20))
  return np.maximum(db, db.max() - FLOOR_DB).astype(np.float32)


def fingerprint(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
  """16 kHz mono float samples -> (pattern (T', M), profile (M,), activity in dB). All gain-invariant.

  pattern   coarse log-mel minus each band's mean over time and each frame's mean over bands: how the spectrum
            changes in time, without loudness envelope or spectral colour (0 in silence).
  profile   the band means minus their mean, unit norm: the spectral colour.
  activity  RMS over time and bands of (log-mel - band means): below STATIONARY_DB the clip is stationary (steady
            tones, steady noise) and its pattern is only noise, so clips are compared by profile instead.
  """
  db = coarse_log_mel(samples)
  band_mean = db.mean(axis=0)                                                  # (M,)
  residual = db - band_mean
  pattern = residual - residual.mean(axis=1, keepdims=True)
  profile = band_mean - band_mean.mean()
  profile /= max(float(np.linalg.norm(profile)), 1e-6)
  return pattern, profile.astype(np.float32), float(np.sqrt(np.mean(residual**2)))


@dataclasses.dataclass
class Fingerprints:
  """Fingerprints of N clips, patterns zero-padded to FINGERPRINT_FRAMES."""
  patterns: np.ndarray   # (N, T, M) float32
  mask: np.ndarray       # (N, T) float32, 1 on a clip's frames
  profiles: np.ndarray   # (N, M) float32, unit norm
  activity: np.ndarray   # (N,) float32, dB

  @classmethod
  def stack(cls, prints: list[tuple[np.ndarray, np.ndarray, float]]) -> "Fingerprints":
    patterns = np.zeros((len(prints), FINGERPRINT_FRAMES, MEL_BANDS), np.float32)
    mask = np.zeros((len(prints), FINGERPRINT_FRAMES), np.float32)
    for i, (pattern, _, _) in enumerate(prints):
      patterns[i, :len(pattern)] = pattern
      mask[i, :len(pattern)] = 1.0
    profiles = np.asarray([p for _, p, _ in prints], np.float32).reshape(len(prints), MEL_BANDS)
    return cls(patterns, mask, profiles, np.asarray([a for _, _, a in prints], np.float32))

  def __len__(self) -> int:
    return self.patterns.shape[0]

  def __getitem__(self, part: slice) -> "Fingerprints":
    return Fingerprints(self.patterns[part], self.mask[part], self.profiles[part], self.activity[part])


def pattern_match(eval_prints: Fingerprints, corpus_prints: Fingerprints, max_shift: int = MAX_SHIFT_FRAMES,
                  min_overlap: float = MIN_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
  """Masked cosine of every eval pattern with every corpus pattern, maximised over frame shifts.

  Eval frame t is compared with corpus frame t + s for s in [-max_shift, max_shift], over the frames both
  clips have; shifts where that overlap is under `min_overlap` of the shorter clip do not count.
  Returns (score (E, N) float32, -1 where no shift counts; shift (E, N) int, in frames).
  """
  num_eval, frames, bands = eval_prints.patterns.shape
  num_corpus = len(corpus_prints)
  eval_flat = eval_prints.patterns.reshape(num_eval, frames * bands)                     # (E, T*M)
  eval_energy = np.sum(eval_prints.patterns**2, axis=2)                                  # (E, T)
  corpus_energy = np.sum(corpus_prints.patterns**2, axis=2)                              # (N, T)
  shorter = np.minimum(eval_prints.mask.sum(1)[:, None], corpus_prints.mask.sum(1)[None, :])  # (E, N)
  pad = ((0, 0), (max_shift, max_shift))
  padded_patterns = np.pad(corpus_prints.patterns, pad + ((0, 0),))
  padded_mask, padded_energy = np.pad(corpus_prints.mask, pad), np.pad(corpus_energy, pad)
  best = np.full((num_eval, num_corpus), -1.0, np.float32)
  best_shift = np.zeros((num_eval, num_corpus), np.int64)
  for shift in range(-max_shift, max_shift + 1):
    window = slice(max_shift + shift, max_shift + shift + frames)
    shifted = padded_patterns[:, window].reshape(num_corpus, frames * bands)           # (N, T*M)
    dot = eval_flat @ shifted.T                                                         # (E, T*M) x (T*M, N) -> (E, N)
    eval_part = eval_energy @ padded_mask[:, window].T                                  # (E, T) x (T, N) -> (E, N)
    corpus_part = eval_prints.mask @ padded_energy[:, window].T                         # (E, T) x (T, N) -> (E, N)
    overlap = eval_prints.mask @ padded_mask[:, window].T                               # (E, T) x (T, N) -> (E, N)
    cosine = dot / np.sqrt(np.maximum(eval_part * corpus_part, 1e-12))
    cosine = np.where(overlap >= min_overlap * shorter, cosine, -1.0)
    better = cosine > best
    best = np.where(better, cosine, best)
    best_shift = np.where(better, shift, best_shift)
  return best, best_shift


def near_scores(eval_prints: Fingerprints, corpus_prints: Fingerprints,
                max_shift: int = MAX_SHIFT_FRAMES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(score, shift in frames, by_profile), each (E, N): the pattern cosine, or the profile cosine when both clips
  are stationary (a copy keeps its stationarity; a steady clip against a moving one is scored by pattern)."""
  pattern_score, shift = pattern_match(eval_prints, corpus_prints, max_shift)
  profile_score = eval_prints.profiles @ corpus_prints.profiles.T                       # (E, M) x (M, N) -> (E, N)
  both_stationary = ((eval_prints.activity[:, None] < STATIONARY_DB)
                     & (corpus_prints.activity[None, :] < STATIONARY_DB))
  return (np.where(both_stationary, profile_score, pattern_score), np.where(both_stationary, 0, shift),
          both_stationary)


@dataclasses.dataclass
class CorpusAudio:
  ids: list[str]
  sources: list[str]
  hashes: dict[str, int]       # sha1 -> corpus index
  prints: Fingerprints


def read_corpus_audio(corpus_dir, quiet: bool = False, batch: int = 64) -> CorpusAudio:
  """Hashes and fingerprints of every clip in a prepared corpus (reads all shards once)."""
  corpus_dir = Path(corpus_dir)
  corpus = prepare_lib.load_corpus(corpus_dir)
  progress = report.Progress(corpus["clips"], "leakage: corpus", quiet)
  ids, sources, hashes, prints = [], [], {}, []
  for source in corpus["sources"].values():
    for shard in source["shards"]:
      reader = ArrayRecordReader(str(corpus_dir / shard))
      try:
        for start in range(0, reader.num_records(), batch):
          for data in reader.read(start, min(start + batch, reader.num_records())):
            example = records.decode_example(data)
            hashes.setdefault(hashlib.sha1(example["audio"].tobytes()).hexdigest(), len(ids))
            ids.append(example["id"])
            # A clip merged from several sources (data/merge.py) names them all: "audioset_caps+audiocaps".
            sources.append("+".join(example.get("sources", [example["source"]])))
            prints.append(fingerprint(audio_io.from_int16(example["audio"])))
          progress.update(len(ids))
      finally:
        reader.close()
  return CorpusAudio(ids, sources, hashes, Fingerprints.stack(prints))


def read_task(task_dir) -> list[dict]:
  """Rows of every split of a task folder: split, path (as written), file (resolved), captions (maybe empty).

  A probe task's splits are train/valid/test.csv (path,label[,caption]); a caption task's are
  train/valid/test.jsonl (the manifest format: audio, captions)."""
  task_dir = Path(task_dir)
  rows = []
  for split in SPLITS:
    path = task_dir / f"{split}.csv"
    if path.exists():
      with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
          raise ValueError(f"{path}: no `path` column (a task CSV has columns path,label[,caption])")
        for row in reader:
          rows.append({"split": split, "path": row["path"], "file": task_dir / row["path"],
                       "captions": [row["caption"]] if row.get("caption") else []})
    path = task_dir / f"{split}.jsonl"
    if path.exists():
      for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
          audio, captions = record["audio"], [c for c in record.get("captions", []) if isinstance(c, str)]
        except (json.JSONDecodeError, KeyError, TypeError):
          raise ValueError(f"{path}:{line_no}: not a manifest line with an `audio` path") from None
        rows.append({"split": split, "path": audio, "file": task_dir / audio, "captions": captions})
  if not rows:
    raise FileNotFoundError(f"{task_dir} holds no train/valid/test .csv (probe task) or .jsonl (caption task)")
  return rows


def caption_overlap(eval_captions: list[str], corpus_captions_file, max_examples: int = 5) -> dict:
  """Exact-match fraction and mean 4-gram overlap of eval captions with the pretraining captions (streamed)."""
  normalised = [" ".join(tokenize(c)) for c in eval_captions]
  wanted_captions = set(normalised)
  wanted_grams = {g for c in normalised for g in _ngrams(c.split())}
  found_captions, found_grams = set(), set()
  with open(corpus_captions_file, encoding="utf-8") as f:
    for line in f:
      tokens = tokenize(line)
      joined = " ".join(tokens)
      if joined in wanted_captions:
        found_captions.add(joined)
      found_grams.update(g for g in _ngrams(tokens) if g in wanted_grams)
  exact = [c for c, n in zip(eval_captions, normalised) if n in found_captions]
  overlaps = []
  for n in normalised:
    grams = _ngrams(n.split())
    if grams:
      overlaps.append(sum(g in found_grams for g in grams) / len(grams))
  return {"eval_captions": len(eval_captions),
          "exact_match_fraction": len(exact) / len(eval_captions),
          f"mean_{NGRAM}gram_overlap": float(np.mean(overlaps)) if overlaps else None,
          "exact_matches": exact[:max_examples]}


def _ngrams(tokens: list[str]) -> list[tuple[str, ...]]:
  return [tuple(tokens[i:i + NGRAM]) for i in range(len(tokens) - NGRAM + 1)]


def check_files(files: list, corpus: CorpusAudio, *, threshold: float = NEAR_THRESHOLD,
                max_shift: int = MAX_SHIFT_FRAMES, chunk: int = 2048, quiet: bool = False,
                label: str = "leakage: files") -> dict:
  """Exact and near duplicates of audio files in the corpus.

  -> {"exact": {file: corpus index}, "near": {file: (corpus index, score, corpus offset s, by_profile)},
      "best": {file: (corpus index, score)} (every file compared by fingerprint), "unreadable": ["file: why"]}.
  Files are keyed by str(file).
  """
  files = [str(f) for f in files]
  progress = report.Progress(len(files), label, quiet)
  exact_of, prints, unreadable = {}, [], []  # prints[i]: one fingerprint per EVAL_OFFSETS entry, or None
  for i, file in enumerate(files, 1):
    try:
      audio = audio_io.to_int16(audio_io.load_audio(file))
    except (audio_io.AudioDecodeError, OSError) as e:
      unreadable.append(f"{file}: {e}"[:300])
      audio = np.zeros(0, np.int16)
    match = corpus.hashes.get(hashlib.sha1(audio.tobytes()).hexdigest()) if audio.size else None
    if match is not None:
      exact_of[file] = match
    samples = audio_io.from_int16(audio)
    prints.append([fingerprint(samples[offset:]) for offset in EVAL_OFFSETS] if audio.size else None)
    progress.update(i)

  near_of, best_of = {}, {}
  checked = [i for i, p in enumerate(prints) if p is not None and files[i] not in exact_of]
  if checked and corpus.ids:
    best = np.full(len(checked), -1.0)
    best_index = np.zeros(len(checked), np.int64)
    best_offset = np.zeros(len(checked))
    best_by_profile = np.zeros(len(checked), bool)
    rows_index = np.arange(len(checked))
    for o, offset in enumerate(EVAL_OFFSETS):
      eval_prints = Fingerprints.stack([prints[i][o] for i in checked])
      for start in range(0, len(corpus.ids), chunk):
        score, shift, by_profile = near_scores(eval_prints, corpus.prints[start:start + chunk], max_shift)
        column = np.argmax(score, axis=1)
        top = score[rows_index, column]
        better = top > best
        best = np.where(better, top, best)
        best_index = np.where(better, start + column, best_index)
        # Where the eval clip starts inside the corpus clip, in seconds.
        seconds = shift[rows_index, column] * BLOCK_HOP * HOP / SAMPLE_RATE - offset / SAMPLE_RATE
        best_offset = np.where(better, seconds, best_offset)
        best_by_profile = np.where(better, by_profile[rows_index, column], best_by_profile)
    for k, i in enumerate(checked):
      best_of[files[i]] = (int(best_index[k]), float(best[k]))
      if best[k] >= threshold:
        near_of[files[i]] = (int(best_index[k]), float(best[k]), float(best_offset[k]), bool(best_by_profile[k]))
  return {"exact": exact_of, "near": near_of, "best": best_of, "unreadable": unreadable}


def check_task(task_dir, corpus: CorpusAudio, corpus_dir, *, threshold: float = NEAR_THRESHOLD,
               max_shift: int = MAX_SHIFT_FRAMES, chunk: int = 2048, quiet: bool = False) -> dict:
  """Exact and near-duplicate audio, and caption overlap, of one task folder against the corpus."""
  rows = read_task(task_dir)
  files = sorted({str(r["file"]) for r in rows})
  found = check_files(files, corpus, threshold=threshold, max_shift=max_shift, chunk=chunk, quiet=quiet,
                      label=f"leakage: {task_dir}")
  exact_of, near_of = found["exact"], found["near"]
  exact, near = [], []
  for r in rows:
    file = str(r["file"])
    if file in exact_of:
      j = exact_of[file]
      exact.append({"split": r["split"], "path": r["path"], "corpus_id": corpus.ids[j],
                    "corpus_source": corpus.sources[j]})
    elif file in near_of:
      j, score, offset, by_profile = near_of[file]
      near.append({"split": r["split"], "path": r["path"], "corpus_id": corpus.ids[j],
                   "corpus_source": corpus.sources[j], "score": round(score, 4),
                   "corpus_offset_seconds": round(offset, 3),
                   "compared_by": "profile (both stationary)" if by_profile else "pattern"})
  captions = [c for r in rows for c in r["captions"]]
  scores = [score for _, score in found["best"].values()]
  result = {"task_dir": str(task_dir), "rows": len(rows), "clips": len(files),
            "exact": exact, "near": near, "unreadable": found["unreadable"],
            "leaked_rows": {s: sum(1 for x in exact + near if x["split"] == s) for s in SPLITS},
            "max_near_score": round(max(scores), 4) if scores else None}
  if captions:
    result["captions"] = caption_overlap(captions, Path(corpus_dir) / "captions.txt")
  return result


def check(corpus_dir, task_dirs, *, corpus: CorpusAudio | None = None, threshold: float = NEAR_THRESHOLD,
          max_shift: int = MAX_SHIFT_FRAMES, quiet: bool = False) -> dict:
  """The full report of every task folder against a prepared corpus (read here unless `corpus` is given)."""
  start = time.monotonic()
  if corpus is None:
    corpus = read_corpus_audio(corpus_dir, quiet=quiet)
  tasks = [check_task(t, corpus, corpus_dir, threshold=threshold, max_shift=max_shift, quiet=quiet)
           for t in task_dirs]
  settings = {"near_threshold": threshold, "max_shift_seconds": max_shift * BLOCK_HOP * HOP / SAMPLE_RATE,
              "min_overlap": MIN_OVERLAP, "stationary_db": STATIONARY_DB, "fingerprint_seconds": MAX_SECONDS,
              "mel_bands": MEL_BANDS}
  return {"corpus": str(corpus_dir), "corpus_clips": len(corpus.ids),
          "exact": sum(len(t["exact"]) for t in tasks), "near": sum(len(t["near"]) for t in tasks),
          "leaked_rows": sum(len(t["exact"]) + len(t["near"]) for t in tasks), "tasks": tasks,
          "settings": settings, "seconds": round(time.monotonic() - start, 2)}


def summary_lines(report_json: dict, show: int = 5) -> list[str]:
  lines = [f"[leakage] corpus {report_json['corpus']}: {report_json['corpus_clips']} clips; near threshold "
           f"{report_json['settings']['near_threshold']}"]
  for task in report_json["tasks"]:
    lines.append(f"  {task['task_dir']}: {task['clips']} clips in {task['rows']} rows; exact {len(task['exact'])}, "
                 f"near {len(task['near'])} rows (by split: "
                 + ", ".join(f"{s} {n}" for s, n in task["leaked_rows"].items()) + ")"
                 + ("" if task.get("max_near_score") is None else f"; highest score {task['max_near_score']:.3f}"))
    for x in task["exact"][:show]:
      lines.append(f"      exact  {x['split']:<5} {x['path']}  = corpus {x['corpus_id']} ({x['corpus_source']})")
    for x in task["near"][:show]:
      lines.append(f"      near   {x['split']:<5} {x['path']}  ~ corpus {x['corpus_id']} ({x['corpus_source']}) "
                   f"score {x['score']:.3f} at {x['corpus_offset_seconds']:+.2f}s by {x['compared_by']}")
    if task["unreadable"]:
      lines.append(f"      {len(task['unreadable'])} unreadable file(s), e.g. {task['unreadable'][0]}")
    if "captions" in task:
      c = task["captions"]
      overlap = c[f"mean_{NGRAM}gram_overlap"]
      lines.append(f"      captions: {c['eval_captions']}, verbatim in pretraining {c['exact_match_fraction']:.1%}, "
                   f"mean {NGRAM}-gram overlap " + ("n/a" if overlap is None else f"{overlap:.1%}"))
    else:
      lines.append("      captions: none (no `caption` column or caption task), not compared")
  exact, near = report_json["exact"], report_json["near"]
  verdict = "clean" if exact + near == 0 else "LEAKED"
  lines.append(f"[leakage] {verdict}: {exact} exact, {near} near rows in {len(report_json['tasks'])} task folder(s)")
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.data.leakage", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus", required=True, help="prepared corpus folder (has corpus.json)")
  parser.add_argument("--task-dir", action="append", required=True, help="probe task (train/valid/test.csv) or caption task (*.jsonl) folder")
  parser.add_argument("--out", help="write the full report (every pair) as JSON here")
  parser.add_argument("--threshold", type=float, default=NEAR_THRESHOLD, help="near-duplicate cosine threshold")
  parser.add_argument("--max-shift-seconds", type=float, default=MAX_SHIFT_FRAMES * BLOCK_HOP * HOP / SAMPLE_RATE)
  parser.add_argument("--show", type=int, default=5, help="offending pairs printed per kind and task")
  parser.add_argument("--strict", action="store_true", help="exit 1 when any exact or near duplicate is found")
  parser.add_argument("--quiet", action="store_true")
  args = parser.parse_args(argv)
  max_shift = int(round(args.max_shift_seconds * SAMPLE_RATE / HOP / BLOCK_HOP))
  try:
    result = check(args.corpus, args.task_dir, threshold=args.threshold, max_shift=max_shift, quiet=args.quiet)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  leaks = result["leaked_rows"]
  print("\n".join(summary_lines(result, args.show)))
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"[leakage] full report: {args.out}")
  print(f"[leakage] {leaks} leaked row(s) in {result['seconds']:.1f}s")
  return 1 if args.strict and leaks else 0


if __name__ == "__main__":
  sys.exit(main())
