"""Leakage check: planted exact and near copies (re-encoded, resampled, gain, shift) of corpus clips are found,
genuinely different clips are not; the shift search equals a brute-force loop; caption overlap by hand."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from alp_jax.audio import io as audio_io
from alp_jax.data import leakage
from alp_jax.data import prepare as prepare_lib

from corpus_fixtures import sine, write_good_clips, write_manifest

RATE = 16000


def babble(seed: int, seconds: float = 2.0, rate: int = 22050) -> np.ndarray:
  """Speech-like, non-stationary: 120-250 ms harmonic segments with random pitch and loudness, and pauses."""
  rng = np.random.default_rng(seed)
  pieces = []
  while sum(len(p) for p in pieces) < seconds * rate:
    n = int(rng.uniform(0.12, 0.25) * rate)
    t = np.arange(n) / rate
    if rng.uniform() < 0.3:
      pieces.append(np.zeros(n))
      continue
    f0 = rng.uniform(100, 300)
    tone = sum(rng.uniform(0.2, 1) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) for h in range(1, 8))
    pieces.append(rng.uniform(0.05, 0.3) * tone * np.hanning(n))
  audio = np.concatenate(pieces)[:int(seconds * rate)]
  return (audio + 0.001 * rng.standard_normal(audio.size)).astype(np.float32)


def _write_csv(path: Path, rows: list[dict]) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  root = tmp_path_factory.mktemp("leak")
  tones = write_good_clips(root, 5, "tones", seed=3)
  babbles = []
  for i in range(5):
    path = root / "babble" / f"babble_{i}.wav"
    path.parent.mkdir(exist_ok=True)
    sf.write(path, babble(i), 22050)
    babbles.append({"id": f"babble-{i}", "audio": str(path.relative_to(root)), "source": "babble",
                    "captions": [f"Someone babbles, take {i}.", "A person speaks quickly in a quiet room"]})
  prepare_lib.prepare([write_manifest(root / "m.jsonl", tones + babbles)], root / "corpus", quiet=True)

  task = root / "task"
  task.mkdir()

  def stored(rec):  # the corpus's own 16 kHz float samples of a clip (what prepare decoded)
    return audio_io.load_audio(root / rec["audio"])

  planted_exact, planted_near, clean = {}, {}, []
  # exact: the very file; the same 16 kHz int16 samples in another container.
  (task / "copy.wav").write_bytes((root / babbles[0]["audio"]).read_bytes())
  planted_exact["copy.wav"] = "babble-0"
  sf.write(task / "same_samples.flac", audio_io.to_int16(stored(tones[1])), RATE, subtype="PCM_16")
  planted_exact["same_samples.flac"] = "tones-1"
  # near: lossy re-encoding, resampling to 44.1 kHz, -6 dB, first 30 ms dropped (pattern and profile paths).
  sf.write(task / "reencoded.ogg", stored(babbles[1]), RATE, format="OGG", subtype="VORBIS")
  planted_near["reencoded.ogg"] = "babble-1"
  sf.write(task / "resampled.wav", soxr.resample(stored(babbles[2]), RATE, 44100), 44100, subtype="FLOAT")
  planted_near["resampled.wav"] = "babble-2"
  sf.write(task / "quieter.wav", stored(babbles[3]) * 10 ** (-6 / 20), RATE, subtype="FLOAT")
  planted_near["quieter.wav"] = "babble-3"
  sf.write(task / "shifted.wav", stored(babbles[4])[int(0.03 * RATE):], RATE, subtype="FLOAT")
  planted_near["shifted.wav"] = "babble-4"
  sf.write(task / "quieter_tone.ogg", stored(tones[2]) * 10 ** (-6 / 20), RATE, format="OGG", subtype="VORBIS")
  planted_near["quieter_tone.ogg"] = "tones-2"
  # clean: other babble, a sweep, noise bursts, a tone far from every corpus tone.
  for seed in (100, 101, 102):
    sf.write(task / f"other_babble_{seed}.wav", babble(seed), 22050)
    clean.append(f"other_babble_{seed}.wav")
  t = np.arange(2 * RATE) / RATE
  sf.write(task / "sweep.wav", 0.3 * np.sin(2 * np.pi * (200 * t + 900 * t**2)), RATE)
  rng = np.random.default_rng(7)
  bursts = rng.standard_normal(2 * RATE) * np.repeat(rng.uniform(size=20) > 0.5, RATE // 10) * 0.2
  sf.write(task / "bursts.wav", bursts, RATE)
  corpus_freqs = [float(r["captions"][0].split()[3]) for r in tones]
  far = max(np.linspace(150, 3000, 200), key=lambda f: min(abs(np.log(f / c)) for c in corpus_freqs))
  sf.write(task / "far_tone.wav", sine(far, 1.0, RATE) + 0.01 * rng.standard_normal(RATE), RATE)
  clean += ["sweep.wav", "bursts.wav", "far_tone.wav"]

  names = sorted(planted_exact) + sorted(planted_near) + clean
  _write_csv(task / "train.csv", [{"path": n, "label": "x", "caption": ""} for n in names[::2]])
  test_rows = [{"path": n, "label": "x", "caption": ""} for n in names[1::2]]
  # Captions: one equals a corpus caption up to case and punctuation; one shares 2 of its 4 4-grams.
  test_rows[0]["caption"] = "someone BABBLES take 3"
  test_rows[1]["caption"] = "a person speaks quickly in the garden"
  _write_csv(task / "test.csv", test_rows)
  return root / "corpus", task, planted_exact, planted_near, clean


def test_planted_copies_found_and_clean_clips_not(planted):
  corpus_dir, task, planted_exact, planted_near, clean = planted
  corpus = leakage.read_corpus_audio(corpus_dir, quiet=True)
  result = leakage.check_task(task, corpus, corpus_dir, quiet=True)
  exact = {x["path"]: x["corpus_id"] for x in result["exact"]}
  near = {x["path"]: x["corpus_id"] for x in result["near"]}
  assert exact == planted_exact
  assert near == planted_near, result["near"]
  assert not set(clean) & (set(exact) | set(near))
  shifted = next(x for x in result["near"] if x["path"] == "shifted.wav")
  assert shifted["corpus_offset_seconds"] == pytest.approx(0.03, abs=0.013)
  assert result["leaked_rows"]["train"] + result["leaked_rows"]["test"] == len(planted_exact) + len(planted_near)


def test_caption_overlap_by_hand(planted):
  corpus_dir, task, *_ = planted
  corpus = leakage.read_corpus_audio(corpus_dir, quiet=True)
  captions = leakage.check_task(task, corpus, corpus_dir, quiet=True)["captions"]
  # "someone babbles take 3" = "Someone babbles, take 3." after tokenisation: exact; its single 4-gram occurs.
  # "a person speaks quickly in the garden": 4-grams (a person speaks quickly), (person speaks quickly in) occur
  # in "A person speaks quickly in a quiet room"; (speaks quickly in the), (quickly in the garden) do not: 2/4.
  assert captions["eval_captions"] == 2
  assert captions["exact_match_fraction"] == pytest.approx(0.5)
  assert captions["mean_4gram_overlap"] == pytest.approx((1.0 + 0.5) / 2)
  assert captions["exact_matches"] == ["someone BABBLES take 3"]


def test_caption_task_folder_is_checked_for_audio_and_captions(planted, tmp_path):
  """The same planted files and captions as a caption task (jsonl splits) give the same findings."""
  corpus_dir, task, planted_exact, planted_near, clean = planted
  caption_task = tmp_path / "captions"
  caption_task.mkdir()
  names = sorted(planted_exact) + sorted(planted_near) + clean
  line = lambda name, captions: json.dumps({"id": name, "audio": f"{task}/{name}", "captions": captions})
  (caption_task / "train.jsonl").write_text("\n".join(line(n, ["a clip"]) for n in names[::2]) + "\n")
  test = [line(n, ["someone BABBLES take 3", "a person speaks quickly in the garden"] if i == 0 else ["a clip"])
          for i, n in enumerate(names[1::2])]
  (caption_task / "test.jsonl").write_text("\n".join(test) + "\n")
  corpus = leakage.read_corpus_audio(corpus_dir, quiet=True)
  result = leakage.check_task(caption_task, corpus, corpus_dir, quiet=True)
  assert {x["corpus_id"] for x in result["exact"]} == set(planted_exact.values())
  assert {x["corpus_id"] for x in result["near"]} == set(planted_near.values())
  captions = result["captions"]
  assert captions["eval_captions"] == len(names) + 1
  assert captions["exact_matches"] == ["someone BABBLES take 3"]


def test_cli_report_and_strict_exit(planted, tmp_path, capsys):
  corpus_dir, task, planted_exact, planted_near, _ = planted
  out = tmp_path / "report.json"
  args = ["--corpus", str(corpus_dir), "--task-dir", str(task), "--out", str(out), "--quiet"]
  assert leakage.main(args) == 0
  assert leakage.main(args + ["--strict"]) == 1
  printed = capsys.readouterr().out
  assert "exact" in printed and "copy.wav" in printed and "near" in printed
  report = json.loads(out.read_text())
  assert report["leaked_rows"] == len(planted_exact) + len(planted_near)
  assert leakage.main(["--corpus", str(task), "--task-dir", str(task), "--quiet"]) == 2  # not a corpus


def _brute_force_match(eval_patterns, eval_mask, corpus_patterns, corpus_mask, max_shift, min_overlap):
  num_eval, frames, _ = eval_patterns.shape
  best = np.full((num_eval, len(corpus_patterns)), -1.0)
  for e in range(num_eval):
    for c in range(len(corpus_patterns)):
      shorter = min(eval_mask[e].sum(), corpus_mask[c].sum())
      for s in range(-max_shift, max_shift + 1):
        frames_both = [t for t in range(frames) if 0 <= t + s < frames and eval_mask[e, t] and corpus_mask[c, t + s]]
        if len(frames_both) < min_overlap * shorter:
          continue
        a = np.concatenate([eval_patterns[e, t] for t in frames_both])
        b = np.concatenate([corpus_patterns[c, t + s] for t in frames_both])
        best[e, c] = max(best[e, c], a @ b / np.sqrt((a @ a) * (b @ b)))
  return best


def test_shift_search_equals_brute_force():
  rng = np.random.default_rng(0)
  frames, bands = 9, 3
  lengths_eval, lengths_corpus = [9, 5, 3], [9, 7, 4, 2]

  def make(lengths):
    mask = (np.arange(frames)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
    patterns = rng.standard_normal((len(lengths), frames, bands)).astype(np.float32) * mask[:, :, None]
    return leakage.Fingerprints(patterns, mask, np.zeros((len(lengths), bands), np.float32),
                                np.full(len(lengths), 10.0, np.float32))

  eval_prints, corpus_prints = make(lengths_eval), make(lengths_corpus)
  corpus_prints.patterns[1, 2:7] = eval_prints.patterns[1, 0:5]  # eval clip 1 starts 2 frames into corpus clip 1
  got, shift = leakage.pattern_match(eval_prints, corpus_prints, max_shift=3, min_overlap=0.5)
  want = _brute_force_match(eval_prints.patterns, eval_prints.mask, corpus_prints.patterns, corpus_prints.mask,
                            3, 0.5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert shift[1, 1] == 2 and got[1, 1] == pytest.approx(1.0)


def test_fingerprint_is_gain_invariant():
  audio = babble(5, rate=RATE)
  pattern, profile, activity = leakage.fingerprint(audio)
  quiet_pattern, quiet_profile, quiet_activity = leakage.fingerprint(audio * 10 ** (-20 / 20))
  np.testing.assert_allclose(quiet_pattern, pattern, atol=1e-3)
  np.testing.assert_allclose(quiet_profile, profile, atol=1e-5)
  assert quiet_activity == pytest.approx(activity, rel=1e-4) and activity > leakage.STATIONARY_DB
  assert leakage.fingerprint(sine(440, 1.0, RATE))[2] < leakage.STATIONARY_DB


def test_demo_task_sentences_are_held_out_and_sound_types_not_steady():
  from alp_jax.demo import synth as demo_synth
  from alp_jax.demo import tasks as demo_tasks
  for speaker in demo_tasks.SPEAKERS:
    held_out = demo_tasks.EVAL_SENTENCES[speaker.language]
    assert held_out and not set(held_out) & set(demo_synth.SENTENCES[speaker.language])
  assert not set(demo_tasks.SOUND_TYPES) & {"noise", "rain", "engine", "hum"}
  speech = [c for c in demo_tasks.plan(12, 1000) if c["labels"]["domain"] == "speech"]
  assert all(c["attrs"]["text"] in demo_tasks.EVAL_SENTENCES[c["attrs"]["language"]] for c in speech)


def test_demo_task_builder_draws_again_clips_that_duplicate_the_corpus(tmp_path):
  """A corpus holding an exact copy and a -6 dB copy of two first-draw task clips: a build without the corpus
  leaks them (the check sees them), a build with it draws those two again, and its tasks come out clean."""
  from alp_jax.demo import synth as demo_synth
  from alp_jax.demo import sysdeps
  from alp_jax.demo import tasks as demo_tasks
  clips = {c["file"]: c for c in demo_tasks.plan(6, 1000)}
  copies = {"audio/speech-0000.wav": ("exact", 0.0), "audio/sound-0001.wav": ("near", -6.0)}
  records = []
  try:
    sysdeps.require_binaries(demo_synth.BINARIES, files=(demo_synth.SOUNDFONT,))
  except sysdeps.MissingSystemPackage as e:
    pytest.skip(str(e))
  for i, (file, (_, gain_db)) in enumerate(copies.items()):
    attrs = clips[file]["attrs"]
    path = tmp_path / "raw" / f"copy_{i}.wav"
    path.parent.mkdir(exist_ok=True)
    demo_synth.render_clip({**attrs, "peak_dbfs": attrs["peak_dbfs"] + gain_db}, path, tmp_path)
    records.append({"id": f"copy-{i}", "audio": str(path.relative_to(tmp_path)), "source": "copies",
                    "captions": [f"a copy of {file}"]})
  corpus_dir = tmp_path / "corpus"
  prepare_lib.prepare([write_manifest(tmp_path / "m.jsonl", records)], corpus_dir, quiet=True)

  unchecked = demo_tasks.build_demo_tasks(tmp_path / "unchecked", clips_per_task=6, quiet=True)
  leaked = leakage.check(corpus_dir, [unchecked["domain"]], quiet=True)
  found = {x["path"][3:]: kind for kind in ("exact", "near") for x in leaked["tasks"][0][kind]}
  assert found == {file: kind for file, (kind, _) in copies.items()}

  checked = demo_tasks.build_demo_tasks(tmp_path / "checked", clips_per_task=6, corpus_dir=corpus_dir, quiet=True)
  report = leakage.check(corpus_dir, list(checked.values()), quiet=True)
  assert report["exact"] == 0 and report["near"] == 0, report
  build = json.loads((tmp_path / "checked" / demo_tasks.BUILD_FILE).read_text())
  first_round = {r["file"]: r["kind"] for r in build["leakage_check"]["replacements"] if r["attempt"] == 0}
  assert first_round == found
  assert set(build["attempts"]) == set(copies)  # only those two were drawn again (a draw may take more than one)
  assert build["leakage_check"]["max_score"] < leakage.NEAR_THRESHOLD
  # The replacements keep their slot's labels, and a rebuild with the same corpus reuses the checked clips.
  for task, task_dir in checked.items():
    assert (task_dir / "test.csv").read_text() == (unchecked[task] / "test.csv").read_text()
  again = demo_tasks.build_demo_tasks(tmp_path / "checked", clips_per_task=6, corpus_dir=corpus_dir, quiet=True)
  assert again == checked
  assert json.loads((tmp_path / "checked" / demo_tasks.BUILD_FILE).read_text()) == build
