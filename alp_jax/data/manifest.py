"""Manifests: the JSONL format for real corpora, and the checks every record must pass.

One clip a line:
  {"id": str, "audio": path (relative to the manifest, or absolute), "captions": [str, ...],
   "source": str, "duration": float seconds (optional), "split": str (optional),
   "labels": {task: label | [labels]} (optional)}

`check_schema` looks at a parsed line; `check_audio` at decoded samples. validate and prepare share both,
so a record that validate flags is exactly a record that prepare skips.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from alp_jax.data import digests

# Problem kinds, in the order reports list them.
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
BAD_CAPTIONS = "bad_captions"
BAD_LABELS = "bad_labels"
DUPLICATE_ID = "duplicate_id"
MISSING_FILE = "missing_file"
UNREADABLE_FILE = "unreadable_file"
UNDECODABLE_AUDIO = "undecodable_audio"
ZERO_LENGTH = "zero_length"
NON_FINITE = "non_finite_samples"
SILENT = "silent"
ABSURD_DURATION = "absurd_duration"
TOO_SHORT = "too_short"    # under the duration rule's minimum (data/durations.py; study: 1 s)
TOO_LONG = "too_long"      # over its maximum under long_clips "drop" (study: 60 s)
DUPLICATE_AUDIO = "duplicate_audio"  # found by prepare (hash of decoded samples), not a validate error
PROBLEM_KINDS = (MALFORMED_JSON, MISSING_FIELD, BAD_CAPTIONS, BAD_LABELS, DUPLICATE_ID, MISSING_FILE,
                 UNREADABLE_FILE, UNDECODABLE_AUDIO, ZERO_LENGTH, NON_FINITE, SILENT, ABSURD_DURATION, TOO_SHORT,
                 TOO_LONG)

MIN_SECONDS = 0.1           # shorter clips carry no usable content at 25 frames/s
MAX_SECONDS = 3 * 3600.0    # longer is almost surely a broken header or a concatenated stream
SILENCE_PEAK = 1.0 / 32768  # below one int16 step everywhere: digital silence
DURATION_TOLERANCE = 0.1    # declared vs decoded: relative ...
DURATION_SLACK_SECONDS = 1.0  # ... plus absolute


@dataclasses.dataclass
class Record:
  id: str
  audio_path: str  # resolved
  captions: list[str]
  source: str
  duration: float | None
  split: str | None
  labels: dict
  manifest: str
  line: int


@dataclasses.dataclass
class Problem:
  kind: str
  detail: str
  manifest: str
  line: int
  id: str | None = None

  def where(self) -> str:
    rid = f" id={self.id}" if self.id is not None else ""
    return f"{self.manifest}:{self.line}{rid}"

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _check_labels(labels) -> str | None:
  if not isinstance(labels, dict):
    return f"'labels' must be an object of task -> label, got {type(labels).__name__}"
  for task, value in labels.items():
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
      return f"label for task {task!r} must be a string/int or a list of them, got {value!r}"
  return None


def parse_line(text: str, manifest: str, line: int) -> Record | Problem:
  """A manifest line -> Record, or the first schema Problem found."""
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    return Problem(MALFORMED_JSON, f"not valid JSON ({e.msg} at column {e.colno})", manifest, line)
  if not isinstance(obj, dict):
    return Problem(MALFORMED_JSON, f"a line must be a JSON object, got {type(obj).__name__}", manifest, line)
  rid = obj.get("id")
  for field in ("id", "audio", "source"):
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
      return Problem(MISSING_FIELD, f"field {field!r} must be a non-empty string, got {value!r}", manifest, line,
                     rid if isinstance(rid, str) else None)
  captions = obj.get("captions")
  if not isinstance(captions, list) or not captions:
    return Problem(BAD_CAPTIONS, f"'captions' must be a non-empty list of strings, got {captions!r}"[:200],
                   manifest, line, rid)
  for i, c in enumerate(captions):
    if not isinstance(c, str) or not c.strip():
      return Problem(BAD_CAPTIONS, f"caption {i} is empty or not a string: {c!r}"[:200], manifest, line, rid)
  labels = obj.get("labels", {})
  if labels is None:
    labels = {}
  label_error = _check_labels(labels)
  if label_error:
    return Problem(BAD_LABELS, label_error, manifest, line, rid)
  duration = obj.get("duration")
  if duration is not None:
    if (not isinstance(duration, (int, float)) or isinstance(duration, bool) or not math.isfinite(duration)
        or not MIN_SECONDS <= duration <= MAX_SECONDS):
      return Problem(ABSURD_DURATION, f"declared duration {duration!r} s is outside [{MIN_SECONDS}, {MAX_SECONDS}]",
                     manifest, line, rid)
  audio = obj["audio"]
  path = audio if os.path.isabs(audio) else os.path.join(os.path.dirname(os.path.abspath(manifest)), audio)
  split = obj.get("split")
  return Record(id=rid, audio_path=path, captions=[c.strip() for c in captions], source=obj["source"],
                duration=float(duration) if duration is not None else None,
                split=split if isinstance(split, str) else None, labels=labels, manifest=manifest, line=line)


def read_manifest(path: str | os.PathLike) -> Iterator[Record | Problem]:
  """Yields one Record or Problem per non-empty line. Raises FileNotFoundError with the path if absent."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"manifest not found: {path}")
  with open(path, encoding="utf-8", errors="replace") as f:
    for line_no, text in enumerate(f, start=1):
      if text.strip():
        yield parse_line(text, path, line_no)


def read_manifests(paths) -> Iterator[Record | Problem]:
  """Records of several manifests, with duplicate ids (across all of them) turned into Problems.

  Streams: ids are remembered as 64-bit digests with their manifest and line (digests.DigestTable,
  16-46 bytes per record), never as a list or a dict of strings.
  """
  paths = [os.fspath(p) for p in paths]
  seen = digests.DigestTable()
  for manifest_index, path in enumerate(paths):
    for item in read_manifest(path):
      if isinstance(item, Record):
        first = seen.setdefault(digests.digest64(item.id), (manifest_index << 32) | item.line)
        if first is not None:
          yield Problem(DUPLICATE_ID, f"id already used at {paths[first >> 32]}:{first & 0xFFFFFFFF}",
                        item.manifest, item.line, item.id)
          continue
      yield item


def check_file(record: Record) -> Problem | None:
  path = record.audio_path
  if not os.path.exists(path):
    return Problem(MISSING_FILE, f"audio file not found: {path}", record.manifest, record.line, record.id)
  if not os.path.isfile(path) or not os.access(path, os.R_OK):
    return Problem(UNREADABLE_FILE, f"audio path is not a readable file: {path}", record.manifest, record.line,
                   record.id)
  return None


def check_audio(record: Record, samples: np.ndarray, sample_rate: int) -> Problem | None:
  """Checks decoded samples (any shape (N,) or (N, C), before resampling)."""
  def problem(kind, detail):
    return Problem(kind, detail, record.manifest, record.line, record.id)
  if samples.shape[0] == 0:
    return problem(ZERO_LENGTH, f"{record.audio_path} decodes to 0 samples")
  if not np.all(np.isfinite(samples)):
    bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
    return problem(NON_FINITE, f"{record.audio_path} has {bad} NaN/Inf samples")
  seconds = samples.shape[0] / sample_rate
  if not MIN_SECONDS <= seconds <= MAX_SECONDS:
    return problem(ABSURD_DURATION, f"{record.audio_path} lasts {seconds:.3f} s, outside [{MIN_SECONDS}, {MAX_SECONDS}]")
  if record.duration is not None:
    if abs(record.duration - seconds) > DURATION_TOLERANCE * seconds + DURATION_SLACK_SECONDS:
      return problem(ABSURD_DURATION, f"declared duration {record.duration:.2f} s but the audio lasts {seconds:.2f} s")
  if float(np.max(np.abs(samples))) < SILENCE_PEAK:
    return problem(SILENT, f"{record.audio_path} is all-silent (peak below one int16 step)")
  return None


def resolve_manifest_paths(paths) -> list[str]:
  out = []
  for p in paths:
    p = Path(p)
    if p.is_dir():
      out.extend(sorted(str(q) for q in p.glob("*.jsonl")))
    else:
      out.append(str(p))
  if not out:
    raise FileNotFoundError(f"no manifests found in {list(map(str, paths))}")
  return out
