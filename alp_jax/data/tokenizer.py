"""Caption tokenizer: a sentencepiece model trained from the corpus's own captions (no hub downloads).

  python -m alp_jax.data.tokenizer --corpus DIR [--vocab-size N] [--model-type unigram|bpe]

Reads DIR/captions.txt (written by prepare) and writes DIR/tokenizer.model (+ .vocab). Any sentencepiece model
(a local file or gs://...) can be loaded instead with `Tokenizer(path)`; its special ids must match the ones below.
Ids: PAD=0, UNK=1, BOS=2, EOS=3. Text is NFKC-normalised and case-folded.

`Tokenizer(path)` also reads a Hugging Face `tokenizer.json` (WordPiece, BPE, ... through the `tokenizers`
library), the tokenizer of a pretrained text side (alp_jax/models/hf_bert.py, hf_bart.py): it is told apart by its
content (JSON), so the data pipeline and a run's copy (WORKDIR/tokenizer.model, whatever its format) need nothing
else. Its ids are remapped (`HfTokenizer`): the checkpoint's pad, unk, BOS ([CLS] / <s>) and EOS ([SEP] / </s>)
become 0..3, every other id keeps its order after them; the model loaders reorder the embedding rows to match.

Which tokenizer a data config uses is one rule, `path_for(data_cfg)`: data.tokenizer if set, else
CORPUS_DIR/tokenizer.model. A training run keeps its own copy (alp_jax.train.runs).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm
from etils import epath

from alp_jax.data import caption_ids
from alp_jax.data import hf_tokenizer
from alp_jax.data.caption_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID, pad_caption  # noqa: F401  (re-exported)

MODEL_FILE = "tokenizer.model"


class Tokenizer:
  """Thin wrapper fixing our id conventions: captions become tokens + EOS, padded with PAD (a caption too long for
  its EOS is cut without one: `pad_caption`). A tokenizer.json path gives an `HfTokenizer` (same interface)."""

  def __new__(cls, model_path: str | os.PathLike):
    if cls is Tokenizer and _is_json(model_path):
      return hf_tokenizer.HfTokenizer(model_path)   # not a Tokenizer: __init__ below is not run for it
    return super().__new__(cls)

  def __init__(self, model_path: str | os.PathLike):
    model_path = os.fspath(model_path)
    if not epath.Path(model_path).is_file():
      raise FileNotFoundError(f"tokenizer model not found: {model_path} (train one with "
                              f"`python -m alp_jax.data.tokenizer --corpus DIR`)")
    self.path = model_path
    model_proto = epath.Path(model_path).read_bytes()   # through epath: the file may be remote
    self.sha1 = hashlib.sha1(model_proto).hexdigest()
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    ids = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
      raise ValueError(f"{model_path}: special ids (pad, unk, bos, eos) = {ids}, expected "
                       f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; retrain with this module")

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def encode_padded(self, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """-> tokens int32 (N, max_len), mask bool (N, max_len): each row is `pad_caption(encode(text), max_len)`."""
    return caption_ids.pad_captions(self.sp.encode(list(texts)), max_len)

  def decode(self, ids) -> str:
    """Stops at the first EOS; ignores PAD and BOS."""
    return self.sp.decode(caption_ids.content_ids(ids))


def _is_json(model_path: str | os.PathLike) -> bool:
  """Whether the file holds JSON (a Hugging Face tokenizer.json) rather than a sentencepiece model (protobuf)."""
  path = epath.Path(os.fspath(model_path))
  if not path.is_file():
    return False
  with path.open("rb") as f:
    return f.read(64).lstrip()[:1] == b"{"


def train(corpus_dir: str | os.PathLike, *, vocab_size: int = 8000, model_type: str = "unigram",
          quiet: bool = False) -> Path:
  """Trains DIR/tokenizer.model from DIR/captions.txt. The vocabulary shrinks if the corpus is too small."""
  corpus_dir = Path(corpus_dir)
  captions = corpus_dir / "captions.txt"
  if not captions.is_file():
    raise FileNotFoundError(f"{captions} not found: prepare the corpus first (python -m alp_jax.data.prepare)")
  prefix = corpus_dir / "tokenizer"
  spm.SentencePieceTrainer.train(
      input=str(captions), model_prefix=str(prefix), vocab_size=vocab_size, model_type=model_type,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, character_coverage=1.0,
      normalization_rule_name="nmt_nfkc_cf", hard_vocab_limit=False, input_sentence_size=2_000_000,
      shuffle_input_sentence=True, num_threads=max(1, os.cpu_count() or 1), minloglevel=2)
  path = prefix.with_suffix(".model")
  if not quiet:
    n_captions = sum(1 for _ in open(captions, encoding="utf-8"))
    print(f"[tokenizer] trained {model_type} vocabulary of {Tokenizer(path).vocab_size} pieces on {n_captions} "
          f"captions; wrote {path}")
  return path


def path_for(data_cfg) -> epath.Path:
  """The tokenizer a data config names: data.tokenizer if set, else CORPUS_DIR/tokenizer.model."""
  return epath.Path(data_cfg.get("tokenizer") or epath.Path(data_cfg.corpus_dir) / MODEL_FILE)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.data.tokenizer", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus", required=True, help="prepared corpus folder (holds captions.txt)")
  parser.add_argument("--vocab-size", type=int, default=8000)
  parser.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
  args = parser.parse_args(argv)
  try:
    train(args.corpus, vocab_size=args.vocab_size, model_type=args.model_type)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
