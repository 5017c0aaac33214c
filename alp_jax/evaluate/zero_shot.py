"""Zero-shot classification with a contrastive (two-tower) run: no probe, the text tower names the classes.

Legend: N clips, C classes, P prompts per class, T valid encoder frames of a clip, D encoder width,
E joint embedding width, L prompt tokens.

Each class is embedded by the text tower as the mean of its prompts (TEMPLATES with the label, '_'
read as a space), re-normalised; each test clip by the audio tower on the whole clip (the same fixed
windows as the probes' embeddings, then the run's audio head and pooling over all valid frames). The
class scores are cosine similarities: accuracy (single-label) or mAP (multi-label) on the test split.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

TEMPLATES = ("{label}", "the sound of {label}", "a recording of {label}")


class NotContrastiveRun(ValueError):
  """Zero-shot was asked of a run without a text tower aligned to the audio (not two_towers)."""


class ZeroShotModel:
  """The audio and text towers of a restored two-tower run, embedding clips and class prompts."""

  def __init__(self, model: nnx.Module, tokenizer, meta: dict, max_tokens: int):
    from alp_jax import encoder_api
    from alp_jax.train import encoder_init
    self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
    self.encoder = encoder_api.AudioEncoder(meta, encoder_init.get_encoder(model))
    graphdef, state = nnx.split(model)

    @jax.jit
    def embed_text(state, tokens, mask):
      return nnx.merge(graphdef, state).embed_text(tokens, mask)[0]   # (P,E)

    @jax.jit
    def embed_frames(state, frames):
      from alp_jax.models import heads
      merged = nnx.merge(graphdef, state)
      mask = jnp.ones(frames.shape[:2], bool)
      return heads.audio_embedding(merged.audio_head, frames, mask, merged.audio_pooling)   # (1,E)

    self._state, self._embed_text, self._embed_frames = state, embed_text, embed_frames

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, step: int | None = None) -> tuple["ZeroShotModel", int]:
    """-> (model, step) of a two_towers training run; NotContrastiveRun for another model."""
    from alp_jax import export as export_lib
    from alp_jax.data import tokenizer as tokenizer_lib
    config, graphdef, state, step = export_lib.restore_run(workdir, step)
    if config.model.name != "two_towers":
      raise NotContrastiveRun(f"zero-shot needs a contrastive (two_towers) run; {workdir} trains {config.model.name!r}")
    model = nnx.merge(graphdef, state["params"], state["rest"])
    tokenizer = tokenizer_lib.Tokenizer(config.data.get("tokenizer") or
                                        Path(config.data.corpus_dir) / tokenizer_lib.MODEL_FILE)
    meta = {"frontend": config.frontend.to_dict(), "audio": config.model.audio.to_dict(),
            "crop_seconds": config.data.crop_seconds}
    return cls(model, tokenizer, meta, config.data.max_caption_tokens), step

  def class_embeddings(self, classes: list[str], templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
    """(C, E) L2-normalised mean of each class's prompt embeddings."""
    out = []
    for label in classes:
      prompts = [t.format(label=label.replace("_", " ")) for t in templates]
      tokens, mask = self.tokenizer.encode_padded(prompts, self.max_tokens)
      mean = np.asarray(self._embed_text(self._state, tokens, mask)).mean(axis=0)   # (E,)
      out.append(mean / np.linalg.norm(mean))
    return np.stack(out)

  def audio_embedding(self, frames: np.ndarray) -> np.ndarray:
    """(T, D) valid encoder frames of a clip -> (E,) L2-normalised audio embedding."""
    return np.asarray(self._embed_frames(self._state, jnp.asarray(frames)[None]))[0]


def evaluate_task(zero_shot: ZeroShotModel, task_dir, *, templates: tuple[str, ...] = TEMPLATES,
                  log=print) -> dict:
  """Zero-shot score of a task folder's test split: {"task", "metric", "pooling": "zero_shot", "value", ...}."""
  from alp_jax.evaluate import embed as embed_lib
  from alp_jax.evaluate import probe as probe_lib
  from alp_jax.evaluate import tasks as tasks_lib
  task = tasks_lib.read_task(task_dir)
  test_only = tasks_lib.Task(name=task.name, directory=task.directory, splits={"test": task.splits["test"]},
                             classes=task.classes, metric=task.metric)
  embeddings = embed_lib.embed_task(zero_shot.encoder, test_only, log=log)
  audio = np.stack([zero_shot.audio_embedding(f) for f in embeddings.splits["test"].frames])   # (N,E)
  classes = zero_shot.class_embeddings(task.classes, templates)                               # (C,E)
  scores = np.einsum("ne,ce->nc", audio, classes)                                              # (N,C)
  value = probe_lib.score(scores, embeddings.targets("test"), task.multi_label)
  if log:
    log(f"[zero-shot] {task.name}: {task.metric} {value:.4f} ({len(audio)} test clips, {len(classes)} classes)")
  return {"task": task.name, "task_dir": str(task.directory), "metric": task.metric, "pooling": "zero_shot",
          "value": value, "num_classes": len(task.classes), "skipped_files": len(embeddings.skipped),
          "skipped": [path for path, _ in embeddings.skipped], "templates": list(templates)}
