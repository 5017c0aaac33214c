"""CREMA-D (Cao et al. 2014): speech emotion, 6 classes from the file name, 5 folds, scored by mean accuracy.

  SOURCE/AudioWAV/ACTOR_SENTENCE_EMOTION_LEVEL.wav     e.g. 1001_DFA_ANG_XX.wav; EMOTION in ANG DIS FEA HAP NEU SAD

5-fold cross-validation as HEAR's `tfds_crema_d` (one score per fold, averaged). HEAR pools the whole corpus and
splits it into 5 folds keyed by file (split_mode "new_split_kfold"; the default split key is the file), so a
speaker's clips fall into several folds. `crema_d` applies HEAR's procedure (hear-preprocess pipeline.py
split_k_folds) to the file names: the sorted keys are shuffled with random.Random("split_k_folds"), cut into 5
contiguous near-equal chunks (numpy.array_split), and the seed is retried ("split_k_folds_retry_0", ...) until
every fold holds every emotion. HEAR's keys are TFDS record ids, so its exact membership is not reproduced.
`crema_d_speakers` is the stricter speaker-disjoint variant (ours): the 91 actors sorted by id are dealt
round-robin into the folds. In both, fold k's task folder TASK_DIR/foldk has test = fold k, valid = fold k+1
(fold 1 after fold 5) and train = the other three, as hear-eval-kit builds its k-fold splits.

Checked against hearbenchmark/hear-preprocess (v2021.1.1): hearpreprocess/secrettasks/hearsecrettasks/
tfds_crema_d.py (split_mode new_split_kfold, nfolds 5, TFDS train+valid+test pooled), hearpreprocess/
tfds_pipeline.py (no split-key override), hearpreprocess/pipeline.py (get_split_key, split_k_folds), and
hear-eval-kit's data_splits_from_folds (test = fold k, valid = the next fold). File names as in the release,
CheyneyComputerScience/CREMA-D (e.g. AudioMP3/1001_IEO_ANG_MD.mp3; AudioWAV alike).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from alp_jax.evaluate.recipes import common

LAYOUT = "AudioWAV/ACTOR_SENTENCE_EMOTION_LEVEL.wav"
EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
NUM_FOLDS = 5
SEED_RETRIES = 1000   # as hear-preprocess


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


def hear_folds(keys: list[str], labels: list[str], num_folds: int = NUM_FOLDS) -> list[int]:
  """Each key's fold by hear-preprocess's split_k_folds: sorted unique keys shuffled with a named seed, cut into
  contiguous chunks of near-equal size (the first len % k chunks one longer, as numpy.array_split); the next seed
  is tried until every fold holds every label."""
  unique = sorted(set(keys))
  for attempt in range(SEED_RETRIES):
    seed = "split_k_folds" if attempt == 0 else f"split_k_folds_retry_{attempt - 1}"
    shuffled = list(unique)
    random.Random(seed).shuffle(shuffled)
    size, extra = divmod(len(shuffled), num_folds)
    fold_of, start = {}, 0
    for fold in range(num_folds):
      end = start + size + (fold < extra)
      fold_of.update((key, fold) for key in shuffled[start:end])
      start = end
    folds = [fold_of[key] for key in keys]
    if all(len({label for label, f in zip(labels, folds) if f == fold}) == len(set(labels))
           for fold in range(num_folds)):
      return folds
  raise common.RecipeError(f"no seed of {SEED_RETRIES} gives every fold every label; too few clips per label")


def convert(source: Path) -> common.Converted:
  """HEAR's rule: folds by file."""
  clips = _clips(source)
  return _folders(clips, hear_folds([audio.stem for _, audio, _ in clips], [emotion for _, _, emotion in clips]))


def convert_by_speaker(source: Path) -> common.Converted:
  """Speaker-disjoint folds: actors sorted by id, dealt round-robin."""
  clips = _clips(source)
  actors = sorted({actor for actor, _, _ in clips})
  if len(actors) < NUM_FOLDS:
    raise common.RecipeError(f"{source / 'AudioWAV'}: {len(actors)} actors, need at least {NUM_FOLDS} for "
                             f"speaker-disjoint folds")
  fold_of = {actor: i % NUM_FOLDS for i, actor in enumerate(actors)}
  return _folders(clips, [fold_of[actor] for actor, _, _ in clips])
