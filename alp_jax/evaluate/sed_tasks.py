"""Sound event detection (SED) task folders: strong labels (onset, offset, label per event) in the tab-separated
layout AudioSet-strong (as DCASE converts it) and DESED publish.

  TASK_DIR/train.tsv     filename <TAB> onset <TAB> offset <TAB> event_label     (header line required)
  TASK_DIR/valid.tsv     optional; if absent the probe carves a seeded share of the train clips
  TASK_DIR/test.tsv
  TASK_DIR/task.json     optional: {"audio_dir": DIR or {"train": DIR, "valid": DIR, "test": DIR},
                                    "classes": [label, ...]}

  filename      the clip's audio, relative to the split's audio folder (task.json "audio_dir", itself relative to
                TASK_DIR; default TASK_DIR), so DESED's metadata tsv files are used unchanged; absolute paths too
  onset/offset  seconds from the start of the clip, 0 <= onset < offset
  event_label   the class name
A clip appears once per event; a clip without any event is one row with onset, offset and event_label empty.
Events of one label that overlap or touch within a clip are merged (as DESED's baseline does); events are cut at
the clip's end when the audio is shorter than the labels say (known once the audio is read). The classes are
task.json's "classes" (every label must be among them) or the sorted union of the labels over all splits. A
folder is a SED task when it holds test.tsv. Any bad row is a TaskFormatError naming the file, line and field.

  task = read_sed_task(TASK_DIR)
  task.splits["test"][0].events    # (Event(onset, offset, label), ...)
  task.as_probe_task()             # the clips as a tasks.Task, for alp_jax.evaluate.embed
  frame_targets(clip.events, task.classes, num_frames, seconds)   # (T, C) multi-hot frame targets
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from alp_jax.evaluate import tasks as tasks_lib

SPLITS = tasks_lib.SPLITS
COLUMNS = ("filename", "onset", "offset", "event_label")
TaskFormatError = tasks_lib.TaskFormatError
NO_EVENT = "(no event)"   # probe-task label of a clip without events (embedding only; never a class)


@dataclasses.dataclass(frozen=True)
class Event:
  onset: float    # seconds
  offset: float   # seconds, > onset
  label: str


@dataclasses.dataclass(frozen=True)
class SedClip:
  id: str                       # the tsv's filename, as written (unique within the task)
  path: Path                    # absolute, normalised audio path
  events: tuple[Event, ...]     # sorted by (label, onset); same-label overlaps merged

  def clipped(self, duration: float) -> tuple[Event, ...]:
    """The events cut at `duration` seconds (those starting at or after it dropped)."""
    return tuple(Event(e.onset, min(e.offset, duration), e.label) for e in self.events if e.onset < duration)


@dataclasses.dataclass
class SedTask:
  name: str
  directory: Path
  splits: dict[str, list[SedClip]]   # "train", "test" and maybe "valid"
  classes: list[str]

  def as_probe_task(self) -> tasks_lib.Task:
    """Every split's clips as a probe Task (labels = the clip's event labels), so alp_jax.evaluate.embed embeds
    and caches them like any probe task; its examples are in the same order as `splits`."""
    splits = {split: [tasks_lib.Example(path=clip.path, labels=tuple(sorted({e.label for e in clip.events}))
                                        or (NO_EVENT,)) for clip in clips]
              for split, clips in self.splits.items()}
    return tasks_lib.Task(name=self.name, directory=self.directory, splits=splits, classes=list(self.classes),
                          metric=tasks_lib.MULTI_LABEL)


def frame_targets(events, classes: list[str], num_frames: int, duration: float) -> np.ndarray:
  """(T, C) float32 multi-hot: frame t covers [t d/T, (t+1) d/T) of the clip's d seconds and is active for a class
  when its centre lies in one of that class's events [onset, offset)."""
  index = {c: i for i, c in enumerate(classes)}
  centres = (np.arange(num_frames) + 0.5) * (duration / num_frames)   # (T,)
  targets = np.zeros((num_frames, len(classes)), np.float32)
  for event in events:
    targets[(centres >= event.onset) & (centres < event.offset), index[event.label]] = 1.0
  return targets


def is_sed_task(task_dir: str | os.PathLike) -> bool:
  return (Path(task_dir) / "test.tsv").exists()


def _number(text: str, where: str, field: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise tasks_lib.TaskFormatError(f"{where}: {field} {text!r} is not a number of seconds") from None
  if not math.isfinite(value):
    raise tasks_lib.TaskFormatError(f"{where}: {field} {text!r} is not a finite number of seconds")
  return value


def merge_events(events: list[Event]) -> tuple[Event, ...]:
  """Same-label events that overlap or touch become one; -> sorted by (label, onset)."""
  merged: list[Event] = []
  for event in sorted(events, key=lambda e: (e.label, e.onset, e.offset)):
    last = merged[-1] if merged else None
    if last is not None and last.label == event.label and event.onset <= last.offset:
      merged[-1] = Event(last.onset, max(last.offset, event.offset), last.label)
    else:
      merged.append(event)
  return tuple(merged)


def _read_tsv(path: Path, audio_dir: Path) -> list[SedClip]:
  """One split's tsv -> its clips in order of first appearance."""
  events: dict[str, list[Event]] = {}
  with open(path, newline="") as f:
    reader = csv.reader(f, delimiter="\t")
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
      raise TaskFormatError(f"{path}: the header line must name the tab-separated columns {'/'.join(COLUMNS)} "
                            f"(missing {missing}, found {header}); AudioSet-strong/DESED layout")
    column = {c: header.index(c) for c in COLUMNS}
    for line, row in enumerate(reader, start=2):
      if not any(cell.strip() for cell in row):
        continue
      where = f"{path}:{line}"
      if len(row) < len(header):
        row = row + [""] * (len(header) - len(row))
      if len(row) > len(header):
        raise TaskFormatError(f"{where}: {len(row)} tab-separated fields, the header has {len(header)}")
      filename, onset, offset, label = (row[column[c]].strip() for c in COLUMNS)
      if not filename:
        raise TaskFormatError(f"{where}: empty filename")
      clip_events = events.setdefault(filename, [])
      if not (onset or offset or label):
        continue   # a clip without events
      for field, value in (("onset", onset), ("offset", offset), ("event_label", label)):
        if not value:
          raise TaskFormatError(f"{where}: empty {field} (give onset, offset and event_label, or leave all three "
                                f"empty for a clip without events)")
      start, end = _number(onset, where, "onset"), _number(offset, where, "offset")
      if start < 0 or end <= start:
        raise TaskFormatError(f"{where}: needs 0 <= onset < offset, got onset {start} and offset {end}")
      clip_events.append(Event(start, end, label))
  if not events:
    raise TaskFormatError(f"{path}: no rows")
  return [SedClip(id=name, path=Path(os.path.abspath(audio_dir / name)), events=merge_events(found))
          for name, found in events.items()]



def _spec(task_dir: Path) -> dict:
  path = task_dir / "task.json"
  if not path.exists():
    return {}
  try:
    spec = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise TaskFormatError(f"{path}: not JSON ({e.msg})") from None
  if not isinstance(spec, dict):
    raise TaskFormatError(f"{path}: must be a JSON object")
  audio_dir = spec.get("audio_dir", ".")
  if not (isinstance(audio_dir, str) or (isinstance(audio_dir, dict)
                                         and all(isinstance(v, str) for v in audio_dir.values()))):
    raise TaskFormatError(f"{path}: \"audio_dir\" must be a folder or {{\"train\": DIR, \"test\": DIR, ...}}")
  if isinstance(audio_dir, dict) and set(audio_dir) - set(SPLITS):
    raise TaskFormatError(f"{path}: \"audio_dir\" keys must be splits {SPLITS}, got {sorted(audio_dir)}")
  classes = spec.get("classes")
  if classes is not None and (not isinstance(classes, list) or not classes
                              or not all(isinstance(c, str) and c for c in classes)
                              or len(set(classes)) != len(classes)):
    raise TaskFormatError(f"{path}: \"classes\" must be a list of distinct, non-empty label strings")
  return spec


def read_sed_task(task_dir: str | os.PathLike) -> SedTask:
  """Reads a SED task folder (module docstring). Raises TaskFormatError naming the file (and line) when
  train.tsv/test.tsv are missing or a row, task.json or a label is bad, or a clip is in two splits."""
  task_dir = Path(task_dir).absolute()
  spec = _spec(task_dir)
  audio_dirs = spec.get("audio_dir", ".")
  splits: dict[str, list[SedClip]] = {}
  for split in SPLITS:
    path = task_dir / f"{split}.tsv"
    if not path.exists():
      if split != "valid":
        raise TaskFormatError(f"{task_dir} is not a SED task folder: {split}.tsv is missing (tab-separated "
                              f"columns {', '.join(COLUMNS)})")
      continue
    audio_dir = audio_dirs.get(split, ".") if isinstance(audio_dirs, dict) else audio_dirs
    splits[split] = _read_tsv(path, task_dir / audio_dir)
  seen: dict[Path, str] = {}
  for split, clips in splits.items():
    for clip in clips:
      if clip.path in seen:
        raise TaskFormatError(f"{task_dir}: {clip.id} ({clip.path}) is in both {seen[clip.path]}.tsv and "
                              f"{split}.tsv; a clip belongs to one split")
      seen[clip.path] = split
  labels = sorted({e.label for clips in splits.values() for clip in clips for e in clip.events})
  classes = spec.get("classes") or labels
  unknown = sorted(set(labels) - set(classes))
  if unknown:
    raise TaskFormatError(f"{task_dir / 'task.json'}: labels {unknown[:10]} of the tsv files are not in "
                          f"\"classes\"; add them or fix the labels")
  if not classes:
    raise TaskFormatError(f"{task_dir}: no events in any split; a SED task needs labelled events")
  return SedTask(name=task_dir.name, directory=task_dir, splits=splits, classes=list(classes))
