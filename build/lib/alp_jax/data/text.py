"""Caption text as the comparisons see it: one word tokenisation for n-gram metrics and leakage checks, and the
split names of task folders (read by the evaluators and the leakage check alike).

The tokenisation is the one the captioning metrics use (BLEU, ROUGE-L, CIDEr-D in alp_jax/evaluate/
caption_metrics.py) and the caption-overlap part of the leakage check (alp_jax/data/leakage.py), so "the same
caption" means the same thing in both.
"""
from __future__ import annotations

import re

SPLITS = ("train", "valid", "test")   # task folder splits: train.csv / valid.csv / test.csv (or .jsonl)

_APOSTROPHES = re.compile(r"['\u2019`]")
_NON_WORD = re.compile(r"[^\w\s]")


def tokenize(text: str) -> list[str]:
  """Lowercase, delete apostrophes, other punctuation -> space, whitespace split."""
  return _NON_WORD.sub(" ", _APOSTROPHES.sub("", text.lower())).split()
