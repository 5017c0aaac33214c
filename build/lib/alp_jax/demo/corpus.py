"""The built-in demo corpus: speech, music and sound clips synthesised locally, captioned, then prepared.

  python -m alp_jax.data.demo_corpus --out DIR [--clips N] [--seed S] [--workers W] [--clip-seconds X]

(`alp_jax.data.demo_corpus` is the public name of this command: `python -m alp_jax.demo.corpus` is the same.)

Needs the system programs espeak-ng, sox and fluidsynth and the TimGM6mb soundfont
(`bash launch/install_system_packages.sh`); without them it says what to install and exits 2.

Writes into DIR:
  raw/audio/<source>/<id>.wav        clips at their tools' own rates (16-48 kHz, mono and stereo, 16/24-bit)
  raw/manifests/<source>.jsonl       one record a clip: id, audio, 3-5 captions, source, duration, split, labels
  raw/demo_build.json                the build settings (a rerun with the same settings reuses the clips)
and then runs the same prepare step as any real corpus (shards/, index/, captions.txt, corpus.json).

Four sources of unequal size, so the hours-weighted mixture is meaningful: demo_speech (espeak-ng voices),
demo_music (General MIDI instruments via fluidsynth), demo_sound (sox tones, alarms, noises and textures,
sometimes an event over a texture) and demo_mix (speech over a sox background at 0-20 dB SNR).
Labels (domain, speaker, voice_gender, language, instrument_family, instrument, pitch_class, note,
sound_type) give the demo its own probe tasks. The same seed gives byte-identical manifests and audio.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alp_jax.data import prepare
from alp_jax.data import report
from alp_jax.demo import captions as demo_captions
from alp_jax.demo import synth as demo_synth
from alp_jax.demo import sysdeps

DEFAULT_CLIPS = 1000
DEFAULT_CLIP_SECONDS = 4.0
DURATION_SPREAD = (0.6, 1.4)  # a clip's target length is clip_seconds times a factor drawn from this range
THREADS_PER_WORKER = 2  # the tools wait on their own threads part of the time: two per CPU worker keep CPUs busy
BUILD_FILE = "demo_build.json"
BUILD_VERSION = 1
# (source name, synthesiser domain, share of the clips)
SOURCES = (("demo_speech", "speech", 0.35), ("demo_music", "music", 0.25), ("demo_sound", "sound", 0.25),
           ("demo_mix", "mix", 0.15))
MIX_BACKGROUNDS = demo_synth.TEXTURE_SOUNDS + ("beeping", "siren", "phone ringing", "ticking")


class DemoCorpusError(RuntimeError):
  """The output folder cannot be used (message says why and what to do)."""


def source_counts(num_clips: int) -> dict[str, int]:
  """Clips per source: SOURCES shares by largest remainder, at least one each when num_clips allows."""
  shares = np.array([share for _, _, share in SOURCES]) * num_clips
  counts = np.floor(shares).astype(int)
  if num_clips >= len(SOURCES):
    counts = np.maximum(counts, 1)
  for i in np.argsort(-(shares - np.floor(shares)), kind="stable"):
    if counts.sum() >= num_clips:
      break
    counts[i] += 1
  while counts.sum() > num_clips:
    counts[int(np.argmax(counts))] -= 1
  return {name: int(n) for (name, _, _), n in zip(SOURCES, counts)}


def _cycle(rng: np.random.Generator, options, n: int) -> list:
  """n items that go through `options` in shuffled rounds: every option appears once n allows it."""
  out: list = []
  while len(out) < n:
    out += [options[i] for i in rng.permutation(len(options))]
  return out[:n]


def labels_for(attrs: dict) -> dict:
  """Probe-task labels from a clip's attributes."""
  domain = attrs["domain"]
  if domain in ("speech", "mix"):
    labels = {"domain": "speech", "speaker": attrs["speaker"], "voice_gender": attrs["gender"],
              "language": attrs["language"]}
    if domain == "mix":
      labels["sound_type"] = attrs["background"]["sound_type"]
    return labels
  if domain == "music":
    labels = {"domain": "music", "instrument_family": attrs["family"], "instrument": attrs["instrument"]}
    if attrs["pattern"] != "drums":
      labels["pitch_class"] = demo_synth.PITCH_CLASSES[attrs["root"] % 12]
    if attrs["pattern"] in ("note", "repeated note"):
      labels["note"] = demo_synth.note_name(attrs["root"])
    return labels
  return {"domain": "sound", "sound_type": attrs["sound_type"]}


def plan_clips(num_clips: int, seed: int, clip_seconds: float) -> list[dict]:
  """Every clip's id, source, attributes, captions and labels, drawn from the seed (no audio yet)."""
  plan = []
  for source_index, ((source, domain, _), count) in enumerate(zip(SOURCES, source_counts(num_clips).values())):
    source_rng = np.random.default_rng([seed, source_index])
    speakers = _cycle(source_rng, demo_synth.SPEAKERS, count)
    patterns = _cycle(source_rng, demo_synth.MUSIC_PATTERNS, count)
    sound_types = _cycle(source_rng, demo_synth.SOUND_TYPES, count)
    backgrounds = _cycle(source_rng, MIX_BACKGROUNDS, count)
    for i in range(count):
      rng = np.random.default_rng([seed, source_index, i])
      seconds = clip_seconds * float(rng.uniform(*DURATION_SPREAD))
      if domain == "speech":
        attrs = demo_synth.sample_speech(rng, seconds, speakers[i])
      elif domain == "music":
        attrs = demo_synth.sample_music(rng, seconds, patterns[i])
      elif domain == "sound":
        attrs = demo_synth.sample_sound(rng, seconds, sound_types[i])
      else:
        attrs = demo_synth.sample_mix(rng, seconds, speakers[i], backgrounds[i])
      plan.append({"id": f"{source}-{i:05d}", "source": source, "attrs": attrs,
                   "captions": demo_captions.clip_captions(attrs, rng), "labels": labels_for(attrs)})
  return plan


def _render(clip: dict, audio_path: Path) -> float:
  with tempfile.TemporaryDirectory(prefix="alp_demo_") as work_dir:
    return demo_synth.render_clip(clip["attrs"], audio_path, work_dir)


def _generate(plan: list[dict], raw: Path, workers: int, quiet: bool) -> tuple[dict[str, float], list[dict]]:
  """Renders every planned clip; returns seconds by clip id and the failures (id, error), reported as they come."""
  for source, _, _ in SOURCES:
    (raw / "audio" / source).mkdir(parents=True, exist_ok=True)
  seconds: dict[str, float] = {}
  failed: list[dict] = []
  progress = report.Progress(len(plan), "demo", quiet)
  with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS_PER_WORKER * workers) as pool:
    futures = {pool.submit(_render, clip, raw / "audio" / clip["source"] / f"{clip['id']}.wav"): clip
               for clip in plan}
    for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
      clip = futures[future]
      try:
        seconds[clip["id"]] = future.result()
      except demo_synth.SynthesisError as e:
        failed.append({"id": clip["id"], "error": str(e)})
        print(f"[demo] clip {clip['id']} failed, skipped: {e}", file=sys.stderr, flush=True)
      progress.update(done)
  progress.update(len(plan), force=True)
  return seconds, sorted(failed, key=lambda f: f["id"])


def _write_manifests(plan: list[dict], seconds: dict[str, float], raw: Path) -> list[Path]:
  manifest_dir = raw / "manifests"
  manifest_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for source, _, _ in SOURCES:
    path = manifest_dir / f"{source}.jsonl"
    lines = []
    for clip in plan:
      if clip["source"] == source and clip["id"] in seconds:
        record = {"id": clip["id"], "audio": f"../audio/{source}/{clip['id']}.wav", "captions": clip["captions"],
                  "source": source, "duration": round(seconds[clip["id"]], 4), "split": "train",
                  "labels": clip["labels"]}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    paths.append(path)
  return paths


def _summary(manifests: list[Path]) -> dict[str, dict]:
  """Clips and hours per source, read back from the manifests just written."""
  out = {}
  for path in manifests:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out[path.stem] = {"clips": len(records), "hours": sum(r["duration"] for r in records) / 3600}
  return out


def _refuse_foreign_corpus(out: Path) -> None:
  """Raises DemoCorpusError when `out` holds a prepared corpus that an earlier demo build did not make."""
  corpus_file = out / "corpus.json"
  if not corpus_file.exists():
    return
  demo_manifests = (out / "raw" / "manifests").resolve()
  manifests = json.loads(corpus_file.read_text()).get("manifests", [])
  if not all(Path(m).resolve().parent == demo_manifests for m in manifests):
    raise DemoCorpusError(f"{out} already holds a prepared corpus that is not a demo build (made from "
                          f"{', '.join(manifests)[:300]}); choose another --out.")


def build(out_dir, *, num_clips: int = DEFAULT_CLIPS, seed: int = 0, clip_seconds: float = DEFAULT_CLIP_SECONDS,
          workers: int | None = None, quiet: bool = False, run_prepare: bool = True) -> dict:
  """Synthesises the demo corpus into out_dir/raw and prepares it into out_dir (see the module docstring).

  Returns {"out_dir", "manifests", "sources": {source: {"clips", "hours"}}, "clips", "hours", "failed":
  [{"id", "error"}], "generate_seconds", "reused_raw", "corpus": prepare's corpus.json (None without prepare)}.
  Raises sysdeps.MissingSystemPackage when a tool is absent, DemoCorpusError when out_dir holds another corpus.
  """
  if num_clips < 1 or clip_seconds <= 0:
    raise ValueError(f"need num_clips >= 1 and clip_seconds > 0, got {num_clips} and {clip_seconds}")
  sysdeps.require_binaries(demo_synth.BINARIES, files=[demo_synth.SOUNDFONT])
  workers = workers or os.cpu_count() or 1
  out = Path(out_dir)
  raw = out / "raw"
  if run_prepare:
    _refuse_foreign_corpus(out)
  settings = {"version": BUILD_VERSION, "num_clips": num_clips, "seed": seed, "clip_seconds": clip_seconds}
  manifests = [raw / "manifests" / f"{source}.jsonl" for source, _, _ in SOURCES]
  build_file = raw / BUILD_FILE
  start = time.monotonic()
  failed: list[dict] = []
  reused = (build_file.exists() and json.loads(build_file.read_text()).get("settings") == settings
            and all(m.exists() for m in manifests))
  if reused:
    failed = json.loads(build_file.read_text())["failed"]
    if not quiet:
      print(f"[demo] {raw} already holds clips built with {settings}: reusing them.")
  else:
    if build_file.exists():  # an earlier demo build with other settings: its clips go
      build_file.unlink()
      for source, _, _ in SOURCES:
        shutil.rmtree(raw / "audio" / source, ignore_errors=True)
    plan = plan_clips(num_clips, seed, clip_seconds)
    if not quiet:
      print(f"[demo] synthesising {len(plan)} clips (about {clip_seconds:g} s each) with "
            f"{THREADS_PER_WORKER * workers} threads")
    seconds, failed = _generate(plan, raw, workers, quiet)
    manifests = _write_manifests(plan, seconds, raw)
    build_file.write_text(json.dumps({"settings": settings, "failed": failed}, indent=1))
  generate_seconds = time.monotonic() - start
  sources = _summary(manifests)
  result = {"out_dir": str(out), "manifests": [str(m) for m in manifests], "sources": sources,
            "clips": sum(s["clips"] for s in sources.values()), "hours": sum(s["hours"] for s in sources.values()),
            "failed": failed, "generate_seconds": round(generate_seconds, 2), "reused_raw": reused, "corpus": None}
  if not quiet:
    print(f"[demo] {result['clips']} clips, {result['hours']:.3f} h of audio in {raw} "
          f"({generate_seconds:.1f}s; {len(failed)} failed)")
    for name, s in sources.items():
      print(f"  {name:<12} {s['clips']:>6} clips {s['hours']:7.3f} h  {raw / 'manifests' / name}.jsonl")
    for f in failed[:5]:
      print(f"  failed: {f['id']}: {f['error'][:300]}")
  if run_prepare:
    paths = [str(m) for m in manifests]
    try:  # the same manifests as last time reuse the prepared corpus
      result["corpus"] = prepare.prepare(paths, out, workers=workers, quiet=quiet)
    except prepare.PrepareError:  # an earlier demo build's corpus (foreign ones were refused above): replace it
      result["corpus"] = prepare.prepare(paths, out, workers=workers, quiet=quiet, overwrite=True)
  return result


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.data.demo_corpus", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="output folder (raw clips, manifests, prepared corpus)")
  parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS, help=f"number of clips (default {DEFAULT_CLIPS})")
  parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same corpus)")
  parser.add_argument("--workers", type=int, default=None, help="parallel synthesis/prepare workers (default: CPUs)")
  parser.add_argument("--clip-seconds", type=float, default=DEFAULT_CLIP_SECONDS,
                      help=f"typical clip length; clips vary {DURATION_SPREAD[0]}-{DURATION_SPREAD[1]}x around it "
                           f"(default {DEFAULT_CLIP_SECONDS})")
  parser.add_argument("--no-prepare", action="store_true", help="only synthesise the raw clips and manifests")
  parser.add_argument("--quiet", action="store_true")
  args = parser.parse_args(argv)
  if args.clips < 1 or args.clip_seconds <= 0:
    parser.error("--clips must be >= 1 and --clip-seconds > 0")
  try:
    build(args.out, num_clips=args.clips, seed=args.seed, clip_seconds=args.clip_seconds, workers=args.workers,
          quiet=args.quiet, run_prepare=not args.no_prepare)
  except (sysdeps.MissingSystemPackage, DemoCorpusError) as e:
    print(f"[demo] ERROR: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
