"""The smoke sweep (tests): two tiny points (scratch and supervised init) plus their tagger, a few steps each.

  python -m alp_jax.sweeps --config configs/sweeps/smoke.py --workdir /tmp/sweep_smoke \\
      --config.corpus_dir=CORPUS --config.evaluation.task_dirs="('TASK_DIR',)"

tests/test_sweeps.py runs it on the test corpus (48 clips) with a two-class tone task.
"""
from alp_jax.configs import sweeps


def get_config(arg=None):
  del arg
  c = sweeps.base_sweep_config()
  c.name = "smoke"
  c.corpus_dir = ""
  c.objectives = ("contrastive",)
  c.data_pairs = (24,)
  c.inits = ("scratch", "supervised")
  c.model_sizes = ("tiny",)
  c.overrides = ("batch_size=8", "data.crop_seconds=1.0", "data.max_caption_tokens=16", "data.num_threads=2",
                 "log_every=2", "checkpoint_every=4", "tensorboard=False", "peak_flops_per_device=1e9",
                 "async_checkpoints=False")
  c.budget.update(rule="fixed_steps", steps=4)
  c.schedule.warmup_steps = 1
  c.tagger.update(label_task="domain", steps=2)
  c.evaluation.update(task_dirs=(), suite="probe", pooling="mean", random_init=True)
  return c
