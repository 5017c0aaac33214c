"""The duration rule: the study's 1-60 s by default; drop, cap or window long clips; every change counted."""
import json
import math

import numpy as np
import pytest
import soundfile as sf
from array_record.python.array_record_module import ArrayRecordReader

from alp_jax.data import durations
from alp_jax.data import manifest as mf
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import records
from alp_jax.data import validate as validate_lib

from corpus_fixtures import write_manifest

RATE = 16000
SECONDS = {"short": 0.5, "one": 1.0, "three": 3.0, "seven": 7.0}   # a rule of 1 to 2.5 s: too short, kept, long x2


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  root = tmp_path_factory.mktemp("durations")
  recs = []
  for i, (name, seconds) in enumerate(SECONDS.items()):
    noise = np.random.default_rng(i).uniform(-0.5, 0.5, int(seconds * RATE)).astype(np.float32)
    sf.write(root / f"{name}.wav", noise, RATE, subtype="PCM_16")
    recs.append({"id": name, "audio": f"{name}.wav", "source": "long" if seconds > 2.5 else "plain",
                 "captions": [f"{name} seconds of noise"], "labels": {"kind": "noise"}})
  return write_manifest(root / "m.jsonl", recs)


def _read(out, corpus) -> dict:
  found = {}
  for source in corpus["sources"].values():
    for shard in source["shards"]:
      reader = ArrayRecordReader(str(out / shard))
      for data in reader.read_all():
        example = records.decode_example(data)
        found[example["id"]] = example
      reader.close()
  return found


def test_rule_boundaries_and_pieces():
  rule = durations.DurationRule()   # the study's
  record = mf.Record("r", "r.wav", ["c"], "s", None, None, {}, "m.jsonl", 3)
  assert rule.check(record, 0.999).kind == mf.TOO_SHORT and rule.check(record, 60.001).kind == mf.TOO_LONG
  assert rule.check(record, 1.0) is None and rule.check(record, 60.0) is None
  assert "m.jsonl" in rule.check(record, 0.5).where() and "--min-seconds" in rule.check(record, 0.5).detail
  cap = durations.DurationRule(long_clips="cap")
  assert cap.check(record, 100.0) is None and cap.pieces(100.0, 1_600_000, RATE) == [(0, 960_000)]
  window = durations.DurationRule(long_clips="window")
  for seconds in (60.5, 121.0, 3599.9):   # against an independent count: the fewest windows of at most 60 s
    n = int(round(seconds * RATE))
    pieces = window.pieces(seconds, n, RATE)
    assert len(pieces) == math.ceil(n / (60 * RATE)) and pieces[0][0] == 0 and pieces[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    lengths = [b - a for a, b in pieces]
    assert max(lengths) <= 60 * RATE and max(lengths) - min(lengths) <= 1 and min(lengths) > 30 * RATE
  assert window.pieces(59.0, 59 * RATE, RATE) == [(0, 59 * RATE)]
  with pytest.raises(ValueError, match="long_clips"):
    durations.DurationRule(long_clips="trim")
  with pytest.raises(ValueError, match="2 x min_seconds"):
    durations.DurationRule(min_seconds=1.0, max_seconds=1.5, long_clips="window")
  with pytest.raises(ValueError, match="min_seconds < max_seconds"):
    durations.DurationRule(min_seconds=5.0, max_seconds=2.0)
  assert durations.DurationRule.from_json(durations.DurationRule(0.0, math.inf).to_json()) == \
      durations.DurationRule(0.0, math.inf)


@pytest.mark.parametrize("policy", ["drop", "cap", "window"])
def test_prepare_applies_and_counts_the_policy(clips, tmp_path, policy, capsys):
  rule = durations.DurationRule(min_seconds=1.0, max_seconds=2.5, long_clips=policy)
  out = tmp_path / policy
  corpus = prepare_lib.prepare([clips], out, durations=rule)
  reference = prepare_lib.prepare([clips], tmp_path / "all", quiet=True,
                                  durations=durations.DurationRule(0.0, math.inf))   # keeps every clip whole
  full = {k: v["audio"] for k, v in _read(tmp_path / "all", reference).items()}
  found = _read(out, corpus)
  d = corpus["durations"]
  assert d["rule"] == {"min_seconds": 1.0, "max_seconds": 2.5, "long_clips": policy}
  assert d["too_short"] == corpus["skipped"]["too_short"] == 1 and "short" not in found
  np.testing.assert_array_equal(found["one"]["audio"], full["one"])   # inside the range: untouched
  if policy == "drop":
    assert d["too_long"] == corpus["skipped"]["too_long"] == 2 and sorted(found) == ["one"]
  elif policy == "cap":   # the first 2.5 s, and the seconds cut away counted
    assert d["capped"] == d["sources"]["long"]["capped"] == 2 and d["seconds_cut_by_cap"] == pytest.approx(0.5 + 4.5)
    for name in ("three", "seven"):
      np.testing.assert_array_equal(found[name]["audio"], full[name][:int(2.5 * RATE)])
  else:   # windows: 3 s -> 2 x 1.5 s, 7 s -> 3 x 2.33 s; together they are the clip again
    assert (d["windowed"], d["windows"]) == (2, 5) and corpus["clips"] == 1 + 5
    for name, n in (("three", 2), ("seven", 3)):
      windows = [found[f"{name}#w{k}"] for k in range(n)]
      np.testing.assert_array_equal(np.concatenate([w["audio"] for w in windows]), full[name])
      assert all(w["captions"] == [f"{name} seconds of noise"] and w["window"] == [k, n] for k, w in enumerate(windows))
      offsets = [k * SECONDS[name] / n for k in range(n)]
      assert [w["offset_seconds"] for w in windows] == pytest.approx(offsets, abs=1e-4)
    assert json.loads((out / "labels.json").read_text()) == {"kind": {"noise": 6}}   # a window is a clip
  kept_seconds = sum(len(e["audio"]) for e in found.values()) / RATE
  assert corpus["hours"] == pytest.approx(kept_seconds / 3600)
  bad = [json.loads(line)["kind"] for line in (out / "bad_records.jsonl").read_text().splitlines()]
  assert sorted(bad) == sorted(["too_short"] + ["too_long"] * (2 if policy == "drop" else 0))
  printed = capsys.readouterr().out
  assert f"long clips: {policy}" in printed and "dropped 1 too short" in printed


def test_study_rule_is_the_default_and_part_of_the_reuse_key(clips, tmp_path):
  out = tmp_path / "default"
  corpus = prepare_lib.prepare([clips], out, quiet=True)
  assert corpus["durations"]["rule"] == {"min_seconds": 1.0, "max_seconds": 60.0, "long_clips": "drop"}
  assert corpus["durations"]["too_short"] == 1 and corpus["clips"] == 3
  assert prepare_lib.prepare([clips], out, quiet=True)["reused"]
  with pytest.raises(prepare_lib.PrepareError, match="other settings"):
    prepare_lib.prepare([clips], out, quiet=True, durations=durations.DurationRule(min_seconds=0.2))
  assert prepare_lib.main(["--manifest", str(clips), "--out", str(tmp_path / "cli"), "--workers", "1",
                           "--max-seconds", "2.5", "--long-clips", "cap"]) == 0
  assert json.loads((tmp_path / "cli" / "corpus.json").read_text())["durations"]["capped"] == 2
  with pytest.raises(SystemExit):   # a bad combination is refused before any work
    prepare_lib.main(["--manifest", str(clips), "--out", str(tmp_path / "bad"), "--max-seconds", "1.5",
                      "--long-clips", "window"])


def test_validate_flags_what_prepare_drops(clips, capsys):
  result = validate_lib.validate([clips], quiet=True, durations=durations.DurationRule(max_seconds=2.5))
  assert dict(result["problems"].counts) == {"too_short": 1, "too_long": 2} and result["ok"] == 1
  assert validate_lib.main(["--manifest", str(clips), "--max-seconds", "2.5", "--long-clips", "window"]) == 0
  assert "2 clip(s) last more than 2.5 s: prepare --long-clips window" in capsys.readouterr().out
  assert validate_lib.main(["--manifest", str(clips), "--strict"]) == 1   # the 0.5 s clip, under the study's rule
