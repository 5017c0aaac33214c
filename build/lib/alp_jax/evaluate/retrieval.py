"""Audio-text retrieval on a caption task's test split, with a run's text side.

Legend: N clips, M captions (all captions of all clips, M >= N), E joint embedding width.

Every test clip is encoded whole (the probes' fixed windows); every caption of every clip is a text query and
a candidate. The similarity matrix (N, M) comes from one of two methods (alp_jax.evaluate.run_model):
  contrastive  (two_towers, hybrid) cosine of the audio and text embeddings (the study's retrieval inference);
  likelihood   (captioner, hybrid) log p(caption | clip), summed over the caption's tokens. Comparing one
               caption across clips (text->audio) is what a captioner does well; across captions of one
               clip (audio->text) longer captions score lower, so read a2t by likelihood with that in mind.
Metrics (alp_jax.evaluate.retrieval_metrics, correct with several captions per clip): R@1, R@5, R@10 and
mAP@10 in both directions, "a2t/R@1" ... "t2a/mAP@10". Clips whose audio does not decode are skipped and
counted, together with their captions.
"""
from __future__ import annotations

import numpy as np

from alp_jax.evaluate import caption_tasks
from alp_jax.evaluate import embed as embed_lib
from alp_jax.evaluate import retrieval_metrics
from alp_jax.evaluate import zero_shot

METHOD_NAMES = {zero_shot.CONTRASTIVE: "retrieval", zero_shot.LIKELIHOOD: "retrieval_likelihood"}


def similarity(run, frames: list[np.ndarray], captions: list[str], method: str, log=None) -> np.ndarray:
  """(N, M) clip-caption scores by `method` (higher = closer)."""
  if method == zero_shot.CONTRASTIVE:
    return run.audio_embeddings(frames) @ run.text_embeddings(captions).T
  if method == zero_shot.LIKELIHOOD:
    return run.log_likelihoods(frames, captions, log=log)
  raise ValueError(f"unknown retrieval method {method!r}")


def test_split(run, task: caption_tasks.CaptionTask, *, cache_dir=None, log=print):
  """-> (frames per kept clip, the kept CaptionExamples, skipped [(path, reason)]) of the test split."""
  embeddings = embed_lib.embed_task(run.encoder, caption_tasks.as_probe_task(task, "test"), cache_dir=cache_dir,
                                    memo=run.embed_memo, log=log)
  examples = task.splits["test"]
  test = embeddings.splits["test"]
  return test.frames, [examples[i] for i in test.kept], embeddings.skipped


def evaluate_task(run, task, *, methods: tuple[str, ...] | None = None, cache_dir=None, log=print) -> list[dict]:
  """Retrieval metrics of a caption task folder (or CaptionTask): one row per (method, metric)."""
  if not isinstance(task, caption_tasks.CaptionTask):
    task = caption_tasks.read_caption_task(task, splits=("test",))
  frames, examples, skipped = test_split(run, task, cache_dir=cache_dir, log=log)
  captions = [c for e in examples for c in e.captions]
  text_to_audio = np.array([i for i, e in enumerate(examples) for _ in e.captions])
  rows = []
  for method in methods or zero_shot.methods_of(run):
    metrics = retrieval_metrics.retrieval_metrics(similarity(run, frames, captions, method), text_to_audio)
    if log:
      log(f"[retrieval] {task.name} ({method}, {len(examples)} clips, {len(captions)} captions): "
          + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    for metric, value in metrics.items():
      rows.append({"task": task.name, "task_dir": str(task.directory), "metric": metric,
                   "method": METHOD_NAMES[method], "value": value, "num_clips": len(examples),
                   "num_captions": len(captions), "skipped_files": len(skipped),
                   "skipped": [path for path, _ in skipped]})
  return rows
