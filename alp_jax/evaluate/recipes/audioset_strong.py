"""AudioSet-strong (Hershey et al. 2021): frame-level sound event detection, 456 classes, scored by PSDS1.

  SOURCE/audioset_train_strong.tsv   segment_id, start_time_seconds, end_time_seconds, label (a /m/ mid)
  SOURCE/audioset_eval_strong.tsv    the same columns; segment_id = YTID_STARTMS (e.g. b0RFKhbpFJA_30000)
  SOURCE/mid_to_display_name.tsv     no header: mid <TAB> display name
  SOURCE/**/clip audio               named SEGMENT_ID, YSEGMENT_ID, YTID, or Y{YTID}_{START}.000_{END}.000
                                     (the names of common AudioSet downloaders), anywhere below SOURCE

Writes TASK_DIR/{train,test}.tsv in the AudioSet/DESED strong-label layout "filename onset offset event_label"
(the SED task format of alp_jax/evaluate/sed_tasks.py, from the `sed` branch), event labels as display names;
event times are seconds from the start of the 10-s segment. Splits as released: train -> train, eval -> test.
"""
from __future__ import annotations

import collections
from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = "audioset_{train,eval}_strong.tsv, mid_to_display_name.tsv + clips YTID_STARTMS.* anywhere below SOURCE"
DEFAULT_MAX_MISSING = 0.25   # as for VGGSound, many videos are gone


def convert(source: Path) -> common.Converted:
  names_path = source / "mid_to_display_name.tsv"
  names = {row["mid"]: row["name"] for row in common.read_csv(names_path, ("mid", "name"), "\t", header=False)}
  index = common.AudioIndex(source)
  splits = {}
  for split, name in (("train", "audioset_train_strong.tsv"), ("test", "audioset_eval_strong.tsv")):
    path = source / name
    events = collections.defaultdict(list)
    for row in common.read_csv(path, ("segment_id", "start_time_seconds", "end_time_seconds", "label"), "\t"):
      where = f"{path}:{row['_line']}"
      try:
        onset, offset = float(row["start_time_seconds"]), float(row["end_time_seconds"])
      except ValueError:
        raise common.RecipeError(f"{where}: start/end times must be numbers, got {row}") from None
      if not 0 <= onset < offset:
        raise common.RecipeError(f"{where}: needs 0 <= start < end, got {onset} .. {offset}")
      if row["label"] not in names:
        raise common.RecipeError(f"{where}: label {row['label']!r} is not in mid_to_display_name.tsv")
      events[row["segment_id"]].append((onset, offset, common.check_label(names[row["label"]], where)))
    clips = []
    for segment, clip_events in sorted(events.items()):
      ytid, _, start_ms = segment.rpartition("_")
      if not ytid or not start_ms.isdigit():
        raise common.RecipeError(f"{path}: segment_id {segment!r} is not YTID_STARTMS")
      start = int(start_ms) / 1000
      audio = index.find(segment, f"Y{segment}", f"Y{ytid}_{start:.3f}_{start + 10:.3f}", ytid, f"Y{ytid}")
      clips.append(common.SedClip(audio, tuple(sorted(clip_events))))
    splits[split] = clips
  return common.Converted([common.Folder("", splits)])
