"""Captioning metrics: corpus BLEU-1..4, ROUGE-L and CIDEr-D, following coco-caption (pure Python).

Legend: N clips (one candidate caption each, one or more references), n n-gram order (1..4), L tokens.

Tokenisation (`tokenize`): lowercase; apostrophes are deleted ("dog's" -> "dogs"); every other character that is
neither a letter, a digit, an underscore nor whitespace becomes a space ("high-pitched," -> "high pitched");
split on whitespace. coco-caption's PTB tokenizer differs in corner cases ("dog's" -> "dog 's"), so scores are
close to, not identical with, published numbers.

BLEU-n (Papineni et al. 2002), corpus level: p_m = sum over clips of clipped m-gram matches (a candidate m-gram
  counts at most as often as it occurs in any single reference) / sum of candidate m-grams; brevity penalty
  BP = exp(1 - r / c) when c < r, else 1, with c the total candidate length and r the sum over clips of the
  reference length closest to the candidate's (ties: the shorter); BLEU-n = BP * exp(mean_{m<=n} log p_m), 0 when
  any p_m is 0 (no smoothing; coco-caption adds 1e-9 / 1e-15 instead, a negligible difference when p_m > 0).
ROUGE-L (coco-caption Rouge): per clip, for each reference, LCS length l; P = max_ref l / |cand|,
  R = max_ref l / |ref| (each maximised over references separately, as coco-caption does);
  F = (1 + b^2) P R / (R + b^2 P) with b = 1.2 (0 if P or R is 0); averaged over clips.
CIDEr-D (Vedantam et al. 2015, coco-caption CiderD): document frequency df(g) = number of clips whose reference set
  contains n-gram g, counted over the evaluated references; a caption's vector for order n holds
  count(g) * (log N - log max(1, df(g))); per reference,
  sim_n = sum_g min(v_cand(g), v_ref(g)) v_ref(g) / (|v_cand| |v_ref|) * exp(-(|cand| - |ref|)^2 / (2 sigma^2)),
  sigma = 6, lengths in tokens (coco-caption counts bigrams: same differences); score = 10 * mean over
  references of mean_n sim_n; averaged over clips.
"""
from __future__ import annotations

import collections
import math
from typing import Sequence

from alp_jax.data.text import tokenize

MAX_ORDER = 4
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0


def ngram_counts(tokens: Sequence[str], n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _tokenized(candidates: Sequence[str], references: Sequence[Sequence[str]]):
  if len(candidates) != len(references):
    raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
  if not candidates:
    raise ValueError("no captions to score")
  for i, refs in enumerate(references):
    if isinstance(refs, str) or not refs:
      raise ValueError(f"clip {i}: references must be a non-empty list of strings")
  return [tokenize(c) for c in candidates], [[tokenize(r) for r in refs] for refs in references]


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]],
         max_order: int = MAX_ORDER) -> dict[str, float]:
  """Corpus BLEU-1..max_order: {'BLEU-1': ..., ...}."""
  cands, refs = _tokenized(candidates, references)
  matches = [0] * max_order
  totals = [0] * max_order
  cand_len = ref_len = 0
  for cand, clip_refs in zip(cands, refs):
    cand_len += len(cand)
    ref_len += min((len(r) for r in clip_refs), key=lambda n: (abs(n - len(cand)), n))
    for n in range(1, max_order + 1):
      counts = ngram_counts(cand, n)
      max_ref = collections.Counter()
      for r in clip_refs:
        max_ref |= ngram_counts(r, n)  # element-wise max
      matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
      totals[n - 1] += sum(counts.values())
  brevity = 1.0 if cand_len >= ref_len else (math.exp(1 - ref_len / cand_len) if cand_len else 0.0)
  out, log_sum = {}, 0.0
  for n in range(1, max_order + 1):
    if matches[n - 1] == 0 or log_sum == -math.inf:
      log_sum = -math.inf
      out[f"BLEU-{n}"] = 0.0
      continue
    log_sum += math.log(matches[n - 1] / totals[n - 1])
    out[f"BLEU-{n}"] = brevity * math.exp(log_sum / n)
  return out


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
  """Longest common subsequence length, O(|a| |b|) dynamic programme over one row."""
  row = [0] * (len(b) + 1)
  for x in a:
    diagonal = 0
    for j, y in enumerate(b, 1):
      diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
  return row[-1]


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = ROUGE_BETA) -> float:
  """Mean over clips of the coco-caption ROUGE-L F-measure."""
  cands, refs = _tokenized(candidates, references)
  scores = []
  for cand, clip_refs in zip(cands, refs):
    lcs = [lcs_length(cand, r) for r in clip_refs]
    precision = max(l / len(cand) for l in lcs) if cand else 0.0
    recall = max(l / len(r) if r else 0.0 for l, r in zip(lcs, clip_refs))
    if precision == 0 or recall == 0:
      scores.append(0.0)
    else:
      scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
  return sum(scores) / len(scores)


def _tfidf(tokens: Sequence[str], df: collections.Counter, log_num_clips: float, max_order: int):
  """Per order n: ({n-gram: tf-idf}, norm); and the length for the penalty."""
  vectors = []
  for n in range(1, max_order + 1):
    vector = {g: c * (log_num_clips - math.log(max(1.0, df[g]))) for g, c in ngram_counts(tokens, n).items()}
    vectors.append((vector, math.sqrt(sum(v * v for v in vector.values()))))
  # coco-caption measures length as the number of bigrams: the same differences as token counts, except that an
  # empty caption counts as 0, not -1.
  return vectors, max(len(tokens) - 1, 0)


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], sigma: float = CIDER_SIGMA,
            max_order: int = MAX_ORDER) -> float:
  """Corpus CIDEr-D (coco-caption CiderD), mean over clips of 10 x the per-clip score."""
  cands, refs = _tokenized(candidates, references)
  df = collections.Counter()
  for clip_refs in refs:
    df.update({g for r in clip_refs for n in range(1, max_order + 1) for g in ngram_counts(r, n)})
  log_num_clips = math.log(float(len(cands)))
  scores = []
  for cand, clip_refs in zip(cands, refs):
    cand_vectors, cand_len = _tfidf(cand, df, log_num_clips, max_order)
    total = 0.0
    for r in clip_refs:
      ref_vectors, ref_len = _tfidf(r, df, log_num_clips, max_order)
      penalty = math.exp(-((cand_len - ref_len) ** 2) / (2 * sigma**2))
      per_order = []
      for (cv, c_norm), (rv, r_norm) in zip(cand_vectors, ref_vectors):
        dot = sum(min(v, rv[g]) * rv[g] for g, v in cv.items() if g in rv)
        per_order.append(dot / (c_norm * r_norm) * penalty if c_norm and r_norm else 0.0)
      total += sum(per_order) / max_order
    scores.append(10.0 * total / len(clip_refs))
  return sum(scores) / len(scores)


def caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
  """BLEU-1..4, ROUGE-L and CIDEr-D in one dict."""
  return {**bleu(candidates, references), "ROUGE-L": rouge_l(candidates, references),
          "CIDEr-D": cider_d(candidates, references)}
