"""Caption corpora as caption task folders (retrieval, captioning, LiT-style alignment; caption_tasks.py).

AudioCaps (Kim et al. 2019): SOURCE/{train,val,test}.csv (audiocap_id,youtube_id,start_time,caption), one row a
  caption; clips are (youtube_id, start_time) pairs (1 caption per train clip, 5 per val/test clip), audio named
  YTID, YTID_START or YYTID anywhere below SOURCE. Splits: train, val -> valid, test.
Clotho v2.1 (Drossos et al. 2020): SOURCE/clotho_captions_{development,validation,evaluation}.csv (file_name,
  caption_1..caption_5), audio SOURCE/{development,validation,evaluation}/FILE_NAME. Splits: development -> train,
  validation -> valid, evaluation -> test.
MusicCaps (Agostinelli et al. 2023): SOURCE/musiccaps-public.csv (ytid,start_s,end_s,...,caption,...,
  is_audioset_eval), audio named YTID or YTID_START anywhere below SOURCE. Splits: is_audioset_eval True -> test
  (2,858 clips, the split MusicCaps captioning papers report), False -> train.
ParaSpeechCaps (Diwan et al. 2025, HF ajd12342/paraspeechcaps): SOURCE/data/SPLIT-*.parquet (or SOURCE/SPLIT.jsonl)
  with source, relative_audio_path, text_description (a list); audio SOURCE/audio/RELATIVE_AUDIO_PATH (the
  source corpora VoxCeleb, Expresso, EARS, Emilia placed as the release's paths expect). Splits: train_base (the
  human-labelled part) -> train, dev -> valid, holdout -> test.
"""
from __future__ import annotations

import collections
import glob
import json
from pathlib import Path

from alp_jax.evaluate.recipes import common

AUDIOCAPS_LAYOUT = "{train,val,test}.csv (audiocap_id,youtube_id,start_time,caption) + clips YTID[_START].*"
CLOTHO_LAYOUT = "clotho_captions_{development,validation,evaluation}.csv + {development,validation,evaluation}/*.wav"
MUSICCAPS_LAYOUT = "musiccaps-public.csv + clips YTID[_START].* anywhere below SOURCE"
PSC_LAYOUT = "data/{train_base,dev,holdout}-*.parquet (or SPLIT.jsonl) + audio/RELATIVE_AUDIO_PATH"
YOUTUBE_MAX_MISSING = 0.25


def _caption(text: str, where: str) -> str:
  text = " ".join(text.split())
  if not text:
    raise common.RecipeError(f"{where}: empty caption")
  return text


def audiocaps(source: Path) -> common.Converted:
  index = common.AudioIndex(source)
  splits = {}
  for name, split in (("train.csv", "train"), ("val.csv", "valid"), ("test.csv", "test")):
    path = source / name
    clips = collections.defaultdict(list)
    for row in common.read_csv(path, ("audiocap_id", "youtube_id", "start_time", "caption")):
      clips[(row["youtube_id"], row["start_time"])].append(_caption(row["caption"], f"{path}:{row['_line']}"))
    rows = []
    for (ytid, start), captions in sorted(clips.items()):
      audio = index.find(f"{ytid}_{start}", f"Y{ytid}_{start}", ytid, f"Y{ytid}")
      rows.append(common.CaptionRow(f"{ytid}_{start}", audio, tuple(captions)))
    splits[split] = rows
  return common.Converted([common.Folder("", splits)])


def clotho(source: Path) -> common.Converted:
  columns = ("file_name",) + tuple(f"caption_{i}" for i in range(1, 6))
  splits = {}
  for name, split in (("development", "train"), ("validation", "valid"), ("evaluation", "test")):
    path = source / f"clotho_captions_{name}.csv"
    rows = []
    for row in common.read_csv(path, columns):
      where = f"{path}:{row['_line']}"
      captions = tuple(_caption(row[c], where) for c in columns[1:])
      rows.append(common.CaptionRow(f"{name}/{row['file_name']}", source / name / row["file_name"], captions))
    splits[split] = rows
  return common.Converted([common.Folder("", splits)])


def musiccaps(source: Path) -> common.Converted:
  path = source / "musiccaps-public.csv"
  index = common.AudioIndex(source)
  splits = {"train": [], "test": []}
  for row in common.read_csv(path, ("ytid", "start_s", "end_s", "caption", "is_audioset_eval")):
    where = f"{path}:{row['_line']}"
    flag = row["is_audioset_eval"].lower()
    if flag not in ("true", "false"):
      raise common.RecipeError(f"{where}: is_audioset_eval must be True or False, got {row['is_audioset_eval']!r}")
    ytid, start = row["ytid"], row["start_s"]
    audio = index.find(ytid, f"{ytid}_{start}", f"Y{ytid}", f"[{ytid}]-[{start}-{row['end_s']}]")
    splits["test" if flag == "true" else "train"].append(
        common.CaptionRow(ytid, audio, (_caption(row["caption"], where),)))
  return common.Converted([common.Folder("", splits)])


def _psc_records(source: Path, split: str) -> tuple[str, list[dict]]:
  jsonl = source / f"{split}.jsonl"
  if jsonl.is_file():
    records = []
    for line_no, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
      if line.strip():
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise common.RecipeError(f"{jsonl}:{line_no}: not JSON ({e.msg})") from None
    return str(jsonl), records
  shards = sorted(glob.glob(str(source / "data" / f"{split}-*.parquet")))
  if not shards:
    raise common.RecipeError(f"{source}: neither data/{split}-*.parquet nor {split}.jsonl found "
                             f"(ParaSpeechCaps's release files)")
  try:
    import pyarrow.parquet as pq   # only ParaSpeechCaps ships parquet; pyarrow comes with tensorflow-datasets
  except ImportError:
    raise common.RecipeError(f"{shards[0]}: reading parquet needs pyarrow (pip install pyarrow), or convert "
                             f"the split to {split}.jsonl") from None
  records = []
  for shard in shards:
    records.extend(pq.read_table(shard, columns=["relative_audio_path", "text_description"]).to_pylist())
  return ",".join(shards), records


def paraspeechcaps(source: Path) -> common.Converted:
  splits = {}
  for name, split in (("train_base", "train"), ("dev", "valid"), ("holdout", "test")):
    where_file, records = _psc_records(source, name)
    rows, seen = [], set()
    for number, record in enumerate(records, start=1):
      where = f"{where_file}: record {number}"
      rel, texts = record.get("relative_audio_path"), record.get("text_description")
      if not isinstance(rel, str) or not rel:
        raise common.RecipeError(f"{where}: needs relative_audio_path")
      if isinstance(texts, str):
        texts = [texts]
      if not isinstance(texts, list) or not texts:
        raise common.RecipeError(f"{where}: text_description must be a non-empty list of strings")
      if rel in seen:
        continue
      seen.add(rel)
      rows.append(common.CaptionRow(rel, source / "audio" / rel, tuple(_caption(t, where) for t in texts)))
    splits[split] = rows
  return common.Converted([common.Folder("", splits)])
