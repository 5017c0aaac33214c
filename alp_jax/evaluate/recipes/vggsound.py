"""VGGSound (Chen et al. 2020): 309 single-label classes from YouTube clips, scored by accuracy.

  SOURCE/vggsound.csv      no header: youtube_id,start_seconds,label,split   (split: train | test)
  SOURCE/**/ID_START.*     the clips as you downloaded them: named YTID_START (START as in the csv or zero-padded
                           to 6 digits, e.g. ---g-f_I2yQ_000001.mp4) or YTID; wav/flac/mp3/mp4/... anywhere below

Splits as released: train -> train, test -> test (no validation split: the probe carves one from train).
Clips never downloaded (many YouTube videos are gone) are counted and dropped up to --max-missing.
"""
from __future__ import annotations

from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = "vggsound.csv (ytid,start,label,split; no header) + clips YTID_START.* anywhere below SOURCE"
DEFAULT_MAX_MISSING = 0.25   # a tenth to a quarter of VGGSound's videos are no longer on YouTube


def convert(source: Path) -> common.Converted:
  path = source / "vggsound.csv"
  rows = common.read_csv(path, ("youtube_id", "start", "label", "split"), header=False)
  index = common.AudioIndex(source)
  splits = {"train": [], "test": []}
  for row in rows:
    where = f"{path}:{row['_line']}"
    if row["split"] not in splits:
      raise common.RecipeError(f"{where}: split must be train or test, got {row['split']!r}")
    try:
      start = int(float(row["start"]))
    except ValueError:
      raise common.RecipeError(f"{where}: start_seconds {row['start']!r} is not a number") from None
    ytid = row["youtube_id"]
    audio = index.find(f"{ytid}_{start:06d}", f"{ytid}_{row['start']}", f"{ytid}_{start}", ytid)
    splits[row["split"]].append(common.ProbeRow(audio, (common.check_label(row["label"], where),)))
  return common.Converted([common.Folder("", splits)])
