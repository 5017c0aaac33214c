"""Out-of-distribution probe tasks: sounds the demo corpus does not contain, from another synthesis path.

  python -m alp_jax.demo.ood_tasks --out DIR [--corpus CORPUS_DIR] [--clips-per-class 36] [--seed 2000] [--workers W]

The demo corpus and the demo probe tasks are made by espeak-ng, fluidsynth with the TimGM6mb soundfont and sox
at 16 kHz mono. These tasks are computed with NumPy alone (alp_jax/demo/ood_synth.py: additive, naive pulse and
sawtooth, FM, Karplus-Strong, bowed-with-vibrato notes; clicks, band-passed bursts, bounces, drips, claps,
knocks), at other sample rates and channel counts, so a pretrained encoder's gain on them says whether it holds
out of distribution. Three task folders in the probe-task format (train.csv/test.csv: path,label, paths
relative to the task folder, audio under DIR/audio/):

  ood_timbre   label = how the note was made (ood_synth.TIMBRES); pitch uniform over MIDI 45-81 (3 octaves),
               1-3 s, peak -24..-3 dBFS; 44.1 kHz stereo (right channel 0-2 samples late, +-1.5 dB: the downmix's
               first comb notch is at 11 kHz or above, outside the encoder's 16 kHz band)
  ood_pitch    label = pitch class of the note, 6 whole-tone classes (PITCH_CLASSES), octave 3, 4 or 5,
               +-15 cents; the timbres crossed with the classes (FM with harmonic ratios here, so every note
               has a definite pitch); 22.05 kHz mono
  ood_events   label = event type (ood_synth.EVENTS), half of the clips over low background noise; 8 kHz mono

Every class has clips_per_class clips; TEST_FRACTION of each class (seeded) is the test split, so the default
36 clips per class give 6 x 18 = 108 test clips per task. WAVs are 16-bit PCM written with the standard
library's `wave`. The same seed gives byte-identical files; DIR/ood_tasks.json records the settings and every
clip's parameters, and a rerun with the same settings reuses the audio.

Another synthesis path does not make every clip new to the leakage check (alp_jax/data/leakage.py): a sustained
square, sawtooth, additive or bowed note has no spectral movement the fingerprint sees, so it is compared with
the corpus's steady tones by spectral profile, and against the demo corpus 63 of the 432 default notes (up to
40% of the sawtooth and bowed ones) matched one (score 0.96-0.99).
With --corpus every rendered clip is checked against the prepared corpus and each exact or near duplicate is
drawn again from the next attempt seed of its slot (same task, class and file name; alp_jax/demo/redraw.py)
until none is left, as the in-distribution tasks do (alp_jax/demo/tasks.py). The build file records the check,
the replacements and the highest remaining score; the corpus's fingerprint is part of the settings a rerun
must match to reuse the audio.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import wave
from pathlib import Path

import numpy as np

from alp_jax.data import leakage
from alp_jax.demo import ood_synth
from alp_jax.demo import redraw

DEFAULT_CLIPS_PER_CLASS = 36
DEFAULT_SEED = 2000
TEST_FRACTION = 0.5
CLIP_SECONDS = (1.0, 3.0)
GAIN_DB = (-24.0, -3.0)
PITCH_CLASSES = ("C", "D", "E", "F#", "G#", "A#")   # whole-tone steps, as the demo's pitch_class task
BUILD_FILE = "ood_tasks.json"
BUILD_VERSION = 2     # 2: attempts (leakage re-draws) and the corpus checked against
# task -> (classes, sample rate, channels)
TASKS = {
    "ood_timbre": (ood_synth.TIMBRES, 44100, 2),
    "ood_pitch": (PITCH_CLASSES, 22050, 1),
    "ood_events": (ood_synth.EVENTS, 8000, 1),
}


def _draw(task: str, class_index: int, i: int, seed: int, attempt: int = 0) -> dict:
  """Clip i of one class of one task: its file, label and synthesis parameters. The file and label depend on
  the slot (task, class, i) only; the parameters on (seed, slot, attempt), attempt 0 being the first draw and
  k the k-th replacement (a leakage re-draw)."""
  task_index = list(TASKS).index(task)
  classes, rate, channels = TASKS[task]
  # Attempt 0 keeps the original seeds; a re-draw appends (0, k), which no first-draw seed sequence starts with.
  key = [seed, task_index, class_index, i] + ([0, attempt] if attempt else [])
  rng = np.random.default_rng(key)
  seconds = float(rng.uniform(*CLIP_SECONDS))
  if task == "ood_timbre":
    attrs = ood_synth.sample_note(rng, classes[class_index], rng.uniform(45.0, 81.0), seconds)
    attrs.update(delay_samples=int(rng.integers(0, 3)), balance_db=round(float(rng.uniform(-1.5, 1.5)), 3))
  elif task == "ood_pitch":
    timbre = ood_synth.TIMBRES[(i + class_index) % len(ood_synth.TIMBRES)]   # every class meets every timbre
    midi = 48 + 12 * int(rng.integers(3)) + 2 * class_index + rng.uniform(-0.15, 0.15)
    attrs = ood_synth.sample_note(rng, timbre, midi, seconds, harmonic=True)
  else:
    attrs = ood_synth.sample_event(rng, classes[class_index], seconds)
  attrs["gain_db"] = round(float(rng.uniform(*GAIN_DB)), 3)
  return {"file": _file(task, class_index, i), "task": task, "label": classes[class_index],
          "sample_rate": rate, "channels": channels, "attrs": attrs,
          "noise_seed": key + [1], "slot": (task, class_index, i), "attempt": attempt}


def _file(task: str, class_index: int, i: int) -> str:
  return f"audio/{task}-{class_index * 10000 + i:05d}.wav"


def plan(clips_per_class: int, seed: int, attempts: dict[str, int] | None = None) -> list[dict]:
  """Every clip of every task (no audio yet): classes balanced, clips_per_class each.

  `attempts` ({file: k}, from a build file) picks the k-th replacement draw of those clips."""
  attempts = attempts or {}
  return [_draw(task, c, i, seed, attempts.get(_file(task, c, i), 0)) for task, (classes, _, _) in TASKS.items()
          for c in range(len(classes)) for i in range(clips_per_class)]


def render(clip: dict) -> np.ndarray:
  """(N, C) float samples in [-1, 1] of one planned clip."""
  attrs, rate = clip["attrs"], clip["sample_rate"]
  if clip["task"] == "ood_events":
    mono = ood_synth.render_event(attrs, rate, clip["noise_seed"]) * 10 ** (attrs["gain_db"] / 20)
    if attrs["background_db"] is not None:
      noise_rng = np.random.default_rng(clip["noise_seed"] + [2])
      mono = mono + ood_synth.background(len(mono), attrs["background_db"], noise_rng)
  else:
    mono = ood_synth.render_note(attrs, rate, clip["noise_seed"]) * 10 ** (attrs["gain_db"] / 20)
  if clip["channels"] == 1:
    return np.clip(mono, -1.0, 1.0)[:, None]
  delay, balance = attrs["delay_samples"], 10 ** (attrs["balance_db"] / 20)
  right = np.concatenate([np.zeros(delay), mono[:len(mono) - delay]]) * balance
  return np.clip(np.stack([mono, right], axis=1), -1.0, 1.0)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
  """(N, C) floats in [-1, 1] -> 16-bit PCM WAV (standard library `wave`: no timestamps, same bytes each time)."""
  pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
  tmp = path.with_suffix(".tmp.wav")
  with wave.open(str(tmp), "wb") as f:
    f.setnchannels(samples.shape[1])
    f.setsampwidth(2)
    f.setframerate(sample_rate)
    f.writeframes(pcm.tobytes())
  os.replace(tmp, path)


def split(clips: list[dict], seed: int) -> dict[str, list[dict]]:
  """Stratified: a seeded TEST_FRACTION of every class (at least one, never all when there are two) is test."""
  rng = np.random.default_rng([seed, 99])
  test = set()
  by_class: dict[str, list[dict]] = {}
  for clip in clips:
    by_class.setdefault(clip["label"], []).append(clip)
  for label in sorted(by_class):
    items = by_class[label]
    count = min(max(1, int(round(TEST_FRACTION * len(items)))), max(1, len(items) - 1))
    test.update(items[k]["file"] for k in rng.permutation(len(items))[:count])
  return {"train": [c for c in clips if c["file"] not in test], "test": [c for c in clips if c["file"] in test]}


def _write_task(task_dir: Path, splits: dict[str, list[dict]]) -> None:
  task_dir.mkdir(parents=True, exist_ok=True)
  for name, rows in splits.items():
    with open(task_dir / f"{name}.csv", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["path", "label"])
      writer.writerows((f"../{clip['file']}", clip["label"]) for clip in rows)


def _render_all(clips: list[dict], out_dir: Path, workers: int, quiet: bool) -> float:
  """Renders and writes every clip; -> clips per second."""
  return redraw.render_all(clips, lambda clip: write_wav(out_dir / clip["file"], render(clip), clip["sample_rate"]),
                           workers=workers, quiet=quiet, label="[ood_tasks] rendered {done}/{total} clips", every=100)


def build_ood_tasks(out_dir: str | os.PathLike, *, clips_per_class: int = DEFAULT_CLIPS_PER_CLASS,
                    seed: int = DEFAULT_SEED, corpus_dir: str | os.PathLike | None = None, corpus=None,
                    workers: int | None = None, quiet: bool = False) -> dict[str, Path]:
  """Renders the clips (reused when a previous build had the same settings) and writes the task folders.

  With `corpus_dir` (a prepared corpus; `corpus`: its leakage.read_corpus_audio, when already read) every
  clip that is an exact or near duplicate of a corpus clip is drawn and rendered again until none is
  (module docstring); the build file records the check. -> {task name: task folder}."""
  if clips_per_class < 2:
    raise ValueError(f"clips_per_class={clips_per_class}: need at least 2 (one train, one test clip per class)")
  out_dir = Path(out_dir).absolute()
  corpus_id = redraw.corpus_key(corpus_dir)
  settings = {"version": BUILD_VERSION, "clips_per_class": clips_per_class, "seed": seed,
              "test_fraction": TEST_FRACTION, "clip_seconds": list(CLIP_SECONDS),
              "tasks": {task: {"classes": list(classes), "sample_rate": rate, "channels": channels}
                        for task, (classes, rate, channels) in TASKS.items()},
              "corpus": corpus_id}
  build_file = out_dir / BUILD_FILE
  previous = json.loads(build_file.read_text()) if build_file.exists() else {}
  same = previous.get("settings") == settings
  clips = plan(clips_per_class, seed, previous.get("attempts") if same else None)
  reuse = same and all((out_dir / c["file"]).exists() for c in clips)
  rate = None
  check = previous.get("leakage_check") if reuse else None
  if not reuse:
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    build_file.unlink(missing_ok=True)   # a half-finished rebuild must not look finished
    workers = workers or min(8, os.cpu_count() or 1)
    rate = _render_all(clips, out_dir, workers, quiet)
    if corpus_dir is not None:
      if corpus is None:
        corpus = leakage.read_corpus_audio(corpus_dir, quiet=quiet)
      check = redraw.replace_leaked(
          clips, out_dir, corpus, redraw=lambda clip: _draw(*clip["slot"], seed, clip["attempt"] + 1),
          render=lambda again: _render_all(again, out_dir, workers, True),
          group=lambda file: Path(file).stem.rsplit("-", 1)[0], group_name="task", name="ood_tasks",
          what="OOD task clip", quiet=quiet)
    build_file.write_text(json.dumps({"settings": settings, "clips_per_second": round(rate, 1),
                                      "attempts": {c["file"]: c["attempt"] for c in clips if c["attempt"]},
                                      "leakage_check": check,
                                      "clips": [{k: c[k] for k in ("file", "task", "label", "attempt", "attrs")}
                                                for c in clips]}, indent=1))
  task_dirs = {}
  for task in TASKS:
    task_dirs[task] = out_dir / task
    splits = split([c for c in clips if c["task"] == task], seed + list(TASKS).index(task))
    _write_task(task_dirs[task], splits)
  if not quiet:
    how = "reused" if reuse else f"rendered at {rate:.1f} clips/s"
    sizes = ", ".join(f"{task} ({len(TASKS[task][0])} classes)" for task in TASKS)
    print(f"[ood_tasks] {len(clips)} clips ({how}), {clips_per_class} per class, tasks {sizes} -> {out_dir}")
    if check is None:
      print("[ood_tasks] not checked for leakage (no corpus given)")
    else:
      print(f"[ood_tasks] leakage check against {corpus_dir} ({check['corpus_clips']} clips): "
            f"{check['replaced']} clip(s) drawn again {check['replaced_by_task']}, none left; highest score "
            f"{check['max_score']} (near >= {check['near_threshold']})")
  return task_dirs


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.demo.ood_tasks", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="folder for audio/, the task folders and ood_tasks.json")
  parser.add_argument("--corpus", help="prepared pretraining corpus: re-draw any clip that duplicates one of its clips")
  parser.add_argument("--clips-per-class", type=int, default=DEFAULT_CLIPS_PER_CLASS)
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
  parser.add_argument("--workers", type=int, default=None, help="render threads (default: CPUs, at most 8)")
  parser.add_argument("--quiet", action="store_true")
  args = parser.parse_args(argv)
  try:
    build_ood_tasks(args.out, clips_per_class=args.clips_per_class, seed=args.seed, corpus_dir=args.corpus,
                    workers=args.workers, quiet=args.quiet)
  except (ValueError, OSError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
