"""validate finds every planted bad-input kind; prepare skips and counts them, keeping every good record."""
import json

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from alp_jax.data import prepare as prepare_lib
from alp_jax.data import records
from alp_jax.data import validate as validate_lib

from corpus_fixtures import planted_bad_corpus, write_good_clips, write_manifest


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  return planted_bad_corpus(tmp_path_factory.mktemp("planted"))


def _read_ids(corpus_dir, corpus):
  ids = []
  for source in corpus["sources"].values():
    for shard in source["shards"]:
      reader = ArrayRecordReader(str(corpus_dir / shard))
      ids += [records.decode_header(b)["id"] for b in reader.read_all()]
      reader.close()
  return ids


def test_validate_reports_every_bad_kind(planted, capsys):
  manifests, expected, good_ids = planted
  result = validate_lib.validate(manifests, workers=1, quiet=True)
  assert dict(result["problems"].counts) == expected
  assert result["ok"] == len(good_ids) + 2  # the two duplicate-audio records are fine for validate
  flagged_ids = {p.id for p in result["problems"].all if p.kind != "duplicate_id"}  # a repeat of a good id
  assert not flagged_ids & good_ids
  # CLI: exit 0 without --strict, 1 with it, and a per-kind report.
  args = sum([["--manifest", str(m)] for m in manifests], [])
  assert validate_lib.main(args) == 0
  out = capsys.readouterr().out
  for kind in expected:
    assert kind in out
  assert validate_lib.main(args + ["--strict"]) == 1


def test_validate_strict_passes_clean_manifest(tmp_path):
  recs = write_good_clips(tmp_path, 3, "clean")
  manifest = write_manifest(tmp_path / "clean.jsonl", recs)
  assert validate_lib.main(["--manifest", str(manifest), "--strict"]) == 0


def test_prepare_skips_and_counts_keeping_good(planted, tmp_path):
  manifests, expected, good_ids = planted
  out = tmp_path / "prepared"
  # The planted corpus is tiny and plants a missing and an unreadable file on purpose (2 of 19 records that
  # name a file): above the default --max-bad-fraction, so allow them here (tests/test_prepare_folder.py
  # tests the threshold).
  corpus = prepare_lib.prepare(manifests, out, workers=2, quiet=True, max_bad_fraction=0.2)
  assert set(_read_ids(out, corpus)) == good_ids
  assert corpus["clips"] == len(good_ids)
  skipped = dict(corpus["skipped"])
  assert skipped.pop("duplicate_audio") == 1   # the within-source repeat; the cross-source one is merged
  assert skipped == expected
  # dup-across (src_b) has src_a-3's audio and captions: merged into that clip, adding no caption.
  assert corpus["duplicates"] == {"within_source": 1, "across_sources": 1, "captions_added": 0,
                                  "merged": {"src_a": {"src_b": {"clips": 1, "captions_added": 0,
                                                                 "captions_already_present": 2}}}}
  bad = [json.loads(line) for line in (out / "bad_records.jsonl").read_text().splitlines()]
  assert len(bad) == sum(expected.values()) + 1
  assert all(b["manifest"] and b["line"] > 0 and b["detail"] for b in bad)
  # Per-source statistics.
  assert corpus["sources"]["src_a"]["clips"] == 6 and corpus["sources"]["src_b"]["clips"] == 4
  assert corpus["sources"]["src_a"]["captions"] == 12
  np.testing.assert_allclose(corpus["sources"]["src_b"]["hours"], 4 * 1.0 / 3600, rtol=1e-3)
  captions = (out / "captions.txt").read_text().splitlines()
  assert len(captions) == 2 * len(good_ids)


def test_prepare_reuses_refuses_and_recovers(tmp_path):
  recs = write_good_clips(tmp_path, 3, "s")
  manifest = write_manifest(tmp_path / "m.jsonl", recs)
  out = tmp_path / "out"
  first = prepare_lib.prepare([manifest], out, quiet=True)
  assert not first["reused"]
  assert prepare_lib.prepare([manifest], out, quiet=True)["reused"]
  other = write_manifest(tmp_path / "other.jsonl", recs[:2])
  with pytest.raises(prepare_lib.PrepareError, match="--overwrite"):
    prepare_lib.prepare([other], out, quiet=True)
  assert prepare_lib.prepare([other], out, quiet=True, overwrite=True)["clips"] == 2
  # A crash mid-write leaves no corpus.json: the next run cleans up and writes a complete dataset.
  (out / "corpus.json").unlink()
  (out / ".partial").mkdir()
  (out / ".partial" / "junk").write_text("half-written")
  again = prepare_lib.prepare([manifest], out, quiet=True)
  assert not again["reused"] and again["clips"] == 3 and not (out / ".partial").exists()
  with pytest.raises(FileNotFoundError, match="not a prepared corpus"):
    prepare_lib.load_corpus(tmp_path)
