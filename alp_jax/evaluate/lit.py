"""LiT-style alignment, the training half: freeze an exported audio encoder, train only the text side on a
caption task's train split. The study's second evaluation protocol (retrieval and captioning with the audio
tower locked); the evaluators score the resulting workdir on the task's test split.

  from alp_jax.evaluate import lit
  workdir = lit.train_text_side(ENC_DIR, TASK_DIR, WORKDIR)          # hybrid: text encoder + decoder

TASK_DIR/train.jsonl is read in the corpus manifest format (alp_jax/data/manifest.py; "source" may be omitted:
it defaults to the task's folder name, "id" to the audio path). Into WORKDIR it writes:
  train_manifest.jsonl   the normalised train split (absolute audio paths, a source on every line)
  corpus/                that split prepared (alp_jax.data.prepare) + a sentencepiece tokenizer on its captions;
                         a finished corpus of the same manifest is reused
  config.json, tokenizer.model, checkpoints/, metrics.jsonl   the training run (alp_jax.train.runs), resumable
  lit.json               what was trained from what (encoder, task, model, steps, frozen groups, seconds)

The model is `configs/hybrid.py:tiny` by default, so one run yields both a contrastive text encoder (retrieval)
and a caption decoder (captioning); `configs/clap.py:...` (two towers) or `configs/cappa.py:...` (captioner)
train one of them. By default the text side starts from random weights with a tokenizer trained on the task's
own captions (our addition). The study's recipe starts it from pretrained checkpoints, local Hugging Face folders
(nothing is downloaded):
  lit.train_text_side(ENC_DIR, TASK_DIR, WORKDIR, config_spec="configs/clap.py:tiny", text_checkpoint=BERT_DIR)
  lit.train_text_side(ENC_DIR, TASK_DIR, WORKDIR, config_spec="configs/cappa.py:tiny",
                      decoder_checkpoint=BART_DIR)
BERT_DIR is a BertModel folder (fine-tuned whole), BART_DIR a BART folder whose decoder trains only its
cross-attention (PRETRAINED_DECODER_FROZEN, autoregressive rows only); each brings its tokenizer.json, which
replaces the sentencepiece tokenizer (models/hf_bert.py, hf_bart.py, data/hf_tokenizer.py).
Whatever the config says about the audio side is replaced by the exported encoder's own settings
(encoder_config.json: config.model.audio, config.frontend, crop_seconds), so shapes match; the encoder's weights
are loaded with config.model_init and frozen with config.optimizer.frozen=("audio_encoder",): bit-identical after
training, run in evaluation mode (no SpecAugment, no dropout), no backward pass through it.
Everything is seeded (`seed`: parameter init, data order, caption choice): the same call gives the same run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import ml_collections
from flax import nnx

from alp_jax import encoder_api
from alp_jax import models
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.models import encoders
from alp_jax.models import hf_bart
from alp_jax.train import runs
from alp_jax.train import trainer

FROZEN = ("audio_encoder",)
LIT_FILE = "lit.json"
MANIFEST_FILE = "train_manifest.jsonl"
CORPUS_DIR = "corpus"
# The study's sister paper: a pretrained decoder with only its cross-attention tuned (train/freeze.py rules; the
# audio projection, new when the encoder is not as wide as the decoder, trains too). A pretrained text encoder is
# fine-tuned whole.
PRETRAINED_DECODER_FROZEN = ("decoder", "!decoder/blocks/*/cross_attention", "!decoder/blocks/*/cross_attention_norm",
                             "!decoder/audio_projection")


def _audio_width(audio_cfg: ml_collections.ConfigDict) -> int:
  """The width of the encoder's frames (an abstract build: no weights, no compilation)."""
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: encoders.encoder_from_config(audio_cfg, rngs=nnx.Rngs(0))).output_dim


def normalise_manifest(task_dir: Path, out: Path) -> int:
  """TASK_DIR/train.jsonl -> `out` with absolute audio paths and a source on every record; returns the number of
  lines. Lines that are not JSON objects are copied unchanged, so prepare reports them as bad records (by the
  normalised file and line). The file is rewritten only when its content changes (prepare's reuse check)."""
  source = task_dir.name
  lines = []
  with open(task_dir / "train.jsonl", encoding="utf-8", errors="replace") as f:
    for text in f:
      if not text.strip():
        continue
      try:
        record = json.loads(text)
      except json.JSONDecodeError:
        record = None
      if not isinstance(record, dict):
        lines.append(text.rstrip("\n"))
        continue
      audio = record.get("audio")
      if isinstance(audio, str) and audio and not os.path.isabs(audio):
        record["audio"] = os.path.normpath(os.path.join(task_dir, audio))
      if not record.get("source"):
        record["source"] = source
      if not record.get("id") and isinstance(audio, str):
        record["id"] = audio
      lines.append(json.dumps(record, ensure_ascii=False))
  content = "\n".join(lines) + "\n"
  if not out.exists() or out.read_text(encoding="utf-8") != content:
    out.write_text(content, encoding="utf-8")
  return len(lines)


def lit_config(encoder_dir: Path, corpus_dir: Path, *, config_spec: str, steps: int, batch_size: int, seed: int,
               learning_rate: float | None = None, text_checkpoint: str | None = None,
               decoder_checkpoint: str | None = None) -> ml_collections.ConfigDict:
  """The training config: `config_spec` with the exported encoder's audio settings, frozen and loaded; with
  pretrained text sides (Hugging Face folders), their checkpoints, their tokenizer and the study's freezing."""
  meta = encoder_api.read_meta(encoder_dir)
  config = runs.load_config(config_spec)
  if "audio" not in config.model:
    raise ValueError(f"{config_spec}: model {config.model.name!r} has no audio encoder to freeze")
  parts = models.capabilities_of(models.MODELS.get(config.model.name))
  if not parts & {encoders.TEXT_TOWER, encoders.CAPTION_DECODER}:
    raise ValueError(f"{config_spec}: LiT trains a text side (a text tower or a caption decoder); model "
                     f"{config.model.name!r} has {', '.join(sorted(parts)) or 'none'}")
  config.model.audio = ml_collections.ConfigDict(meta["audio"])
  config.frontend = ml_collections.ConfigDict(meta["frontend"])
  config.data.crop_seconds = float(meta["crop_seconds"])
  config.data.corpus_dir = str(corpus_dir)
  config.data.tokenizer = ""
  config.data.sources = ()
  config.data.seed = seed
  config.seed = seed
  config.model_init = str(encoder_dir)
  config.optimizer.frozen = FROZEN
  pretrained = {"text": text_checkpoint, "decoder": decoder_checkpoint}
  for field, folder in pretrained.items():
    if not folder:
      continue
    if field not in config.model:
      part = "text encoder" if field == "text" else "caption decoder"
      raise ValueError(f"{config_spec}: model {config.model.name!r} has no {part} for the pretrained checkpoint "
                       f"{folder}; use configs/clap.py (text encoder), configs/cappa.py (decoder) or "
                       f"configs/hybrid.py (both, when they share one tokenizer.json)")
    config.model[field].pretrained = str(Path(folder).absolute())
    if field == "decoder":
      same_width = _audio_width(config.model.audio) == hf_bart.architecture(folder)["d_model"]
      config.optimizer.frozen = FROZEN + tuple(
          n for n in PRETRAINED_DECODER_FROZEN if not (same_width and n == "!decoder/audio_projection"))
      if "parallel_fraction" in config.loss:
        config.loss.parallel_fraction = 0.0   # a pretrained BART decoder is autoregressive
  folders = [Path(f).absolute() for f in pretrained.values() if f]
  if folders:
    tokenizers = [f / "tokenizer.json" for f in folders]
    for path in tokenizers:
      if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no tokenizer.json; a pretrained text side is read with its own "
                                f"tokenizer (the tokenizer.json saved with the checkpoint)")
    if len({p.read_bytes() for p in tokenizers}) > 1:
      raise ValueError(f"{folders[0]} and {folders[1]} have different tokenizers, and a run reads captions with one; "
                       f"train retrieval (configs/clap.py + the text checkpoint) and captioning (configs/cappa.py + "
                       f"the decoder checkpoint) as two LiT runs")
    config.data.tokenizer = str(tokenizers[0])
  config.optimizer.frozen_eval_mode = True
  if learning_rate is not None:
    config.optimizer.learning_rate = learning_rate
  config.total_steps = steps
  config.batch_size = batch_size
  config.log_every = max(1, min(config.log_every, steps))
  config.checkpoint_every = max(1, min(max(config.checkpoint_every, steps // 4), steps))  # a few saves (resume)
  config.eval_every = 0
  return config


def _finished_run(workdir: Path, request: dict) -> dict | None:
  """lit.json of an earlier run in `workdir` that reached the requested steps with the same settings; None if
  there is none (or it is unfinished: the trainer resumes it); ValueError if it was made from other settings."""
  path = workdir / LIT_FILE
  if not path.exists():
    return None
  record = json.loads(path.read_text())
  differs = {k: (record.get(k), v) for k, v in request.items() if k != "steps" and record.get(k) != v}
  if differs:
    raise ValueError(f"{workdir} holds a LiT run made with other settings "
                     f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in differs.items())}); "
                     f"use another workdir")
  return record if record.get("final_step", 0) >= request["steps"] else None


def train_text_side(encoder_dir: str | os.PathLike, task_dir: str | os.PathLike, workdir: str | os.PathLike, *,
                    config_spec: str = "configs/hybrid.py:tiny", steps: int = 400, batch_size: int = 32,
                    learning_rate: float | None = None, seed: int = 0, vocab_size: int = 8000,
                    text_checkpoint: str | os.PathLike | None = None,
                    decoder_checkpoint: str | os.PathLike | None = None,
                    overrides: dict | None = None, log: Callable[[str], None] | None = print) -> Path:
  """Trains the text side of `config_spec` on TASK_DIR/train.jsonl with the encoder at `encoder_dir` frozen.

  Args:
    encoder_dir: an exported encoder (python -m alp_jax.export).
    task_dir: a caption task folder holding train.jsonl (and test.jsonl for the evaluators).
    workdir: the run folder (see the module docstring); an unfinished run there is resumed, a finished one is
      returned as is.
    config_spec: 'configs/NAME.py[:variants]': hybrid (default), clap (two towers) or cappa (captioner).
    steps, batch_size, learning_rate: training length, global batch (a multiple of the device count) and peak
      learning rate (None: the config's).
    seed: parameter init, data order and caption choice.
    vocab_size: sentencepiece vocabulary trained on the train captions (shrinks on a small task); not used with a
      pretrained text side, which brings its own tokenizer.json.
    text_checkpoint: a local Hugging Face BertModel folder: the text tower starts from it and is fine-tuned (the
      study's recipe); None: a random-init text tower (our addition).
    decoder_checkpoint: a local Hugging Face BART folder: the decoder starts from it and only its cross-attention
      (and the new audio projection) trains, autoregressive only (the study's sister paper); None: random init.
    overrides: {"dotted.field": value} applied to the config last (e.g. {"optimizer.warmup_steps": 50}).
    log: progress lines (None: quiet); the trainer prints its own progress lines.
  Returns:
    The workdir (a training workdir the evaluators read: config.json, checkpoints/, tokenizer.model).
  """
  say = log or (lambda _: None)
  t0 = time.perf_counter()
  encoder_dir, task_dir, workdir = (Path(p).absolute() for p in (encoder_dir, task_dir, workdir))
  if not (task_dir / "train.jsonl").is_file():
    raise FileNotFoundError(f"{task_dir}: no train.jsonl; LiT-style alignment trains the text side on a caption "
                            f"task's train split (train.jsonl, one clip a line: id, audio, captions[, source])")
  encoder_api.read_meta(encoder_dir)  # a clear error before any work
  request = {"encoder_dir": str(encoder_dir), "task_dir": str(task_dir), "config_spec": config_spec,
             "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
             "vocab_size": vocab_size, "overrides": json.loads(json.dumps(overrides or {}, default=str)),
             "text_checkpoint": text_checkpoint and str(Path(text_checkpoint).absolute()),
             "decoder_checkpoint": decoder_checkpoint and str(Path(decoder_checkpoint).absolute())}
  finished = _finished_run(workdir, request)
  if finished is not None:
    say(f"[lit] {workdir} already holds this run, finished at step {finished['final_step']}; nothing to do")
    return workdir
  workdir.mkdir(parents=True, exist_ok=True)
  corpus_dir = workdir / CORPUS_DIR
  manifest = workdir / MANIFEST_FILE
  n_lines = normalise_manifest(task_dir, manifest)
  say(f"[lit] {task_dir.name}: {n_lines} train clips; preparing {corpus_dir}")
  try:
    corpus = prepare_lib.prepare([str(manifest)], corpus_dir, quiet=log is None)
  except prepare_lib.PrepareError:   # this LiT run's own earlier corpus (other task files or an older format)
    say(f"[lit] {corpus_dir} holds a corpus of other task files or an older format; preparing it again")
    corpus = prepare_lib.prepare([str(manifest)], corpus_dir, quiet=log is None, overwrite=True)
  if corpus["clips"] == 0:
    raise ValueError(f"{task_dir}/train.jsonl: no usable clip (see {corpus_dir}/bad_records.jsonl)")
  tokenizer_path = corpus_dir / tokenizer_lib.MODEL_FILE
  if text_checkpoint or decoder_checkpoint:
    say(f"[lit] pretrained text side: {', '.join(str(p) for p in (text_checkpoint, decoder_checkpoint) if p)} "
        f"(its own tokenizer.json)")
  elif corpus["reused"] and tokenizer_path.exists():
    say(f"[lit] reusing {tokenizer_path}")
  else:
    tokenizer_lib.train(corpus_dir, vocab_size=vocab_size, quiet=log is None)

  config = lit_config(encoder_dir, corpus_dir, config_spec=config_spec, steps=steps, batch_size=batch_size,
                      seed=seed, learning_rate=learning_rate, text_checkpoint=request["text_checkpoint"],
                      decoder_checkpoint=request["decoder_checkpoint"])
  for key, value in (overrides or {}).items():
    node = config
    *parents, last = key.split(".")
    for part in parents:
      node = node[part]
    node[last] = value
  say(f"[lit] training {config.model.name} ({config_spec}) for {steps} steps, batch {batch_size}, seed {seed}; "
      f"audio encoder {encoder_dir} frozen")
  summary = trainer.train(config, workdir)
  seconds = time.perf_counter() - t0
  record = {**request, "task": task_dir.name, "model": config.model.name, "objective": config.loss.kind,
            "final_step": summary["final_step"], "frozen": list(config.optimizer.frozen),
            "train_clips": corpus["clips"],
            "skipped_records": sum(corpus["skipped"].values()), "seconds": round(seconds, 2)}
  (workdir / LIT_FILE).write_text(json.dumps(record, indent=1))
  say(f"[lit] done in {seconds:.1f}s: text side of {config.model.name} trained for {summary['final_step']} steps "
      f"on {corpus['clips']} clips of {task_dir.name}; run in {workdir}")
  return workdir
