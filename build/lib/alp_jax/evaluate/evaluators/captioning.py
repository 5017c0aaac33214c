"""Evaluator "captioning": greedy / beam-search captions of caption tasks' test clips by the model's caption
decoder, scored with BLEU-1..4, ROUGE-L and CIDEr-D against every reference.

  config.evaluators.cap = ConfigDict(type="captioning", task_dirs=(DIR, ...), beam_sizes=(1,))
  python -m alp_jax.evaluate --workdir RUN ... --suite captioning [--beam-sizes 1,4]

Metric names in training: TASK/DECODING/METRIC.
"""
from __future__ import annotations

from alp_jax.evaluate import captioning
from alp_jax.evaluate import evaluator
from alp_jax.models import encoders
from alp_jax.train import evaluators


@evaluators.register("captioning")
class CaptioningEvaluator(evaluator.Evaluator):
  needs = frozenset({encoders.AUDIO_ENCODER, encoders.CAPTION_DECODER})
  task_kind = evaluator.CAPTION
  suites = ("default",)
  order = 3

  def __init__(self, config, eval_cfg, **kwargs):
    super().__init__(config, eval_cfg, **kwargs)
    default = (1,) if config is not None else captioning.DEFAULT_BEAM_SIZES
    self.beam_sizes = tuple(int(b) for b in eval_cfg.get("beam_sizes", default))

  def task_rows(self, model, task):
    return captioning.evaluate_task(model, task, beam_sizes=self.beam_sizes, cache_dir=self.eval_cfg.get("cache_dir"),
                                    log=self.log)

  def protocol(self):
    return {"captioning": {"beam_sizes": list(self.beam_sizes), "length_penalty": 0.0}}
