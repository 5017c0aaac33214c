"""Sweep configs: `get_config(arg)` returns the grid, budget rule, tagger and evaluation of a scaling sweep.

  python -m alp_jax.sweeps --config configs/sweeps/mini.py --workdir runs/sweep_mini [--dry-run]
  python -m alp_jax.sweeps --config configs/sweeps/study.py --workdir gs://B/sweeps/study \\
      --config.corpus_dir=/mnt/captionstew --launcher slurm

smoke (tests, seconds) | mini (the demo corpus, this 2-core CPU) | study (the paper's grid, pods). Every field can
be set from the command line (--config.budget.steps=400, --config.seeds="(0, 1)"). docs/sweeps.md has the fields.
"""
import ml_collections

from alp_jax.configs import common

FAMILIES = ("speech", "music", "environmental", "language")


def base_sweep_config() -> ml_collections.ConfigDict:
  """Every field a sweep config has, with defaults; a sweep file sets what it needs."""
  c = ml_collections.ConfigDict()
  c.name = "sweep"
  c.corpus_dir = ""                  # a prepared corpus (python -m alp_jax.data.prepare); corpus.json counts it
  c.sources = ()                     # sources used (empty: all); data_pairs counts clips of these only
  # Axes: the grid is their product (alp_jax/sweeps/plan.py).
  c.objectives = ("contrastive", "captioning")   # contrastive | sigmoid | captioning | hybrid
  c.data_pairs = (400_000, 1_000_000, 4_000_000, 10_000_000)   # training pairs (clips) of each nested subset
  c.inits = ("scratch", "supervised")             # supervised: model_init = the tagger's exported encoder
  c.model_sizes = ("base",)
  c.seeds = (0,)
  c.fields = ()                      # more axes over any training field: (("optimizer.learning_rate", (1e-3, 3e-4)),)
  c.base_configs = ml_collections.ConfigDict({      # objective -> training config; {size} is the model size
      "contrastive": "configs/clap.py:{size}",
      "sigmoid": "configs/clap.py:{size},sigmoid",
      "captioning": "configs/cappa.py:{size}",
      "hybrid": "configs/hybrid.py:{size}",
  })
  c.overrides = ()                   # "field=value" for every training run (tagger too)
  c.point_overrides = ()             # (("NAME_GLOB", ("field=value", ...)), ...) for the points matching a glob
  c.budget = ml_collections.ConfigDict(dict(
      rule="fixed_steps",            # fixed_steps | samples | fixed_flops
      steps=1000,                    # fixed_steps
      supervised_steps=0,            # fixed_steps: > 0 gives supervised points their own (study: 200k vs 600k)
      epochs=1.0,                    # samples: steps = ceil(epochs x pairs / batch_size)
      flops=0.0,                     # fixed_flops: steps = ceil(flops / step FLOPs)
      min_steps=1, max_steps=0,      # samples, fixed_flops: clip the steps (0: no maximum)
      branches=(),                   # fractions of each point's budget served by cooldown branches of its run,
                                     # e.g. (0.25, 0.5): only the cooldowns are new compute (train/branch.py)
  ))
  # Warmup-stable-decay: a constant learning rate then a linear cooldown, the schedule scaling fits use.
  c.schedule = ml_collections.ConfigDict(dict(name="constant_cooldown", cooldown_fraction=0.2, warmup_steps=-1))
  c.tagger = ml_collections.ConfigDict(dict(
      config="configs/tagging.py:{size}",
      label_task="sound_type",       # a label task of the corpus's labels.json
      steps=1000,
      overrides=(),
  ))
  c.evaluation = ml_collections.ConfigDict(dict(
      task_dirs=(),                  # probe / caption task folders (python -m alp_jax.evaluate --task-dir)
      task_root="",                  # a folder that relative task_dirs are in ("" = the working directory)
      source="encoder",              # encoder: evaluate the export (probes, lit) | workdir: the run, so its text
                                     # side adds zero-shot, retrieval and captioning (suite "default")
      suite="probe",                 # evaluate --suite (study: probe and lit)
      pooling="both",                # mean | attention | both
      args=(),                       # more evaluate flags, e.g. ("--lit-steps", "200")
      random_init=True,              # baseline: the same architecture with fresh weights, per size and seed
      logmel_stats=False,            # baseline: log-mel statistics through the same probes
  ))
  c.task_families = ml_collections.ConfigDict()   # task name -> speech | music | environmental | language
  return c


DEMO_CORPUS = common.DEMO_CORPUS
DEMO_PROBE_TASKS = "runs/demo/probe_tasks"
DEMO_OOD_TASKS = "runs/demo/ood_tasks"
