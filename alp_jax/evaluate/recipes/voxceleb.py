"""VoxCeleb speaker identification (closed set), scored by accuracy; the label is the speaker id (id10001 ...).

VoxCeleb1 (Nagrani et al. 2017), the official identification split:
  SOURCE/iden_split.txt    "SET id10003/na8-QEFmj44/00003.wav", SET 1 = train, 2 = valid, 3 = test
  SOURCE/vox1_meta.csv     tab-separated: VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set
  SOURCE/wav/ID/VIDEO/UTT.wav

VoxCeleb2 (Chung et al. 2018) has no official identification split; the paper's is not published (STUDY.md).
Ours, deterministic: per speaker of vox2_meta.csv's dev set, the videos sorted by id; the last video's utterances
are test, the one before valid, the rest train (speakers with fewer than 3 videos are left out and reported).
  SOURCE/vox2_meta.csv     VoxCeleb2 ID, VGGFace2 ID, Gender, Set (dev | test)
  SOURCE/dev/aac/ID/VIDEO/UTT.m4a  (or .wav: convert the AAC files first if your libsndfile lacks AAC)
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT_1 = "iden_split.txt, vox1_meta.csv, wav/ID/VIDEO/UTT.wav"
LAYOUT_2 = "vox2_meta.csv, dev/aac/ID/VIDEO/UTT.{m4a,wav}"
IDEN_SETS = {"1": "train", "2": "valid", "3": "test"}


def _speaker_ids(path: Path, id_column: str) -> set[str]:
  common.require(path, "the VoxCeleb meta file")
  text = path.read_text(encoding="utf-8")
  delimiter = "\t" if "\t" in text.splitlines()[0] else ","
  reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
  names = {name.strip(): name for name in reader.fieldnames or ()}
  if id_column not in names:
    raise common.RecipeError(f"{path}: no column {id_column!r} (found {list(names)})")
  return {row[names[id_column]].strip() for row in reader}


def convert_vox1(source: Path) -> common.Converted:
  speakers = _speaker_ids(source / "vox1_meta.csv", "VoxCeleb1 ID")
  path = common.require(source / "iden_split.txt", "VoxCeleb1's identification split (SET PATH per line)")
  splits = {"train": [], "valid": [], "test": []}
  for line_no, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.split()
    if len(fields) != 2 or fields[0] not in IDEN_SETS:
      raise common.RecipeError(f"{path}:{line_no}: expected 'SET ID/VIDEO/UTT.wav' with SET 1, 2 or 3, got {line!r}")
    speaker = fields[1].split("/")[0]
    if speaker not in speakers:
      raise common.RecipeError(f"{path}:{line_no}: speaker {speaker!r} is not in vox1_meta.csv")
    splits[IDEN_SETS[fields[0]]].append(common.ProbeRow(source / "wav" / fields[1], (speaker,)))
  return common.Converted([common.Folder("", splits, task_json={"metric": "accuracy"})])


def convert_vox2(source: Path) -> common.Converted:
  meta = source / "vox2_meta.csv"
  common.require(meta, "VoxCeleb2's speaker list")
  speakers = sorted(_speaker_ids(meta, "VoxCeleb2 ID"))
  audio_root = common.require(source / "dev" / "aac", "VoxCeleb2 dev audio as dev/aac/ID/VIDEO/UTT.m4a")
  splits = {"train": [], "valid": [], "test": []}
  notes, skipped = [], []
  for speaker in speakers:
    speaker_dir = audio_root / speaker
    if not speaker_dir.is_dir():
      continue   # test-set speakers, or not downloaded: the dev folder decides who is in the task
    videos = sorted(v for v in os.listdir(speaker_dir) if (speaker_dir / v).is_dir())
    if len(videos) < 3:
      skipped.append(speaker)
      continue
    for position, video in enumerate(videos):
      split = "test" if position == len(videos) - 1 else "valid" if position == len(videos) - 2 else "train"
      for utterance in sorted(os.listdir(speaker_dir / video)):
        if os.path.splitext(utterance)[1].lower() in common.AUDIO_SUFFIXES:
          splits[split].append(common.ProbeRow(speaker_dir / video / utterance, (speaker,)))
  if skipped:
    notes.append(f"left out {len(skipped)} speakers with fewer than 3 videos, e.g. {skipped[0]}")
  if not splits["test"]:
    raise common.RecipeError(f"{audio_root}: no speaker folder of vox2_meta.csv holds 3 or more videos with audio")
  return common.Converted([common.Folder("", splits, task_json={"metric": "accuracy"})], notes)
