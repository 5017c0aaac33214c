"""Caption lengths: the share of captions that a caption length (data.max_caption_tokens) cuts, per source.

  lengths = CaptionLengths(tokenizer=None)        # or a data.tokenizer.Tokenizer: count its tokens
  for record in records:
    for caption in record.captions:
      lengths.add(record.source, caption)
  lengths.summary()   # -> dict, stored as corpus.json["caption_lengths"] by prepare
  lengths.lines()     # -> the report lines prepare and validate print

A caption of n tokens is truncated at length L when it does not fit with its EOS: n + 1 > L (`truncated`; the
tokenizer then cuts it without EOS, data/tokenizer.py). Shares are reported at LENGTHS (32, 64, 128 tokens: the
study's text tower used 30, its caption decoder 128).

Units: with a tokenizer, its sentencepiece ids. Without one (prepare runs before the tokenizer is trained from its
captions.txt), words as the caption metrics split them (alp_jax/data/text.py): a lower estimate, since subword
pieces and punctuation make a caption longer in tokens than in words. Pass --tokenizer FILE to prepare or validate
for exact token counts.

Memory: one histogram (length -> captions) per source, whatever the number of captions.
"""
from __future__ import annotations

import collections

from alp_jax.data import text

LENGTHS = (32, 64, 128)


def truncated(num_tokens: int, max_len: int) -> bool:
  """Whether a caption of num_tokens tokens is cut at max_len (it needs num_tokens + 1 positions with its EOS)."""
  return num_tokens + 1 > max_len


def _quantile(histogram: collections.Counter, q: float) -> int:
  """The smallest length with at least a share q of the captions at or below it."""
  total, seen = sum(histogram.values()), 0
  for length in sorted(histogram):
    seen += histogram[length]
    if seen >= q * total:
      return length
  return 0


def _stats(histogram: collections.Counter, lengths: tuple[int, ...]) -> dict:
  total = sum(histogram.values())
  cut = {str(max_len): sum(n for length, n in histogram.items() if truncated(length, max_len)) / max(total, 1)
         for max_len in lengths}
  return {"captions": total, "truncated": cut, "median": _quantile(histogram, 0.5),
          "p95": _quantile(histogram, 0.95), "max": max(histogram, default=0)}


class CaptionLengths:
  """Counts caption lengths per source (see module docstring)."""

  def __init__(self, tokenizer=None, lengths: tuple[int, ...] = LENGTHS):
    self.tokenizer, self.lengths = tokenizer, tuple(lengths)
    self.unit = "tokens" if tokenizer is not None else "words"
    self.histograms: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

  def length(self, caption: str) -> int:
    if self.tokenizer is not None:
      return len(self.tokenizer.encode(caption))
    return len(text.tokenize(caption))

  def add(self, source: str, caption: str) -> None:
    self.histograms[source][self.length(caption)] += 1

  def summary(self) -> dict:
    """{"unit", "tokenizer" (path or None), "lengths", overall stats, "sources": {source: stats}}; stats are
    captions, truncated {str(L): share}, median, p95, max."""
    overall: collections.Counter = collections.Counter()
    for histogram in self.histograms.values():
      overall.update(histogram)
    return {"unit": self.unit, "tokenizer": getattr(self.tokenizer, "path", None), "lengths": list(self.lengths),
            **_stats(overall, self.lengths),
            "sources": {source: _stats(h, self.lengths) for source, h in sorted(self.histograms.items())}}

  def lines(self) -> list[str]:
    return summary_lines(self.summary())


def summary_lines(summary: dict) -> list[str]:
  """Report lines of a `CaptionLengths.summary()` (also read back from corpus.json)."""
  unit = summary["unit"] + ("" if summary["unit"] == "tokens" else
                            " (no tokenizer given: a lower estimate of tokens; pass --tokenizer FILE)")

  def shares(stats):
    return "  ".join(f"at {n}: {100 * stats['truncated'][str(n)]:5.1f}%" for n in summary["lengths"])

  def row(name, stats):
    return (f"  {name:<24} {stats['captions']:>8} captions  median {stats['median']:>4}  p95 {stats['p95']:>4}  "
            f"max {stats['max']:>5}  truncated: {shares(stats)}")

  lines = [f"caption lengths in {unit}; a caption of n is truncated at L (no EOS) when n + 1 > L:"]
  lines += [row(source, stats) for source, stats in summary["sources"].items()]
  if len(summary["sources"]) != 1:
    lines.append(row("all sources", summary))
  return lines
