"""The comparison table: gaps against the stronger baseline, paired over the same test clips, and the
significance marks on fixed numbers."""
import numpy as np
import pytest

from alp_jax.evaluate import comparison


def _one_hot_scores(predictions, classes):
  scores = np.zeros((len(predictions), classes), np.float32)
  scores[np.arange(len(predictions)), predictions] = 1.0
  return scores


def _result(task, value, scores, targets):
  return {"task": task, "metric": "accuracy", "method": "mean", "value": value, "interval": [value - .1, value + .1],
          "outputs": (scores, targets)}


def _rows():
  """Task 'a': the pretrained encoder is right on 180 of 200 clips, random init on 100 and log-mel on 120 (a large
  gap). Task 'b': pretrained and log-mel differ on 3 clips of 200, two won and one lost (no significant gap)."""
  rng = np.random.default_rng(0)
  targets = rng.integers(0, 4, 200)
  wrong = (targets + 1) % 4

  def predictions(correct):
    right = np.arange(200) < correct
    if correct == 151:   # right on 0..148 and 150..151: differs from "first 150 right" on 149, 150 and 151
      right[149], right[150], right[151] = False, True, True
    return np.where(right, targets, wrong)

  results = {}
  for name, correct_a, correct_b in (("random_init", 100, 90), ("logmel-stats", 120, 150), ("clap", 180, 151)):
    results[name] = [_result("a", correct_a / 200, _one_hot_scores(predictions(correct_a), 4), targets),
                     _result("b", correct_b / 200, _one_hot_scores(predictions(correct_b), 4), targets)]
  return comparison.add_gaps(comparison.merge(results), resamples=500)


def test_gap_is_taken_against_the_stronger_baseline_and_marked():
  a, b = _rows()
  assert a["gaps"]["clap"]["baseline"] == "logmel-stats"
  assert a["gaps"]["clap"]["gap"] == pytest.approx(0.30)
  assert a["gaps"]["clap"]["low"] > 0 and a["gaps"]["clap"]["significant"]
  assert b["gaps"]["clap"]["gap"] == pytest.approx(0.005)
  assert b["gaps"]["clap"]["low"] < 0 < b["gaps"]["clap"]["high"] and not b["gaps"]["clap"]["significant"]
  assert "outputs" not in a and set(a["gaps"]) == {"clap"}   # baselines get no gap, outputs are dropped
  # Against each baseline alone: far above random init on both tasks, above log-mel on 'a' only.
  assert a["gaps_by_baseline"]["clap"]["random_init"]["gap"] == pytest.approx(0.40)
  assert b["gaps_by_baseline"]["clap"]["random_init"]["significant"]
  summary = comparison.summary([a, b])["clap"]
  assert summary["stronger"] == {"rows": 2, "significantly_above": 1, "significantly_below": 0}
  assert summary["random_init"] == {"rows": 2, "significantly_above": 2, "significantly_below": 0}
  assert summary["logmel-stats"] == summary["stronger"]
  assert comparison.summary_lines([a, b]) == [
      "clap: rows significantly above / below the stronger baseline: +1 / -0 of 2; random_init: +2 / -0 of 2; "
      "logmel-stats: +1 / -0 of 2"]


def test_table_marks_only_significant_gaps():
  fixed = [
      {"task": "speaker", "metric": "accuracy", "method": "mean", "values": {"random_init": .5, "logmel-stats": .6,
       "clap": .8}, "gaps": {"clap": {"baseline": "logmel-stats", "gap": .2, "low": .1, "high": .3,
                                       "significant": True}}},
      {"task": "pitch", "metric": "accuracy", "method": "mean", "values": {"random_init": .7, "logmel-stats": .6,
       "clap": .65}, "gaps": {"clap": {"baseline": "random_init", "gap": -.05, "low": -.12, "high": .02,
                                        "significant": False}}},
      {"task": "sound", "metric": "accuracy", "method": "zero_shot", "values": {"clap": .4}},
  ]
  lines = comparison.format_table(fixed).splitlines()
  header, speaker, pitch, sound = lines[:4]
  assert header.split()[3:6] == ["random_init", "logmel-stats", "clap"]   # baselines first
  assert "+0.200 [+0.100,+0.300]*" in speaker
  assert "-0.050 [-0.120,+0.020]" in pitch and "*" not in pitch
  assert sound.split()[-1] == "-" and "0.400" in sound


def test_gap_refuses_different_test_clips():
  targets = np.array([0, 1, 0, 1])
  scores = _one_hot_scores(targets, 2)
  results = {"random_init": [_result("a", 1.0, scores, targets)],
             "clap": [_result("a", 1.0, scores[:3], targets[:3])]}
  with pytest.raises(ValueError, match="different test clips"):
    comparison.add_gaps(comparison.merge(results))
