"""The demo's sound event detection task: soundscapes of sox-synthesised events over a background texture, with
their strong labels (alp_jax/evaluate/sed_tasks.py format).

  python -m alp_jax.demo.sed_task --out DIR [--clips 96] [--seed 2000] [--workers N]

Each clip is CLIP_SECONDS of 16 kHz mono: a background texture (noise, rain, wind, engine, waves or hum) 15-25 dB
below the events, and 1-3 events of EVENT_CLASSES, each 0.8-2.5 s long at a random onset (events of different
classes may overlap: the task is polyphonic), each at its own level. The label of an event is its sound type and
its onset/offset are where it was placed (a beeping or ticking event spans its whole sequence of beeps, as DESED
labels an alarm). A seeded quarter of the clips is the test split, the rest train (the probe carves its
validation clips). Writes DIR/audio/*.wav, DIR/train.tsv, DIR/test.tsv and DIR/task.json; a second build with
the same settings reuses the audio. Needs sox (make sysdeps). The clips are not checked against a pretraining
corpus for leakage: they are new mixtures, but their event sounds come from the same synthesiser as the corpus's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from alp_jax.demo import redraw
from alp_jax.demo import synth as demo_synth
from alp_jax.demo import sysdeps

EVENT_CLASSES = ("tone", "sweep", "beeping", "siren", "phone ringing", "ticking")
BACKGROUNDS = demo_synth.TEXTURE_SOUNDS
CLIP_SECONDS = 8.0
SAMPLE_RATE = 16000
DEFAULT_CLIPS, DEFAULT_SEED = 96, 2000
TEST_FRACTION = 0.25
BUILD_FILE = "demo_sed_task.json"
BUILD_VERSION = 1


def _draw_clip(index: int, seed: int) -> dict:
  """Everything about clip `index` (rendering is then deterministic): background, events with times and levels."""
  rng = np.random.default_rng([seed, index])
  background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
  events = []
  for _ in range(int(rng.integers(1, 4))):
    label = EVENT_CLASSES[int(rng.integers(len(EVENT_CLASSES)))]
    seconds = round(float(rng.uniform(0.8, 2.5)), 2)
    onset = round(float(rng.uniform(0.0, CLIP_SECONDS - seconds)), 2)
    sound = {**demo_synth.sample_sound(rng, seconds, label), "sample_rate": SAMPLE_RATE, "channels": 1,
             "background": None, "peak_dbfs": round(float(rng.uniform(-12.0, -3.0)), 2)}
    events.append({"label": label, "onset": onset, "offset": round(onset + seconds, 2), "sound": sound})
  texture = {**demo_synth.sample_sound(rng, CLIP_SECONDS, background), "sample_rate": SAMPLE_RATE, "channels": 1,
             "background": None, "peak_dbfs": 0.0}
  return {"file": f"audio/sed-{index:04d}.wav", "events": events, "background": texture,
          "below_db": round(float(rng.uniform(15.0, 25.0)), 1)}


def _render(clip: dict, out_dir: Path) -> None:
  """The clip's wav: its events placed at their onsets over the background scaled below their mean RMS."""
  total = int(round(CLIP_SECONDS * SAMPLE_RATE))
  mix = np.zeros(total, np.float32)
  with tempfile.TemporaryDirectory(prefix="alp_demo_sed_") as work_dir:
    levels = []
    for event in clip["events"]:
      audio, _ = demo_synth.render_sound(event["sound"], Path(work_dir))   # (S,1) at 16 kHz
      start = int(round(event["onset"] * SAMPLE_RATE))
      body = audio[:total - start, 0]
      mix[start:start + len(body)] += body
      levels.append(float(np.sqrt(np.mean(np.square(body, dtype=np.float64)))))
    texture, _ = demo_synth.render_sound(clip["background"], Path(work_dir))
  texture = texture[:total, 0]
  texture_rms = float(np.sqrt(np.mean(np.square(texture, dtype=np.float64))))
  mix[:len(texture)] += texture * np.float32(np.mean(levels) / texture_rms * 10 ** (-clip["below_db"] / 20))
  mix *= np.float32(min(1.0, 0.99 / float(np.max(np.abs(mix)))))   # no clipping where events overlap
  sf.write(out_dir / clip["file"], mix, SAMPLE_RATE, subtype="PCM_16")


def _write_split(path: Path, clips: list[dict]) -> None:
  rows = ["filename\tonset\toffset\tevent_label\n"]
  for clip in clips:
    name = Path(clip["file"]).name
    rows += [f"{name}\t{e['onset']:.2f}\t{e['offset']:.2f}\t{e['label']}\n" for e in clip["events"]]
  path.write_text("".join(rows))


def build_demo_sed_task(out_dir: str | os.PathLike, *, clips: int = DEFAULT_CLIPS, seed: int = DEFAULT_SEED,
                        workers: int | None = None, quiet: bool = False) -> Path:
  """Renders the clips (reused when a previous build had the same settings) and writes the SED task folder
  (module docstring). -> the folder."""
  out_dir = Path(out_dir).absolute()
  settings = {"version": BUILD_VERSION, "clips": clips, "seed": seed, "clip_seconds": CLIP_SECONDS,
              "classes": list(EVENT_CLASSES)}
  drawn = [_draw_clip(i, seed) for i in range(clips)]
  build_file = out_dir / BUILD_FILE
  previous = json.loads(build_file.read_text()) if build_file.exists() else {}
  if previous.get("settings") != settings or not all((out_dir / c["file"]).exists() for c in drawn):
    sysdeps.require_binaries(("sox",))
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    if build_file.exists():
      build_file.unlink()   # a half-finished rebuild must not look finished
    rate = redraw.render_all(drawn, lambda clip: _render(clip, out_dir), workers=workers or 2 * (os.cpu_count() or 1),
                             quiet=quiet, label="[demo_sed_task] rendered {done}/{total} clips")
    build_file.write_text(json.dumps({"settings": settings, "files": [c["file"] for c in drawn]}, indent=1))
    how = f"rendered at {rate:.1f} clips/s"
  else:
    how = "reused"
  test = set(np.random.default_rng(seed).permutation(clips)[:max(1, int(round(TEST_FRACTION * clips)))].tolist())
  _write_split(out_dir / "train.tsv", [c for i, c in enumerate(drawn) if i not in test])
  _write_split(out_dir / "test.tsv", [c for i, c in enumerate(drawn) if i in test])
  (out_dir / "task.json").write_text(json.dumps({"audio_dir": "audio", "classes": sorted(EVENT_CLASSES)}) + "\n")
  if not quiet:
    events = sum(len(c["events"]) for c in drawn)
    print(f"[demo_sed_task] {clips} clips of {CLIP_SECONDS:g} s, {events} events of {len(EVENT_CLASSES)} classes "
          f"({how}), {len(test)} test clips -> {out_dir}")
  return out_dir


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.demo.sed_task", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS)
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
  parser.add_argument("--workers", type=int, default=None)
  args = parser.parse_args(argv)
  try:
    build_demo_sed_task(args.out, clips=args.clips, seed=args.seed, workers=args.workers)
  except (sysdeps.MissingSystemPackage, demo_synth.SynthesisError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
