"""Builders of small manifests with planted problems, shared by the data tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5, channels: int = 1) -> np.ndarray:
  t = np.arange(int(round(seconds * rate))) / rate
  x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
  return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_good_clips(root: Path, n: int, source: str, seed: int = 0, seconds: float = 1.0) -> list[dict]:
  """n distinct decodable clips (varied rates/channels/formats) with 2 captions each."""
  rng = np.random.default_rng(seed)
  rates = [8000, 16000, 22050, 44100, 48000]
  fmts = ["wav", "flac", "ogg"]
  recs = []
  for i in range(n):
    rate = rates[i % len(rates)]
    fmt = fmts[i % len(fmts)]
    freq = float(rng.uniform(150, 3000))
    audio = sine(freq, seconds, rate, channels=1 + (i % 2)) + 0.01 * rng.standard_normal(
        (int(round(seconds * rate)),) + ((2,) if i % 2 else ())).astype(np.float32)
    path = root / source / f"{source}_{i}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate)
    recs.append({"id": f"{source}-{i}", "audio": str(path.relative_to(root)), "source": source,
                 "captions": [f"a tone at {freq:.0f} hertz", f"tone number {i} from {source}"],
                 "duration": seconds, "labels": {"kind": "tone"}})
  return recs


def write_manifest(path: Path, lines: list) -> Path:
  with open(path, "w") as f:
    for line in lines:
      f.write(line if isinstance(line, str) else json.dumps(line))
      f.write("\n")
  return path


def planted_bad_corpus(root: Path) -> tuple[list[Path], dict[str, int], set[str]]:
  """Two manifests with good clips and every bad-input kind. Returns (manifests, expected kind counts, good ids)."""
  root.mkdir(parents=True, exist_ok=True)
  good_a = write_good_clips(root, 6, "src_a", seed=1)
  good_b = write_good_clips(root, 4, "src_b", seed=2)
  bad_dir = root / "bad"
  bad_dir.mkdir()
  rate = 16000
  sf.write(bad_dir / "silent.wav", np.zeros(rate, np.float32), rate)
  sf.write(bad_dir / "empty.wav", np.zeros((0,), np.float32), rate)
  nan = sine(440, 1.0, rate)
  nan[100:110] = np.nan
  sf.write(bad_dir / "nan.wav", nan, rate, subtype="FLOAT")
  (bad_dir / "text.wav").write_text("this is not audio")
  (bad_dir / "a_directory.wav").mkdir()
  sf.write(bad_dir / "long_declared.wav", sine(300, 1.0, rate), rate)

  def rec(i, audio, **kw):
    base = {"id": f"bad-{i}", "audio": audio, "source": "src_a", "captions": ["a caption"]}
    base.update(kw)
    return base

  bad_a = [
      '{"id": "broken", "audio": ',                                       # malformed_json
      '["a list, not an object"]',                                        # malformed_json
      rec(1, "bad/silent.wav", source=""),                                # missing_field
      {"id": "bad-2", "captions": ["x"], "source": "src_a"},              # missing_field (audio)
      rec(3, good_a[0]["audio"], captions=[]),                            # bad_captions
      rec(4, good_a[0]["audio"], captions=["ok", 7]),                     # bad_captions
      rec(5, good_a[0]["audio"], captions=["   "]),                       # bad_captions
      rec(6, good_a[0]["audio"], labels=["not", "a", "dict"]),            # bad_labels
      {**good_a[1], "captions": ["same id again"]},                       # duplicate_id
      rec(7, "bad/does_not_exist.wav"),                                   # missing_file
      rec(8, "bad/a_directory.wav"),                                      # unreadable_file
      rec(9, "bad/text.wav"),                                             # undecodable_audio
      rec(10, "bad/empty.wav"),                                           # zero_length
      rec(11, "bad/nan.wav"),                                             # non_finite_samples
      rec(12, "bad/silent.wav"),                                          # silent
      rec(13, "bad/long_declared.wav", duration=1000.0),                  # absurd_duration (mismatch)
      rec(14, "bad/long_declared.wav", duration=-3),                      # absurd_duration (declared)
  ]
  # Exact duplicate audio: same file under new ids, within src_a and across (in src_b).
  dup_within = {**good_a[2], "id": "dup-within"}
  dup_across = {**good_a[3], "id": "dup-across", "source": "src_b"}
  manifest_a = write_manifest(root / "a.jsonl", good_a[:3] + bad_a + good_a[3:] + [dup_within])
  manifest_b = write_manifest(root / "b.jsonl", good_b + [dup_across])
  expected = {"malformed_json": 2, "missing_field": 2, "bad_captions": 3, "bad_labels": 1, "duplicate_id": 1,
              "missing_file": 1, "unreadable_file": 1, "undecodable_audio": 1, "zero_length": 1,
              "non_finite_samples": 1, "silent": 1, "absurd_duration": 2}
  good_ids = {r["id"] for r in good_a + good_b}
  return [manifest_a, manifest_b], expected, good_ids


def caption_of_words(n: int) -> str:
  """A caption of exactly n words as alp_jax.data.text.tokenize counts them."""
  return " ".join(f"word{i}" for i in range(n))


def long_caption_corpus(root: Path, word_counts: dict[str, list[list[int]]]) -> Path:
  """One manifest; per source, one short clip per entry, whose captions have the given word counts."""
  root.mkdir(parents=True, exist_ok=True)
  recs = []
  for seed, (source, clips) in enumerate(sorted(word_counts.items())):
    for rec, counts in zip(write_good_clips(root, len(clips), source, seed=seed, seconds=0.2), clips):
      recs.append({**rec, "captions": [caption_of_words(n) for n in counts]})
  return write_manifest(root / "long_captions.jsonl", recs)
