"""A sweep config expanded into points and a dependency graph of stages; DIR/sweep.json.

  sweep = plan.load_sweep_config("configs/sweeps/mini.py", ["budget.steps=200"])
  p = plan.expand(sweep, "runs/sweep_mini")     # -> Plan(points, stages, baselines)
  plan.write(p)                                 # DIR/sweep.json (refuses a changed plan: check_compatible)

The grid is the product of the axes objectives x data_pairs x inits x model_sizes x seeds x fields (any training
config fields, each with its values). A point trains `base_configs[objective]` (with {size} filled) plus the
sweep's overrides, its axes' values, the subset fraction that gives its number of pairs (alp_jax/sweeps/scale.py),
the schedule and its budget's total_steps. Budget rules (config.budget.rule):
  fixed_steps   every point trains budget.steps (budget.supervised_steps for supervised points when > 0: the
                study's 600k from scratch vs 200k from the tagger)
  samples       samples seen proportional to data: steps = ceil(budget.epochs x pairs / batch_size), clipped to
                [budget.min_steps, budget.max_steps]
  fixed_flops   the same compute per point: steps = ceil(budget.flops / step FLOPs) (alp_jax/train/flops.py),
                clipped to [min_steps, max_steps]
Budget branches (budget.branches = fractions of each point's budget, e.g. (0.25, 0.5)): one constant-rate run
serves several budgets. The point's run keeps its checkpoint where each smaller budget's cooldown starts
(keep_steps); each branch point ("NAME_b0.25", budget "RULE*0.25") restores it and trains only the cooldown
(train/branch.py), then is exported and evaluated like any point. Fits and plots treat each budget as its own
curve (the budget is part of the context), so the compute axis gains points at a fraction of the cost.
Stages: a tagger (per model size, only when some point is supervised) trains on the labels of the corpus
(configs/tagging.py) and is exported once; every supervised point trains from that export (model_init). Each
point: train -> export -> evaluate. Baselines: a random-init encoder of each model size and seed (the exact
architecture of that size's first export) and, optionally, log-mel statistics, evaluated on the same tasks.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import json
import math
import os

import ml_collections
from etils import epath

from alp_jax.data import paths
from alp_jax.sweeps import overrides as overrides_lib
from alp_jax.sweeps import scale
from alp_jax.sweeps import stages as stages_lib
from alp_jax.train import branch as branch_lib
from alp_jax.train import flops as flops_lib
from alp_jax.train import runs

SWEEP_FILE = "sweep.json"
OBJECTIVES = ("contrastive", "sigmoid", "captioning", "hybrid")
INITS = ("scratch", "supervised")
RULES = ("fixed_steps", "samples", "fixed_flops")
DEFAULT_BASE_CONFIGS = {
    "contrastive": "configs/clap.py:{size}",
    "sigmoid": "configs/clap.py:{size},sigmoid",
    "captioning": "configs/cappa.py:{size}",
    "hybrid": "configs/hybrid.py:{size}",
}


@dataclasses.dataclass
class Point:
  name: str
  axes: dict                  # objective, init, requested_pairs, data_pairs, model_size, seed, and field axes
  config: str                 # the training config spec
  overrides: list[str]        # field=value, passed as --config.field=value
  steps: int
  batch_size: int
  samples: int
  flops_per_step: float
  flops: float
  trained_steps: int = -1     # steps this run itself trains (a cooldown branch: its cooldown only); -1: steps

  def __post_init__(self):
    if self.trained_steps < 0:
      self.trained_steps = self.steps

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Plan:
  name: str
  workdir: str
  sweep: dict                 # the sweep config as JSON
  points: list[Point]
  stages: list[stages_lib.Stage]
  baselines: dict             # baseline run name -> {"kind", "model_size", "seed", "output"}
  taggers: dict               # model size -> {"config", "overrides", "steps", "workdir", "encoder"}

  def stage(self, stage_id: str) -> stages_lib.Stage:
    return next(s for s in self.stages if s.id == stage_id)

  def to_dict(self) -> dict:
    return {"name": self.name, "workdir": self.workdir, "sweep": self.sweep,
            "points": [p.to_dict() for p in self.points], "taggers": self.taggers, "baselines": self.baselines,
            "stages": [s.to_dict() for s in self.stages],
            "total": {"steps": sum(p.trained_steps for p in self.points),
                      "samples": sum(p.trained_steps * p.batch_size for p in self.points),
                      "flops": sum(p.trained_steps * p.flops_per_step for p in self.points)}}


def load_sweep_config(spec: str, field_overrides=()) -> ml_collections.ConfigDict:
  """configs/sweeps/NAME.py[:arg] (or alp_jax.configs.sweeps.NAME) with `field=value` overrides applied."""
  config = runs.load_config(spec)
  overrides_lib.set_sweep_fields(config, field_overrides, where=spec)
  with config.unlocked():
    config.spec = spec
  return config


def pairs_label(pairs: int) -> str:
  """400000 -> '400k', 1000000 -> '1m', 48 -> '48'."""
  for unit, size in (("m", 1_000_000), ("k", 1_000)):
    if pairs >= size and pairs % (size // 10) == 0:
      text = f"{pairs / size:g}"
      return text.replace(".", "p") + unit
  return str(pairs)


def _value_label(value) -> str:
  return str(value).replace(" ", "").replace("/", "-").replace(",", "-").strip("()[]'\"")


def _point_name(objective, init, pairs, size, seed, fields) -> str:
  extra = "".join(f"_{field.split('.')[-1]}{_value_label(value)}" for field, value in fields)
  return f"{objective}_{init}_{pairs_label(pairs)}_{size}_s{seed}{extra}"


class _TrainingConfigs:
  """Loads training configs with overrides once per distinct (spec, overrides); step FLOPs once per config."""

  def __init__(self, corpus_dir: str):
    self.corpus_dir = corpus_dir
    self._configs, self._flops = {}, {}

  def get(self, spec: str, overrides: list[str], where: str) -> ml_collections.ConfigDict:
    key = (spec, tuple(overrides))
    if key not in self._configs:
      config = overrides_lib.apply(runs.load_config(spec), overrides, where=where)
      try:
        runs.set_data_sizes(config)   # the vocabulary and classes of this corpus, as the trainer will set them
      except (FileNotFoundError, ValueError, OSError):
        pass
      self._configs[key] = config
    return self._configs[key]

  def step_flops(self, config: ml_collections.ConfigDict) -> float:
    cost_config = ml_collections.ConfigDict(config.to_dict())
    with cost_config.unlocked():   # fields that do not change one step's cost
      cost_config.total_steps, cost_config.seed, cost_config.model_init = 0, 0, ""
      cost_config.data.subset_fraction = 1.0
      if cost_config.model.get("num_classes", 1) < 1:
        cost_config.model.num_classes = 1
    key = cost_config.to_json_best_effort(sort_keys=True)
    if key not in self._flops:
      self._flops[key] = float(flops_lib.step_flops(cost_config))
    return self._flops[key]


def _budget_steps(budget, init: str, pairs: int, batch_size: int, step_flops: float, where: str) -> int:
  rule = budget.rule
  if rule == "fixed_steps":
    steps = budget.supervised_steps if init == "supervised" and budget.get("supervised_steps", 0) > 0 \
        else budget.steps
    return int(steps)
  if rule == "samples":
    steps = math.ceil(budget.epochs * pairs / batch_size)
  elif rule == "fixed_flops":
    steps = math.ceil(budget.flops / step_flops)
  else:
    raise ValueError(f"{where}: budget.rule {rule!r} is not one of {', '.join(RULES)}")
  low, high = int(budget.get("min_steps", 1)), int(budget.get("max_steps", 0))
  return max(low, min(steps, high) if high > 0 else steps)


def _point_stages(sweep, workdir: str, name: str, spec: str, overrides: list[str], deps: list[str], steps: int,
                  start_step: int, source: str, seed: int, objective: str) -> list[stages_lib.Stage]:
  """A point's train -> export -> evaluate stages in WORKDIR/runs/NAME (a branch trains from start_step)."""
  root = os.path.join(workdir, "runs", name)
  train_dir, enc_dir, out = (os.path.join(root, "train"), os.path.join(root, "encoder"),
                             os.path.join(root, "eval.json"))
  return [
      stages_lib.Stage(f"runs/{name}/train", stages_lib.TRAIN, name, "alp_jax.train",
                       ["--config", spec, "--workdir", train_dir] + [f"--config.{o}" for o in overrides],
                       deps, root, train_dir, steps=steps, start_step=start_step),
      stages_lib.Stage(f"runs/{name}/export", stages_lib.EXPORT, name, "alp_jax.export",
                       ["--workdir", train_dir, "--out", enc_dir], [f"runs/{name}/train"], root, enc_dir,
                       source_workdir=train_dir),
      stages_lib.Stage(f"runs/{name}/evaluate", stages_lib.EVALUATE, name, "alp_jax.evaluate",
                       ([f"--{source}", train_dir if source == "workdir" else enc_dir]
                        + _eval_args(sweep, out, seed, objective)),
                       [f"runs/{name}/export"], root, out)]


def _branches(sweep, config, steps: int, where: str) -> list[tuple[float, int, int]]:
  """[(fraction, steps, fork step)] of a point's cooldown branches (budget.branches, train/branch.py): each
  budget is round(fraction x steps) and forks from the point's run where its own cooldown starts."""
  fractions = tuple(sweep.budget.get("branches", ()))
  if not fractions:
    return []
  if sweep.schedule.name != "constant_cooldown":
    raise ValueError(f"{where}: budget.branches needs schedule.name='constant_cooldown' (a branch cools down "
                     f"from the constant phase), not {sweep.schedule.name!r}")
  bad = [f for f in fractions if not 0 < float(f) < 1]
  if bad or len(set(fractions)) != len(fractions):
    raise ValueError(f"{where}: budget.branches {fractions}: give distinct fractions of the budget in (0, 1)")
  out = []
  for fraction in sorted(float(f) for f in fractions):
    branch_steps = max(int(round(fraction * steps)), 1)
    fork = branch_lib.cooldown_start(config.optimizer, branch_steps)
    problem = branch_lib.schedule_mismatch(config.optimizer, steps, config.optimizer, branch_steps, fork)
    if fork < 1 or problem:
      raise ValueError(f"{where}: budget branch {fraction:g} ({branch_steps} of {steps} steps) cannot fork from "
                       f"the run: {problem or 'its cooldown is the whole run'}; use a larger fraction or a "
                       f"shorter warmup (schedule.warmup_steps)")
    out.append((fraction, branch_steps, fork))
  forks = [fork for _, _, fork in out]
  if len(set(forks)) != len(forks):
    raise ValueError(f"{where}: budget.branches {fractions} give the same fork step twice ({forks}) at {steps} "
                     f"steps: use fractions further apart")
  return out


def _check_axes(sweep: ml_collections.ConfigDict, where: str) -> None:
  for name, known in (("objectives", sweep.base_configs.keys()), ("inits", INITS)):
    unknown = [v for v in sweep[name] if v not in known]
    if unknown:
      raise ValueError(f"{where}: {name} {unknown} not known; choose from {', '.join(known)}")
  if not sweep.data_pairs:
    raise ValueError(f"{where}: data_pairs is empty: give the training pairs of each data scale, e.g. (400_000,)")
  if sweep.budget.rule not in RULES:
    raise ValueError(f"{where}: budget.rule {sweep.budget.rule!r} is not one of {', '.join(RULES)}")
  if not sweep.evaluation.task_dirs:
    raise ValueError(f"{where}: evaluation.task_dirs is empty: name the probe/caption task folders to evaluate "
                     f"on (e.g. runs/demo/probe_tasks/speaker)")


# Evaluations that need a caption decoder: a two-tower point skips them (evaluate refuses a named evaluation its
# source cannot run).
NEEDS_DECODER = ("captioning",)
DECODER_OBJECTIVES = ("captioning", "hybrid")


def _point_suite(suite: str, objective: str | None) -> str:
  """The sweep's evaluation suite for one point: without the decoder's evaluations for a two-tower objective."""
  if objective in DECODER_OBJECTIVES or objective is None:
    return suite
  kept = [s for s in suite.split(",") if s.strip() not in NEEDS_DECODER]
  return ",".join(kept) or suite


def _eval_args(sweep, out: str, seed: int, objective: str | None = None) -> list[str]:
  ev = sweep.evaluation
  root = ev.get("task_root", "")   # relative task_dirs are under it (a demo folder, a shared task store)
  args = [a for task in ev.task_dirs for a in ("--task-dir", os.path.join(root, os.fspath(task)))]
  args += ["--suite", _point_suite(ev.suite, objective), "--pooling", ev.pooling, "--seed", str(seed),
           "--out", out]
  return args + list(ev.get("args", ()))


def expand(sweep: ml_collections.ConfigDict, workdir: str) -> Plan:
  """The sweep's points and stages in dependency order. ValueError (naming the sweep config) for unknown axes,
  a corpus smaller than a data point, or an override of a field the training config lacks."""
  where = sweep.get("spec", sweep.name)
  _check_axes(sweep, where)
  if not sweep.corpus_dir:
    raise ValueError(f"{where}: corpus_dir is not set: pass --config.corpus_dir=PATH (a prepared corpus)")
  workdir = os.fspath(paths.resolve(workdir))
  corpus_dir = os.fspath(sweep.corpus_dir)
  keys = scale.sorted_keys(corpus_dir, tuple(sweep.sources))
  corpus_where = f"corpus {corpus_dir}" + (f" (sources {', '.join(sweep.sources)})" if sweep.sources else "")
  configs = _TrainingConfigs(corpus_dir)
  common = [f"data.corpus_dir={corpus_dir}", f"data.sources={tuple(sweep.sources)!r}"] if sweep.sources else \
      [f"data.corpus_dir={corpus_dir}"]
  schedule = [f"optimizer.schedule={sweep.schedule.name}",
              f"optimizer.cooldown_fraction={sweep.schedule.cooldown_fraction}"]
  if sweep.schedule.get("warmup_steps", -1) >= 0:
    schedule.append(f"optimizer.warmup_steps={sweep.schedule.warmup_steps}")
  fields = [(f, tuple(values)) for f, values in sweep.get("fields", ())]
  sizes = list(sweep.model_sizes)
  points, stage_list, taggers = [], [], {}

  def tagger_dir(size):
    return os.path.join(workdir, "tagger") if len(sizes) == 1 else os.path.join(workdir, "tagger", size)

  if "supervised" in sweep.inits:
    for size in sizes:
      root = tagger_dir(size)
      spec = sweep.tagger.config.format(size=size)
      tag_overrides = common + list(sweep.overrides) + list(sweep.tagger.overrides) + [
          f"data.label_task={sweep.tagger.label_task}", f"total_steps={sweep.tagger.steps}", *schedule]
      configs.get(spec, tag_overrides, where)   # fails here, not hours later, on a bad override
      run = "tagger" if len(sizes) == 1 else f"tagger/{size}"
      train_dir, enc_dir = os.path.join(root, "train"), os.path.join(root, "encoder")
      taggers[size] = {"config": spec, "overrides": tag_overrides, "steps": int(sweep.tagger.steps),
                       "workdir": train_dir, "encoder": enc_dir}
      stage_list += [
          stages_lib.Stage(f"{run}/train", stages_lib.TRAIN, run, "alp_jax.train",
                           ["--config", spec, "--workdir", train_dir] + [f"--config.{o}" for o in tag_overrides],
                           [], root, train_dir, steps=int(sweep.tagger.steps)),
          stages_lib.Stage(f"{run}/export", stages_lib.EXPORT, run, "alp_jax.export",
                           ["--workdir", train_dir, "--out", enc_dir], [f"{run}/train"], root, enc_dir,
                           source_workdir=train_dir)]

  source = sweep.evaluation.get("source", "encoder")
  if source not in ("encoder", "workdir"):
    raise ValueError(f"{where}: evaluation.source {source!r} must be 'encoder' (the export: probes) or 'workdir' "
                     f"(the run: probes plus its text side: zero-shot, retrieval, captioning)")
  first_export = {}
  grid = itertools.product(sweep.objectives, sweep.data_pairs, sweep.inits, sizes, sweep.seeds,
                           *[[(f, v) for v in values] for f, values in fields])
  for objective, pairs, init, size, seed, *field_values in grid:
    name = _point_name(objective, init, pairs, size, seed, field_values)
    fraction, actual = scale.fraction_for_keys(keys, int(pairs), where=f"{where}: point {name}: {corpus_where}")
    spec = sweep.base_configs[objective].format(size=size)
    point_overrides = common + list(sweep.overrides) + [f"{f}={v}" for f, v in field_values]
    point_overrides += [f"data.subset_fraction={fraction!r}", f"seed={seed}", *schedule]
    if init == "supervised":
      point_overrides.append(f"model_init={taggers[size]['encoder']}")
    for pattern, extra in sweep.get("point_overrides", ()):   # last: they win over everything but the budget
      if fnmatch.fnmatch(name, pattern):
        point_overrides += list(extra)
    probe = configs.get(spec, point_overrides, f"{where}: point {name}")
    step_flops = configs.step_flops(probe)
    steps = _budget_steps(sweep.budget, init, actual, probe.batch_size, step_flops, where)
    branches = _branches(sweep, probe, steps, f"{where}: point {name}")
    point_overrides.append(f"total_steps={steps}")
    if branches:
      point_overrides.append(f"keep_steps={tuple(fork for _, _, fork in branches)!r}")
    axes = {"objective": objective, "init": init, "requested_pairs": int(pairs), "data_pairs": actual,
            "data_fraction": fraction, "model_size": size, "seed": int(seed),
            "budget": sweep.budget.rule, **{f: v for f, v in field_values}}
    point = Point(name, axes, spec, point_overrides, steps, int(probe.batch_size), steps * int(probe.batch_size),
                  step_flops, step_flops * steps)
    points.append(point)
    root = os.path.join(workdir, "runs", name)
    train_dir, enc_dir = os.path.join(root, "train"), os.path.join(root, "encoder")
    deps = [f"{'tagger' if len(sizes) == 1 else 'tagger/' + size}/export"] if init == "supervised" else []
    stage_list += _point_stages(sweep, workdir, name, spec, point_overrides, deps, steps, 0, source, seed, objective)
    first_export.setdefault(size, (f"runs/{name}/export", enc_dir))
    trunk_overrides = [o for o in point_overrides if not o.startswith(("total_steps=", "keep_steps="))]
    for fraction_of_budget, branch_steps, fork in branches:
      b_name = f"{name}_b{fraction_of_budget:g}"
      b_overrides = trunk_overrides + [f"total_steps={branch_steps}", f"branch_from={train_dir}@{fork}"]
      b_axes = dict(axes, budget=f"{sweep.budget.rule}*{fraction_of_budget:g}", budget_fraction=fraction_of_budget,
                    branch_of=name, branch_step=fork)
      points.append(Point(b_name, b_axes, spec, b_overrides, branch_steps, int(probe.batch_size),
                          branch_steps * int(probe.batch_size), step_flops, step_flops * branch_steps,
                          trained_steps=branch_steps - fork))
      stage_list += _point_stages(sweep, workdir, b_name, spec, b_overrides, [f"runs/{name}/train"], branch_steps,
                                  fork, source, seed, objective)

  baselines = {}
  ev = sweep.evaluation
  for size, seed in itertools.product(sizes, sweep.seeds):
    if ev.get("random_init", True) and size in first_export:
      export_id, enc_dir = first_export[size]
      name = f"random_init_{size}_s{seed}"
      root = os.path.join(workdir, "baselines", name)
      out = os.path.join(root, "eval.json")
      baselines[name] = {"kind": "random_init", "model_size": size, "seed": int(seed), "output": out,
                         "architecture_of": enc_dir}
      args = ["--random-init", enc_dir] + _eval_args(sweep, out, seed)
      args[args.index("--suite") + 1] = "probe"   # a baseline has no text side: probes only
      stage_list.append(stages_lib.Stage(f"baselines/{name}/evaluate", stages_lib.EVALUATE, name,
                                         "alp_jax.evaluate", args, [export_id], root, out))
  if ev.get("logmel_stats", False):
    for seed in sweep.seeds:
      name = f"logmel_stats_s{seed}"
      root = os.path.join(workdir, "baselines", name)
      out = os.path.join(root, "eval.json")
      baselines[name] = {"kind": "logmel_stats", "model_size": None, "seed": int(seed), "output": out}
      args = ["--baseline", "logmel-stats"] + _eval_args(sweep, out, seed)
      args[args.index("--suite") + 1] = "probe"
      stage_list.append(stages_lib.Stage(f"baselines/{name}/evaluate", stages_lib.EVALUATE, name,
                                         "alp_jax.evaluate", args, [], root, out))
  return Plan(sweep.name, workdir, json.loads(sweep.to_json_best_effort()), points, stage_list, baselines, taggers)


# --- DIR/sweep.json: the plan on disk, and what may change between two calls on one DIR.

def _comparable(stage: dict) -> list[str]:
  """A stage's arguments without the ones a rerun may change (total_steps: the trainer resumes or extends)."""
  return [a for a in stage["args"] if not a.startswith("--config.total_steps=")]


def check_compatible(plan: Plan) -> list[str]:
  """Against an existing DIR/sweep.json: a ValueError naming every stage whose command changed (other than its
  step budget), since its outputs on disk came from another command. Returns notes (points added, removed, or
  with a new budget)."""
  path = epath.Path(plan.workdir) / SWEEP_FILE
  if not path.exists():
    return []
  old = {s["id"]: s for s in json.loads(path.read_text())["stages"]}
  new = {s.id: s.to_dict() for s in plan.stages}
  changed = [i for i in sorted(set(old) & set(new)) if _comparable(old[i]) != _comparable(new[i])]
  if changed:
    lines = "\n".join(f"  {i}" for i in changed)
    raise ValueError(f"{path} was written by another plan: these stages would run a different command than "
                     f"the one that made their outputs:\n{lines}\nUse a new --workdir for the changed sweep, or "
                     f"revert the sweep config (a point's step budget alone may change: training resumes).")
  notes = [f"new stage {i}" for i in sorted(set(new) - set(old))]
  notes += [f"stage {i} is no longer in the plan (its outputs stay on disk)" for i in sorted(set(old) - set(new))]
  notes += [f"{i}: total_steps {old[i]['steps']} -> {new[i]['steps']}" for i in sorted(set(old) & set(new))
            if old[i]["steps"] != new[i]["steps"]]
  return notes


def write(plan: Plan) -> epath.Path:
  path = epath.Path(plan.workdir) / SWEEP_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  paths.write_text_last(path, json.dumps(plan.to_dict(), indent=1))
  return path
