"""Zero-shot classification with a run's text side: no probe, the model reads the class names.

Legend: N clips, C classes, P prompts per class (TEMPLATES), E joint embedding width.

Each class is named by P prompts (TEMPLATES with the label, '_' read as a space). Two methods, by what the run
has (alp_jax.evaluate.run_model):
  contrastive  (two_towers, hybrid) the class embedding is the mean of its prompts' text embeddings,
               re-normalised; a clip's score for a class is the cosine with its audio embedding.
  likelihood   (captioner, hybrid) a clip's score for a class is the mean over its prompts of
               log p(prompt | clip) under the caption decoder (summed token log-probabilities, EOS included).
Test clips are encoded whole (the probes' fixed windows). Accuracy (single-label) or mAP (multi-label) on the
test split.
"""
from __future__ import annotations

import numpy as np

from alp_jax.evaluate import embed as embed_lib
from alp_jax.evaluate import probe as probe_lib
from alp_jax.evaluate import tasks as tasks_lib

TEMPLATES = ("{label}", "the sound of {label}", "a recording of {label}")
CONTRASTIVE, LIKELIHOOD = "contrastive", "likelihood"
METHOD_NAMES = {CONTRASTIVE: "zero_shot", LIKELIHOOD: "zero_shot_likelihood"}


def methods_of(run) -> tuple[str, ...]:
  """The zero-shot methods a RunModel supports, contrastive first."""
  return tuple(m for m, ok in ((CONTRASTIVE, run.contrastive), (LIKELIHOOD, run.has_decoder)) if ok)


def prompts(label: str, templates: tuple[str, ...] = TEMPLATES) -> list[str]:
  return [t.format(label=label.replace("_", " ")) for t in templates]


def class_embeddings(run, classes: list[str], templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
  """(C, E) L2-normalised mean of each class's prompt embeddings."""
  texts = [p for label in classes for p in prompts(label, templates)]
  emb = run.text_embeddings(texts).reshape(len(classes), len(templates), -1).mean(axis=1)   # (C,E)
  return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def class_scores(run, frames: list[np.ndarray], classes: list[str], method: str,
                 templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
  """(N, C) scores of every clip for every class by `method`."""
  if method == CONTRASTIVE:
    return np.einsum("ne,ce->nc", run.audio_embeddings(frames), class_embeddings(run, classes, templates))
  if method == LIKELIHOOD:
    texts = [p for label in classes for p in prompts(label, templates)]
    scores = run.log_likelihoods(frames, texts)                                   # (N, C*P)
    return scores.reshape(len(frames), len(classes), len(templates)).mean(axis=-1)
  raise ValueError(f"unknown zero-shot method {method!r}; choose from {CONTRASTIVE!r}, {LIKELIHOOD!r}")


def evaluate_task(run, task, *, templates: tuple[str, ...] = TEMPLATES, methods: tuple[str, ...] | None = None,
                  cache_dir=None, log=print) -> list[dict]:
  """Zero-shot scores of a task's test split, one row per method (default: all the run supports).

  task: a probe task folder or a tasks.Task. Rows: {"task", "metric", "method": "zero_shot" or
  "zero_shot_likelihood", "value", "num_classes", "skipped_files", "skipped", "templates"}.
  """
  task = task if isinstance(task, tasks_lib.Task) else tasks_lib.read_task(task)
  test_only = tasks_lib.Task(name=task.name, directory=task.directory, splits={"test": task.splits["test"]},
                             classes=task.classes, metric=task.metric)
  embeddings = embed_lib.embed_task(run.encoder, test_only, cache_dir=cache_dir, memo=run.embed_memo, log=log)
  frames = embeddings.splits["test"].frames
  rows = []
  for method in methods or methods_of(run):
    scores = class_scores(run, frames, task.classes, method, templates)   # (N,C)
    value = probe_lib.score(scores, embeddings.targets("test"), task.multi_label)
    if log:
      log(f"[zero-shot] {task.name} ({method}): {task.metric} {value:.4f} ({len(frames)} test clips, "
          f"{len(task.classes)} classes)")
    rows.append({"task": task.name, "task_dir": str(task.directory), "metric": task.metric,
                 "method": METHOD_NAMES[method], "value": value, "num_classes": len(task.classes),
                 "skipped_files": len(embeddings.skipped), "skipped": [path for path, _ in embeddings.skipped],
                 "templates": list(templates)})
  return rows
