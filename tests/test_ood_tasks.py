"""Out-of-distribution probe tasks (alp_jax/demo/ood_tasks.py): format, balance, WAV headers, determinism, and
re-drawing clips that duplicate a corpus clip."""
import csv
import json
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from alp_jax.data import leakage
from alp_jax.data import prepare as prepare_lib
from alp_jax.demo import ood_synth, ood_tasks
from alp_jax.evaluate import tasks as tasks_lib

from corpus_fixtures import write_manifest

CLIPS_PER_CLASS = 4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = tmp_path_factory.mktemp("ood")
  return out, ood_tasks.build_ood_tasks(out, clips_per_class=CLIPS_PER_CLASS, seed=7, workers=2, quiet=True)


def _rows(task_dir, split):
  with open(task_dir / f"{split}.csv", newline="") as f:
    return list(csv.DictReader(f))


def _audio_bytes(out):
  return {p.name: p.read_bytes() for p in sorted((out / "audio").glob("*.wav"))}


def test_folders_are_balanced_disjoint_probe_tasks(built):
  out, task_dirs = built
  assert set(task_dirs) == {"ood_timbre", "ood_pitch", "ood_events"}
  for name, task_dir in task_dirs.items():
    classes = ood_tasks.TASKS[name][0]
    train, test = _rows(task_dir, "train"), _rows(task_dir, "test")
    assert set(train[0]) == {"path", "label"}
    assert Counter(r["label"] for r in train) == {c: CLIPS_PER_CLASS // 2 for c in classes}
    assert Counter(r["label"] for r in test) == {c: CLIPS_PER_CLASS // 2 for c in classes}
    assert not {r["path"] for r in train} & {r["path"] for r in test}
    for row in train + test:
      assert row["path"].startswith("../audio/") and (task_dir / row["path"]).resolve().is_file()
    task = tasks_lib.read_task(task_dir)   # the evaluation's own reader accepts it
    assert sorted(task.classes) == sorted(classes)
  assert len(list((out / "audio").glob("*.wav"))) == 3 * 6 * CLIPS_PER_CLASS


def test_sample_rates_channels_and_lengths(built):
  out, task_dirs = built
  for name, task_dir in task_dirs.items():
    _, rate, channels = ood_tasks.TASKS[name]
    for row in _rows(task_dir, "train") + _rows(task_dir, "test"):
      with wave.open(str(task_dir / row["path"])) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (rate, channels, 2)
        seconds = f.getnframes() / rate
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, channels)
      assert ood_tasks.CLIP_SECONDS[0] - 0.01 <= seconds <= ood_tasks.CLIP_SECONDS[1] + 0.01
      assert np.abs(pcm).max() > 100, row["path"]   # not silent
      if channels == 2:   # slightly different channels, never cancelling in the downmix
        assert not np.array_equal(pcm[:, 0], pcm[:, 1])
        left, downmix = pcm[:, 0].astype(float), pcm.astype(float).mean(axis=1)
        assert np.sqrt(np.mean(downmix ** 2)) > 0.8 * np.sqrt(np.mean(left ** 2))


def test_same_seed_same_bytes_other_seed_other_audio_and_reuse(built, tmp_path):
  out, _ = built
  again = tmp_path / "again"
  ood_tasks.build_ood_tasks(again, clips_per_class=CLIPS_PER_CLASS, seed=7, workers=1, quiet=True)
  first = _audio_bytes(out)
  assert _audio_bytes(again) == first
  for name in ("ood_timbre", "ood_pitch", "ood_events"):
    for split in ("train", "test"):
      assert (again / name / f"{split}.csv").read_bytes() == (out / name / f"{split}.csv").read_bytes()
  other = tmp_path / "other"
  ood_tasks.build_ood_tasks(other, clips_per_class=CLIPS_PER_CLASS, seed=8, workers=1, quiet=True)
  other_bytes = _audio_bytes(other)
  assert other_bytes.keys() == first.keys()
  assert all(other_bytes[k] != first[k] for k in first)
  # Same settings again: reused, not rendered (file times unchanged); the build file records the clips.
  mtimes = {p.name: p.stat().st_mtime_ns for p in (again / "audio").glob("*.wav")}
  ood_tasks.build_ood_tasks(again, clips_per_class=CLIPS_PER_CLASS, seed=7, quiet=True)
  assert {p.name: p.stat().st_mtime_ns for p in (again / "audio").glob("*.wav")} == mtimes
  record = json.loads((again / ood_tasks.BUILD_FILE).read_text())
  assert record["settings"]["seed"] == 7 and len(record["clips"]) == len(first)


def test_default_gives_at_least_100_test_clips_per_task():
  per_task = len(ood_synth.TIMBRES) * round(ood_tasks.DEFAULT_CLIPS_PER_CLASS * ood_tasks.TEST_FRACTION)
  assert per_task >= 100
  clips = ood_tasks.plan(ood_tasks.DEFAULT_CLIPS_PER_CLASS, ood_tasks.DEFAULT_SEED)
  for name in ood_tasks.TASKS:
    test = ood_tasks.split([c for c in clips if c["task"] == name], 0)["test"]
    assert len(test) >= 100


def test_pitch_task_notes_have_their_pitch_class():
  """Each pitch-task note's strongest low partial (harmonic product spectrum) is its class, within 50 cents."""
  clips = [c for c in ood_tasks.plan(2, 3) if c["task"] == "ood_pitch"]
  for clip in clips:
    x, rate = ood_tasks.render(clip)[:, 0], clip["sample_rate"]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), 8 * len(x)))
    freqs = np.fft.rfftfreq(8 * len(x), 1 / rate)
    product = spectrum.copy()
    for h in (2, 3):
      product[:len(spectrum[::h])] *= spectrum[::h]
    band = (freqs > 60) & (freqs < 1500)
    estimate = freqs[band][np.argmax(product[band])]
    cents = 1200 * np.log2(estimate / ood_synth.midi_to_hz(clip["attrs"]["midi"]))
    assert abs((cents + 600) % 1200 - 600) < 50, (clip["attrs"]["timbre"], cents)


def test_too_few_clips_is_refused(tmp_path):
  with pytest.raises(ValueError, match="at least 2"):
    ood_tasks.build_ood_tasks(tmp_path, clips_per_class=1, quiet=True)


def test_clips_that_duplicate_the_corpus_are_drawn_again(built, tmp_path):
  """A corpus holding an exact copy (44.1 kHz stereo plucked note) and a -6 dB copy (8 kHz knocks) of two
  first-draw clips: the build without the corpus leaks them, a build with it draws those two again (same
  slots, files and labels), comes out clean, and is reused by a rebuild with the same corpus."""
  out, unchecked = built
  clips = {c["file"]: c for c in ood_tasks.plan(CLIPS_PER_CLASS, 7)}
  copies = {"audio/ood_timbre-40001.wav": ("exact", 0.0), "audio/ood_events-50002.wav": ("near", -6.0)}
  records = []
  for i, (file, (_, gain_db)) in enumerate(copies.items()):
    path = tmp_path / "raw" / f"copy_{i}.wav"
    path.parent.mkdir(exist_ok=True)
    clip = clips[file]
    ood_tasks.write_wav(path, ood_tasks.render(clip) * 10 ** (gain_db / 20), clip["sample_rate"])
    records.append({"id": f"copy-{i}", "audio": str(path.relative_to(tmp_path)), "source": "copies",
                    "captions": [f"a copy of {file}"]})
  corpus_dir = tmp_path / "corpus"
  prepare_lib.prepare([write_manifest(tmp_path / "m.jsonl", records)], corpus_dir, quiet=True)
  corpus = leakage.read_corpus_audio(corpus_dir, quiet=True)

  leaked = leakage.check(corpus_dir, list(unchecked.values()), corpus=corpus, quiet=True)
  found = {x["path"][3:]: kind for t in leaked["tasks"] for kind in ("exact", "near") for x in t[kind]}
  assert found == {file: kind for file, (kind, _) in copies.items()}

  checked_out = tmp_path / "checked"
  checked = ood_tasks.build_ood_tasks(checked_out, clips_per_class=CLIPS_PER_CLASS, seed=7, corpus_dir=corpus_dir,
                                      corpus=corpus, workers=2, quiet=True)
  report = leakage.check(corpus_dir, list(checked.values()), corpus=corpus, quiet=True)
  assert report["exact"] == 0 and report["near"] == 0, report
  build = json.loads((checked_out / ood_tasks.BUILD_FILE).read_text())
  check = build["leakage_check"]
  assert {r["file"]: r["kind"] for r in check["replacements"] if r["attempt"] == 0} == found
  assert set(build["attempts"]) == set(copies)   # only those two were drawn again
  assert check["rounds"] >= 2 and check["replaced"] >= 2 and check["max_score"] < leakage.NEAR_THRESHOLD
  assert check["replaced_by_task"] == {"ood_timbre": 1, "ood_events": 1}
  assert build["settings"]["corpus"] == prepare_lib.load_corpus(corpus_dir)["fingerprint"]
  # Same slots: same files, labels and splits; only the two re-drawn clips have other audio.
  for name, task_dir in checked.items():
    for split in ("train", "test"):
      assert (task_dir / f"{split}.csv").read_bytes() == (unchecked[name] / f"{split}.csv").read_bytes()
  before, after = _audio_bytes(out), _audio_bytes(checked_out)
  assert {k for k in before if before[k] != after[k]} == {Path(f).name for f in copies}
  # The same corpus again (CLI): reused, not rendered or checked again.
  mtimes = {p.name: p.stat().st_mtime_ns for p in (checked_out / "audio").glob("*.wav")}
  assert ood_tasks.main(["--out", str(checked_out), "--corpus", str(corpus_dir), "--clips-per-class",
                         str(CLIPS_PER_CLASS), "--seed", "7", "--quiet"]) == 0
  assert {p.name: p.stat().st_mtime_ns for p in (checked_out / "audio").glob("*.wav")} == mtimes
  assert json.loads((checked_out / ood_tasks.BUILD_FILE).read_text()) == build
