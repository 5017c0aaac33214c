"""The miniature study: the paper's grid in miniature on the demo corpus, what `make demo` runs on a 2-core CPU.

  make demo                    # builds runs/demo/corpus and its task folders, then runs this sweep in runs/demo/study
  python -m alp_jax.sweeps --config configs/sweeps/mini.py --workdir runs/demo/study --parallel 2   # the same sweep
  make study                   # the larger grid (variant "study"): two seeds, attention pooling too
  python -m alp_jax.sweeps --config configs/sweeps/mini.py:study --workdir runs/demo/study_large --parallel 2

Grid: contrastive / captioning x scratch / supervised (a sound_type tagger trained on the whole corpus) x 4 nested
data scales of the demo corpus (1000 clips), tiny encoders, the demo recipe otherwise (configs/common.py
apply_demo: no SpecAugment). Budget: samples seen in proportion to the data (`EPOCHS` passes over each subset), the
study's constant + cooldown schedule. Every point is evaluated from its run, so its text side is measured too:
mean-pooling linear probes on the five demo tasks, and retrieval on the demo caption task (the two-tower by
embedding similarity, the captioner by caption likelihood); a random-init encoder of the same architecture goes
through the same probes. Sized for `make demo` (about 15 minutes here): 4 passes are far fewer than the demo
recipe's 32, so the probes barely move with data; retrieval does (docs/sweeps.md has the measurements).
The "study" variant (`make study`) runs the recipe's 32 passes with two seeds, both poolings, the held-out tasks,
captioning and the log-mel baseline.

The knobs of the wall time: --config.budget.epochs=N, --config.tagger.steps=N, --config.data_pairs="(...)"
(they must not exceed the corpus's clips: the runner says how many it has), --config.evaluation.pooling=both.
`demo_dir` moves everything (corpus, tasks) to another demo folder (`python -m alp_jax.demo --out` sets it).
"""
from alp_jax.configs import common
from alp_jax.configs import sweeps

VARIANTS = ("study",)
EPOCHS = 4           # passes over each data subset: the main knob of the sweep's wall time
TAGGER_STEPS = 150
DEMO_TASKS = ("speaker", "instrument_family", "pitch_class", "sound_type", "domain")
HELD_OUT_TASKS = ("ood_timbre", "ood_events")


def get_config(arg=None):
  variants = common.parse_variants(arg, VARIANTS, __file__)
  c = sweeps.base_sweep_config()
  c.name = "mini"
  c.demo_dir = "runs/demo"
  c.corpus_dir = c.get_ref("demo_dir") + "/corpus"
  c.objectives = ("contrastive", "captioning")
  c.data_pairs = (125, 250, 500, 1000)   # nested subsets of the demo corpus (1000 clips by default)
  c.inits = ("scratch", "supervised")
  c.model_sizes = ("tiny",)
  c.base_configs.update(contrastive="alp_jax.configs.clap:demo", captioning="alp_jax.configs.cappa:demo")
  c.overrides = ("log_every=25", "checkpoint_every=250", "keep_checkpoints=1", "tensorboard=False")
  c.budget.update(rule="samples", epochs=EPOCHS, min_steps=40)
  c.schedule.warmup_steps = 25
  c.tagger.update(config="alp_jax.configs.tagging:tiny", label_task="sound_type", steps=TAGGER_STEPS,
                  overrides=("frontend.spec_augment.enabled=False",))
  c.evaluation.update(
      source="workdir", task_root=c.get_ref("demo_dir"),
      task_dirs=tuple(f"probe_tasks/{t}" for t in DEMO_TASKS) + ("probe_tasks/captions",),
      suite="probe,retrieval", pooling="mean", random_init=True, logmel_stats=False)
  if "study" in variants:   # `make study`: the recipe's 32 passes, two seeds, every evaluation, both baselines
    c.name = "mini_study"
    c.seeds = (0, 1)
    c.budget.update(epochs=32, min_steps=100)
    c.tagger.steps = 1000
    c.evaluation.update(task_dirs=c.evaluation.task_dirs + tuple(f"ood_tasks/{t}" for t in HELD_OUT_TASKS),
                        suite="probe,retrieval,captioning", pooling="both", args=("--beam-sizes", "1"),
                        logmel_stats=True)
  return c
