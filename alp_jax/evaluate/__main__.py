"""Linear-probe evaluation of a frozen audio encoder on task folders.

  python -m alp_jax.evaluate (--encoder ENC_DIR | --workdir DIR [--step N] | --random-init CONFIG_OR_ENC_DIR)
      --task-dir DIR [--task-dir DIR ...] [--pooling mean|attention|both] --out results.json [--seed 0]
      [--cache-dir DIR] [--zero-shot]

--encoder      an exported encoder (python -m alp_jax.export).
--workdir      a training run: its latest (or --step) checkpoint's encoder is exported to a temporary folder.
--random-init  fresh weights (seeded by --seed) for an exported encoder's exact architecture and frontend
               (ENC_DIR), or for a config's (configs/clap.py:tiny): the untrained baseline.
--zero-shot    with --workdir of a contrastive run: also score each task's test split zero-shot (class names
               through the text tower; rows with pooling "zero_shot").
A task folder holds train.csv / test.csv (optional valid.csv) with columns path,label (docs/evaluation.md).
Prints a table (task, metric, pooling, value) and writes values plus the full protocol to --out.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import alp_jax
from alp_jax.evaluate import probe as probe_lib
from alp_jax.evaluate import tasks as tasks_lib
from alp_jax.evaluate import zero_shot


def meta_from_config(config) -> dict:
  """Encoder settings of a training config, as alp_jax.export writes them."""
  return {"frontend": config.frontend.to_dict(), "audio": config.model.audio.to_dict(),
          "crop_seconds": config.data.crop_seconds}


def load_config(spec: str):
  """'path/to/config.py[:arg]' -> config.get_config(arg)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(f"alp_eval_config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def load_encoder(*, encoder: str | None = None, workdir: str | None = None, random_init: str | None = None,
                 step: int | None = None, seed: int = 0, export_dir: str | None = None):
  """-> (AudioEncoder, provenance dict) from exactly one of encoder / workdir / random_init."""
  from alp_jax import encoder_api
  from alp_jax import export as export_lib
  if encoder:
    loaded = encoder_api.AudioEncoder.load(encoder)
    return loaded, {"kind": "encoder", "path": str(Path(encoder).absolute()), "step": loaded.meta.get("step"),
                    "source_workdir": loaded.meta.get("source_workdir")}
  if workdir:
    meta = export_lib.export(workdir, export_dir, step, quiet=True)
    return encoder_api.AudioEncoder.load(export_dir), {"kind": "workdir", "path": str(Path(workdir).absolute()),
                                                       "step": meta["step"]}
  source = Path(random_init.partition(":")[0])
  if source.is_dir():
    config_path = source / encoder_api.CONFIG_FILE
    if not config_path.exists():
      raise FileNotFoundError(f"{source} is not an exported encoder (no {encoder_api.CONFIG_FILE})")
    meta = json.loads(config_path.read_text())
  else:
    if not source.exists():
      raise FileNotFoundError(f"--random-init {random_init}: neither an encoder folder nor a config file")
    meta = meta_from_config(load_config(random_init))
  return encoder_api.AudioEncoder.build(meta, seed=seed), {"kind": "random_init", "path": random_init, "step": None,
                                                          "init_seed": seed}


def format_table(rows: list[dict]) -> str:
  lines = [f"{'task':<24} {'metric':<9} {'pooling':<10} {'value':>8}"]
  for row in rows:
    lines.append(f"{row['task']:<24} {row['metric']:<9} {row['pooling']:<10} {row['value']:>8.4f}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.evaluate", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--encoder", help="exported encoder folder")
  source.add_argument("--workdir", help="training run folder (exports its checkpoint's encoder)")
  source.add_argument("--random-init", help="exported encoder folder or config.py[:arg]: fresh weights")
  parser.add_argument("--step", type=int, default=None, help="with --workdir: checkpoint step (default latest)")
  parser.add_argument("--task-dir", action="append", required=True, help="task folder (repeatable)")
  parser.add_argument("--pooling", choices=("mean", "attention", "both"), default="both")
  parser.add_argument("--out", required=True, help="results JSON")
  parser.add_argument("--seed", type=int, default=0, help="probe seed (and random-init weights seed)")
  parser.add_argument("--cache-dir", default=None, help="reuse embeddings across runs (one .npz per task)")
  parser.add_argument("--zero-shot", action="store_true", help="with --workdir of a contrastive run")
  args = parser.parse_args(argv)
  if args.zero_shot and not args.workdir:
    parser.error("--zero-shot needs --workdir (the text tower is not part of an exported encoder)")

  started = time.time()
  poolings = probe_lib.POOLINGS if args.pooling == "both" else (args.pooling,)
  config = probe_lib.ProbeConfig(seed=args.seed)
  with tempfile.TemporaryDirectory(prefix="alp_eval_export_") as export_dir:
    try:
      encoder, provenance = load_encoder(encoder=args.encoder, workdir=args.workdir, random_init=args.random_init,
                                         step=args.step, seed=args.seed, export_dir=export_dir)
      print(f"[evaluate] encoder: {provenance['kind']} {provenance['path']} (step {provenance['step']}), "
            f"output width {encoder.output_dim}, window {encoder.meta['crop_seconds']} s")
      rows = probe_lib.evaluate_encoder(encoder, args.task_dir, poolings=poolings, config=config,
                                        cache_dir=args.cache_dir)
      if args.zero_shot:
        model, _ = zero_shot.ZeroShotModel.from_workdir(args.workdir, args.step)
        rows += [zero_shot.evaluate_task(model, task_dir) for task_dir in args.task_dir]
    except (FileNotFoundError, tasks_lib.TaskFormatError, zero_shot.NotContrastiveRun) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  results = {
      "results": rows,
      "protocol": {
          "encoder": provenance,
          "frontend": encoder.meta["frontend"],
          "window_seconds": encoder.meta["crop_seconds"],
          "embedding": "last-layer frames of the whole clip, fixed windows of window_seconds (last one masked)",
          "poolings": list(poolings) + (["zero_shot"] if args.zero_shot else []),
          "probe": config.to_dict(),
          "selection": "valid.csv if present, else a seeded valid_fraction of train (seed 0); first best in grid "
                       "order; retrain on train+valid",
          "seed": args.seed,
      },
      "alp_jax_version": alp_jax.__version__,
      "time": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
      "seconds": round(time.time() - started, 1),
  }
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1))
  print(format_table(rows))
  skipped = sum(row["skipped_files"] for row in rows if row["pooling"] == poolings[0])
  print(f"[evaluate] {len(args.task_dir)} task(s), {skipped} file(s) skipped, {results['seconds']}s -> {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
