"""Probe task folders: train.csv / test.csv (optional valid.csv) with columns `path,label`.

  TASK_DIR/train.csv      path,label        paths relative to TASK_DIR; any format soundfile reads,
  TASK_DIR/valid.csv      (optional)        any sample rate, mono or stereo
  TASK_DIR/test.csv
  TASK_DIR/task.json      (optional)        {"metric": "accuracy" | "map"} overrides the inferred kind

A row with several labels ("dog;bark") makes the task multi-label; otherwise it is single-label (task.json
can force multi-label when every clip happens to carry one label). Labels are
class names (strings); the class list is the sorted union over all splits.

Tasks need not come from folders: an Example may carry its audio in memory (`Example.audio`, an AudioSource
that loads (samples, sample_rate) on demand), e.g. the records of a TFDS dataset (tfds_tasks.py).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from alp_jax.data import text

SPLITS = text.SPLITS
LABEL_SEPARATOR = ";"
SINGLE_LABEL, MULTI_LABEL = "accuracy", "map"


class TaskFormatError(ValueError):
  """A task folder or CSV that cannot be read; the message names the file and row."""


@dataclasses.dataclass(frozen=True)
class AudioSource:
  """Audio that is not a file. `load()` -> (samples (N,) or (N, C), sample_rate), raising
  audio_io.AudioDecodeError when the record cannot be used. `key` names the clip uniquely and changes
  when its data does: the embedding cache fingerprints it instead of a file's size and mtime."""
  key: str
  load: Callable[[], tuple[np.ndarray, int]] = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Example:
  path: Path                # absolute, normalised audio path (with `audio`: a readable name, never opened)
  labels: tuple[str, ...]   # one label for single-label tasks
  audio: AudioSource | None = None   # in-memory audio instead of the file at `path`


@dataclasses.dataclass
class Task:
  name: str
  directory: Path
  splits: dict[str, list[Example]]   # "train", "test" and maybe "valid"
  classes: list[str]
  metric: str                        # SINGLE_LABEL ("accuracy") or MULTI_LABEL ("map")

  @property
  def multi_label(self) -> bool:
    return self.metric == MULTI_LABEL

  def targets(self, examples: list[Example]) -> np.ndarray:
    """Class indices (N,) int32 for single-label tasks, a multi-hot (N, C) float32 for multi-label ones."""
    index = {c: i for i, c in enumerate(self.classes)}
    if not self.multi_label:
      return np.array([index[e.labels[0]] for e in examples], np.int32)
    hot = np.zeros((len(examples), len(self.classes)), np.float32)
    for row, example in enumerate(examples):
      hot[row, [index[label] for label in example.labels]] = 1.0
    return hot


def _read_csv(path: Path, task_dir: Path) -> list[Example]:
  examples = []
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = {"path", "label"} - set(reader.fieldnames or ())
    if missing:
      raise TaskFormatError(f"{path}: header must hold columns path,label (missing {sorted(missing)}, "
                            f"found {reader.fieldnames})")
    for line, row in enumerate(reader, start=2):
      rel, label = (row["path"] or "").strip(), (row["label"] or "").strip()
      labels = tuple(sorted({part.strip() for part in label.split(LABEL_SEPARATOR) if part.strip()}))
      if not rel or not labels:
        raise TaskFormatError(f"{path}:{line}: empty path or label ({row})")
      examples.append(Example(path=Path(os.path.abspath(task_dir / rel)), labels=labels))
  if not examples:
    raise TaskFormatError(f"{path}: no rows")
  return examples


def read_task(task_dir: str | os.PathLike) -> Task:
  """Reads a task folder. Raises TaskFormatError naming the file when train.csv/test.csv are missing or bad."""
  task_dir = Path(task_dir).absolute()
  splits = {}
  for split in SPLITS:
    path = task_dir / f"{split}.csv"
    if path.exists():
      splits[split] = _read_csv(path, task_dir)
    elif split != "valid":
      raise TaskFormatError(f"{task_dir} is not a task folder: {split}.csv is missing (columns path,label)")
  raw_labels = [label for examples in splits.values() for e in examples for label in e.labels]
  multi = any(len(e.labels) > 1 for examples in splits.values() for e in examples)
  metric = MULTI_LABEL if multi else SINGLE_LABEL
  spec_path = task_dir / "task.json"
  if spec_path.exists():
    metric = json.loads(spec_path.read_text()).get("metric", metric)
    if metric not in (SINGLE_LABEL, MULTI_LABEL):
      raise TaskFormatError(f"{spec_path}: metric must be {SINGLE_LABEL!r} or {MULTI_LABEL!r}, got {metric!r}")
  return Task(name=task_dir.name, directory=task_dir, splits=splits, classes=sorted(set(raw_labels)), metric=metric)


def validation_split(num_examples: int, fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic (fit_indices, valid_indices) carved from train: a seeded permutation, at least one each."""
  order = np.random.default_rng(seed).permutation(num_examples)
  num_valid = min(max(1, int(round(fraction * num_examples))), num_examples - 1)
  return np.sort(order[num_valid:]), np.sort(order[:num_valid])
