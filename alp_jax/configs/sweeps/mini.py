"""The mini sweep: the study's grid in miniature on the demo corpus, for this 2-core CPU (target: under 30 min).

  make demo                                   # builds runs/demo/corpus and the task folders below
  python -m alp_jax.sweeps --config configs/sweeps/mini.py --workdir runs/sweep_mini --dry-run
  python -m alp_jax.sweeps --config configs/sweeps/mini.py --workdir runs/sweep_mini --parallel 2

contrastive / captioning x scratch / supervised (a sound_type tagger) x 3 nested data scales of the demo corpus,
tiny encoders, probes (mean pooling) on the demo tasks and its held-out tasks, a random-init baseline.
Tune the cost with --config.budget.steps=N (every point) and --config.tagger.steps=N; the data scales with
--config.data_pairs="(200, 400, 800)" (they must not exceed the corpus's clips: the runner says how many it has).
"""
import os

from alp_jax.configs import sweeps

STEPS = 150          # per point: the main knob of the sweep's wall time
TAGGER_STEPS = 150


def get_config(arg=None):
  del arg
  c = sweeps.base_sweep_config()
  c.name = "mini"
  c.corpus_dir = sweeps.DEMO_CORPUS
  c.objectives = ("contrastive", "captioning")
  c.data_pairs = (200, 400, 800)       # nested subsets of the demo corpus (its default build has ~1000 clips)
  c.inits = ("scratch", "supervised")
  c.model_sizes = ("tiny",)
  c.overrides = ("log_every=50", "checkpoint_every=50", "tensorboard=False",
                 "frontend.spec_augment.enabled=False")   # the demo recipe (configs/common.py apply_demo)
  c.budget.update(rule="fixed_steps", steps=STEPS)
  c.schedule.warmup_steps = 20
  c.tagger.update(label_task="sound_type", steps=TAGGER_STEPS)
  c.evaluation.update(
      task_dirs=tuple(os.path.join(sweeps.DEMO_PROBE_TASKS, t)
                      for t in ("speaker", "instrument_family", "pitch_class", "sound_type"))
      + tuple(os.path.join(sweeps.DEMO_OOD_TASKS, t) for t in ("ood_timbre", "ood_events")),
      suite="probe", pooling="mean", random_init=True, logmel_stats=True)
  return c
