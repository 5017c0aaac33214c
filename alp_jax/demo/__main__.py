"""`make demo`: the main job end to end on the built-in demo corpus.

  python -m alp_jax.demo --out runs/demo [--clips N] [--steps N] [--workers W] [--stage corpus|all]

1/4 corpus:    synthesise the demo corpus (espeak-ng, sox, fluidsynth; alp_jax/demo/corpus.py), prepare it like
               any real corpus, train the caption tokenizer, and read batches through the grain pipeline (one
               batch printed, then its throughput). `--stage corpus` stops here.
2/4 CLAP:      pretrain the reference small-scale contrastive recipe (configs/clap.py:demo: the tiny model,
               2000 steps, no SpecAugment; docs/representation.md says why) on the demo corpus with the same
               trainer as any run (python -m alp_jax.train), and export its audio encoder.
3/4 CapPa:     the same for the captioning recipe (configs/cappa.py:demo).
4/4 evaluate:  render the demo's probe tasks (alp_jax/demo/tasks.py: fresh clips in five task folders, 100 test
               clips each, plus a caption task over the same clips; any clip that duplicates a corpus clip is
               drawn again) and three held-out tasks from another synthesis path (alp_jax/demo/ood_tasks.py:
               NumPy instruments and events at 44.1, 22.05 and 8 kHz), then
  - leakage:   check every task folder against the corpus (the report must say clean; leakage.json);
  - probes:    linear probes (mean and attention pooling) of both exported encoders and of the two baselines,
               a random-init encoder of the same architecture and the classical log-mel statistics, on all
               eight tasks; every value with its 95% bootstrap interval over test clips, and each pretrained
               encoder's gap over the stronger baseline with its paired interval ("*": excludes zero);
  - zero-shot: both runs' own text side on the tasks whose class names are caption words (CLAP: its text
               tower, CapPa: the caption likelihood of the class prompts), in the same table
               (probe_results.json);
  - text side: both runs' retrieval, and CapPa's captioning, on the caption task's test split
               (text_results.json).
Last, a summary of every stage (summary.json). A rerun reuses what an earlier one finished: the corpus and
tokenizer, the training checkpoints (training resumes), the rendered task clips and the embeddings cache
(embeddings/), so a second `make demo` is quick.
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
from alp_jax.train import runs
from alp_jax.train import trainer


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
    _banner(f"{i}/4 pretrain the {label} demo recipe ({name}) and export its encoder")
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


def stage_evaluate(out: Path) -> dict:
  _banner("4/4 evaluate: linear probes on the demo tasks (pretrained vs random init vs log-mel statistics)")
  t0 = time.monotonic()
  corpus_dir = out / "corpus"
  corpus = leakage.read_corpus_audio(corpus_dir, quiet=True)
  # Any probe clip that duplicates a corpus clip is drawn again (demo_tasks); the report below re-checks them all.
  dirs = demo_tasks.build_demo_tasks(out / "probe_tasks", corpus_dir=corpus_dir, corpus=corpus)
  # Held-out tasks from another synthesis path (NumPy instruments and events, other rates and channels).
  ood_dirs = ood_tasks.build_ood_tasks(out / "ood_tasks", corpus_dir=corpus_dir, corpus=corpus)
  _banner("leakage: the probe tasks against the pretraining corpus")
  caption_dir = out / "probe_tasks" / demo_tasks.CAPTION_TASK
  leak_report = leakage.check(corpus_dir, list(dirs.values()) + list(ood_dirs.values()) + [caption_dir], corpus=corpus,
                              quiet=True)
  print("\n".join(leakage.summary_lines(leak_report)))
  (out / "leakage.json").write_text(json.dumps(leak_report, indent=1))
  print(f"[leakage] full report: {out / 'leakage.json'}")
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
  return {"tasks": len(dirs) + len(ood_dirs), "seconds": round(time.monotonic() - t0, 1),
          "results": str(out / "probe_results.json"), "text_results": str(out / "text_results.json"),
          "leakage": f"{leak_report['exact']} exact, {leak_report['near']} near ({out / 'leakage.json'})"}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/demo")
  parser.add_argument("--clips", type=int, default=None, help="demo corpus size (default: the demo's default)")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--stage", choices=("corpus", "all"), default="all")
  parser.add_argument("--steps", type=int, default=None,
                      help="training steps per model (default: the recipe's, configs/common.py DEMO_STEPS)")
  args = parser.parse_args(argv)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  summary = {"corpus": stage_corpus(out, args.clips, args.workers)}
  if args.stage == "all":
    summary.update(stage_train(out, summary["corpus"]["corpus_dir"], args.steps))
    summary["evaluation"] = stage_evaluate(out)
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  _banner("summary")
  for section, values in summary.items():
    print(f"{section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
  print(f"encoders: load with `from alp_jax import AudioEncoder; AudioEncoder.load('{out}/clap_encoder')`")
  print(f"wrote {out}/summary.json")
  return 0


if __name__ == "__main__":
  sys.exit(main())
