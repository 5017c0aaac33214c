"""CREMA-D (Cao et al. 2014): speech emotion, 6 classes from the file name, 5 folds, scored by mean accuracy.

  SOURCE/AudioWAV/ACTOR_SENTENCE_EMOTION_LEVEL.wav     e.g. 1001_DFA_ANG_XX.wav; EMOTION in ANG DIS FEA HAP NEU SAD

5-fold cross-validation as in HEAR (one score per fold, averaged), speaker-disjoint. Fold membership is ours and
deterministic (HEAR's own fold files are not reproduced): the 91 actors sorted by id are dealt round-robin into
folds 1..5. Fold k's task folder TASK_DIR/foldk has test = fold k, valid = fold k+1 (fold 1 after fold 5) and
train = the other three.
"""
from __future__ import annotations

import os
from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = "AudioWAV/ACTOR_SENTENCE_EMOTION_LEVEL.wav"
EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
NUM_FOLDS = 5


def convert(source: Path) -> common.Converted:
  audio_dir = common.require(source / "AudioWAV", "CREMA-D's AudioWAV folder of ACTOR_SENTENCE_EMOTION_LEVEL.wav")
  clips = []
  for name in sorted(os.listdir(audio_dir)):
    stem, suffix = os.path.splitext(name)
    if suffix.lower() not in common.AUDIO_SUFFIXES:
      continue
    fields = stem.split("_")
    if len(fields) != 4 or not fields[0].isdigit() or fields[2] not in EMOTIONS:
      raise common.RecipeError(f"{audio_dir / name}: not a CREMA-D name ACTOR_SENTENCE_EMOTION_LEVEL with EMOTION "
                               f"in {sorted(EMOTIONS)}; move other files out of AudioWAV")
    clips.append((fields[0], audio_dir / name, EMOTIONS[fields[2]]))
  if not clips:
    raise common.RecipeError(f"{audio_dir}: no audio files")
  actors = sorted({actor for actor, _, _ in clips})
  if len(actors) < NUM_FOLDS:
    raise common.RecipeError(f"{audio_dir}: {len(actors)} actors, need at least {NUM_FOLDS} for 5 folds")
  fold_of = {actor: i % NUM_FOLDS for i, actor in enumerate(actors)}
  folders = []
  for k in range(NUM_FOLDS):
    role = {k: "test", (k + 1) % NUM_FOLDS: "valid"}
    splits = {"train": [], "valid": [], "test": []}
    for actor, audio, emotion in clips:
      splits[role.get(fold_of[actor], "train")].append(common.ProbeRow(audio, (emotion,)))
    folders.append(common.Folder(f"fold{k + 1}", splits, task_json={"metric": "accuracy"}))
  return common.Converted(folders)
