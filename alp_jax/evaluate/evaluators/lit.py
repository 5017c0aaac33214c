"""Evaluator "lit": LiT-style alignment. The audio encoder is frozen and a text side (default: a tiny hybrid, so
both a text tower and a caption decoder) is trained on each caption task's train split
(alp_jax/evaluate/lit.py); then the retrieval and captioning evaluators score it on the task's test split. Rows
carry the methods "lit_retrieval", "lit_retrieval_likelihood", "lit_greedy", ...

  python -m alp_jax.evaluate (--encoder ENC | --workdir RUN | --random-init ...) --task-dir CAPTION_TASK --suite lit
      [--lit-config configs/hybrid.py:tiny] [--lit-steps 400] [--lit-batch-size 32] [--lit-dir DIR]
      [--lit-text-checkpoint BERT_DIR] [--lit-decoder-checkpoint BART_DIR]   # pretrained text sides (HF folders)
  config.evaluators.lit = ConfigDict(type="lit", task_dirs=(DIR, ...), lit_dir=DIR, lit_steps=..., every=N)

Options (eval_cfg): lit_config, lit_steps, lit_batch_size, lit_dir (where the LiT runs go; required), seed,
beam_sizes, lit_text_checkpoint / lit_decoder_checkpoint (local Hugging Face BERT / BART folders: the study's
pretrained text sides; see alp_jax/evaluate/lit.py). Needs only an audio encoder: an exported one is used as is, any other (a run's, random init) is saved
to LIT_DIR/encoder first.
"""
from __future__ import annotations

import time
from pathlib import Path

import ml_collections

from alp_jax.evaluate import evaluator
from alp_jax.evaluate import lit
from alp_jax.evaluate import run_model as run_model_lib
from alp_jax.train import evaluators

DEFAULT_CONFIG = "configs/hybrid.py:tiny"


@evaluators.register("lit")
class LitEvaluator(evaluator.Evaluator):
  task_kind = evaluator.CAPTION
  suites = ("study",)
  order = 4

  def __init__(self, config, eval_cfg, **kwargs):
    super().__init__(config, eval_cfg, **kwargs)
    self.config_spec = eval_cfg.get("lit_config", DEFAULT_CONFIG)
    self.steps = int(eval_cfg.get("lit_steps", 400))
    self.batch_size = int(eval_cfg.get("lit_batch_size", 32))
    self.seed = int(eval_cfg.get("seed", 0))
    self.lit_dir = eval_cfg.get("lit_dir")
    self.text_checkpoint = eval_cfg.get("lit_text_checkpoint") or None
    self.decoder_checkpoint = eval_cfg.get("lit_decoder_checkpoint") or None
    self.text_side = ml_collections.ConfigDict({"beam_sizes": tuple(eval_cfg.get("beam_sizes", (1,)))})
    self.runs: list[dict] = []
    self._calls = 0   # rows() calls so far: each in-training run gets its own folder

  def _encoder_dir(self, model: run_model_lib.RunModel, root: Path) -> Path:
    if model.encoder_dir is not None:
      return Path(model.encoder_dir)
    encoder_dir = root / "encoder"
    model.encoder.save(encoder_dir)
    return encoder_dir

  def _root(self) -> Path:
    """LIT_DIR in the CLI; LIT_DIR/eval_N for the N-th run inside training (the encoder changes between runs)."""
    root = Path(self.lit_dir)
    return root if self.config is None else root / f"eval_{self._calls}"

  def rows(self, model, tasks):
    if not self.lit_dir:
      raise ValueError("evaluator lit: set lit_dir (where the LiT runs are written)")
    root = self._root()
    self._calls += 1
    encoder_dir = self._encoder_dir(model, root)
    scorers = [evaluators.get(name)(None, self.text_side, log=self.log) for name in ("retrieval", "captioning")]
    rows = []
    for task in tasks:
      workdir = root / Path(task.directory).name
      t0 = time.time()
      lit.train_text_side(encoder_dir, task.directory, workdir, config_spec=self.config_spec, steps=self.steps,
                          batch_size=self.batch_size, seed=self.seed, text_checkpoint=self.text_checkpoint,
                          decoder_checkpoint=self.decoder_checkpoint, log=self.log)
      text_side = run_model_lib.RunModel.from_workdir(workdir)
      for scorer in scorers:
        if scorer.unmet(text_side.capabilities, (evaluator.CAPTION,)) is None:
          for row in scorer.rows(text_side, [task]):
            rows.append(dict(row, method="lit_" + row["method"], lit_workdir=str(workdir)))
      self.runs.append({"task": Path(task.directory).name, "workdir": str(workdir), "config": self.config_spec,
                        "steps": self.steps, "batch_size": self.batch_size, "model": text_side.kind,
                        "frozen": list(text_side.config.optimizer.get("frozen", ())),
                        "text_checkpoint": self.text_checkpoint, "decoder_checkpoint": self.decoder_checkpoint,
                        "seconds": round(time.time() - t0, 1)})
    return rows

  def protocol(self):
    return {"lit": list(self.runs)}
