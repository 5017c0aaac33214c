"""Evaluation of an audio encoder or a training run on probe tasks and caption tasks: one command.

  python -m alp_jax.evaluate (--encoder ENC_DIR | --workdir DIR [--step N] | --random-init CONFIG_OR_ENC_DIR
                             | --baseline logmel-stats)
      --task-dir DIR [--task-dir DIR ...] [--suite NAME[,NAME...]] [--pooling mean|attention|both]
      --out results.json [--seed 0] [--cache-dir DIR] [--beam-sizes 1,4] [--lit-config CONFIG --lit-steps N]
      [--lit-text-checkpoint BERT_DIR] [--lit-decoder-checkpoint BART_DIR]
      [--layer last|K|patch] [--sed-resamples 100]

--encoder      an exported encoder (python -m alp_jax.export).
--workdir      a training run: its latest (or --step) checkpoint; its encoder for the probes, and its text side
               (text tower and/or caption decoder) for zero-shot, retrieval and captioning.
--random-init  fresh weights (seeded by --seed) for an exported encoder's exact architecture and frontend
               (ENC_DIR), or for a config's (configs/clap.py:tiny): the untrained baseline.
--baseline     classical features, no learned encoder (alp_jax/evaluate/baselines.py): logmel-stats = the models'
               80-bin log-mel and its deltas; mean probes read their clip mean/std, attention probes the frames.
               Probes only: every other evaluation is skipped with the reason.
--layer        the encoder layer the probes embed with: "last" (default, the encoder's output), K (block K's raw
               output, 0-based) or "patch" (before block 0); alp_jax/encoder_api.py. Probes only (--suite probe).
--task-dir     a probe task (train.csv/test.csv: path,label), a caption task (train.jsonl/test.jsonl: id,
               audio, captions) or a SED task (train.tsv/test.tsv: filename, onset, offset, event_label);
               docs/evaluation.md.
--suite        evaluators by name, or suites, comma-separated (default "default"). Every registered evaluator
               (alp_jax/evaluate/evaluators/, one file each) is a name here; each declares what it needs and
               which suites it is in, and one that cannot apply is skipped with the reason (an error if named):
                 probe       linear probes (mean and/or attention pooling) on probe tasks
                 sed         sound event detection: a frame-level linear probe on SED tasks, PSDS1 and event F1
                             (needs the `sed` extra: sed_scores_eval)
                 zero_shot   probe tasks' test splits by the run's text side (--workdir)
                 retrieval   caption tasks, a2t/t2a R@1/5/10, mAP@10 (--workdir)
                 captioning  caption tasks, greedy/beam BLEU-1..4, ROUGE-L, CIDEr-D (--workdir, with a decoder)
                 lit         LiT-style alignment: freeze the audio encoder, train the text side on each caption
                             task's train split, then retrieval and captioning on its test split
                 default     probe, sed, zero_shot, retrieval, captioning (those the source and tasks allow)
                 study       probe, sed and lit (the study's probes and LiT-style alignment)
                 all         every evaluator that applies
Prints a table (task, metric, method, value, and the 95% interval where there is one) and writes values plus the
full protocol to --out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import ml_collections

import alp_jax
from alp_jax import encoder_api
from alp_jax.data import paths
from alp_jax.evaluate import baselines
from alp_jax.evaluate import evaluator as evaluator_lib
from alp_jax.evaluate import run_model as run_model_lib
from alp_jax.evaluate import sed_metrics
from alp_jax.evaluate import tasks as tasks_lib
from alp_jax.evaluate import tfds_tasks
from alp_jax.train import evaluators as registry
from alp_jax.train import runs

ALL = "all"


class UsageError(ValueError):
  """An evaluation was asked of a source or task that cannot give it."""


def cli_evaluators() -> dict[str, type]:
  """Registered evaluators the CLI can run, in their declared order."""
  found = {name: cls for name, cls in registry.registered().items() if cls.cli}
  return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


def suites() -> dict[str, tuple[str, ...]]:
  """Suite name -> evaluator names, from the evaluators' own declarations; "all" holds every one."""
  found: dict[str, tuple[str, ...]] = {}
  for name, cls in cli_evaluators().items():
    for suite in cls.suites:
      found[suite] = found.get(suite, ()) + (name,)
  found[ALL] = tuple(cli_evaluators())
  return found


def parse_suite(spec: str) -> tuple[str, ...]:
  known, groups = cli_evaluators(), suites()
  names = []
  for part in (p.strip() for p in spec.split(",") if p.strip()):
    if part not in groups and part not in known:
      raise UsageError(f"--suite {part!r}: choose evaluators from {tuple(known)} or suites from {sorted(groups)}")
    names += [n for n in groups.get(part, (part,)) if n not in names]
  return tuple(names)


def load_encoder(*, encoder: str | None = None, workdir: str | None = None, random_init: str | None = None,
                 step: int | None = None, seed: int = 0):
  """-> (AudioEncoder, provenance dict) from exactly one of encoder / workdir / random_init."""
  if encoder:
    loaded = encoder_api.AudioEncoder.load(encoder)
    return loaded, {"kind": "encoder", "path": os.fspath(paths.resolve(encoder)), "step": loaded.meta.get("step"),
                    "source_workdir": loaded.meta.get("source_workdir")}
  if workdir:
    run = run_model_lib.RunModel.from_workdir(workdir, step)
    return run.encoder, {"kind": "workdir", "path": os.fspath(paths.resolve(workdir)), "step": run.step}
  if paths.resolve(random_init.partition(":")[0]).is_dir():
    meta = encoder_api.read_meta(random_init.partition(":")[0])
  else:
    try:
      config = runs.load_config(random_init)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"--random-init {random_init}: neither an encoder folder nor a config file "
                              f"({e})") from None
    meta = encoder_api.meta_from_config(config)
  return encoder_api.AudioEncoder.build(meta, seed=seed), {"kind": "random_init", "path": random_init, "step": None,
                                                          "init_seed": seed}


def load_source(args) -> tuple[run_model_lib.RunModel, dict]:
  """The model the evaluators see: a training run (every part it has), an encoder alone, or a baseline's features."""
  if args.baseline:
    extractor = baselines.get(args.baseline)
    return run_model_lib.RunModel.from_features(extractor), {"kind": "baseline", "path": args.baseline, "step": None,
                                                              "baseline": args.baseline}
  if args.workdir:
    run = run_model_lib.RunModel.from_workdir(args.workdir, args.step)
    return run, {"kind": "workdir", "path": os.fspath(paths.resolve(args.workdir)), "step": run.step}
  encoder, provenance = load_encoder(encoder=args.encoder, random_init=args.random_init, seed=args.seed)
  return run_model_lib.RunModel.from_encoder(encoder, encoder_dir=args.encoder), provenance


def apply_layer(model: run_model_lib.RunModel, layer: str, evaluations: tuple[str, ...]) -> None:
  """--layer: the probes embed with that layer of the encoder (a view sharing its weights)."""
  if encoder_api.layer_name(layer) == encoder_api.LAST:
    return
  if set(evaluations) - {"probe"}:
    raise UsageError(f"--layer {layer}: only the probes embed with a chosen layer, not "
                     f"{', '.join(e for e in evaluations if e != 'probe')}; add --suite probe")
  try:
    model.encoder = model.encoder.at_layer(layer)
  except ValueError as e:
    raise UsageError(f"--layer {layer}: {e}") from None


def named_directly(spec: str | None) -> set[str]:
  """The evaluators a --suite value names by their own name (not through a suite)."""
  return {p.strip() for p in (spec or "").split(",") if p.strip() in cli_evaluators()}


def plan(evaluations: tuple[str, ...], capabilities: frozenset[str], tasks: dict[str, list], *,
         explicit: set[str] = frozenset(), log=print) -> tuple[str, ...]:
  """The evaluations that apply, by each evaluator's declarations. One named directly in --suite (`explicit`) that
  cannot apply is a UsageError; one that came from a suite is skipped with the reason."""
  known = cli_evaluators()
  kinds = [kind for kind, found in tasks.items() if found]
  kept = []
  for name in evaluations:
    reason = known[name].unmet(capabilities, kinds)
    if reason is None:
      kept.append(name)
    elif name in explicit:
      raise UsageError(f"--suite {name}: {reason}")
    elif log:
      log(f"[evaluate] {name}: skipped, {reason}")
  return tuple(kept)


def options_from_args(args, out: Path) -> ml_collections.ConfigDict:
  """The evaluators' options (what config.evaluators.NAME holds in training), from the flags."""
  return ml_collections.ConfigDict({
      "pooling": args.pooling, "seed": args.seed, "cache_dir": args.cache_dir,
      "beam_sizes": tuple(int(b) for b in args.beam_sizes.split(",") if b.strip()),
      "lit_config": args.lit_config, "lit_steps": args.lit_steps, "lit_batch_size": args.lit_batch_size,
      "lit_dir": args.lit_dir or str(out.parent / f"{out.stem}_lit"),
      "lit_text_checkpoint": args.lit_text_checkpoint, "lit_decoder_checkpoint": args.lit_decoder_checkpoint,
      "sed_resamples": args.sed_resamples,
  })


def format_table(rows: list[dict]) -> str:
  """(task, metric, method, value, 95% interval) rows; the method is the probe pooling, zero_shot, retrieval ..."""
  lines = [f"{'task':<24} {'metric':<11} {'method':<24} {'value':>8}  interval"]
  for row in rows:
    interval = "[{:.4f}, {:.4f}]".format(*row["interval"]) if row.get("interval") else ""
    lines.append(f"{row['task']:<24} {row['metric']:<11} {row['method']:<24} {row['value']:>8.4f}  {interval}".rstrip())
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.evaluate", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--encoder", help="exported encoder folder")
  source.add_argument("--workdir", help="training run folder (its encoder, and its text side)")
  source.add_argument("--random-init", help="exported encoder folder or config.py[:arg]: fresh weights")
  source.add_argument("--baseline", choices=baselines.BASELINES, help="classical features (probes only)")
  parser.add_argument("--step", type=int, default=None, help="with --workdir: checkpoint step (default latest)")
  parser.add_argument("--layer", default=encoder_api.LAST, help="probes: last (default), block K or patch")
  parser.add_argument("--task-dir", action="append", default=[], help="probe or caption task folder (repeatable)")
  tfds_tasks.add_arguments(parser)
  parser.add_argument("--suite", default=None, help="evaluators or suites, comma-separated (default: default)")
  parser.add_argument("--pooling", choices=("mean", "attention", "both"), default="both")
  parser.add_argument("--out", required=True, help="results JSON")
  parser.add_argument("--seed", type=int, default=0, help="probe seed (and random-init weights seed, LiT seed)")
  parser.add_argument("--cache-dir", default=None,
                      help="reuse embeddings across runs (float16 stores per task and split; docs/evaluation.md)")
  parser.add_argument("--beam-sizes", default="1,4", help="captioning decodings: 1 = greedy (default 1,4)")
  parser.add_argument("--lit-config", default="configs/hybrid.py:tiny",
                      help="LiT: the text side's config (its audio settings come from the encoder)")
  parser.add_argument("--lit-steps", type=int, default=400, help="LiT: training steps per caption task")
  parser.add_argument("--lit-batch-size", type=int, default=32, help="LiT: global batch (a multiple of devices)")
  parser.add_argument("--lit-dir", default=None, help="LiT: where its runs go (default: next to --out)")
  parser.add_argument("--lit-text-checkpoint", default=None,
                      help="LiT: a local Hugging Face BertModel folder the text tower starts from (the study's "
                           "recipe; with a --lit-config that has a text tower)")
  parser.add_argument("--lit-decoder-checkpoint", default=None,
                      help="LiT: a local Hugging Face BART folder the decoder starts from; only its cross-attention "
                           "trains (with a --lit-config that has a caption decoder)")
  parser.add_argument("--sed-resamples", type=int, default=sed_metrics.INTERVAL_RESAMPLES,
                      help="SED: bootstrap resamples of the PSDS1/F1 intervals (0: none; each rebuilds the PSD-ROC)")
  args = parser.parse_args(argv)
  if not args.task_dir and not args.tfds:
    parser.error("give at least one --task-dir or --tfds")

  started = time.time()
  out = Path(args.out)
  options = options_from_args(args, out)
  protocol: dict = {}
  try:
    requested = parse_suite(args.suite or "default")
    tasks = evaluator_lib.read_tasks(args.task_dir)   # reads every task now: names what is missing before work
    tasks[evaluator_lib.PROBE] += tfds_tasks.tasks_from_args(args)   # TFDS datasets are probe tasks
    model, provenance = load_source(args)
    evaluations = plan(requested, model.capabilities, tasks, explicit=named_directly(args.suite))
    if not evaluations:
      raise UsageError(f"nothing to evaluate: none of {requested} applies to these tasks with this source "
                       f"(see the lines above)")
    if args.baseline:
      if encoder_api.layer_name(args.layer) != encoder_api.LAST:
        raise UsageError(f"--layer {args.layer}: a baseline has no layers")
    else:
      apply_layer(model, args.layer, evaluations)
      provenance["layer"] = model.encoder.layer
    print(f"[evaluate] source: {provenance['kind']} {provenance['path']} (step {provenance['step']}), "
          f"parts {', '.join(sorted(model.capabilities))}, output width {model.encoder.output_dim}, window "
          f"{model.encoder.meta['crop_seconds']} s; evaluations: {', '.join(evaluations)}")
    rows = []
    for name in evaluations:
      evaluator = cli_evaluators()[name](None, options, log=print)
      kind = evaluator.task_kind
      rows += evaluator.rows(model, tasks[kind] if kind else [])
      protocol.update(evaluator.protocol())
  except (FileNotFoundError, tasks_lib.TaskFormatError, run_model_lib.MissingHead, UsageError,
          sed_metrics.MissingSedLibrary) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  results = {
      "results": rows,
      "protocol": {
          "encoder": provenance,
          "frontend": model.encoder.meta["frontend"],
          "window_seconds": model.encoder.meta["crop_seconds"],
          "embedding": (f"{args.baseline}: {baselines.DESCRIPTION}" if args.baseline else
                        f"frames of layer {provenance['layer']!r} of the whole clip, fixed windows of window_seconds "
                        "(last one masked)"),
          "evaluations": list(evaluations),
          **protocol,
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
