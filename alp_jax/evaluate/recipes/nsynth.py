"""NSynth (Engel et al. 2017): single notes, scored by accuracy; instrument family (11 classes, the paper's
"instrument classification") or pitch (MIDI 21-108, the piano range, as HEAR's nsynth_pitch).

  SOURCE/nsynth-train/examples.json   {NOTE_STR: {"instrument_family_str": ..., "pitch": int, ...}, ...}
  SOURCE/nsynth-valid/examples.json
  SOURCE/nsynth-test/examples.json
  SOURCE/nsynth-SPLIT/audio/NOTE_STR.wav

Splits as released: train, valid, test (instrument-disjoint between train and valid/test).
"""
from __future__ import annotations

import json
from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = "nsynth-{train,valid,test}/examples.json + nsynth-SPLIT/audio/NOTE.wav"
PITCH_RANGE = (21, 108)


def _convert(source: Path, target: str) -> common.Converted:
  splits, out_of_range = {}, 0
  for split in ("train", "valid", "test"):
    path = common.require(source / f"nsynth-{split}" / "examples.json", f"NSynth's {split} metadata")
    try:
      notes = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise common.RecipeError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    rows = []
    for note, record in sorted(notes.items()):
      field = "instrument_family_str" if target == "instrument" else "pitch"
      if not isinstance(record, dict) or field not in record:
        raise common.RecipeError(f"{path}: note {note!r} lacks {field!r}")
      if target == "pitch":
        if not PITCH_RANGE[0] <= int(record["pitch"]) <= PITCH_RANGE[1]:
          out_of_range += 1
          continue
        label = str(int(record["pitch"]))
      else:
        label = common.check_label(str(record[field]), f"{path}: {note}")
      rows.append(common.ProbeRow(source / f"nsynth-{split}" / "audio" / f"{note}.wav", (label,)))
    splits[split] = rows
  notes_out = [f"left out {out_of_range} notes outside MIDI pitch {PITCH_RANGE}"] if out_of_range else []
  return common.Converted([common.Folder("", splits, task_json={"metric": "accuracy"})], notes_out)


def convert_instrument(source: Path) -> common.Converted:
  return _convert(source, "instrument")


def convert_pitch(source: Path) -> common.Converted:
  return _convert(source, "pitch")
