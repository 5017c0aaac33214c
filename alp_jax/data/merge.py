"""Cross-source duplicate audio: one clip, with the captions of every source that has it.

CaptionStew's sources share audio (AudioCaps, MusicCaps, AudioSetCaps, FusionAudio and WavCaps' AudioSet part are
all AudioSet clips): the study's 9.3M clips carry 10.7M captions because one clip keeps a caption list
(../shared/STUDY.md, section 3). prepare keeps the first record of an audio (manifest order: the order of
--manifest, then lines) as the clip, in its own source's shards (its home); a later record with the same 16 kHz
samples from another source is merged into it:

  captions   the merged record's captions not already on the clip (exact text) are appended, in manifest order
  sources    the record header's `sources` lists the home source first, then each merged source once
  merged_ids the merged records' ids
  labels     label tasks the clip lacks are taken from the merged record; a task it has keeps its value
  split      the clip's own

A second record of the same audio from a source the clip already has (its home, or one merged before) is a
within-source duplicate: skipped (`duplicate_audio`), as before. Windows of a long clip (data/durations.py) are
records of one clip: a merge adds to every window.

prepare streams and has written the clip by the time a duplicate turns up, so `MergeLog.add` appends the merged
record to a spill file (`.partial/merges.jsonl`) and keeps 16 bytes per target record (its index and the spill
offset); after the stream, `MergeLog.apply` rewrites only the shards that hold a target record (headers changed,
audio bytes copied as they are), and the source's index counts of captions grow with it.

Counts (`summary`, corpus.json["duplicates"]["merged"]): per home source and merged source, the clips merged, the
captions they added (per record: a windowed clip counts each window, as corpus.json's per-source caption counts
do) and the captions already present.
"""
from __future__ import annotations

import array
import collections
import json
import os
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from alp_jax.data import manifest as mf
from alp_jax.data import records

_READ_BATCH = 256  # records read from a shard at a time while rewriting it


class MergeLog:
  """Cross-source duplicates spilled while prepare streams (`add`), applied to the kept clips' shards (`apply`)."""

  def __init__(self, spill_path: Path):
    self._spill = open(spill_path, "w+b")
    self._targets: dict[str, tuple[array.array, array.array]] = {}   # home -> (record index, spill offset)
    self._pairs: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)

  def add(self, home: str, first: int, count: int, record: mf.Record) -> None:
    """Merge `record` into the clip of source `home` stored as records first .. first + count - 1."""
    offset = self._spill.seek(0, os.SEEK_END)
    self._spill.write(json.dumps({"id": record.id, "source": record.source, "captions": record.captions,
                                  "labels": record.labels, "first": first}, ensure_ascii=False).encode() + b"\n")
    indices, offsets = self._targets.setdefault(home, (array.array("q"), array.array("q")))
    for k in range(count):
      indices.append(first + k)
      offsets.append(offset)
    self._pairs[(home, record.source)]["clips"] += 1

  @property
  def sources(self) -> list[str]:
    """Home sources with at least one merge."""
    return sorted(self._targets)

  def apply(self, home: str, shard_paths: list[str], num_captions: array.array, added=None) -> None:
    """Writes the merges into `home`'s shards (in place, one shard at a time) and grows `num_captions`.

    added(merged_source, new_captions, new_labels, first_window): called per target record and merged record,
    first_window True for the clip's first record (for what is counted once per clip: captions.txt)."""
    indices, offsets = (np.asarray(a, np.int64) for a in self._targets.get(home, ((), ())))
    if not len(indices):
      return
    order = np.argsort(indices, kind="stable")   # manifest order among the merges into one record
    indices, offsets = indices[order], offsets[order]
    start = 0
    for path in shard_paths:
      reader = ArrayRecordReader(path)
      try:
        n = reader.num_records()
        lo, hi = np.searchsorted(indices, [start, start + n])
        if hi > lo:
          self._rewrite(reader, path, start, indices[lo:hi], offsets[lo:hi], num_captions, home, added)
      finally:
        reader.close()
      start += n

  def _rewrite(self, reader, path: str, start: int, indices, offsets, num_captions, home: str, added) -> None:
    tmp = path + ".merging"
    writer = ArrayRecordWriter(tmp, "group_size:1")
    j, n = 0, reader.num_records()
    try:
      for begin in range(0, n, _READ_BATCH):
        for i, data in enumerate(reader.read(begin, min(begin + _READ_BATCH, n)), start=start + begin):
          if j < len(indices) and indices[j] == i:
            meta = records.decode_header(data)
            while j < len(indices) and indices[j] == i:
              self._merge_into(meta, i, self._read_spill(int(offsets[j])), home, added)
              j += 1
            num_captions[i] = len(meta["captions"])
            data = records.with_header(data, meta)
          writer.write(data)
    finally:
      writer.close()
    os.replace(tmp, path)

  def _read_spill(self, offset: int) -> dict:
    self._spill.seek(offset)
    return json.loads(self._spill.readline())

  def _merge_into(self, meta: dict, index: int, merged: dict, home: str, added) -> None:
    present = set(meta["captions"])
    new_captions = [c for c in merged["captions"] if c not in present]
    new_labels = {task: value for task, value in merged["labels"].items() if task not in meta["labels"]}
    meta["captions"] = meta["captions"] + new_captions
    meta["labels"] = {**meta["labels"], **new_labels}
    meta["sources"] = meta.get("sources", [meta["source"]])
    if merged["source"] not in meta["sources"]:
      meta["sources"].append(merged["source"])
    meta["merged_ids"] = meta.get("merged_ids", []) + [merged["id"]]
    pair = self._pairs[(home, merged["source"])]
    pair["captions_added"] += len(new_captions)
    pair["captions_already_present"] += len(merged["captions"]) - len(new_captions)
    if added is not None:
      added(merged["source"], new_captions, new_labels, index == merged["first"])

  def captions_added(self, home: str) -> int:
    return sum(c["captions_added"] for (h, _), c in self._pairs.items() if h == home)

  def summary(self) -> dict:
    """{home source: {merged source: {"clips", "captions_added", "captions_already_present"}}}."""
    out: dict[str, dict] = {}
    for (home, other), c in sorted(self._pairs.items()):
      out.setdefault(home, {})[other] = {k: int(c[k]) for k in ("clips", "captions_added", "captions_already_present")}
    return out

  def lines(self) -> list[str]:
    pairs = self.summary()
    clips = sum(c["clips"] for d in pairs.values() for c in d.values())
    if not clips:
      return []
    captions = sum(c["captions_added"] for d in pairs.values() for c in d.values())
    out = [f"  merged {clips} cross-source duplicate clip(s) into the first source's clip (+{captions} captions):"]
    for home, others in pairs.items():
      for other, c in others.items():
        out.append(f"      {other} -> {home}: {c['clips']} clip(s), +{c['captions_added']} captions "
                   f"({c['captions_already_present']} already present)")
    return out

  def close(self) -> None:
    self._spill.close()

  def __enter__(self) -> "MergeLog":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
