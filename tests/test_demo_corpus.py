"""The demo corpus: deterministic, decodable, labelled truthfully (pitch, tone, sweep checked on the audio)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import missing_demo_packages

from alp_jax.demo import corpus as demo_corpus
from alp_jax.demo import synth as demo_synth
from alp_jax.demo import sysdeps

NUM_CLIPS, CLIP_SECONDS = 24, 1.5
PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]

MISSING = missing_demo_packages()   # espeak-ng, sox, fluidsynth, the soundfont: `make test` never installs them
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
  """Raw builds (no prepare): seed 0 twice (with 2 workers and with 1), seed 1 once."""
  out = {}
  for name, seed, workers in (("a", 0, 2), ("b", 0, 1), ("other", 1, 2)):
    folder = tmp_path_factory.mktemp(f"demo_{name}")
    out[name] = demo_corpus.build(folder, num_clips=NUM_CLIPS, seed=seed, clip_seconds=CLIP_SECONDS,
                                  workers=workers, quiet=True, run_prepare=False)
  return out


def _records(result):
  records = []
  for manifest in result["manifests"]:
    for line in Path(manifest).read_text(encoding="utf-8").splitlines():
      record = json.loads(line)
      record["path"] = Path(manifest).parent / record["audio"]
      records.append(record)
  return records


def _note_hz(name: str) -> float:
  """'A4' -> 440.0, computed here from the note name (independent of demo_synth)."""
  pitch_class, octave = name[:-1], int(name[-1])
  midi = 12 * (octave + 1) + PITCH_CLASSES.index(pitch_class)
  return 440.0 * 2.0 ** ((midi - 69) / 12)


def _peak_hz(samples: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
  spectrum[np.fft.rfftfreq(len(samples), 1 / rate) < 20] = 0  # ignore DC
  return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def _is_note_or_harmonic(peak_hz: float, f0: float) -> bool:
  """The peak is the fundamental, an octave of it (organs sound 16' stops), or one of its first harmonics."""
  ratio = peak_hz / f0
  octave = np.log2(ratio)
  return (abs(octave - round(octave)) < 0.04 and -1 <= round(octave) <= 2) or (
      1 <= round(ratio) <= 5 and abs(ratio - round(ratio)) < 0.03 * round(ratio))


def test_same_seed_gives_identical_manifests_and_audio(builds):
  for manifest_a, manifest_b in zip(builds["a"]["manifests"], builds["b"]["manifests"]):
    assert Path(manifest_a).read_bytes() == Path(manifest_b).read_bytes()
  for ra, rb in zip(_records(builds["a"]), _records(builds["b"])):
    assert hashlib.sha1(ra["path"].read_bytes()).digest() == hashlib.sha1(rb["path"].read_bytes()).digest(), ra["id"]


def test_other_seed_gives_other_corpus(builds):
  a = [Path(m).read_text() for m in builds["a"]["manifests"]]
  other = [Path(m).read_text() for m in builds["other"]["manifests"]]
  assert all(x != y for x, y in zip(a, other))


def test_every_record_decodes_at_its_declared_length(builds):
  records = _records(builds["a"])
  assert len(records) == NUM_CLIPS and not builds["a"]["failed"]
  assert len({r["id"] for r in records}) == NUM_CLIPS
  rates, channels = set(), set()
  for r in records:
    samples, rate = sf.read(r["path"], always_2d=True)
    assert abs(samples.shape[0] / rate - r["duration"]) < 1e-3, r["id"]
    assert np.abs(samples).max() > 0.01, r["id"]
    rates.add(rate)
    channels.add(samples.shape[1])
    assert r["split"] == "train"
  assert len(rates) >= 3 and channels == {1, 2}  # mixed rates and layouts on purpose
  hours = sum(r["duration"] for r in records) / 3600
  assert builds["a"]["hours"] == pytest.approx(hours)


def test_domains_captions_and_labels(builds):
  records = _records(builds["a"])
  assert {r["source"] for r in records} == {"demo_speech", "demo_music", "demo_sound", "demo_mix"}
  assert {r["labels"]["domain"] for r in records} == {"speech", "music", "sound"}
  required = {"speech": {"speaker", "voice_gender", "language"}, "music": {"instrument_family", "instrument"},
              "sound": {"sound_type"}}
  for r in records:
    assert 3 <= len(set(r["captions"])) == len(r["captions"]) <= 5, r["id"]
    assert required[r["labels"]["domain"]] <= set(r["labels"]), r["id"]
    if r["source"] == "demo_mix":
      assert "sound_type" in r["labels"]
    if r["labels"]["domain"] == "music" and r["labels"]["instrument_family"] != "drums":
      assert "pitch_class" in r["labels"]
      assert any(r["labels"]["instrument"] in c for c in r["captions"]), r["captions"]
  all_captions = [c for r in records for c in r["captions"]]
  assert len(set(all_captions)) >= 0.9 * len(all_captions)  # varied wording (short tags like 'siren' may repeat)


def test_speech_is_not_silent(builds):
  speech = [r for r in _records(builds["a"]) if r["source"] == "demo_speech"]
  assert speech
  for r in speech:
    samples, _ = sf.read(r["path"])
    assert np.sqrt(np.mean(samples ** 2)) > 0.01, r["id"]


def test_note_labels_match_the_audio_pitch(builds):
  noted = [r for r in _records(builds["a"]) + _records(builds["other"]) if "note" in r["labels"]]
  assert len(noted) >= 2
  for r in noted:
    samples, rate = sf.read(r["path"], always_2d=True)
    mono = samples.mean(axis=1)[int(0.05 * rate):int(0.6 * len(samples))]
    peak = _peak_hz(mono, rate)
    f0 = _note_hz(r["labels"]["note"])
    assert _is_note_or_harmonic(peak, f0), (r["id"], r["labels"], peak)
    assert r["labels"]["pitch_class"] == r["labels"]["note"][:-1]
    # The same check rejects a label one semitone off: it can fail.
    assert not _is_note_or_harmonic(peak, f0 * 2 ** (1 / 12)), (r["id"], peak)


@pytest.mark.parametrize("program,midi", [(42, 45), (73, 72), (33, 40)])  # cello A2, flute C5, bass E2
def test_rendered_instrument_note_has_its_pitch(tmp_path, program, midi):
  attrs = {"domain": "music", "pattern": "note", "seconds": 1.2, "tempo_bpm": 100, "velocity": 100,
           "peak_dbfs": -3.0, "instrument": "x", "family": "x", "program": program, "root": midi}
  demo_synth.render_clip(attrs, tmp_path / "note.wav", tmp_path)
  samples, rate = sf.read(tmp_path / "note.wav", always_2d=True)
  assert rate == 44100 and samples.shape == (round(1.2 * rate), 2)
  peak = _peak_hz(samples.mean(axis=1)[int(0.1 * rate):int(0.8 * rate)], rate)
  assert _is_note_or_harmonic(peak, 440.0 * 2 ** ((midi - 69) / 12)), peak


def test_sox_tone_and_sweep_match_their_attributes(tmp_path):
  base = {"domain": "sound", "seconds": 1.0, "sample_rate": 16000, "channels": 1, "peak_dbfs": -6.0,
          "background": None}
  demo_synth.render_clip({**base, "sound_type": "tone", "wave": "sine", "hz": 1000.0}, tmp_path / "t.wav", tmp_path)
  tone, rate = sf.read(tmp_path / "t.wav")
  assert abs(_peak_hz(tone, rate) - 1000.0) < 3.0
  assert np.abs(tone).max() == pytest.approx(10 ** (-6 / 20), rel=1e-3)
  demo_synth.render_clip({**base, "sound_type": "sweep", "direction": "falling", "lo_hz": 300.0, "hi_hz": 3000.0,
                          "law": "linear"}, tmp_path / "s.wav", tmp_path)
  sweep, rate = sf.read(tmp_path / "s.wav")
  frames = [_peak_hz(sweep[i:i + 1600], rate) for i in range(0, len(sweep) - 1600, 1600)]
  assert frames[0] > 2500 and frames[-1] < 800 and all(a > b for a, b in zip(frames, frames[1:]))


def test_failed_clip_is_reported_and_skipped(tmp_path, monkeypatch, capsys):
  def broken(attrs, work_dir):
    raise demo_synth.SynthesisError(["sox", "synth"], "boom: no such effect")
  monkeypatch.setitem(demo_synth.RENDERERS, "sound", broken)
  result = demo_corpus.build(tmp_path, num_clips=8, seed=3, clip_seconds=1.0, workers=1, quiet=True,
                             run_prepare=False)
  sound_ids = [f"demo_sound-{i:05d}" for i in range(demo_corpus.source_counts(8)["demo_sound"])]
  assert sound_ids and [f["id"] for f in result["failed"]] == sound_ids
  assert result["sources"]["demo_sound"]["clips"] == 0 and result["clips"] == 8 - len(sound_ids)
  err = capsys.readouterr().err
  assert all(i in err for i in sound_ids) and "boom: no such effect" in err


def test_missing_tools_exit_2_with_the_apt_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PATH", str(tmp_path))
  assert demo_corpus.main(["--out", str(tmp_path / "out"), "--clips", "4"]) == 2
  err = capsys.readouterr().err
  assert "apt-get install -y" in err and "espeak-ng" in err and "fluidsynth" in err and "Traceback" not in err
  with pytest.raises(sysdeps.MissingSystemPackage) as info:
    sysdeps.require_binaries(["sox"])
  assert info.value.packages == ["sox"]


def test_source_counts():
  for n in (4, 7, 24, 1000):
    counts = demo_corpus.source_counts(n)
    assert sum(counts.values()) == n and min(counts.values()) >= 1
    for name, _, share in demo_corpus.SOURCES:
      assert abs(counts[name] - share * n) <= 1
  assert len(set(demo_corpus.source_counts(1000).values())) > 1  # unequal sizes


def test_prepared_demo_corpus(tiny_corpus_dir):
  corpus = json.loads((tiny_corpus_dir / "corpus.json").read_text())
  assert set(corpus["sources"]) == {"demo_speech", "demo_music", "demo_sound", "demo_mix"}
  assert corpus["clips"] == 48 and not corpus["skipped"]
  again = demo_corpus.build(tiny_corpus_dir, num_clips=48, seed=0, clip_seconds=2.0, workers=2, quiet=True)
  assert again["reused_raw"] and again["corpus"]["reused"] and again["clips"] == 48
