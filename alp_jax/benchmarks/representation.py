"""Where does the representation come from? Probe accuracy of pretrained encoders against training steps, model
size, corpus size and layer, next to the random-init encoder of the same architecture and the classical log-mel
baseline (the measurements behind docs/representation.md).

  python -m alp_jax.benchmarks.representation --out runs/representation \\
      --tasks runs/demo/probe_tasks --tasks runs/demo/ood_tasks \\
      --run "clap=alp_jax.configs.clap:demo" --run "clap_small=alp_jax.configs.clap:demo;model.audio.size=small" \\
      --steps 200,600,1200 [--layers] [--pooling mean,attention] [--corpus runs/demo/corpus]

--run NAME=CONFIG[;field=value;...]: a training run (config overrides as `--config.field=value` would set them).
Each run trains once (resuming in OUT/NAME) to the largest of --steps, keeping a checkpoint at every listed step;
each listed step is exported and probed (mean pooling by default) on every task of every --tasks folder (a task
folder, or a folder of task folders). --layers probes every block's output of the last step (and of the
random-init encoder) instead of only the last layer. The baselines (random init of each run's architecture, the
log-mel statistics) are probed once per architecture. Every result is one line of OUT/results.jsonl
{run, step, layer, task, method, metric, value, interval}; a rerun skips what is there.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import time
from pathlib import Path

from alp_jax import export
from alp_jax.encoder_api import AudioEncoder
from alp_jax.evaluate import baselines
from alp_jax.evaluate import probe as probe_lib
from alp_jax.train import runs
from alp_jax.train import trainer


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_run(spec: str) -> tuple[str, str, dict]:
  """'NAME=CONFIG;a.b=1;c=x' -> (NAME, CONFIG, {"a.b": 1, "c": "x"})."""
  name, _, rest = spec.partition("=")
  if not name or not rest:
    raise ValueError(f"--run {spec!r}: expected NAME=CONFIG[;field=value...]")
  config, *overrides = rest.split(";")
  fields = {}
  for item in overrides:
    field, eq, value = item.partition("=")
    if not eq:
      raise ValueError(f"--run {spec!r}: override {item!r} is not field=value")
    fields[field.strip()] = _value(value.strip())
  return name, config, fields


def build_config(config_spec: str, overrides: dict, corpus: str | None):
  config = runs.load_config(config_spec)
  if corpus:
    config.data.corpus_dir = corpus
  for field, value in overrides.items():
    node = config
    *parents, last = field.split(".")
    for key in parents:
      node = node[key]
    if last not in node:
      raise KeyError(f"override {field}: the config has no such field")
    node[last] = type(node[last])(value) if node[last] is not None and not isinstance(value, str) else value
  return config


def task_dirs(folders: list[str]) -> list[Path]:
  out = []
  for folder in map(Path, folders):
    if (folder / "train.csv").exists():
      out.append(folder)
    else:
      out += sorted(p for p in folder.iterdir() if (p / "train.csv").exists())
  if not out:
    raise FileNotFoundError(f"no task folder (with train.csv) in {folders}")
  return out


class Results:
  """OUT/results.jsonl: one line per (run, step, layer, task, method); `has` lets a rerun skip finished work."""

  def __init__(self, path: Path):
    self.path = path
    self.rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    self.done = {self.key(r) for r in self.rows}

  @staticmethod
  def key(row: dict) -> tuple:
    return (row["run"], row["step"], str(row["layer"]), row["task"], row["method"])

  def has(self, run: str, step, layer, tasks: list[Path], poolings) -> bool:
    return all((run, step, str(layer), t.name, p) in self.done for t in tasks for p in poolings)

  def add(self, row: dict) -> None:
    self.rows.append(row)
    self.done.add(self.key(row))
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")


def probe(results: Results, run: str, step, layer, encoder, tasks: list[Path], poolings, cache: Path) -> None:
  if results.has(run, step, layer, tasks, poolings):
    return
  t0 = time.monotonic()
  rows = probe_lib.evaluate_encoder(encoder, tasks, poolings=tuple(poolings), cache_dir=cache, log=None)
  for r in rows:
    results.add({"run": run, "step": step, "layer": layer, "task": r["task"], "method": r["method"],
                 "metric": r["metric"], "value": r["value"], "interval": r.get("interval")})
  values = ", ".join(f"{r['task']}/{r['method']} {r['value']:.3f}" for r in rows)
  print(f"[representation] {run} step {step} layer {layer}: {values} ({time.monotonic() - t0:.0f}s)", flush=True)


def layers_of(encoder) -> list:
  """Every layer, input to output: "patch", 0 .. depth-1 (raw block outputs), "last" (the encoder's output)."""
  return ["patch"] + list(range(encoder.num_layers)) + ["last"]


def table(rows: list[dict], method: str = "mean") -> str:
  """A line per (run, step, layer), a column per task: the probe value with `method` pooling."""
  tasks = list(dict.fromkeys(r["task"] for r in rows if r["method"] == method))
  lines = [f"{'run':<24} {'step':>5} {'layer':>6} " + " ".join(f"{t[:11]:>11}" for t in tasks)]
  grouped: dict[tuple, dict] = {}
  for r in rows:
    if r["method"] == method:
      grouped.setdefault((r["run"], r["step"], str(r["layer"])), {})[r["task"]] = r["value"]
  for (run, step, layer), values in grouped.items():
    lines.append(f"{run:<24} {step:>5} {layer:>6} " + " ".join(
        f"{values[t]:>11.3f}" if t in values else f"{'-':>11}" for t in tasks))
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.benchmarks.representation", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("--tasks", action="append", required=True, help="task folder or folder of task folders")
  parser.add_argument("--run", action="append", default=[], help="NAME=CONFIG[;field=value...] (repeatable)")
  parser.add_argument("--steps", default="400", help="comma-separated training steps to probe")
  parser.add_argument("--corpus", default=None, help="corpus_dir for every run (default: the config's)")
  parser.add_argument("--layers", action="store_true", help="probe every block of the last step and of random init")
  parser.add_argument("--pooling", default="mean", help="comma-separated: mean, attention")
  args = parser.parse_args(argv)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tasks = task_dirs(args.tasks)
  steps = sorted({int(s) for s in args.steps.split(",")})
  poolings = [p for p in args.pooling.split(",") if p]
  results = Results(out / "results.jsonl")
  cache = out / "embeddings"
  t_start = time.monotonic()
  baseline = baselines.get("logmel-stats")
  probe(results, "logmel-stats", 0, "stats", baseline, tasks, poolings, cache)
  for spec in args.run:
    name, config_spec, overrides = parse_run(spec)
    config = build_config(config_spec, overrides, args.corpus)
    config.total_steps = max(steps)
    config.checkpoint_every = math.gcd(*steps)
    config.keep_checkpoints = len(range(0, max(steps), config.checkpoint_every)) + 1
    workdir = out / name
    t0 = time.monotonic()
    summary = trainer.train(config, workdir)
    train_seconds = time.monotonic() - t0
    (out / f"{name}.train.json").write_text(json.dumps(
        {"spec": spec, "seconds": round(train_seconds, 1), "final_step": summary["final_step"],
         "params": summary["params"], "last_loss": summary["losses"].get(max(summary["losses"]))
         if summary["losses"] else None}, indent=1))
    for step in steps:
      enc_dir = out / "encoders" / f"{name}-{step}"
      if not (enc_dir / "encoder_config.json").exists():
        export.export(workdir, enc_dir, step, quiet=True)
      encoder = AudioEncoder.load(enc_dir)
      for layer in (layers_of(encoder) if args.layers and step == max(steps) else ["last"]):
        probe(results, name, step, layer, encoder if layer == "last" else encoder.at_layer(layer), tasks, poolings,
              cache)
      if step == max(steps):
        random_name = f"random_init:{encoder.meta['audio'].get('size', '?')}"
        random = AudioEncoder.build(encoder.meta, seed=0)
        for layer in (layers_of(random) if args.layers else ["last"]):
          probe(results, random_name, 0, layer, random if layer == "last" else random.at_layer(layer), tasks,
                poolings, cache)
  for method in poolings:
    print(f"\nprobe accuracy, {method} pooling:\n" + table(results.rows, method))
  print(f"[representation] {len(results.rows)} results in {out / 'results.jsonl'} "
        f"({time.monotonic() - t_start:.0f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
