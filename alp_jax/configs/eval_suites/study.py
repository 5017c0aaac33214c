"""The paper's evaluation suite (Tseng et al. 2025, STUDY.md section 5): frozen last-layer encoder, linear probes
(mean and attention pooling) on seven tasks, LiT-style retrieval and captioning on three caption corpora.

Build the task folders once, one recipe each (docs/evaluation.md, "Recipes"):

  python -m alp_jax.evaluate.recipes fsd50k --source /data/FSD50K --out /mnt/tasks/fsd50k
  ...   (TASK_ROOT/NAME for every task below; crema_d writes TASK_ROOT/crema_d/fold1..fold5)

then hand them to a sweep or to the evaluation CLI:

  c = get_config("/mnt/tasks");  c.task_dirs          # every folder, in order (CREMA-D's five folds expanded)
  python -m alp_jax.sweeps --config configs/sweeps/study.py ... --config.evaluation.task_dirs="$(python -c \\
      'from alp_jax.configs.eval_suites import study; print(study.get_config("/mnt/tasks").task_dirs)')"

Each task: recipe (a name in alp_jax.evaluate.recipes.RECIPES), kind (probe | sed | caption), metric (what the
paper reports; our evaluator's name in brackets), protocol, and the paper's supervised-baseline number where
STUDY.md has one (mean pooling), to check a reproduction against. AIR-Bench QA (section 5.3) needs an LLM and
is not part of this suite.
"""
import os

import ml_collections

PROBE_PROTOCOL = "frozen last layer; linear probe on mean-pooled and attention-pooled frames (--pooling both)"
LIT_PROTOCOL = ("frozen audio encoder; LiT-style: text tower trained on train.jsonl (retrieval), caption decoder "
                "trained (captioning); scored on test.jsonl")

TASKS = (
    # name, recipe, kind, metric, protocol, paper's AudioSet-supervised baseline (mean pooling; None: not found)
    ("fsd50k", "fsd50k", "probe", "mAP [map]", PROBE_PROTOCOL, 0.656),
    ("vggsound", "vggsound", "probe", "accuracy [accuracy]", PROBE_PROTOCOL, 56.46),
    ("voxceleb2", "voxceleb2", "probe", "accuracy [accuracy], closed-set speaker ID", PROBE_PROTOCOL, 18.84),
    ("crema_d", "crema_d", "probe", "accuracy [accuracy], mean over 5 folds", PROBE_PROTOCOL, 67.14),
    ("magnatagatune", "magnatagatune", "probe", "mAP [map], top-50 tags", PROBE_PROTOCOL, 0.407),
    ("nsynth", "nsynth_instrument", "probe", "accuracy [accuracy], instrument family", PROBE_PROTOCOL, 67.19),
    ("audioset_strong", "audioset_strong", "sed", "PSDS1 [sed psds1], frame-level probe",
     "frozen last layer; frame-level linear probe (evaluate/sed_tasks.py, branch sed)", 0.216),
    ("audiocaps", "audiocaps", "caption", "R@1 (text-to-audio, audio-to-text) [retrieval]; ROUGE-L [captioning]",
     LIT_PROTOCOL, None),
    ("paraspeechcaps", "paraspeechcaps", "caption", "R@1 [retrieval]; ROUGE-L [captioning]", LIT_PROTOCOL, None),
    ("musiccaps", "musiccaps", "caption", "R@1 [retrieval]; ROUGE-L [captioning]", LIT_PROTOCOL, None),
)
FOLDS = {"crema_d": ("fold1", "fold2", "fold3", "fold4", "fold5")}


def get_config(arg=None):
  """arg: the folder holding one task folder per task (TASK_ROOT/NAME); empty leaves task_dirs empty."""
  task_root = arg or ""
  c = ml_collections.ConfigDict()
  c.name = "study"
  c.suite = "study"                 # python -m alp_jax.evaluate --suite study
  c.pooling = "both"
  c.task_root = task_root
  c.tasks = ml_collections.ConfigDict()
  dirs = []
  for name, recipe, kind, metric, protocol, baseline in TASKS:
    folders = [os.path.join(task_root, name, f) for f in FOLDS.get(name, ("",))] if task_root else []
    folders = [f.rstrip("/") for f in folders]
    dirs += folders
    c.tasks[name] = ml_collections.ConfigDict(dict(
        recipe=recipe, kind=kind, metric=metric, protocol=protocol, paper_baseline=baseline,
        folds=len(FOLDS.get(name, ("",))), task_dirs=tuple(folders)))
  c.task_dirs = tuple(dirs)
  return c
