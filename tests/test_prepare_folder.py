"""prepare's output-folder rules: colliding source names, foreign files, stale tokenizers, flaky filesystems,
changed record format or audio, the header duration cap, and the compact digest table."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
from array_record.python.array_record_module import ArrayRecordReader

from alp_jax.audio import io as audio_io
from alp_jax.data import digests
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import prepare_folder
from alp_jax.data import records

from corpus_fixtures import write_good_clips, write_manifest


def _ids_by_source(out, corpus):
  ids = {}
  for name, source in corpus["sources"].items():
    for shard in source["shards"]:
      reader = ArrayRecordReader(str(out / shard))
      ids.setdefault(name, []).extend(records.decode_header(b)["id"] for b in reader.read_all())
      reader.close()
  return ids


def _corpus(tmp_path, n=3, source="s"):
  recs = write_good_clips(tmp_path, n, source)
  return recs, write_manifest(tmp_path / f"{source}.jsonl", recs)


def test_colliding_source_names_get_separate_folders(tmp_path):
  recs = write_good_clips(tmp_path, 4, "clips")
  for r, source in zip(recs, ["a/b", "a_b", "a/b", "a_b"]):
    r["source"] = source
  out = tmp_path / "out"
  corpus = prepare_lib.prepare([write_manifest(tmp_path / "m.jsonl", recs)], out, quiet=True)
  assert _ids_by_source(out, corpus) == {"a/b": ["clips-0", "clips-2"], "a_b": ["clips-1", "clips-3"]}
  assert corpus["sources"]["a_b"]["index"] == "index/a_b.npz"
  assert corpus["sources"]["a/b"]["index"].startswith("index/a_b-")
  for source in corpus["sources"].values():
    assert len(np.load(out / source["index"])["subset_key"]) == 2


def test_source_names_differing_in_case_are_refused_naming_both():
  folders = prepare_folder.SourceFolders()
  assert folders("Clotho") == "Clotho" and folders("Clotho") == "Clotho"
  with pytest.raises(prepare_folder.PrepareError, match="'Clotho' and 'clotho'"):
    folders("clotho")
  assert folders("..").startswith("source-") and folders("../x").startswith("_x-")


def test_foreign_files_are_refused_and_kept(tmp_path):
  _, manifest = _corpus(tmp_path)
  out = tmp_path / "out"
  out.mkdir()
  (out / "captions.txt").write_text("my own captions\n")
  (out / "notes.md").write_text("unrelated")
  for overwrite in (False, True):
    with pytest.raises(prepare_lib.PrepareError, match="not created by prepare.*move them or choose another"):
      prepare_lib.prepare([manifest], out, quiet=True, overwrite=overwrite)
  assert sorted(os.listdir(out)) == ["captions.txt", "notes.md"]
  assert (out / "captions.txt").read_text() == "my own captions\n"
  # Unrelated files alone are fine, and stay.
  (out / "captions.txt").unlink()
  assert prepare_lib.prepare([manifest], out, quiet=True)["clips"] == 3
  assert (out / "notes.md").read_text() == "unrelated" and (out / prepare_folder.OWNER_FILE).is_file()


def test_overwrite_removes_the_old_tokenizer(tmp_path):
  recs, manifest = _corpus(tmp_path)
  out = tmp_path / "out"
  prepare_lib.prepare([manifest], out, quiet=True)
  for name in prepare_folder.TOKENIZER_FILES:
    (out / name).write_text("trained on the old captions")
  assert prepare_lib.prepare([manifest], out, quiet=True)["reused"]  # same corpus: its tokenizer stays
  assert all((out / name).exists() for name in prepare_folder.TOKENIZER_FILES)
  other = write_manifest(tmp_path / "other.jsonl", recs[:2])
  corpus = prepare_lib.prepare([other], out, quiet=True, overwrite=True)
  assert corpus["clips"] == 2 and not corpus["reused"]
  assert not any((out / name).exists() for name in prepare_folder.TOKENIZER_FILES)
  assert len((out / "captions.txt").read_text().splitlines()) == 4


def test_io_failures_above_threshold_stop_and_publish_nothing(tmp_path):
  recs, _ = _corpus(tmp_path, n=8)
  moved = [tmp_path / recs[i]["audio"] for i in (2, 5)]
  for path in moved:  # an unmounted directory: two of eight files missing for now
    os.rename(path, str(path) + ".away")
  manifest = write_manifest(tmp_path / "m.jsonl", recs)
  out = tmp_path / "out"
  with pytest.raises(prepare_lib.PrepareError, match=r"audio file\(s\) missing.*--max-bad-fraction 0.1"):
    prepare_lib.prepare([manifest], out, quiet=True, workers=2, max_bad_fraction=0.1)
  assert not (out / "corpus.json").exists() and not (out / "shards").exists()
  assert prepare_lib.main(["--manifest", str(manifest), "--out", str(out), "--workers", "1",
                           "--max-bad-fraction", "0.1"]) == 2
  # Below the threshold the same run skips and counts them.
  kept = prepare_lib.prepare([manifest], tmp_path / "lenient", quiet=True, max_bad_fraction=0.3)
  assert kept["clips"] == 6 and kept["skipped"] == {"missing_file": 2} and kept["io_failures"] == 2
  # The files come back: a rerun cleans the aborted run's leftovers and loses nothing.
  for path in moved:
    os.rename(str(path) + ".away", path)
  corpus = prepare_lib.prepare([manifest], out, quiet=True, max_bad_fraction=0.1)
  assert corpus["clips"] == 8 and not corpus["skipped"] and not (out / ".partial").exists()


def test_changed_record_format_or_audio_is_refused_then_rebuilt(tmp_path, monkeypatch):
  recs, manifest = _corpus(tmp_path)
  out = tmp_path / "out"
  first = prepare_lib.prepare([manifest], out, quiet=True)
  shards_before = sorted(p.name for p in (out / "shards").rglob("*.array_record"))

  monkeypatch.setattr(prepare_folder, "FORMAT_VERSION", prepare_folder.FORMAT_VERSION + 1)
  with pytest.raises(prepare_lib.PrepareError, match="record format .* --overwrite"):
    prepare_lib.prepare([manifest], out, quiet=True)
  assert json.loads((out / "corpus.json").read_text())["fingerprint"] == first["fingerprint"]
  assert sorted(p.name for p in (out / "shards").rglob("*.array_record")) == shards_before
  rebuilt = prepare_lib.prepare([manifest], out, quiet=True, overwrite=True)
  assert rebuilt["format_version"] == prepare_folder.FORMAT_VERSION and rebuilt["clips"] == 3
  assert prepare_lib.prepare([manifest], out, quiet=True)["reused"]

  # Re-encoded audio (same manifest bytes): refused, then rebuilt with the new samples.
  path = tmp_path / recs[0]["audio"]
  samples, rate = sf.read(path)
  sf.write(path, np.concatenate([samples, samples]), rate)   # longer: a shorter one would be under 1 s
  with pytest.raises(prepare_lib.PrepareError, match="audio files changed"):
    prepare_lib.prepare([manifest], out, quiet=True)
  again = prepare_lib.prepare([manifest], out, quiet=True, overwrite=True)
  assert again["clips"] == 3 and again["hours"] > rebuilt["hours"]


def test_header_duration_over_the_cap_is_skipped_without_decoding(tmp_path, monkeypatch):
  sf.write(tmp_path / "long.wav", np.full(11000, 0.1, np.float32), 1)  # 11000 s at 1 Hz: a 3-hour-plus header
  recs = write_good_clips(tmp_path, 2, "s")
  recs.append({**recs[0], "id": "long", "audio": "long.wav"})
  decoded = []
  real_decode = audio_io.decode
  monkeypatch.setattr(audio_io, "decode", lambda p: decoded.append(os.path.basename(p)) or real_decode(p))
  corpus = prepare_lib.prepare([write_manifest(tmp_path / "m.jsonl", recs)], tmp_path / "out", quiet=True)
  assert corpus["clips"] == 2 and corpus["skipped"] == {"absurd_duration": 1}
  assert "long.wav" not in decoded and len(decoded) == 2
  bad = json.loads((tmp_path / "out" / "bad_records.jsonl").read_text())
  assert bad["id"] == "long" and "header says 11000 s" in bad["detail"]


def test_digest_table_matches_a_dict():
  rng = np.random.default_rng(0)
  keys = [int(k) for k in rng.integers(0, 2**63, 5000, dtype=np.int64)] + [0, 1]
  table, reference = digests.DigestTable(capacity=4), {}
  for value, key in enumerate(keys + keys[:100]):
    expected = reference.setdefault(key or 1, value)
    assert table.setdefault(key, value) == (None if expected == value else expected)
  assert len(table) == len(reference) and table.nbytes < 64 * len(reference)
  assert digests.digest64("a") != digests.digest64("b") and digests.digest64("a") == digests.digest64(b"a")
