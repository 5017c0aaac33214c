"""The study's central grid (Tseng et al., Fig. 2): contrastive / captioning x scratch / AudioSet-style supervised
init x 400K / 1M / 4M / 10M nested pairs of a CaptionStew-sized corpus, base-size encoders. For pods.

  python -m alp_jax.sweeps --config configs/sweeps/study.py --workdir gs://BUCKET/sweeps/study \\
      --config.corpus_dir=/mnt/captionstew --config.evaluation.task_dirs="('/mnt/tasks/fsd50k', ...)" --dry-run
  ... --launcher slurm    (DIR/slurm/submit.sh)   |   --launcher tpu    (DIR/tpu/commands.sh)

Budgets, the paper's and ours (docs/sweeps.md):
  paper   600k steps from scratch, 200k from the supervised encoder, ~5,120 s of audio per step (8 V100 x 640 s),
          the same steps at every data scale (STUDY.md: whether the smaller subsets got fewer steps is unknown);
          Eden learning-rate schedule.
  ours    fixed_steps with the same 600k / 200k split (budget.steps, budget.supervised_steps), batch 256 x 10 s
          crops (~2,560 s per step: half the paper's audio per step; raise batch_size on bigger pods), and the
          constant + linear cooldown schedule (warmup-stable-decay), which scaling fits can cool down at several
          budgets. For samples-proportional budgets: --config.budget.rule=samples --config.budget.epochs=E; for
          equal compute: --config.budget.rule=fixed_flops --config.budget.flops=F.
The tagger stands in for the paper's AudioSet-supervised Zipformer: it trains on the corpus's own labels
(tagger.label_task; set it to a label task of your corpus's labels.json). corpus_dir and evaluation.task_dirs
have no default: they are where your data lives.
"""
from alp_jax.configs import sweeps


def get_config(arg=None):
  del arg
  c = sweeps.base_sweep_config()
  c.name = "study"
  c.corpus_dir = ""                    # required: a prepared CaptionStew-sized corpus (>= 10M clips for 10M)
  c.objectives = ("contrastive", "captioning")
  c.data_pairs = (400_000, 1_000_000, 4_000_000, 10_000_000)
  c.inits = ("scratch", "supervised")
  c.model_sizes = ("base",)
  c.budget.update(rule="fixed_steps", steps=600_000, supervised_steps=200_000)
  c.schedule.update(name="constant_cooldown", cooldown_fraction=0.2, warmup_steps=5000)
  c.tagger.update(label_task="audioset", steps=200_000)
  c.overrides = ("checkpoint_every=5000",)
  c.evaluation.update(task_dirs=(), suite="study", pooling="both", random_init=True, logmel_stats=True)
  return c
