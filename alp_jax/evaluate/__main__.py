"""Evaluation of an audio encoder or a training run on probe tasks and caption tasks: one command.

  python -m alp_jax.evaluate (--encoder ENC_DIR | --workdir DIR [--step N] | --random-init CONFIG_OR_ENC_DIR)
      --task-dir DIR [--task-dir DIR ...] [--suite NAME[,NAME...]] [--pooling mean|attention|both]
      --out results.json [--seed 0] [--cache-dir DIR] [--beam-sizes 1,4] [--lit-config CONFIG --lit-steps N]

--encoder      an exported encoder (python -m alp_jax.export).
--workdir      a training run: its latest (or --step) checkpoint; its encoder for the probes, and its text side
               (text tower and/or caption decoder) for zero-shot, retrieval and captioning.
--random-init  fresh weights (seeded by --seed) for an exported encoder's exact architecture and frontend
               (ENC_DIR), or for a config's (configs/clap.py:tiny): the untrained baseline.
--task-dir     a probe task (train.csv/test.csv: path,label) or a caption task (train.jsonl/test.jsonl: id,
               audio, captions); docs/evaluation.md.
--suite        evaluations, by name or suite (default "default"):
                 probe       linear probes (mean and/or attention pooling) on probe tasks
                 zero_shot   probe tasks' test splits by the run's text side (--workdir)
                 retrieval   caption tasks, a2t/t2a R@1/5/10, mAP@10 (--workdir)
                 captioning  caption tasks, greedy/beam BLEU-1..4, ROUGE-L, CIDEr-D (--workdir, with a decoder)
                 lit         LiT-style alignment: freeze the audio encoder, train the text side on each caption
                             task's train split, then retrieval and captioning on its test split
                 default     probe, zero_shot, retrieval, captioning (those the source allows)
                 study       probe and lit: the study's two protocols
                 all         everything that applies
Prints a table (task, metric, method, value) and writes values plus the full protocol to --out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import alp_jax
from alp_jax import encoder_api
from alp_jax.data import paths
from alp_jax.evaluate import caption_tasks
from alp_jax.evaluate import captioning
from alp_jax.evaluate import lit
from alp_jax.evaluate import probe as probe_lib
from alp_jax.evaluate import retrieval
from alp_jax.evaluate import run_model as run_model_lib
from alp_jax.evaluate import tasks as tasks_lib
from alp_jax.evaluate import tfds_tasks
from alp_jax.evaluate import zero_shot
from alp_jax.train import runs as runs_lib

EVALUATIONS = ("probe", "zero_shot", "retrieval", "captioning", "lit")
SUITES = {"default": ("probe", "zero_shot", "retrieval", "captioning"), "study": ("probe", "lit"),
          "all": EVALUATIONS}
TEXT_EVALUATIONS = ("zero_shot", "retrieval", "captioning")   # need a run's text side (--workdir)


class UsageError(ValueError):
  """An evaluation was asked of a source or task that cannot give it."""


def parse_suite(spec: str) -> tuple[str, ...]:
  names = []
  for part in (p.strip() for p in spec.split(",") if p.strip()):
    if part not in SUITES and part not in EVALUATIONS:
      raise UsageError(f"--suite {part!r}: choose evaluations from {EVALUATIONS} or suites from {sorted(SUITES)}")
    names += [n for n in SUITES.get(part, (part,)) if n not in names]
  return tuple(names)


def load_encoder(*, encoder: str | None = None, workdir: str | None = None, random_init: str | None = None,
                 step: int | None = None, seed: int = 0, export_dir: str | None = None):
  """-> (AudioEncoder, provenance dict) from exactly one of encoder / workdir / random_init."""
  if encoder:
    loaded = encoder_api.AudioEncoder.load(encoder)
    return loaded, {"kind": "encoder", "path": os.fspath(paths.resolve(encoder)), "step": loaded.meta.get("step"),
                    "source_workdir": loaded.meta.get("source_workdir")}
  if workdir:
    meta = runs_lib.export_encoder(workdir, export_dir, step)
    return encoder_api.AudioEncoder.load(export_dir), {"kind": "workdir", "path": os.fspath(paths.resolve(workdir)),
                                                       "step": meta["step"]}
  if paths.resolve(random_init).is_dir():
    meta = encoder_api.read_meta(random_init)
  else:
    try:
      config = runs_lib.load_config(random_init)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"--random-init {random_init}: neither an encoder folder nor a config file "
                              f"({e})") from None
    meta = encoder_api.meta_from_config(config)
  return encoder_api.AudioEncoder.build(meta, seed=seed), {"kind": "random_init", "path": random_init, "step": None,
                                                          "init_seed": seed}


def format_table(rows: list[dict]) -> str:
  """(task, metric, method, value) rows; the method is the probe pooling, zero_shot, retrieval, greedy ..."""
  lines = [f"{'task':<24} {'metric':<11} {'method':<24} {'value':>8}"]
  for row in rows:
    lines.append(f"{row['task']:<24} {row['metric']:<11} {row['pooling']:<24} {row['value']:>8.4f}")
  return "\n".join(lines)


def split_tasks(task_dirs: list[str]) -> tuple[list[str], list[str]]:
  """-> (probe task folders, caption task folders); a folder that is neither is a TaskFormatError."""
  probe, caption = [], []
  for task_dir in task_dirs:
    has = lambda ext: any((Path(task_dir) / f"{split}.{ext}").exists() for split in tasks_lib.SPLITS)
    if has("jsonl"):
      caption_tasks.read_caption_task(task_dir)   # reads it now: names what is missing or bad before any work
      caption.append(task_dir)
    elif has("csv"):
      tasks_lib.read_task(task_dir)
      probe.append(task_dir)
    else:
      raise tasks_lib.TaskFormatError(f"{task_dir} is not a task folder: no test.csv (probe task: path,label) "
                                      f"and no test.jsonl (caption task: id, audio, captions)")
  return probe, caption


def plan(evaluations: tuple[str, ...], *, workdir: bool, explicit: bool, probe_tasks: list, caption_task_dirs: list,
         log=print) -> tuple[str, ...]:
  """The evaluations that apply. With an explicit --suite, one that cannot apply is a UsageError."""
  kept = []
  for name in evaluations:
    reason = None
    if name in TEXT_EVALUATIONS and not workdir:
      reason = "needs --workdir (an exported encoder has no text side; --suite lit trains one)"
    elif name in ("probe", "zero_shot") and not probe_tasks:
      reason = "no probe task (test.csv) given"
    elif name in ("retrieval", "captioning", "lit") and not caption_task_dirs:
      reason = "no caption task (test.jsonl) given"
    if reason is None:
      kept.append(name)
    elif explicit:
      raise UsageError(f"--suite {name}: {reason}")
    elif log:
      log(f"[evaluate] {name}: skipped, {reason}")
  return tuple(kept)


def text_side_rows(run, evaluations, probe_tasks, caption_task_dirs, *, beam_sizes, cache_dir, log=print):
  """Zero-shot, retrieval and captioning rows of a RunModel (the parts its model has)."""
  rows = []
  if "zero_shot" in evaluations:
    rows += [row for task in probe_tasks for row in zero_shot.evaluate_task(run, task, cache_dir=cache_dir, log=log)]
  if "retrieval" in evaluations:
    if run.contrastive or run.has_decoder:
      rows += [row for t in caption_task_dirs for row in retrieval.evaluate_task(run, t, cache_dir=cache_dir, log=log)]
  if "captioning" in evaluations:
    if run.has_decoder:
      rows += [row for t in caption_task_dirs
               for row in captioning.evaluate_task(run, t, beam_sizes=beam_sizes, cache_dir=cache_dir, log=log)]
    elif log:
      log(f"[evaluate] captioning: skipped, {run.kind!r} has no caption decoder")
  return rows


def lit_rows(encoder_dir: str, caption_task_dirs: list[str], lit_root: Path, *, config_spec: str, steps: int,
             batch_size: int, seed: int, beam_sizes, cache_dir, log=print) -> tuple[list[dict], list[dict]]:
  """LiT-style alignment of each caption task: -> (rows with methods "lit_retrieval", "lit_greedy" ..., runs)."""
  rows, runs = [], []
  for task_dir in caption_task_dirs:
    workdir = lit_root / Path(task_dir).absolute().name
    t0 = time.time()
    lit.train_text_side(encoder_dir, task_dir, workdir, config_spec=config_spec, steps=steps, batch_size=batch_size,
                        seed=seed, log=log)
    run = run_model_lib.RunModel.from_workdir(workdir)
    task_rows = text_side_rows(run, ("retrieval", "captioning"), [], [task_dir], beam_sizes=beam_sizes,
                               cache_dir=None, log=log)
    for row in task_rows:
      row["pooling"] = "lit_" + row["pooling"]
      row["lit_workdir"] = str(workdir)
    rows += task_rows
    runs.append({"task": Path(task_dir).name, "workdir": str(workdir), "config": config_spec, "steps": steps,
                 "batch_size": batch_size, "model": run.kind, "frozen": list(run.config.optimizer.get("frozen", ())),
                 "seconds": round(time.time() - t0, 1)})
  return rows, runs


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.evaluate", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--encoder", help="exported encoder folder")
  source.add_argument("--workdir", help="training run folder (its encoder, and its text side)")
  source.add_argument("--random-init", help="exported encoder folder or config.py[:arg]: fresh weights")
  parser.add_argument("--step", type=int, default=None, help="with --workdir: checkpoint step (default latest)")
  parser.add_argument("--task-dir", action="append", default=[], help="probe or caption task folder (repeatable)")
  tfds_tasks.add_arguments(parser)
  parser.add_argument("--suite", default=None, help="evaluations or suites, comma-separated (default: default)")
  parser.add_argument("--pooling", choices=("mean", "attention", "both"), default="both")
  parser.add_argument("--out", required=True, help="results JSON")
  parser.add_argument("--seed", type=int, default=0, help="probe seed (and random-init weights seed, LiT seed)")
  parser.add_argument("--cache-dir", default=None, help="reuse embeddings across runs (one .npz per task)")
  parser.add_argument("--beam-sizes", default="1,4", help="captioning decodings: 1 = greedy (default 1,4)")
  parser.add_argument("--lit-config", default="configs/hybrid.py:tiny",
                      help="LiT: the text side's config (its audio settings come from the encoder)")
  parser.add_argument("--lit-steps", type=int, default=400, help="LiT: training steps per caption task")
  parser.add_argument("--lit-batch-size", type=int, default=32, help="LiT: global batch (a multiple of devices)")
  parser.add_argument("--lit-dir", default=None, help="LiT: where its runs go (default: next to --out)")
  args = parser.parse_args(argv)
  if not args.task_dir and not args.tfds:
    parser.error("give at least one --task-dir or --tfds")

  started = time.time()
  poolings = probe_lib.POOLINGS if args.pooling == "both" else (args.pooling,)
  beam_sizes = tuple(int(b) for b in args.beam_sizes.split(",") if b.strip())
  config = probe_lib.ProbeConfig(seed=args.seed)
  out = Path(args.out)
  lit_runs = []
  with tempfile.TemporaryDirectory(prefix="alp_eval_export_") as export_dir:
    try:
      evaluations = parse_suite(args.suite or "default")
      probe_tasks, caption_task_dirs = split_tasks(args.task_dir)
      probe_tasks += tfds_tasks.tasks_from_args(args)   # TFDS datasets are probe tasks
      evaluations = plan(evaluations, workdir=bool(args.workdir), explicit=args.suite is not None,
                         probe_tasks=probe_tasks, caption_task_dirs=caption_task_dirs)
      if not evaluations:
        raise UsageError(f"nothing to evaluate: none of {parse_suite(args.suite or 'default')} applies to "
                         f"these tasks with this source (see the lines above)")
      encoder, provenance = load_encoder(encoder=args.encoder, workdir=args.workdir, random_init=args.random_init,
                                         step=args.step, seed=args.seed, export_dir=export_dir)
      print(f"[evaluate] encoder: {provenance['kind']} {provenance['path']} (step {provenance['step']}), "
            f"output width {encoder.output_dim}, window {encoder.meta['crop_seconds']} s; "
            f"evaluations: {', '.join(evaluations) or 'none'}")
      rows = []
      if "probe" in evaluations:
        rows += probe_lib.evaluate_encoder(encoder, probe_tasks, poolings=poolings, config=config,
                                           cache_dir=args.cache_dir)
      if any(name in TEXT_EVALUATIONS for name in evaluations):
        run = run_model_lib.RunModel.from_workdir(args.workdir, args.step)
        rows += text_side_rows(run, evaluations, probe_tasks, caption_task_dirs, beam_sizes=beam_sizes,
                               cache_dir=args.cache_dir)
      if "lit" in evaluations:
        encoder_dir = args.encoder or export_dir
        if args.random_init:
          encoder.save(encoder_dir)
        lit_root = Path(args.lit_dir) if args.lit_dir else out.parent / f"{out.stem}_lit"
        more, lit_runs = lit_rows(encoder_dir, caption_task_dirs, lit_root, config_spec=args.lit_config,
                                  steps=args.lit_steps, batch_size=args.lit_batch_size, seed=args.seed,
                                  beam_sizes=beam_sizes, cache_dir=args.cache_dir)
        rows += more
    except (FileNotFoundError, tasks_lib.TaskFormatError, run_model_lib.MissingHead, UsageError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  results = {
      "results": rows,
      "protocol": {
          "encoder": provenance,
          "frontend": encoder.meta["frontend"],
          "window_seconds": encoder.meta["crop_seconds"],
          "embedding": "last-layer frames of the whole clip, fixed windows of window_seconds (last one masked)",
          "evaluations": list(evaluations),
          "poolings": list(poolings),
          "probe": config.to_dict(),
          "selection": "valid.csv if present, else a seeded valid_fraction of train (seed 0); first best in grid "
                       "order; retrain on train+valid",
          "zero_shot_templates": list(zero_shot.TEMPLATES),
          "captioning": {"beam_sizes": list(beam_sizes), "length_penalty": 0.0},
          "lit": lit_runs,
          "seed": args.seed,
      },
      "alp_jax_version": alp_jax.__version__,
      "time": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
      "seconds": round(time.time() - started, 1),
  }
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1))
  print(format_table(rows))
  skipped = {}
  for row in rows:
    skipped[row["task"]] = max(skipped.get(row["task"], 0), row.get("skipped_files", 0))
  num_tasks = len(args.task_dir) + len(args.tfds)
  print(f"[evaluate] {num_tasks} task(s), {len(rows)} values, {sum(skipped.values())} file(s) skipped, "
        f"{results['seconds']}s -> {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
