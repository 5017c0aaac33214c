"""Caption task folders, for retrieval, captioning and LiT-style alignment: manifest splits with captions.

  TASK_DIR/train.jsonl    one clip a line, the corpus manifest format (alp_jax/data/manifest.py):
  TASK_DIR/valid.jsonl      {"id": str, "audio": path relative to TASK_DIR (or absolute),
  TASK_DIR/test.jsonl        "captions": [str, ...], "source": str (optional here)}

A clip may have several captions (AudioCaps and Clotho have five); every caption describes exactly one clip.
Only test.jsonl is required for retrieval and captioning; LiT-style alignment also trains on train.jsonl.
A folder is a caption task when it holds test.jsonl, a probe task when it holds test.csv.

For embedding, a split is handed to the probe's embedding code (`as_probe_task`), so caption clips get the
same whole-clip embeddings, cache, skipped-file reporting and progress as probe clips.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from alp_jax.data.text import SPLITS
from alp_jax.evaluate import tasks as tasks_lib


@dataclasses.dataclass(frozen=True)
class CaptionExample:
  id: str
  path: Path                  # absolute, normalised audio path
  captions: tuple[str, ...]   # at least one


@dataclasses.dataclass
class CaptionTask:
  name: str
  directory: Path
  splits: dict[str, list[CaptionExample]]   # "test", and maybe "train" / "valid"

  def manifest(self, split: str) -> Path:
    return self.directory / f"{split}.jsonl"


def is_caption_task(task_dir: str | os.PathLike) -> bool:
  return (Path(task_dir) / "test.jsonl").exists()


def _read_split(path: Path, task_dir: Path) -> list[CaptionExample]:
  examples, seen = [], set()
  for line_no, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    where = f"{path}:{line_no}"
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise tasks_lib.TaskFormatError(f"{where}: not JSON ({e.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("audio"), str) or not record["audio"]:
      raise tasks_lib.TaskFormatError(f"{where}: needs an \"audio\" path (the manifest format: id, audio, captions)")
    captions = record.get("captions")
    if (not isinstance(captions, list) or not captions
        or not all(isinstance(c, str) and c.strip() for c in captions)):
      raise tasks_lib.TaskFormatError(f"{where}: \"captions\" must be a non-empty list of non-empty strings, "
                                      f"got {captions!r}"[:300])
    clip_id = str(record.get("id") or record["audio"])
    if clip_id in seen:
      raise tasks_lib.TaskFormatError(f"{where}: duplicate id {clip_id!r}")
    seen.add(clip_id)
    audio = record["audio"]
    examples.append(CaptionExample(id=clip_id, path=Path(os.path.abspath(task_dir / audio)),
                                   captions=tuple(c.strip() for c in captions)))
  if not examples:
    raise tasks_lib.TaskFormatError(f"{path}: no clips")
  return examples


def read_caption_task(task_dir: str | os.PathLike, splits: tuple[str, ...] = SPLITS) -> CaptionTask:
  """Reads the `splits` present (test.jsonl must be). TaskFormatError naming the file and line on bad input."""
  task_dir = Path(task_dir).absolute()
  if not (task_dir / "test.jsonl").exists():
    raise tasks_lib.TaskFormatError(f"{task_dir} is not a caption task folder: test.jsonl is missing "
                                    f"(one clip a line: id, audio, captions)")
  read = {split: _read_split(task_dir / f"{split}.jsonl", task_dir)
          for split in splits if (task_dir / f"{split}.jsonl").exists()}
  return CaptionTask(name=task_dir.name, directory=task_dir, splits=read)


def as_probe_task(task: CaptionTask, split: str) -> tasks_lib.Task:
  """One split as a probe Task (label = clip id) so alp_jax.evaluate.embed can embed and cache it."""
  examples = [tasks_lib.Example(path=e.path, labels=(e.id,)) for e in task.splits[split]]
  return tasks_lib.Task(name=f"{task.name}.{split}", directory=task.directory, splits={split: examples},
                        classes=sorted({e.id for e in task.splits[split]}), metric=tasks_lib.SINGLE_LABEL)
