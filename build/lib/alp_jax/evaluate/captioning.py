"""Captioning on a caption task's test split: greedy and beam-search decoding, BLEU-1..4, ROUGE-L, CIDEr-D.

Every test clip is encoded whole (the probes' fixed windows) and captioned by the run's decoder (captioner or
hybrid) with at most config.data.max_caption_tokens tokens; the captions are scored against all of the clip's
reference captions (alp_jax.evaluate.caption_metrics: the study reports ROUGE-L). Decoding is deterministic
(no sampling), so the same checkpoint always gives the same captions and numbers.
"""
from __future__ import annotations

from alp_jax.evaluate import caption_metrics
from alp_jax.evaluate import caption_tasks
from alp_jax.evaluate import retrieval

DEFAULT_BEAM_SIZES = (1, 4)
SHOWN_EXAMPLES = 8


def decoding_name(beam_size: int) -> str:
  return "greedy" if beam_size == 1 else f"beam{beam_size}"


def evaluate_task(run, task, *, beam_sizes: tuple[int, ...] = DEFAULT_BEAM_SIZES, length_penalty: float = 0.0,
                  cache_dir=None, log=print) -> list[dict]:
  """One row per (decoding, metric); the ROUGE-L row of each decoding also lists a few generated captions."""
  if not isinstance(task, caption_tasks.CaptionTask):
    task = caption_tasks.read_caption_task(task, splits=("test",))
  frames, examples, skipped = retrieval.test_split(run, task, cache_dir=cache_dir, log=log)
  references = [list(e.captions) for e in examples]
  rows = []
  for beam_size in beam_sizes:
    generated = run.generate(frames, beam_size=beam_size, length_penalty=length_penalty, log=log)
    metrics = caption_metrics.caption_metrics(generated, references)
    name = decoding_name(beam_size)
    if log:
      log(f"[captioning] {task.name} ({name}, {len(examples)} clips): "
          + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + f"; e.g. {generated[0]!r}")
    for metric, value in metrics.items():
      row = {"task": task.name, "task_dir": str(task.directory), "metric": metric, "method": name,
             "value": value, "num_clips": len(examples), "skipped_files": len(skipped),
             "skipped": [path for path, _ in skipped], "beam_size": beam_size, "length_penalty": length_penalty}
      if metric == "ROUGE-L":
        row["examples"] = [{"id": e.id, "generated": g, "references": list(e.captions)}
                           for e, g in list(zip(examples, generated))[:SHOWN_EXAMPLES]]
      rows.append(row)
  return rows
