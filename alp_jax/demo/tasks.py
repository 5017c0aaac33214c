"""The demo's probe tasks, rendered fresh, and a side-by-side comparison of encoders on them.

  python -m alp_jax.demo.tasks --out DIR [--corpus CORPUS_DIR] [--clips-per-task N] [--seed 1000]

Renders a new set of short clips with the demo synthesisers (espeak-ng, sox, fluidsynth) from a seed that
the pretraining corpus does not use (its default is 0), and writes five task folders that share the clips:

  speaker            speech clips, label = one of SPEAKERS (voice + variant)
  instrument_family  music clips, label = one of FAMILIES
  pitch_class        the same music clips (single notes, repeated notes, chords, arpeggios), label = root's class
  sound_type         sound clips, label = one of SOUND_TYPES (sometimes over a background texture)
  domain             every clip, label = speech | music | sound

Each task keeps a third of every class for test (seeded; 108 test clips per task by default). Classes are balanced and the music attributes
are crossed (every family plays every pitch class), so one task's label does not give away another's.

A fresh seed alone does not make a clip new: the same voice saying the same sentence, or two pink noises,
are near copies however they were seeded. So the speech reads EVAL_SENTENCES, a pool disjoint from the
corpus's sentences; SOUND_TYPES leaves out the steady textures (noise, rain, engine, hum), which every render
of the same kind matches by spectral profile; and with --corpus every rendered clip is checked against the
prepared corpus with the leakage check (alp_jax/data/leakage.py) and any exact or near duplicate is drawn
again from the next seed of its slot (same labels) until none is left. The build file (demo_tasks.json)
records the check, the replacements and the highest remaining score.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alp_jax.data import leakage
from alp_jax.demo import captions as demo_captions
from alp_jax.demo import redraw
from alp_jax.demo import synth as demo_synth
from alp_jax.demo import sysdeps
from alp_jax.evaluate import captioning
from alp_jax.evaluate import comparison
from alp_jax.evaluate import probe as probe_lib
from alp_jax.evaluate import retrieval
from alp_jax.evaluate import zero_shot

DEFAULT_CLIPS_PER_TASK = 324      # per domain: 3 x 324 = 972 clips of 2-3 s; a third of each class to test: 108 per task
DEFAULT_SEED = 1000
CLIP_SECONDS = (2.0, 3.0)
TEST_FRACTION = 1 / 3
# 12 voices: 5 female, 7 male, 8 accents/languages; some differ only by voice variant (en-us m1 / m3).
SPEAKERS = tuple(demo_synth.SPEAKERS[i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12))
FAMILIES = ("piano", "organ", "guitar", "strings", "brass", "pipe")
PITCH_CLASSES = demo_synth.PITCH_CLASSES   # all 12: neighbouring classes are a semitone apart
MUSIC_PATTERNS = ("note", "repeated note", "chord", "arpeggio")
# Event sounds and one moving texture. Not noise, rain, engine or hum: steady sounds that are compared by
# spectral profile, and every demo-corpus render of the same kind matches them (docs/leakage.md).
SOUND_TYPES = ("tone", "sweep", "siren", "ticking", "beeping", "wind")
# Held-out sentences for the task speakers' languages: never in demo_synth.SENTENCES (the corpus's pool).
EVAL_SENTENCES = {
    "en": ("Good evening.", "Excuse me.", "How are you?", "Nice to meet you.", "What time is it?",
           "The door is open.", "I like green tea.", "Where are my keys?", "The bus is late.", "Lunch is ready.",
           "Bring me a chair.", "The shop is closed.", "Fold the towels.", "Pick up your shoes.", "Who wrote this?"),
    "de": ("Guten Abend.", "Wie geht es dir?", "Bis bald.", "Das Essen ist fertig.", "Es ist sehr kalt.",
           "Wo sind meine Schlüssel?", "Der Bus kommt spät.", "Ich trinke gern Tee.", "Wir fahren nach Hause.",
           "Der Laden ist zu."),
    "fr": ("Bonsoir.", "Comment allez-vous?", "À bientôt.", "Le dîner est prêt.", "Il fait très froid.",
           "Où sont mes clés?", "Le bus est en retard.", "J'aime le thé vert.", "Nous rentrons à la maison.",
           "Le magasin est fermé."),
}
MAX_ATTEMPTS = redraw.MAX_ATTEMPTS   # draws per clip slot before the build gives up on it
BUILD_FILE = "demo_tasks.json"
CAPTION_TASK = "captions"   # a caption task over all clips (retrieval, captioning, LiT), written next to the tasks
# Test clips per domain in the caption task: caption-likelihood retrieval scores every clip against every caption
# (quadratic), so 60 clips x ~240 captions, not the domain task's 324 x ~1300.
CAPTION_TEST_PER_DOMAIN = 20
BUILD_VERSION = 3
TASKS = ("speaker", "instrument_family", "pitch_class", "sound_type", "domain")


def _music_attrs(rng: np.random.Generator, seconds: float, index: int) -> dict:
  """A pitched music clip whose family and root pitch class follow a Latin square over the clip index."""
  family = FAMILIES[index % len(FAMILIES)]
  pitch_class = PITCH_CLASSES[(index + index // len(FAMILIES)) % len(PITCH_CLASSES)]
  attrs = demo_synth.sample_music(rng, seconds, MUSIC_PATTERNS[index % len(MUSIC_PATTERNS)])
  options = [inst for inst in demo_synth.INSTRUMENTS if inst.family == family]
  inst = options[int(rng.integers(len(options)))]
  pc = demo_synth.PITCH_CLASSES.index(pitch_class)
  roots = [m for m in range(inst.low, inst.high + 1) if m % 12 == pc]
  root = roots[int(rng.integers(len(roots)))]
  attrs.update(instrument=inst.name, family=inst.family, program=inst.program, root=root)
  return attrs


def _draw(domain_index: int, i: int, seed: int, attempt: int) -> dict:
  """Clip slot `i` of a domain: its file, attributes and labels. Labels depend on the slot only; the
  attributes on (seed, slot, attempt), attempt 0 being the first draw and k the k-th replacement."""
  domain = ("speech", "music", "sound")[domain_index]
  rng = np.random.default_rng([seed, domain_index, i] + ([attempt] if attempt else []))
  seconds = float(rng.uniform(*CLIP_SECONDS))
  if domain == "speech":
    speaker = SPEAKERS[i % len(SPEAKERS)]
    attrs = demo_synth.sample_speech(rng, seconds, speaker, EVAL_SENTENCES)
    labels = {"speaker": speaker.id}
  elif domain == "music":
    attrs = _music_attrs(rng, seconds, i)
    labels = {"instrument_family": attrs["family"],
              "pitch_class": demo_synth.PITCH_CLASSES[attrs["root"] % 12]}
  else:
    attrs = demo_synth.sample_sound(rng, seconds, SOUND_TYPES[i % len(SOUND_TYPES)])
    labels = {"sound_type": attrs["sound_type"]}
  return {"file": f"audio/{domain}-{i:04d}.wav", "attrs": attrs, "labels": {**labels, "domain": domain},
          "slot": (domain_index, i), "attempt": attempt}


def plan(clips_per_task: int, seed: int, attempts: dict[str, int] | None = None) -> list[dict]:
  """Every clip: file name, synthesiser attributes and its labels per task (no audio yet).

  `attempts` ({file: k}, from a build file) picks the k-th replacement draw of those clips.
  """
  attempts = attempts or {}
  clips = []
  for domain_index, domain in enumerate(("speech", "music", "sound")):
    for i in range(clips_per_task):
      clips.append(_draw(domain_index, i, seed, attempts.get(f"audio/{domain}-{i:04d}.wav", 0)))
  return clips


def _render(clip: dict, out_dir: Path) -> None:
  with tempfile.TemporaryDirectory(prefix="alp_demo_task_") as work_dir:
    demo_synth.render_clip(clip["attrs"], out_dir / clip["file"], work_dir)


def _split(files_and_labels: list[tuple[str, str]], seed: int) -> dict[str, list[tuple[str, str]]]:
  """Stratified: a seeded TEST_FRACTION of every class (at least one) goes to test."""
  rng = np.random.default_rng(seed)
  by_class: dict[str, list[tuple[str, str]]] = {}
  for item in files_and_labels:
    by_class.setdefault(item[1], []).append(item)
  test = set()
  for label in sorted(by_class):
    items = by_class[label]
    count = max(1, int(round(TEST_FRACTION * len(items))))
    test.update(items[i][0] for i in rng.permutation(len(items))[:count])
  return {"train": [x for x in files_and_labels if x[0] not in test],
          "test": [x for x in files_and_labels if x[0] in test]}


def _write_task(task_dir: Path, splits: dict[str, list[tuple[str, str]]]) -> None:
  task_dir.mkdir(parents=True, exist_ok=True)
  for split, rows in splits.items():
    with open(task_dir / f"{split}.csv", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["path", "label"])
      writer.writerows((f"../{file}", label) for file, label in rows)


def _write_caption_task(task_dir: Path, clips: list[dict], splits: dict[str, list[tuple[str, str]]], seed: int) -> None:
  """The caption task over the same clips (the domain task's split; the test split keeps the first
  CAPTION_TEST_PER_DOMAIN test clips of each domain): captions written by the demo corpus's captioner from each
  clip's attributes (seeded per clip), 3-5 per clip."""
  by_file = {c["file"]: c for c in clips}
  task_dir.mkdir(parents=True, exist_ok=True)
  kept: dict[str, int] = {}
  test = []
  for file, domain in splits["test"]:
    kept[domain] = kept.get(domain, 0) + 1
    if kept[domain] <= CAPTION_TEST_PER_DOMAIN:
      test.append((file, domain))
  for split, rows in {**splits, "test": test}.items():
    lines = []
    for file, _ in rows:
      rng = np.random.default_rng([seed, int(file.split("-")[-1].split(".")[0]), len(file), 7])
      captions = demo_captions.clip_captions(by_file[file]["attrs"], rng)
      lines.append(json.dumps({"id": Path(file).stem, "audio": f"../{file}", "captions": captions}))
    (task_dir / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def _render_all(clips: list[dict], out_dir: Path, workers: int, quiet: bool, what: str) -> None:
  redraw.render_all(clips, lambda clip: _render(clip, out_dir), workers=workers, quiet=quiet,
                    label="[demo_tasks] rendered {done}/{total} " + what)


def _replace_leaked(clips: list[dict], out_dir: Path, corpus, seed: int, workers: int, quiet: bool) -> dict:
  """Checks every clip against the corpus and re-draws (next attempt of its slot) every exact or near
  duplicate until none is left (alp_jax/demo/redraw.py). Changes `clips` in place; -> the check's record."""
  return redraw.replace_leaked(
      clips, out_dir, corpus, redraw=lambda clip: _draw(*clip["slot"], seed, clip["attempt"] + 1),
      render=lambda again: _render_all(again, out_dir, workers, True, "replacements"),
      group=lambda file: file.split("/")[1].split("-")[0], group_name="domain", name="demo_tasks",
      what="demo task clip", max_attempts=MAX_ATTEMPTS, quiet=quiet)


def build_demo_tasks(out_dir: str | os.PathLike, *, clips_per_task: int = DEFAULT_CLIPS_PER_TASK,
                     seed: int = DEFAULT_SEED, corpus_dir: str | os.PathLike | None = None, corpus=None,
                     workers: int | None = None, quiet: bool = False) -> dict[str, Path]:
  """Renders the clips (reused when a previous build had the same settings) and writes the task folders.

  With `corpus_dir` (a prepared corpus; `corpus`: its leakage.read_corpus_audio, when already read) every
  clip that is an exact or near duplicate of a corpus clip is drawn and rendered again until none is
  (module docstring); the build file records the check. -> {task name: task folder}. Needs espeak-ng, sox,
  fluidsynth and the TimGM6mb soundfont.
  """
  out_dir = Path(out_dir).absolute()
  corpus_id = redraw.corpus_key(corpus_dir)
  settings = {"version": BUILD_VERSION, "clips_per_task": clips_per_task, "seed": seed,
              "clip_seconds": list(CLIP_SECONDS), "corpus": corpus_id}
  build_file = out_dir / BUILD_FILE
  previous = json.loads(build_file.read_text()) if build_file.exists() else {}
  clips = plan(clips_per_task, seed, previous.get("attempts") if previous.get("settings") == settings else None)
  reuse = previous.get("settings") == settings and all((out_dir / c["file"]).exists() for c in clips)
  t0 = time.monotonic()
  check = previous.get("leakage_check") if reuse else None
  if not reuse:
    sysdeps.require_binaries(demo_synth.BINARIES, files=(demo_synth.SOUNDFONT,))
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    if build_file.exists():
      build_file.unlink()  # a half-finished rebuild must not look finished
    workers = workers or 2 * (os.cpu_count() or 1)
    _render_all(clips, out_dir, workers, quiet, "clips")
    if corpus_dir is not None:
      if corpus is None:
        corpus = leakage.read_corpus_audio(corpus_dir, quiet=quiet)
      check = _replace_leaked(clips, out_dir, corpus, seed, workers, quiet)
    attempts = {c["file"]: c["attempt"] for c in clips if c["attempt"]}
    build_file.write_text(json.dumps({"settings": settings, "files": [c["file"] for c in clips],
                                      "attempts": attempts, "leakage_check": check}, indent=1))
  task_dirs = {}
  for task_index, task in enumerate(TASKS):
    labelled = [(c["file"], c["labels"][task]) for c in clips if task in c["labels"]]
    task_dirs[task] = out_dir / task
    _write_task(task_dirs[task], _split(labelled, seed + task_index))
  _write_caption_task(out_dir / CAPTION_TASK, clips, _split([(c["file"], c["labels"]["domain"]) for c in clips],
                                                             seed + TASKS.index("domain")), seed)
  if not quiet:
    how = "reused" if reuse else f"rendered in {time.monotonic() - t0:.1f}s"
    print(f"[demo_tasks] {len(clips)} clips ({how}), tasks {', '.join(TASKS)} -> {out_dir}")
    if check is None:
      print("[demo_tasks] not checked for leakage (no corpus given)")
    else:
      print(f"[demo_tasks] leakage check against {corpus_dir} ({check['corpus_clips']} clips): "
            f"{check['replaced']} clip(s) drawn again {check['replaced_by_domain']}, none left; highest score "
            f"{check['max_score']} (near >= {check['near_threshold']})")
  return task_dirs


# Tasks whose class names are words the demo captions use (the speaker ids and pitch classes are not), the ones a
# run's text side can score zero-shot.
ZERO_SHOT_TASKS = ("instrument_family", "sound_type", "domain")
METHOD_ORDER = ("mean", "attention", "zero_shot", "zero_shot_likelihood")


def _merge(rows: dict, key: tuple, name: str, result: dict) -> None:
  """Adds one evaluation result of `name` to the comparison row `key` (task, method[, metric])."""
  row = rows.setdefault(key, {"task": result["task"], "metric": result["metric"], "method": result["method"],
                              "values": {}})
  row["values"][name] = result["value"]


def compare(encoders: dict, task_dirs, pooling: tuple[str, ...] = ("mean", "attention"), *, runs: dict | None = None,
            zero_shot_tasks: tuple[str, ...] = ZERO_SHOT_TASKS, config=None, cache_dir=None, log=print) -> list[dict]:
  """Probes every encoder (name -> AudioEncoder, or a baseline from alp_jax.evaluate.baselines) on every task
  folder with every pooling, and scores every run (name -> RunModel, optional) zero-shot on the
  `zero_shot_tasks` among them.

  -> comparison rows (alp_jax.evaluate.comparison): {"task", "metric", "method", "values": {name: value},
  "intervals": {name: [low, high]}, "gaps": {name: gap over the stronger baseline}}, in task then method order.
  Encoders named comparison.BASELINES ("random_init", "logmel-stats") are the baselines of the gaps.
  cache_dir: embeddings cache (alp_jax.evaluate.embed), shared by an exported encoder and its run's own encoder
  (same fingerprint), so each clip is encoded once per set of weights.
  """
  config = config or probe_lib.ProbeConfig()
  task_dirs = list(task_dirs.values()) if isinstance(task_dirs, dict) else list(task_dirs)
  results = {}
  for name, encoder in encoders.items():
    if log:
      log(f"[compare] encoder {name}")
    results[name] = probe_lib.evaluate_encoder(encoder, task_dirs, poolings=tuple(pooling), config=config,
                                               cache_dir=cache_dir, log=log, keep_outputs=True)
  rows = {(r["task"], r["method"]): r for r in comparison.add_gaps(comparison.merge(results))}
  for name, run in (runs or {}).items():
    for task_dir in task_dirs:
      if Path(task_dir).name in zero_shot_tasks:
        for result in zero_shot.evaluate_task(run, task_dir, cache_dir=cache_dir, log=log):
          _merge(rows, (result["task"], result["method"]), name, result)
  task_order = {Path(t).absolute().name: i for i, t in enumerate(task_dirs)}
  method = lambda p: METHOD_ORDER.index(p) if p in METHOD_ORDER else len(METHOD_ORDER)
  return sorted(rows.values(), key=lambda r: (task_order.get(r["task"], len(task_order)), method(r["method"])))


SHOWN_TEXT_METRICS = ("a2t/R@1", "a2t/R@10", "t2a/R@1", "t2a/R@10", "BLEU-4", "ROUGE-L", "CIDEr-D")


def compare_text_side(runs: dict, caption_task_dir, *, beam_sizes: tuple[int, ...] = (1,), cache_dir=None,
                      log=print) -> list[dict]:
  """Retrieval and captioning of every run (name -> RunModel) on a caption task, by what each run has.

  -> rows as `compare` returns, all metrics (SHOWN_TEXT_METRICS are the ones `make demo` prints)."""
  rows: dict[tuple[str, str], dict] = {}
  for name, run in runs.items():
    results = retrieval.evaluate_task(run, caption_task_dir, cache_dir=cache_dir, log=log)
    if run.has_decoder:
      results += captioning.evaluate_task(run, caption_task_dir, beam_sizes=beam_sizes, cache_dir=cache_dir, log=log)
    for result in results:
      _merge(rows, (result["method"], result["metric"]), name, result)
  return list(rows.values())


def format_comparison(rows: list[dict]) -> str:
  """One table: a row per task/metric/method (probe pooling or zero-shot), a column per encoder ('-': n/a)."""
  names = list(dict.fromkeys(name for row in rows for name in row["values"]))
  width = max([10] + [len(n) for n in names])
  lines = [f"{'task':<18} {'metric':<10} {'method':<20} " + " ".join(f"{n:>{width}}" for n in names)]
  for row in rows:
    values = " ".join(f"{row['values'][n]:>{width}.3f}" if n in row["values"] else f"{'-':>{width}}" for n in names)
    lines.append(f"{row['task']:<18} {row['metric']:<10} {row['method']:<20} {values}")
  return "\n".join(lines)


def print_comparison(rows: list[dict]) -> None:
  print(format_comparison(rows), flush=True)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.demo.tasks", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("--corpus", help="prepared pretraining corpus: re-draw any clip that duplicates one of its clips")
  parser.add_argument("--clips-per-task", type=int, default=DEFAULT_CLIPS_PER_TASK)
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
  parser.add_argument("--workers", type=int, default=None)
  args = parser.parse_args(argv)
  try:
    build_demo_tasks(args.out, clips_per_task=args.clips_per_task, seed=args.seed, corpus_dir=args.corpus,
                     workers=args.workers)
  except (sysdeps.MissingSystemPackage, FileNotFoundError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
