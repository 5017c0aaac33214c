"""What every recipe shares: the rows a converter yields, the audio index, and the task-folder writer.

A converter reads a dataset's official metadata under SOURCE and returns `Converted`: one or more task folders
(`Folder`; CREMA-D's five folds are five), each a dict split -> rows, of one kind:

  ProbeRow(audio, labels)          -> train.csv / valid.csv / test.csv  (path,label; labels joined by ";")
  CaptionRow(id, audio, captions)  -> train.jsonl / valid.jsonl / test.jsonl  (caption_tasks.py)
  SedClip(audio, events)           -> train.tsv / valid.tsv / test.tsv  (filename onset offset event_label;
                                      the format of evaluate/sed_tasks.py on the `sed` branch)

`write(converted, out, audio_mode, max_missing)` checks every referenced audio file (missing ones are dropped and
reported; above `max_missing` of a split the conversion is refused, naming examples), then writes the folder.
Audio is never duplicated by default: rows name the source file by its absolute path ("absolute"); "link" makes
TASK_DIR/audio/<path under SOURCE> symlinks and "copy" copies there (relative paths; the folder can move).
TASK_DIR must be absent, empty, or a folder an earlier recipe wrote (its `recipe.json`); nothing else is deleted.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".aac", ".webm", ".mp4", ".mkv")
OWNER_FILE = "recipe.json"
AUDIO_MODES = ("absolute", "link", "copy")
LABEL_SEPARATOR = ";"


class RecipeError(ValueError):
  """Source files missing or malformed, or an output folder we may not write; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class ProbeRow:
  audio: Path
  labels: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CaptionRow:
  id: str
  audio: Path
  captions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SedClip:
  audio: Path
  events: tuple[tuple[float, float, str], ...]   # (onset s, offset s, label); empty: a clip without events


@dataclasses.dataclass
class Folder:
  name: str                  # "" for TASK_DIR itself, else a subfolder (e.g. "fold1")
  splits: dict[str, list]    # "train" / "valid" / "test" -> rows of one kind
  task_json: dict | None = None


@dataclasses.dataclass
class Converted:
  folders: list[Folder]
  notes: list[str] = dataclasses.field(default_factory=list)   # printed in the summary (dropped rows, ...)


def require(path: Path, what: str) -> Path:
  """`path` if it exists, else RecipeError naming it and what it should be."""
  if not path.exists():
    raise RecipeError(f"{path} is missing: expected {what}. See `python -m alp_jax.evaluate.recipes --list`.")
  return path


def read_csv(path: Path, columns: tuple[str, ...], delimiter: str = ",", header: bool = True) -> list[dict]:
  """Rows of a metadata file as dicts; with header=False the `columns` name the fields in order. A missing column
  or a short row is a RecipeError naming the file and line."""
  require(path, f"the dataset's metadata file {path.name}")
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f, delimiter=delimiter)
    rows, names = [], list(columns)
    for line, fields in enumerate(reader, start=1):
      if not fields or (len(fields) == 1 and not fields[0].strip()):
        continue
      if header and line == 1:
        names = [name.strip() for name in fields]
        missing = [c for c in columns if c not in names]
        if missing:
          raise RecipeError(f"{path}: header lacks column(s) {missing} (found {names}); is this the official file?")
        continue
      if len(fields) < len(names) and not header:
        raise RecipeError(f"{path}:{line}: expected {len(names)} fields {names}, got {fields}")
      record = dict(zip(names, (v.strip() for v in fields)))
      if any(c not in record for c in columns):
        raise RecipeError(f"{path}:{line}: expected fields {list(columns)}, got {fields}")
      record["_line"] = line
      rows.append(record)
  if not rows:
    raise RecipeError(f"{path}: no rows")
  return rows


class AudioIndex:
  """Audio files under a folder by stem (name without suffix), for datasets whose clips were downloaded by users
  under varying names (YouTube ids with or without start times). Built once by one walk of the folder."""

  def __init__(self, root: Path):
    self.root = root
    self.by_stem: dict[str, Path] = {}
    for folder, _, files in os.walk(root):
      for name in files:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in AUDIO_SUFFIXES:
          self.by_stem.setdefault(stem, Path(folder) / name)

  def find(self, *stems: str) -> Path:
    """The first stem found, else a path under root named after the first stem (reported as missing)."""
    for stem in stems:
      if stem in self.by_stem:
        return self.by_stem[stem]
    return self.root / f"{stems[0]}.wav"


def check_label(label: str, where: str) -> str:
  label = label.strip()
  if not label or LABEL_SEPARATOR in label:
    raise RecipeError(f"{where}: label {label!r} is empty or holds {LABEL_SEPARATOR!r}, which separates labels")
  return label


# ---------------------------------------------------------------------------------------------- writing


def _audio_of(row) -> Path:
  return row.audio


def drop_missing(folder: Folder, max_missing: float, notes: list[str]) -> None:
  """Removes rows whose audio file is absent; refuses when a split loses more than `max_missing` of its rows."""
  for split, rows in folder.splits.items():
    present = [row for row in rows if _audio_of(row).is_file()]
    missing = [_audio_of(row) for row in rows if not _audio_of(row).is_file()]
    where = f"{folder.name + '/' if folder.name else ''}{split}"
    if not rows:
      raise RecipeError(f"{where}: the metadata gives this split no rows; is the download complete?")
    if missing and (not present or len(missing) > max_missing * len(rows)):
      examples = ", ".join(str(p) for p in missing[:5])
      raise RecipeError(f"{where}: {len(missing)} of {len(rows)} audio files are missing (more than the "
                        f"{max_missing:.0%} allowed by --max-missing), e.g. {examples}. Download the audio into the "
                        f"expected layout, or raise --max-missing to convert what is there.")
    if missing:
      notes.append(f"{where}: dropped {len(missing)} of {len(rows)} rows whose audio is missing, "
                   f"e.g. {missing[0]}")
    folder.splits[split] = present


def prepare_out(out: Path) -> dict | None:
  """Refuses a non-empty folder that no recipe wrote; returns the earlier recipe.json (to clean) or None."""
  if not out.exists():
    return None
  if not out.is_dir():
    raise RecipeError(f"--out {out} is a file; give a folder")
  owner = out / OWNER_FILE
  if owner.is_file():
    try:
      return json.loads(owner.read_text())
    except json.JSONDecodeError:
      raise RecipeError(f"{owner} is not the JSON a recipe writes; remove {out} or give another --out") from None
  if any(out.iterdir()):
    raise RecipeError(f"--out {out} is not empty and was not written by a recipe (no {OWNER_FILE}); "
                      f"give a new or empty folder. Nothing was changed.")
  return None


def _clean(out: Path, earlier: dict) -> None:
  """Removes exactly the files and audio folders an earlier recipe run recorded in recipe.json."""
  for rel in earlier.get("files", []):
    path = out / rel
    if path.is_file() or path.is_symlink():
      path.unlink()
  for rel in earlier.get("audio_dirs", []):
    if (out / rel).is_dir():
      shutil.rmtree(out / rel)
  for rel in sorted(earlier.get("folders", []), reverse=True):
    if (out / rel).is_dir() and not any((out / rel).iterdir()):
      (out / rel).rmdir()


def _place_audio(audio: Path, folder_dir: Path, out: Path, source: Path, mode: str) -> str:
  if mode == "absolute":
    return str(audio.absolute())
  try:
    rel = audio.absolute().relative_to(source.absolute())
  except ValueError:
    rel = Path(audio.name)
  target = out / "audio" / rel
  target.parent.mkdir(parents=True, exist_ok=True)
  if not target.exists():
    if mode == "link":
      target.symlink_to(audio.absolute())
    else:
      shutil.copy2(audio, target)
  return os.path.relpath(target, folder_dir)


def _format_split(rows: list, place) -> tuple[str, str]:
  """(file suffix, text) of one split."""
  buffer = io.StringIO()
  kind = type(rows[0]) if rows else ProbeRow
  if kind is ProbeRow:
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    for row in rows:
      writer.writerow([place(row.audio), LABEL_SEPARATOR.join(row.labels)])
    return ".csv", buffer.getvalue()
  if kind is CaptionRow:
    lines = [json.dumps({"id": row.id, "audio": place(row.audio), "captions": list(row.captions)},
                        ensure_ascii=False) for row in rows]
    return ".jsonl", "".join(line + "\n" for line in lines)
  lines = ["filename\tonset\toffset\tevent_label"]
  for clip in rows:
    name = place(clip.audio)
    if not clip.events:
      lines.append(f"{name}\t\t\t")
    for onset, offset, label in clip.events:
      lines.append(f"{name}\t{onset:.3f}\t{offset:.3f}\t{label}")
  return ".tsv", "\n".join(lines) + "\n"


def write(converted: Converted, recipe: str, source: Path, out: Path, audio_mode: str = "absolute",
          max_missing: float = 0.02) -> list[str]:
  """Checks the audio, then writes the task folder(s) under `out`. Returns summary lines."""
  if audio_mode not in AUDIO_MODES:
    raise RecipeError(f"audio mode must be one of {AUDIO_MODES}, got {audio_mode!r}")
  earlier = prepare_out(out)
  notes = list(converted.notes)
  for folder in converted.folders:
    drop_missing(folder, max_missing, notes)
  if earlier is not None:
    _clean(out, earlier)
  out.mkdir(parents=True, exist_ok=True)
  files, folders, summary = [], [], []
  for folder in converted.folders:
    folder_dir = out / folder.name if folder.name else out
    folder_dir.mkdir(parents=True, exist_ok=True)
    if folder.name:
      folders.append(folder.name)
    place = lambda audio, d=folder_dir: _place_audio(audio, d, out, source, audio_mode)
    counts = []
    for split, rows in folder.splits.items():
      suffix, text = _format_split(rows, place)
      (folder_dir / f"{split}{suffix}").write_text(text, encoding="utf-8")
      files.append(os.path.relpath(folder_dir / f"{split}{suffix}", out))
      counts.append(f"{split} {len(rows)}")
    if folder.task_json:
      (folder_dir / "task.json").write_text(json.dumps(folder.task_json, indent=1) + "\n")
      files.append(os.path.relpath(folder_dir / "task.json", out))
    summary.append(f"{folder_dir}: {', '.join(counts)}")
  record = dict(recipe=recipe, source=str(source.absolute()), audio=audio_mode, files=files, folders=folders,
                audio_dirs=["audio"] if audio_mode != "absolute" else [], notes=notes)
  (out / OWNER_FILE).write_text(json.dumps(record, indent=1) + "\n")
  return notes + summary
