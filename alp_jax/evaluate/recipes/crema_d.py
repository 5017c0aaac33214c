"""CREMA-D (Cao et al. 2014): speech emotion, 6 classes from the file name, 5 folds, scored by mean accuracy.

  SOURCE/AudioWAV/ACTOR_SENTENCE_EMOTION_LEVEL.wav     e.g. 1001_DFA_ANG_XX.wav; EMOTION in ANG DIS FEA HAP NEU SAD

5-fold cross-validation as HEAR's `tfds_crema_d` (one score per fold, averaged). HEAR pools the whole corpus and
deals it into 5 folds keyed by file (split_mode "new_split_kfold", the default split key = the file), so a
speaker's clips fall into several folds; `crema_d` does the same: the clips, sorted by name and shuffled with a
fixed seed, are dealt round-robin into folds 1..5 (HEAR's own membership comes from TFDS record ids and is not
reproduced). `crema_d_speakers` is the stricter speaker-disjoint variant (ours): the 91 actors sorted by id are
dealt round-robin into the folds. In both, fold k's task folder TASK_DIR/foldk has test = fold k, valid = fold k+1
(fold 1 after fold 5) and train = the other three, as hear-eval-kit builds its k-fold splits.

Checked against hearbenchmark/hear-preprocess hearpreprocess/secrettasks/hearsecrettasks/tfds_crema_d.py
(split_mode new_split_kfold, nfolds 5, TFDS train+valid+test pooled), hearpreprocess/tfds_pipeline.py (no split
key override: folds by file) and hear-eval-kit's data_splits_from_folds (test = fold k, valid = the next fold). File
names as in the release, CheyneyComputerScience/CREMA-D (e.g. AudioMP3/1001_IEO_ANG_MD.mp3; AudioWAV alike).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = "AudioWAV/ACTOR_SENTENCE_EMOTION_LEVEL.wav"
EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
NUM_FOLDS = 5
FOLD_SEED = "crema_d"


def _clips(source: Path) -> list[tuple[str, Path, str]]:
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
  if len(clips) < NUM_FOLDS:
    raise common.RecipeError(f"{audio_dir}: {len(clips)} audio files, need at least {NUM_FOLDS} for 5 folds")
  return clips


def _folders(clips: list[tuple[str, Path, str]], folds: list[int]) -> common.Converted:
  """Fold k's folder: test = fold k, valid = fold k+1, train = the rest; `folds[i]` is clip i's fold."""
  folders = []
  for k in range(NUM_FOLDS):
    role = {k: "test", (k + 1) % NUM_FOLDS: "valid"}
    splits = {"train": [], "valid": [], "test": []}
    for fold, (_, audio, emotion) in zip(folds, clips):
      splits[role.get(fold, "train")].append(common.ProbeRow(audio, (emotion,)))
    folders.append(common.Folder(f"fold{k + 1}", splits, task_json={"metric": "accuracy"}))
  return common.Converted(folders)


def convert(source: Path) -> common.Converted:
  """HEAR's rule: folds by file."""
  clips = _clips(source)
  names = [audio.name for _, audio, _ in clips]
  order = list(names)
  random.Random(FOLD_SEED).shuffle(order)
  fold_of = {name: i % NUM_FOLDS for i, name in enumerate(order)}
  return _folders(clips, [fold_of[name] for name in names])


def convert_by_speaker(source: Path) -> common.Converted:
  """Speaker-disjoint folds: actors sorted by id, dealt round-robin."""
  clips = _clips(source)
  actors = sorted({actor for actor, _, _ in clips})
  if len(actors) < NUM_FOLDS:
    raise common.RecipeError(f"{source / 'AudioWAV'}: {len(actors)} actors, need at least {NUM_FOLDS} for "
                             f"speaker-disjoint folds")
  fold_of = {actor: i % NUM_FOLDS for i, actor in enumerate(actors)}
  return _folders(clips, [fold_of[actor] for actor, _, _ in clips])
