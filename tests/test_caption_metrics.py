"""Caption metrics: hand-computed BLEU / ROUGE-L / CIDEr-D on tiny corpora, and BLEU against a Counter loop."""
from __future__ import annotations

import collections
import math
import random

import pytest

from alp_jax.evaluate import caption_metrics as cm

DOG = ("a dog barks loudly", ["a dog is barking loudly", "the dog barks"])
BIRDS = ("birds sing", ["birds sing in the morning"])
CAT = ("the cat sat on the mat", ["the cat sat on a mat", "a cat is on the mat"])


def test_tokenize():
  assert cm.tokenize("A Dog's high-pitched BARK,  then\tsilence.") == [
      "a", "dogs", "high", "pitched", "bark", "then", "silence"]


def test_bleu_single_clip_closest_reference_tie_takes_shorter():
  # cand "a dog barks loudly" (4 tokens); refs of 5 and 3 tokens are equally close -> r = 3 (shorter), BP = 1.
  # p1 = 4/4 (a, dog, loudly from ref 1, barks from ref 2); p2: "a dog", "dog barks" match, "barks loudly" not: 2/3;
  # p3: "a dog barks", "dog barks loudly" occur in neither reference: 0.
  got = cm.bleu([DOG[0]], [DOG[1]])
  assert got["BLEU-1"] == pytest.approx(1.0)
  assert got["BLEU-2"] == pytest.approx(math.sqrt(2 / 3))
  assert got["BLEU-3"] == 0.0 and got["BLEU-4"] == 0.0


def test_bleu_corpus_sums_counts_and_brevity_penalty():
  # DOG: matches/totals per order 4/4, 2/3, 0/2, 0/1; closest ref length 3.
  # BIRDS: 2/2, 1/1, 0/0, 0/0; ref length 5. Corpus: p1 = 6/6, p2 = 3/4, c = 6, r = 8, BP = exp(1 - 8/6).
  got = cm.bleu([DOG[0], BIRDS[0]], [DOG[1], BIRDS[1]])
  assert got["BLEU-1"] == pytest.approx(math.exp(-1 / 3))                       # 0.71653
  assert got["BLEU-2"] == pytest.approx(math.exp(-1 / 3) * math.sqrt(3 / 4))     # 0.62053
  assert got["BLEU-3"] == 0.0


def test_bleu_clipped_counts_up_to_four_grams():
  # cand "the cat sat on the mat" vs refs "the cat sat on a mat", "a cat is on the mat" (all 6 tokens, BP = 1).
  # p1: "the" twice but at most once per reference -> 5/6; p2: the cat, cat sat, sat on (ref 1), on the, the mat
  # (ref 2) -> 5/5; p3: the cat sat, cat sat on, on the mat -> 3/4; p4: the cat sat on -> 1/3.
  got = cm.bleu([CAT[0]], [CAT[1]])
  assert got["BLEU-1"] == pytest.approx(5 / 6)                                   # 0.83333
  assert got["BLEU-2"] == pytest.approx(math.sqrt(5 / 6))                        # 0.91287
  assert got["BLEU-3"] == pytest.approx((5 / 6 * 3 / 4) ** (1 / 3))             # 0.85499
  assert got["BLEU-4"] == pytest.approx((5 / 6 * 3 / 4 * 1 / 3) ** (1 / 4))      # 0.67560


def _counter_bleu(candidates, references, max_order=4):
  """Textbook corpus BLEU written independently: per-reference Counters, explicit max, closest length."""
  clipped = [0] * max_order
  total = [0] * max_order
  c_len = r_len = 0
  for cand, refs in zip(candidates, references):
    cand, refs = cand.split(), [r.split() for r in refs]
    c_len += len(cand)
    r_len += sorted((abs(len(r) - len(cand)), len(r)) for r in refs)[0][1]
    for n in range(1, max_order + 1):
      grams = collections.Counter(tuple(cand[i:i + n]) for i in range(len(cand) - n + 1))
      for g, count in grams.items():
        best = max(sum(1 for i in range(len(r) - n + 1) if tuple(r[i:i + n]) == g) for r in refs)
        clipped[n - 1] += min(count, best)
        total[n - 1] += count
  bp = 1.0 if c_len > r_len else math.exp(1 - r_len / c_len)
  scores = []
  for n in range(1, max_order + 1):
    precisions = [clipped[m] / total[m] for m in range(n)]
    scores.append(0.0 if min(precisions) == 0 else bp * math.exp(sum(map(math.log, precisions)) / n))
  return scores


def test_bleu_matches_counter_reference_on_random_corpora():
  rng = random.Random(0)
  vocab = "a the dog cat barks meows loudly softly in room".split()
  for trial in range(5):
    candidates, references = [], []
    for _ in range(12):
      candidates.append(" ".join(rng.choice(vocab[:6]) for _ in range(rng.randint(3, 9))))
      references.append([" ".join(rng.choice(vocab[:6]) for _ in range(rng.randint(2, 10)))
                         for _ in range(rng.randint(1, 4))])
    want = _counter_bleu(candidates, references)
    got = cm.bleu(candidates, references)
    assert [got[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(want), trial
    assert want[1] > 0


def test_rouge_l_max_precision_and_recall_taken_separately():
  # DOG: LCS with ref 1 = "a dog loudly" (3), with ref 2 = "dog barks" (2). P = max(3/4, 2/4) = 0.75,
  # R = max(3/5, 2/3) = 2/3 (from the other reference). F = 2.44 P R / (R + 1.44 P) = 0.698473.
  # BIRDS: LCS 2, P = 1, R = 2/5, F = 2.44 * 0.4 / (0.4 + 1.44) = 0.530435. Mean = 0.614454.
  dog = 2.44 * 0.75 * (2 / 3) / (2 / 3 + 1.44 * 0.75)
  birds = 2.44 * 0.4 / (0.4 + 1.44)
  assert cm.rouge_l([DOG[0]], [DOG[1]]) == pytest.approx(dog)
  assert cm.rouge_l([DOG[0], BIRDS[0]], [DOG[1], BIRDS[1]]) == pytest.approx((dog + birds) / 2)
  assert cm.lcs_length("a b c d e".split(), "x b d y e".split()) == 3


def test_cider_d_two_clips_idf_only():
  # N = 2; every n-gram has df 1 -> idf = log 2 for all. Clip 1 "dog barks" = its reference: sim_1 = sim_2 = 1,
  # no 3/4-grams -> 10 * (1 + 1 + 0 + 0) / 4 = 5. Clip 2 "dog meows" vs "cat meows": unigrams share "meows":
  # sim_1 = L^2 / (sqrt2 L * sqrt2 L) = 1/2, bigram differs -> 10 * 0.5 / 4 = 1.25. Mean 3.125.
  assert cm.cider_d(["dog barks", "dog meows"], [["dog barks"], ["cat meows"]]) == pytest.approx(3.125)


def test_cider_d_clipping_length_penalty_several_references():
  # N = 3 clips. df("a") = 2 (clips 1, 2) -> idf u = log 3 - log 2; every other reference n-gram df 1 -> w = log 3;
  # candidate n-grams absent from all references have df 0 -> idf log 3 - log max(1, 0) = w.
  # Clip 1 cand "a dog a dog" (length 3 in bigrams): unigrams a:2u, dog:2w, norm 2 sqrt(u^2 + w^2);
  #   bigrams "a dog":2w, "dog a":w, norm sqrt5 w.
  #   ref "a dog barks" (length 2, penalty exp(-1/72)): uni a:u dog:w barks:w, norm sqrt(u^2 + 2 w^2);
  #     clipped dot = min(2u,u) u + min(2w,w) w = u^2 + w^2 -> sim_1 = (u^2 + w^2) / (2 sqrt(u^2+w^2) sqrt(u^2+2w^2));
  #     bigrams "a dog", "dog barks" (w each, norm sqrt2 w): dot = w^2 -> sim_2 = 1 / sqrt10; no shared 3/4-grams.
  #   ref "a dog" (length 1, penalty exp(-4/72)): sim_1 = (u^2 + w^2) / (2 (u^2 + w^2)) = 1/2; sim_2 = 1/sqrt5.
  # Clip 2 "a cat" = its reference -> 10 * 2/4 = 5. Clip 3 "birds" = its reference -> 10 * 1/4 = 2.5.
  u, w = math.log(3) - math.log(2), math.log(3)
  ref1 = math.exp(-1 / 72) * ((u**2 + w**2) / (2 * math.sqrt(u**2 + w**2) * math.sqrt(u**2 + 2 * w**2))
                              + 1 / math.sqrt(10)) / 4
  ref2 = math.exp(-4 / 72) * (1 / 2 + 1 / math.sqrt(5)) / 4
  clip1 = 10 * (ref1 + ref2) / 2
  got = cm.cider_d(["a dog a dog", "a cat", "birds"], [["a dog barks", "a dog"], ["a cat"], ["birds"]])
  assert got == pytest.approx((clip1 + 5 + 2.5) / 3)


def test_caption_metrics_dict_and_bad_input():
  got = cm.caption_metrics([CAT[0]], [CAT[1]])
  assert set(got) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
  with pytest.raises(ValueError, match="references"):
    cm.bleu(["a cat"], ["a cat"])
  with pytest.raises(ValueError, match="candidates"):
    cm.rouge_l(["a", "b"], [["a"]])
