"""MagnaTagATune (Law et al. 2009): music auto-tagging with the 50 most frequent tags, scored by mAP.

  SOURCE/annotations_final.csv    tab-separated, quoted: clip_id, 188 tag columns (0/1), mp3_path (e.g.
                                  "f/american_bach_soloists-...-30-59.mp3")
  SOURCE/0 ... SOURCE/f/*.mp3     the clips as unzipped (mp3.zip.001-003); SOURCE/mp3/0 ... also works

The standard split (Dieleman & Schrauwen 2014; Won et al. 2020): the 16 folders by mp3_path's first character,
0-b (12) train, c (1) valid, d-f (3) test. Tags: the 50 with the most clips over the whole file (ties by name).
Clips with none of the 50 tags carry no label and are left out (counted in the summary).
"""
from __future__ import annotations

import collections
import csv
from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = "annotations_final.csv (tab-separated) + the unzipped folders 0..f/*.mp3 (or mp3/0..f)"
NUM_TAGS = 50
FOLDER_SPLIT = {**{c: "train" for c in "0123456789ab"}, "c": "valid", **{c: "test" for c in "def"}}


def convert(source: Path) -> common.Converted:
  path = common.require(source / "annotations_final.csv", "MagnaTagATune's tag annotations")
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f, delimiter="\t")
    fields = reader.fieldnames or []
    if "clip_id" not in fields or "mp3_path" not in fields:
      raise common.RecipeError(f"{path}: header needs clip_id and mp3_path (tab-separated), found {fields[:4]}...")
    tags = [name for name in fields if name not in ("clip_id", "mp3_path")]
    rows = list(reader)
  counts = collections.Counter()
  for line, row in enumerate(rows, start=2):
    for tag in tags:
      if row[tag] not in ("0", "1"):
        raise common.RecipeError(f"{path}:{line}: tag {tag!r} must be 0 or 1, got {row[tag]!r}")
      counts[tag] += row[tag] == "1"
  top = sorted(sorted(tags), key=lambda tag: -counts[tag])[:NUM_TAGS]
  audio_root = source / "mp3" if (source / "mp3").is_dir() else source
  splits, unlabelled = {"train": [], "valid": [], "test": []}, 0
  for line, row in enumerate(rows, start=2):
    mp3 = row["mp3_path"].strip()
    if not mp3:
      continue
    split = FOLDER_SPLIT.get(mp3.split("/")[0])
    if split is None:
      raise common.RecipeError(f"{path}:{line}: mp3_path {mp3!r} is not under a folder 0-9 or a-f")
    labels = tuple(sorted(tag for tag in top if row[tag] == "1"))
    if not labels:
      unlabelled += 1
      continue
    splits[split].append(common.ProbeRow(audio_root / mp3, labels))
  notes = [f"left out {unlabelled} clips with none of the top-{NUM_TAGS} tags"] if unlabelled else []
  return common.Converted([common.Folder("", splits, task_json={"metric": "map"})], notes)
