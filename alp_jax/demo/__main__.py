"""`make demo`: the miniature study end to end on the built-in demo corpus.

  python -m alp_jax.demo --out runs/demo [--stage corpus|study|recipe] [--sweep CONFIG] [--parallel N]
                         [--clips N] [--workers W] [--config.FIELD=VALUE ...]

1/4 corpus:  synthesise the demo corpus (espeak-ng, sox, fluidsynth; alp_jax/demo/corpus.py), prepare it like any
             real corpus, train the caption tokenizer, and read batches through the grain pipeline (one batch
             printed, then its throughput). `--stage corpus` stops here.
2/4 tasks:   render the demo's probe tasks (alp_jax/demo/tasks.py: fresh clips in five task folders, 108 test clips
             each, plus a caption task over the same clips) and two held-out tasks from another synthesis path
             (alp_jax/demo/ood_tasks.py: NumPy instruments and events at 44.1, 22.05 and 8 kHz); any clip that
             duplicates a corpus clip is drawn again, and the leakage report over every task must say clean.
3/4 study:   the sweep `--sweep` (default alp_jax/configs/sweeps/mini.py; `make study`: its "study" variant) on
             that corpus and those tasks, with the same runner as any sweep (python -m alp_jax.sweeps): a tagger
             for the supervised arm, then every point trained, exported and evaluated, and a random-init encoder
             of the same architecture through the same probes; results.jsonl and the report (fits, crossovers,
             plots, the study's findings) in OUT/study. `--config.FIELD=VALUE` overrides a sweep field.
4/4 result:  the table (every point and baseline per task, with 95% intervals), the pretrained-minus-random-init
             gaps, the fitted exponents with their intervals, the findings' verdicts, and where everything is.

`--stage recipe` (`make demo-recipe`) instead trains the reference small-scale recipe's two runs (configs/clap.py:demo
and configs/cappa.py:demo, 2000 steps each) and compares them in depth: both baselines (random init and log-mel
statistics) with paired gaps, zero-shot, retrieval and captioning (docs/representation.md).

A rerun reuses what an earlier one finished: the corpus and tokenizer, the rendered task clips, every complete
sweep stage (a killed sweep continues), the recipe's checkpoints and its embeddings cache.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from alp_jax import export
from alp_jax.benchmarks import pipeline as benchmark
from alp_jax.data import leakage
from alp_jax.data import pipeline
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.demo import corpus as demo_corpus
from alp_jax.demo import sysdeps
from alp_jax.demo import ood_tasks
from alp_jax.demo import tasks as demo_tasks
from alp_jax.encoder_api import AudioEncoder
from alp_jax.evaluate import baselines
from alp_jax.evaluate import comparison
from alp_jax.evaluate.run_model import RunModel
from alp_jax.sweeps import __main__ as sweeps_main
from alp_jax.sweeps import console
from alp_jax.train import runs
from alp_jax.train import trainer


STAGES = ("corpus", "study", "recipe")
MINI_SWEEP = "alp_jax.configs.sweeps.mini"
STUDY_SWEEP = "alp_jax.configs.sweeps.mini:study"


def _banner(text: str) -> None:
  print(f"\n=== {text} ===", flush=True)


def stage_corpus(out: Path, clips: int | None, workers: int) -> dict:
  corpus_dir = out / "corpus"
  _banner("1/4 demo corpus: synthesise, prepare, tokenizer")
  t0 = time.monotonic()
  kwargs = {"num_clips": clips} if clips else {}
  try:
    result = demo_corpus.build(corpus_dir, workers=workers, **kwargs)
  except sysdeps.MissingSystemPackage as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  build_seconds = time.monotonic() - t0
  if not (corpus_dir / tokenizer_lib.MODEL_FILE).exists():
    tokenizer_lib.train(corpus_dir, vocab_size=2000)
  tok = tokenizer_lib.Tokenizer(corpus_dir / tokenizer_lib.MODEL_FILE)
  _banner("pipeline: a few batches through grain")
  cfg = pipeline.default_data_config()
  cfg.corpus_dir, cfg.crop_seconds, cfg.max_caption_tokens = str(corpus_dir), 2.0, 24
  batch = pipeline.train_dataset(cfg, 16)[0]
  print("batch:", {k: f"{v.dtype}{list(v.shape)}" for k, v in batch.items()})
  print("first captions:", [tok.decode(t) for t in batch["caption_tokens"][:3]])
  rates = benchmark.measure(cfg, batch_size=32, batches=20)
  print(f"pipeline throughput: {rates['clips_per_s']:.0f} clips/s ({rates['audio_s_per_s']:.0f} s of audio per s) "
        f"with {cfg.num_threads} reader threads")
  return {"corpus_dir": str(corpus_dir), "clips": result["clips"], "hours": result["hours"],
          "build_seconds": round(build_seconds, 1), "pipeline_clips_per_s": round(rates["clips_per_s"], 1),
          "vocab_size": tok.vocab_size}


def stage_train(out: Path, corpus_dir: str, steps: int | None) -> dict:
  results = {}
  for i, (name, label) in enumerate((("clap", "contrastive"), ("cappa", "captioning")), 2):
    _banner(f"{i}/5 pretrain the {label} demo recipe ({name}) and export its encoder")
    cfg = runs.load_config(f"alp_jax.configs.{name}:demo")
    cfg.data.corpus_dir = corpus_dir
    if steps:
      cfg.total_steps = steps
    workdir = out / f"{name}_demo"
    t0 = time.monotonic()
    summary = trainer.train(cfg, workdir)
    seconds = time.monotonic() - t0
    losses = summary["losses"]
    meta = export.export(workdir, out / f"{name}_encoder")
    first, last = (losses[min(losses)], losses[max(losses)]) if losses else (float("nan"),) * 2
    results[name] = {"workdir": str(workdir), "encoder": str(out / f"{name}_encoder"), "steps": summary["final_step"],
                     "params_M": round(summary["params"] / 1e6, 2), "first_loss": round(first, 4),
                     "last_loss": round(last, 4), "train_seconds": round(seconds, 1),
                     "encoder_params_M": round(meta["num_params"] / 1e6, 2)}
  return results


def stage_tasks(out: Path, label: str) -> tuple[dict, dict, Path, dict]:
  """Renders the probe tasks, the held-out tasks and the caption task, and checks them all against the corpus."""
  _banner(f"{label} probe tasks: render, then check against the corpus (leakage)")
  corpus_dir = out / "corpus"
  corpus = leakage.read_corpus_audio(corpus_dir, quiet=True)
  # Any probe clip that duplicates a corpus clip is drawn again (demo_tasks); the report below re-checks them all.
  dirs = demo_tasks.build_demo_tasks(out / "probe_tasks", corpus_dir=corpus_dir, corpus=corpus)
  # Held-out tasks from another synthesis path (NumPy instruments and events, other rates and channels).
  ood_dirs = ood_tasks.build_ood_tasks(out / "ood_tasks", corpus_dir=corpus_dir, corpus=corpus)
  caption_dir = out / "probe_tasks" / demo_tasks.CAPTION_TASK
  leak_report = leakage.check(corpus_dir, list(dirs.values()) + list(ood_dirs.values()) + [caption_dir], corpus=corpus,
                              quiet=True)
  print("\n".join(leakage.summary_lines(leak_report)))
  (out / "leakage.json").write_text(json.dumps(leak_report, indent=1))
  print(f"[leakage] full report: {out / 'leakage.json'}")
  leak = f"{leak_report['exact']} exact, {leak_report['near']} near ({out / 'leakage.json'})"
  return dirs, ood_dirs, caption_dir, {"tasks": len(dirs) + len(ood_dirs) + 1, "leakage": leak}


def stage_study(out: Path, workdir: Path, config: str, parallel: int, fields: list[str]) -> dict:
  """The miniature study: the sweep config on the demo corpus and tasks (alp_jax/sweeps), then its summary."""
  _banner(f"3/4 the miniature study: {config} (train, export, evaluate every point and the baselines)")
  t0 = time.monotonic()
  argv = ["--config", config, "--workdir", str(workdir), "--parallel", str(parallel),
          f"--config.demo_dir={out}", *[f"--config.{f}" for f in fields]]
  status = sweeps_main.main(argv)
  if status == 2:
    sys.exit(2)
  _banner("4/4 the miniature study's result")
  if (workdir / "results.jsonl").exists():
    print("\n".join(console.summary_lines(workdir)), flush=True)
  return {"workdir": str(workdir), "status": status, "seconds": round(time.monotonic() - t0, 1),
          "report": str(workdir / "report" / "report.md")}


def stage_compare(out: Path, dirs: dict, ood_dirs: dict, caption_dir: Path) -> dict:
  """The reference recipe's two encoders against both baselines, zero-shot, and their text side."""
  _banner("recipe: linear probes on the demo tasks (pretrained vs random init vs log-mel statistics)")
  t0 = time.monotonic()
  clap = AudioEncoder.load(out / "clap_encoder")
  # The baselines every pretrained encoder is compared with: the same architecture with random weights, and the
  # classical log-mel statistics (alp_jax/evaluate/baselines.py), through the same probes.
  encoders = {"random_init": AudioEncoder.build(clap.meta, seed=0), "logmel-stats": baselines.get("logmel-stats"),
              "clap": clap, "cappa": AudioEncoder.load(out / "cappa_encoder")}
  # The runs' own text sides, zero-shot on the tasks named by caption words: CLAP by its text tower, CapPa by
  # the likelihood of the class prompts under its decoder.
  runs = {name: RunModel.from_workdir(out / f"{name}_demo") for name in ("clap", "cappa")}
  cache_dir = out / "embeddings"   # each clip encoded once per encoder weights, also across `make demo` runs
  rows = demo_tasks.compare(encoders, list(dirs.values()) + list(ood_dirs.values()), runs=runs, cache_dir=cache_dir)
  print()
  print(comparison.format_table(rows), flush=True)
  print("\n".join(comparison.summary_lines(rows)))
  (out / "probe_results.json").write_text(json.dumps(rows, indent=1))
  _banner("the runs' text side on the demo caption task (test split): retrieval and captioning")
  text_rows = demo_tasks.compare_text_side(runs, caption_dir, cache_dir=cache_dir)
  print()
  demo_tasks.print_comparison([r for r in text_rows if r["metric"] in demo_tasks.SHOWN_TEXT_METRICS])
  clips = sum(1 for _ in open(caption_dir / "test.jsonl"))
  print(f"({clips} test clips: chance R@1 = {1 / clips:.3f}, R@10 = {min(1.0, 10 / clips):.3f}; all metrics in "
        f"{out / 'text_results.json'})")
  (out / "text_results.json").write_text(json.dumps(text_rows, indent=1))
  return {"seconds": round(time.monotonic() - t0, 1), "results": str(out / "probe_results.json"),
          "text_results": str(out / "text_results.json")}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/demo")
  parser.add_argument("--clips", type=int, default=None, help="demo corpus size (default: the demo's default)")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--stage", choices=STAGES, default="study",
                      help="corpus: stop after the corpus; study (default): the miniature study; recipe: the "
                           "reference recipe's two runs compared in depth")
  parser.add_argument("--sweep", default=MINI_SWEEP, help=f"the study's sweep config (default {MINI_SWEEP}; "
                                                           f"`make study`: {STUDY_SWEEP})")
  parser.add_argument("--parallel", type=int, default=2, help="study: stages run at once (default 2)")
  parser.add_argument("--study-dir", default=None,
                      help="study: the sweep's folder (default OUT/study, or OUT/study_large for the study grid)")
  parser.add_argument("--steps", type=int, default=None,
                      help="recipe: training steps per model (default: the recipe's, configs/common.py DEMO_STEPS)")
  args, rest = parser.parse_known_args(argv)
  fields = [a[len("--config."):] for a in rest if a.startswith("--config.") and "=" in a]
  unknown = [a for a in rest if not (a.startswith("--config.") and "=" in a)]
  if unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  summary = {"corpus": stage_corpus(out, args.clips, args.workers)}
  if args.stage == "study":
    dirs, ood_dirs, caption_dir, summary["tasks"] = stage_tasks(out, "2/4")
    study_dir = Path(args.study_dir) if args.study_dir else out / ("study_large" if args.sweep == STUDY_SWEEP else "study")
    summary["study"] = stage_study(out, study_dir, args.sweep, args.parallel, fields)
  elif args.stage == "recipe":
    summary.update(stage_train(out, summary["corpus"]["corpus_dir"], args.steps))
    dirs, ood_dirs, caption_dir, summary["tasks"] = stage_tasks(out, "4/5")
    summary["evaluation"] = stage_compare(out, dirs, ood_dirs, caption_dir)
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  _banner("summary")
  for section, values in summary.items():
    print(f"{section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
  if args.stage == "recipe":
    print(f"encoders: load with `from alp_jax import AudioEncoder; AudioEncoder.load('{out}/clap_encoder')`")
  elif args.stage == "study":
    print(f"encoders: every point's export is in {out}/study/runs/<point>/encoder (AudioEncoder.load)")
  print(f"wrote {out}/summary.json")
  return 1 if summary.get("study", {}).get("status") == 1 else 0


if __name__ == "__main__":
  sys.exit(main())
